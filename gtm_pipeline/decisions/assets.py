"""Decisions stage (group ``decisions``): the four decision nodes of spec 002 §4, then monitoring of applied decisions,
the decision log's integrity and the review packet. Thin bodies over `gtm_pipeline.decisions`; docs/decisions.md.

Each node asset depends on the metric assets its playbook reads, so ``refresh_job`` evaluates it after the metric
layer. The SLO pre-check uses the SLO resource's health for exactly those assets; an error there fails closed.
"""


import hashlib
import inspect
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.config import load_settings
from gtm_pipeline.decisions import log as dlog
from gtm_pipeline.decisions import monitoring, nodes, packets
from gtm_pipeline.decisions.context import known_metric_tables
from gtm_pipeline.decisions.playbook import Playbook, load_playbooks
from gtm_pipeline.metrics.assets import owner_tag
from gtm_pipeline.orchestration.resources import DecisionStore
from gtm_pipeline.slo.resources import SloResource
from gtm_pipeline.warehouse import utcnow

_CODE = hashlib.sha256(inspect.getsource(nodes).encode() + inspect.getsource(monitoring).encode()).hexdigest()[:8]


def _md(rows: list[dict]) -> dg.MetadataValue:
    return dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False) if rows else "(none)")


def _asset_graph(context: dg.AssetExecutionContext):
    """The whole graph (SLO coverage is resolved against every asset): the code location's when the run has one,
    the project's definitions otherwise (e.g. `dg.materialize` in tests has no repository)."""
    try:
        return context.repository_def.asset_graph
    except Exception:
        # local: breaks the cycle definitions -> decisions.defs -> decisions.assets -> definitions (definitions
        # discovers every package's defs module when it loads)
        from gtm_pipeline.definitions import defs

        return defs.resolve_asset_graph()


def _health_fn(context: dg.AssetExecutionContext, slo: SloResource):
    def health(assets: list[str]):
        return slo.health(context.instance, _asset_graph(context), assets=assets)
    return health


def build_node_asset(pb: Playbook) -> dg.AssetsDefinition:
    deps = [keys.metric_key(t) for t in pb.inputs]
    if pb.node == "routing.policy":  # the shadow comparison routes recent clean leads and opportunities
        deps += [keys.clean_key(e) for e in ("lead", "opportunity", "owner")]
    description = (
        f"{pb.title} ({pb.spec}): {pb.description} Grain: one evaluation per refresh; one decision-log proposal per "
        f"action implied (never twice for the same inputs). Source: metrics {', '.join(pb.inputs)}; playbook "
        f"{pb.where} v{pb.version}. Owner: {pb.owner}; approvers: {', '.join(pb.approvers)}; reversibility "
        f"{pb.reversibility}; risk class {pb.risk_class}; cadence {pb.cadence}."
    )

    @dg.asset(
        key=keys.decision_key(pb.asset_name), group_name=keys.DECISIONS, deps=deps, kinds={"duckdb", "python"},
        owners=[owner_tag(pb.owner)], code_version=f"{pb.digest}-{_CODE}", description=description,
        tags={"stage": keys.DECISIONS, "cadence": pb.cadence, "risk_class": pb.risk_class.lower(),
              "reversibility": pb.reversibility.lower()},
        metadata={"playbook": f"{pb.where} v{pb.version}", "owner": pb.owner, "approvers": ", ".join(pb.approvers),
                  "reversal": f"{pb.reversal_plan} (within {pb.reversal_within_minutes:g} min)",
                  "monitoring": "; ".join(w.describe() for w in pb.watch)},
    )
    def _node(context: dg.AssetExecutionContext, warehouse: DuckDBResource, decisions: DecisionStore,
              slo: SloResource) -> dg.MaterializeResult:
        with warehouse.get_connection() as con:
            dc = decisions.context(con)
            result = nodes.evaluate_node(dc, dc.playbooks[pb.node], _health_fn(context, slo))
            memo = ""
            new = result.new_proposals
            if new:
                memo = (dc.memo_dir / f"{new[0]}.md").read_text(encoding="utf-8")
        if result.note:
            context.log.warning(f"{pb.node}: {result.note}")
        # Any: what dagster accepts as raw metadata (its RawMetadataValue alias is not public).
        md: dict[str, Any] = {
            "prechecks_passed": result.prechecks_passed,
            "prechecks": dg.MetadataValue.md("\n".join(f"- {p}" for p in result.prechecks)),
            "outcomes": _md([{"subject": o.subject, "proposes": o.proposes, "summary": o.summary}
                             for o in result.outcomes]),
            "proposals": _md([{"decision_id": p.decision_id, "state": p.state, "detail": p.detail}
                              for p in result.proposals]),
            "new_proposals": len(new),
            "inputs_version": result.inputs_version,
        }
        if memo:
            md["memo_preview"] = dg.MetadataValue.md(memo)
        return dg.MaterializeResult(metadata=md)

    return _node


def node_assets() -> list[dg.AssetsDefinition]:
    contracts = load_settings().contracts_dir
    playbooks = load_playbooks(contracts, known_metric_tables(contracts))
    return [build_node_asset(playbooks[n]) for n in sorted(playbooks)]


