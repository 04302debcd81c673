"""Metrics stage: one asset per table of the metric layer, built from its contract in ``contracts/metrics/``.

The body reads resources, calls `gtm_pipeline.metrics.publish.run_metric` (write, audit, publish) and reports:
a materialization whose metadata says whether the candidate was published (``published``, ``published_at`` of the
version readers see), the contract (definition, grain, formula, owner) and the latest values; and one asset check
per qa_test plus the automatic ones.

Checks are not ``blocking``: write-audit-publish already keeps a failed candidate away from readers (the table does
not change, an incident opens, the owner is paged or notified), and a failed run would also stop the independent
metrics and decisions downstream from refreshing from the versions still in force. A blocked publish materializes
with ``published: false`` so that the attempt and its rejected candidate are visible in the UI, while freshness
keeps measuring the version in force (``published_at``, ``data_time``).
"""

import hashlib
import inspect
import json
from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.clock import to_epoch
from gtm_pipeline.config import load_settings
from gtm_pipeline.metrics.contract import MetricContract, load_metric_contracts
from gtm_pipeline.metrics.publish import PublishOutcome, TestResult, candidate_table, run_metric
from gtm_pipeline.metrics.registry import CLEAN_PREFIX, Computation, computations
from gtm_pipeline.orchestration.partitions import daily_partitions

_SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warn": dg.AssetCheckSeverity.WARN}
_AUTO_CHECKS = {
    "grain_unique": "Automatic: exactly one row per value of the contract's grain (a join fan-out shows here).",
    "denominator_positive": "Automatic: every divisor of the formula is > 0; a zero or negative denominator fails "
                            "here on its own instead of hiding in a huge or missing quotient.",
}


def owner_tag(owner: str) -> str:
    return "team:" + "".join(ch if ch.isalnum() else "_" for ch in owner.lower()).strip("_")


def input_key(name: str) -> dg.AssetKey:
    return keys.clean_key(name[len(CLEAN_PREFIX):]) if name.startswith(CLEAN_PREFIX) else keys.metric_key(name)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows)"
    shown = df.copy()
    for c in shown.columns:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}")
    return shown.to_markdown(index=False)


def _tests_md(contract: MetricContract) -> str:
    lines = [f"- `{t.name}` ({t.severity}): `{t.text}`" for t in contract.qa_tests]
    lines += [f"- `{name}` (error): {_AUTO_CHECKS[name]}" for name in contract.check_names() if name in _AUTO_CHECKS]
    return "\n".join(lines)


def _static_metadata(contract: MetricContract, comp: Computation) -> dict:
    md = {
        "definition": contract.definition,
        "grain": ", ".join(contract.grain),
        "formula": contract.formula_text or "(fact table: no formula)",
        "owner": contract.owner,
        "inputs": ", ".join(contract.inputs),
        "contract": f"{contract.where} v{contract.version}",
        "break_action": contract.break_action,
        "qa_tests": dg.MetadataValue.md(_tests_md(contract)),
        "table": f"metrics.{contract.name}",
    }
    if contract.unit:
        md["unit"] = contract.unit
    if contract.parameters:
        md["parameters"] = "; ".join(p.describe() for p in contract.parameters)
    if comp.partitioned:
        md["partition_expr"] = comp.partition_column
    return md


def _check_metadata(t: TestResult) -> dict:
    md = {"failed_rows": t.failed_rows, "total_rows": t.total_rows, "assert": t.text}
    if t.samples:
        md["samples"] = dg.MetadataValue.md("\n".join(f"- `{json.dumps(s, default=str)}`" for s in t.samples))
    if t.details:
        md["details"] = dg.MetadataValue.json(t.details)
    return md


