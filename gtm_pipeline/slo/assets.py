"""What the SLO file adds to the asset graph: a ``data_freshness`` asset check on every covered asset, and one
``slo/<name>`` asset per SLO, downstream of the assets it covers, whose figures the SLO sensor reports.

Why a check and not ``dg.FreshnessPolicy``: Dagster 1.13's freshness policies measure the time since the last
materialization or observation, and every recompute is a materialization -- the hourly forecast over yesterday's
facts, or a metric published partial behind a blocked input, would read fresh. The check's verdict comes from the
SLO engine, which measures data age (now - data time of the version in force), so the UI and `slo report` agree.
The SLO sensor reports it on every state change and report interval; it can also be run from the UI.

Both need the whole graph (an SLO may select a group or a prefix), so `apply_slos` runs in
`gtm_pipeline.definitions` after the stages are merged, and the YAML stays the one source.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.slo.contract import Coverage, Slo, SloFile
from gtm_pipeline.slo.durations import format_duration, human_duration
from gtm_pipeline.slo.evaluate import Evaluation, evaluate
from gtm_pipeline.slo.resources import SloResource
from gtm_pipeline.slo.sli import AssetFigures, SloFigures


def covered_assets(coverage: Coverage) -> list[str]:
    return sorted({k for ks in coverage.assets.values() for k in ks})


def freshness_check_evaluations(ev: Evaluation) -> list[dg.AssetCheckEvaluation]:
    """The data_freshness verdict of every covered asset: its worst state over the SLOs that cover it."""
    worst: dict[str, tuple[AssetFigures, Slo]] = {}
    order = ("fresh", "warn", "unknown", "stale")
    for figs in ev.slos:
        for a in figs.assets:
            seen = worst.get(a.asset)
            if seen is None or order.index(a.state) > order.index(seen[0].state):
                worst[a.asset] = (a, figs.slo)
    out = []
    for key, (a, slo) in sorted(worst.items()):
        md: dict = {"state": a.state, "slo": slo.name, "threshold": format_duration(slo.threshold),
                    "age": human_duration(a.age), "partial": bool(a.blocking)}
        if a.data_time is not None:
            md["data_time"] = dg.MetadataValue.timestamp(a.data_time)
            md["age_seconds"] = dg.MetadataValue.float(a.age or 0.0)
        if a.last_published is not None:
            md["published_at"] = dg.MetadataValue.timestamp(a.last_published)
        if a.blocking:
            md["blocked_inputs"] = dg.MetadataValue.json(list(a.blocking))
        if a.attainment is not None:
            md["attainment"] = dg.MetadataValue.float(a.attainment)
        out.append(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey.from_user_string(key), check_name=keys.CHECK_DATA_FRESHNESS,
            passed=a.state == "fresh", metadata=md,
            severity=dg.AssetCheckSeverity.WARN if a.state == "warn" else dg.AssetCheckSeverity.ERROR))
    return out


def freshness_checks(slo_file: SloFile, coverage: Coverage) -> dg.AssetChecksDefinition | None:
    covered = covered_assets(coverage)
    if not covered:
        return None
    thresholds = {k: min(s.threshold for s in slo_file.slos if k in coverage.assets.get(s.name, ()))
                  for k in covered}
    specs = [dg.AssetCheckSpec(
        keys.CHECK_DATA_FRESHNESS, asset=dg.AssetKey.from_user_string(k), blocking=False,
        description=(f"Data age (now - data time of the published version) under {human_duration(thresholds[k])} "
                     f"({slo_file.where}). Passes only while fresh; a version held back by a blocked input names "
                     f"it. Reported by the {keys.SLO_SENSOR} sensor; runnable here too."))
        for k in covered]

    @dg.multi_asset_check(specs=specs, name=keys.SLO_FRESHNESS_CHECKS, can_subset=True)
    def _checks(context, slo: SloResource):  # unannotated context: Dagster rejects a string (postponed) annotation
        with slo.history() as h:
            ev = evaluate(slo.load(), coverage, h, context.instance, observe=False)
        wanted = set(context.selected_asset_check_keys)
        for e in freshness_check_evaluations(ev):
            key = dg.AssetCheckKey(e.asset_key, e.check_name)
            if key in wanted:
                yield dg.AssetCheckResult(asset_key=e.asset_key, check_name=e.check_name, passed=e.passed,
                                          severity=e.severity, metadata=e.metadata)

    return _checks


def slo_asset_specs(slo_file: SloFile, coverage: Coverage) -> list[dg.AssetSpec]:
    specs = []
    for slo in slo_file.slos:
        covered = coverage.assets.get(slo.name, ())
        specs.append(dg.AssetSpec(
            keys.slo_key(slo.name), group_name=keys.SLO, deps=[dg.AssetKey.from_user_string(k) for k in covered],
            kinds={"prometheus", "sqlite"}, owners=[_team(slo.owner)],
            tags={"stage": "slo", "slo": slo.name},
            description=(
                f"Freshness SLO {slo.statement} over {human_duration(slo.window)}: one figure set per evaluation of "
                f"the {len(covered)} asset(s) upstream (data age of the published version, attainment, error budget, "
                f"burn rates). {slo.description} Reported by the {keys.SLO_SENSOR} sensor from the SLO history; "
                f"defined in {slo_file.where}. Owner: {slo.owner}."),
            metadata={"statement": slo.statement, "objective": slo.objective,
                      "threshold": format_duration(slo.threshold), "window": format_duration(slo.window),
                      "covers": dg.MetadataValue.json(list(covered))},
        ))
    return specs


def _team(owner: str) -> str:
    return "team:" + "".join(ch if ch.isalnum() else "_" for ch in owner.lower()).strip("_")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _asset_table(figs: SloFigures, windows: tuple[int, ...]) -> str:
    head = "| asset | state | data age | data time | held back by | attainment | budget left | " + " | ".join(
        f"burn {format_duration(w)}" for w in windows) + " | level |"
    sep = "|" + "---|" * (8 + len(windows))
    rows = [head, sep]
    for a in figs.assets:
        when = "-" if a.data_time is None else datetime.fromtimestamp(a.data_time, UTC).strftime(
            "%Y-%m-%d %H:%M")
        held = ", ".join(f"`{b}`" for b in a.blocking[:3]) or "-"
        rows.append(f"| `{a.asset}` | {a.state} | {human_duration(a.age)} | {when} | {held} | {_pct(a.attainment)} | "
                    f"{_pct(a.budget_remaining)} | " + " | ".join(f"{a.burn[w]:.2f}" for w in windows)
                    + f" | {a.level} |")
    rows += [f"| `{k}` | unknown (not defined yet) | - | - | - | - | - | " + " | ".join("-" for _ in windows) + " | - |"
             for k in figs.pending]
    return "\n".join(rows)


def report_events(ev: Evaluation, alert_levels: dict[str, tuple[str, str | None]]) -> list[dg.AssetMaterialization]:
    """The figures of each SLO as a materialization of ``slo/<name>`` (numeric metadata is plotted in the UI)."""
    events = []
    windows = ev.slo_file.windows
    for figs in ev.slos:
        level, incident = alert_levels.get(figs.slo.name, ("ok", None))
        md: dict = {
            "state": figs.state, "alert_level": level, "incident": incident or "none",
            "reconstructed_seconds": dg.MetadataValue.float(ev.reconstructed[figs.slo.name]),
            "assets": dg.MetadataValue.md(_asset_table(figs, windows)),
        }
        if figs.attainment is not None:
            md["attainment"] = dg.MetadataValue.float(figs.attainment)
        if figs.budget_remaining is not None:
            md["error_budget_remaining"] = dg.MetadataValue.float(figs.budget_remaining)
        for w in windows:
            md[f"burn_rate_{format_duration(w)}"] = dg.MetadataValue.float(figs.worst_burn(w))
        events.append(dg.AssetMaterialization(asset_key=keys.slo_key(figs.slo.name), metadata=md,
                                              description=f"{figs.slo.statement}: {figs.state}, alert {level}"))
    return events