@dg.asset(
    key=keys.DECISION_MONITORING_KEY, group_name=keys.DECISIONS, kinds={"duckdb", "python"},
    deps=[keys.decision_key(n) for n in keys.DECISION_NODE_ASSETS.values()]
    + [keys.metric_key(m) for m in ("booking_rate", "sql_funnel", "routing_health", "payback_by_segment",
                                    "cm_per_seat")],
    owners=["team:revops"], code_version=_CODE, tags={"stage": keys.DECISIONS},
    description="Monitoring of applied decisions (spec 002 §4 Reversal & Monitoring): one evaluation per applied, "
                "unclosed decision per refresh, from the metric layer's booking_rate, sql_funnel, routing_health, "
                "payback_by_segment and cm_per_seat since the decision's effective day. A breach logs "
                "reversal_proposed, or reverses at once where the playbook says so (routing: FF_ROUTING_V1). "
                "Owner: RevOps (each decision's owner acts on it).",
)
def monitoring_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                     decisions: DecisionStore) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        dc = decisions.context(con)
        outcomes = monitoring.evaluate_all(dc)
    breaches = [o for o in outcomes if any(r.breached for r in o.results)]
    for o in breaches:
        context.log.warning(f"{o.decision_id} ({o.node}): monitoring breach -> {o.event}")
    return dg.MaterializeResult(metadata={
        "decisions_monitored": len(outcomes), "breaches": len(breaches),
        "checks": _md(monitoring.summary_rows(outcomes))})


@dg.asset(
    key=keys.DECISION_LOG_KEY, group_name=keys.DECISIONS, kinds={"duckdb"}, deps=[keys.DECISION_MONITORING_KEY],
    owners=["team:revops"], code_version=_CODE, tags={"stage": keys.DECISIONS},
    check_specs=[dg.AssetCheckSpec(keys.CHECK_LOG_CHAIN, asset=keys.DECISION_LOG_KEY,
                                   description="The hash chain of decisions.log verifies: no entry edited, deleted "
                                               "or reordered (same as `gtm-pipeline decisions verify`).")],
    description="The decision log (decisions.log): one row per event of a decision (proposed, approval, applied, "
                "monitored, reversal_proposed, reversed, confirmed, rejected, superseded), append-only and "
                "hash-chained. Source: the decision nodes, the CLI and monitoring. Owner: RevOps.",
)
def decision_log_asset(warehouse: DuckDBResource, decisions: DecisionStore):
    with warehouse.get_connection() as con:
        dc = decisions.context(con)
        report = dlog.verify(con, dc.head)
        latest = dlog.entries(con)[-15:]
        by_status = con.execute("""SELECT status, count(*) FROM (SELECT decision_id, arg_max(status, entry_id) AS status
                                   FROM decisions.log GROUP BY 1) GROUP BY 1 ORDER BY 1""").fetchall()
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": report.entries, "chain_ok": report.ok,
        "decisions_by_status": ", ".join(f"{s} {n}" for s, n in by_status) or "none",
        "latest_entries": _md([{"#": e.entry_id, "ts": e.ts.isoformat(sep=" ", timespec="seconds"),
                                "decision": e.decision_id, "event": e.event, "status": e.status, "actor": e.actor,
                                "hash": e.entry_hash[:12]} for e in reversed(latest)])})
    yield dg.AssetCheckResult(check_name=keys.CHECK_LOG_CHAIN, passed=report.ok,
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"entries": report.entries,
                                        "problems": "; ".join(str(p) for p in report.problems[:5]) or "none"})


class PacketConfig(dg.Config):
    cadence: str = "weekly_ops"
    as_of: str = ""   # YYYY-MM-DD; empty: today (UTC)


@dg.asset(
    key=keys.REVIEW_PACKET_KEY, group_name=keys.DECISIONS, kinds={"markdown"}, deps=[keys.DECISION_LOG_KEY],
    owners=["team:revops"], code_version=_CODE, tags={"stage": keys.DECISIONS},
    description="Review packet for a cadence of spec 002 §5 (weekly ops, monthly business review, quarterly plan): "
                "pending decisions, refusals and monitoring breaches of the period, decisions under monitoring and "
                "due for review, SLO health, hygiene (quarantine, incidents, DLQ), the decision log's integrity. One "
                "markdown file per cadence and date in <data_dir>/packets. Source: "
                "decisions.log, ops.incidents, quarantine.*. Owner: RevOps.",
)
def review_packet_asset(context: dg.AssetExecutionContext, config: PacketConfig, warehouse: DuckDBResource,
                        decisions: DecisionStore, slo: SloResource) -> dg.MaterializeResult:
    as_of = date.fromisoformat(config.as_of) if config.as_of else utcnow().date()
    try:
        slo_line = slo.health(context.instance, _asset_graph(context)).summary()
    except Exception as e:  # the packet still renders; it says why health is unknown
        slo_line = f"SLO health unknown: {type(e).__name__}: {e}"
    with warehouse.get_connection() as con:
        packet = packets.build_packet(decisions.context(con), config.cadence, as_of, slo_line)
    return dg.MaterializeResult(metadata={
        "cadence": packet.cadence, "as_of": packet.as_of.isoformat(), "path": str(packet.path),
        "pending": packet.pending, "in_flight": packet.in_flight, "due_for_review": packet.due,
        "refusals": packet.refusals, "breaches": packet.breaches, "log_integrity": packet.log_status,
        "period_start": packet.period.start.isoformat() if packet.period else "",
        "packet": dg.MetadataValue.md(packet.markdown)})