def _result_metadata(contract: MetricContract, outcome: PublishOutcome) -> dict:
    md: dict = {
        "published": outcome.published,
        "candidate_at": outcome.candidate_at.isoformat(),
        "candidate_rows": outcome.candidate_rows,
        "latest_values": dg.MetadataValue.md(_md_table(outcome.preview)),
        "audit": dg.MetadataValue.md("\n".join(
            f"- `{t.name}`: {'pass' if t.passed else 'FAIL'} ({t.severity}) -- {t.failed_rows}/{t.total_rows} rows"
            for t in outcome.tests)),
        "definition": contract.definition,
        "grain": ", ".join(contract.grain),
        "formula": contract.formula_text or "(fact table: no formula)",
        "owner": contract.owner,
    }
    if outcome.published_at is not None:
        md["published_at"] = outcome.published_at.isoformat()
    # Data time of the version readers see (what freshness measures, docs/slo.md); a version held back by blocked
    # input partitions says so and names them.
    if outcome.data_time.at is not None:
        md["data_time"] = dg.MetadataValue.timestamp(to_epoch(outcome.data_time.at))
    md["partial"] = outcome.data_time.partial
    if outcome.data_time.blocking:
        md["blocked_inputs"] = dg.MetadataValue.json(list(outcome.data_time.blocking))
    if outcome.published_rows is not None:
        md["dagster/row_count"] = outcome.published_rows
    if outcome.window is not None:
        md["window"] = f"{outcome.window[0]}..{outcome.window[1]}"
    if outcome.columns:
        md["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, ctype) for name, ctype in outcome.columns])
    if not outcome.published:
        md["blocked_by"] = ", ".join(t.name for t in outcome.failures)
        md["rejected_candidate"] = candidate_table(contract.name)
        if outcome.incident_id:
            md["incident_id"] = outcome.incident_id
    return md


def build_metric_asset(contract: MetricContract, comp: Computation) -> dg.AssetsDefinition:
    key = keys.metric_key(contract.name)
    code_version = hashlib.sha256((contract.digest + inspect.getsource(comp.build)).encode()).hexdigest()[:12]
    checks = [dg.AssetCheckSpec(name, asset=key, blocking=False,
                                description=_AUTO_CHECKS.get(name) or next(
                                    f"{t.text} ({t.severity}{': ' + t.description if t.description else ''})"
                                    for t in contract.qa_tests if t.name == name))
              for name in contract.check_names()]
    # keyword arguments of dg.asset (values of two different types, hence Any)
    partitioned: dict[str, Any] = {"partitions_def": daily_partitions,
                                   "backfill_policy": dg.BackfillPolicy.single_run()} if comp.partitioned else {}
    description = (
        f"{contract.metric}. {contract.definition} Grain: one row per ({', '.join(contract.grain)}). "
        f"Source: {', '.join(contract.inputs)}. "
        + (f"Formula: {contract.formula_text}. " if contract.formulas else "")
        + f"Owner: {contract.owner}. Published to metrics.{contract.name} by write-audit-publish against "
          f"{contract.where} v{contract.version} (break action: {contract.break_action})."
    )

    @dg.asset(
        key=key,
        group_name=keys.METRICS,
        deps=[input_key(i) for i in contract.inputs],
        kinds=set(comp.kinds),
        owners=[owner_tag(contract.owner)],
        tags={"stage": keys.METRICS, "metric_kind": contract.kind},
        code_version=code_version,
        description=description,
        metadata=_static_metadata(contract, comp),
        check_specs=checks,
        **partitioned,
    )
    def _metric(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        # The contract is the one validated when the definitions loaded (its checks are declared above); an edited
        # contract takes effect when Dagster reloads the code location.
        window = None
        if comp.partitioned:
            tw = context.partition_time_window
            window = (tw.start.date(), (tw.end - timedelta(days=1)).date())
        with warehouse.get_connection() as con:
            outcome = run_metric(con, contract, comp, run_id=context.run.run_id, window=window)
        if not outcome.published:
            context.log.warning(f"metrics/{contract.name} not published: "
                                f"{', '.join(t.name for t in outcome.failures)} failed; previous version kept, "
                                f"incident {outcome.incident_id}")
        yield dg.MaterializeResult(metadata=_result_metadata(contract, outcome))
        for t in outcome.tests:
            yield dg.AssetCheckResult(check_name=t.name, passed=t.passed, severity=_SEVERITY[t.severity],
                                      metadata=_check_metadata(t))

    return _metric


def metric_assets() -> list[dg.AssetsDefinition]:
    contracts = load_metric_contracts(load_settings().contracts_dir)
    comps = computations()
    return [build_metric_asset(c, comps[name]) for name, c in contracts.items()]
