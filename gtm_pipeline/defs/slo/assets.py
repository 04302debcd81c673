"""What the SLO file adds to the asset graph: a freshness policy on every covered asset, and one ``slo/<name>``
asset per SLO, downstream of the assets it covers, whose figures the SLO sensor reports.

Both need the whole graph (an SLO may select a group or a prefix), so `apply_slos` runs in
`gtm_pipeline.definitions` after the stages are merged. Policies are attached with ``map_asset_specs`` and
``dg.apply_freshness_policy``, so the metric layer's files stay untouched and the YAML stays the one source.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.slo.contract import Coverage, SloFile, format_duration, human_duration
from gtm_pipeline.slo.evaluate import Evaluation
from gtm_pipeline.slo.sli import SloFigures

_DAGSTER_MIN_WINDOW = 60  # seconds (TimeWindowFreshnessPolicy's lower bound)


def freshness_policies(slo_file: SloFile, coverage: Coverage) -> dict[str, dg.FreshnessPolicy]:
    """One policy per covered asset: fail after the threshold, warn after ``warn_after``. An asset covered by two
    SLOs gets the stricter of each window."""
    windows: dict[str, tuple[int, int | None]] = {}
    for slo in slo_file.slos:
        for key in coverage.assets.get(slo.name, ()):
            fail, warn = windows.get(key, (slo.threshold, slo.warn_after))
            fail = min(fail, slo.threshold)
            warns = [w for w in (warn, slo.warn_after) if w is not None and w < fail]
            windows[key] = (fail, min(warns) if warns else None)
    policies = {}
    for key, (fail, warn) in windows.items():
        # Dagster's policy cannot be shorter than a minute; the SLO math keeps the exact threshold (tests use
        # seconds-long thresholds against real time).
        fail = max(fail, _DAGSTER_MIN_WINDOW)
        warn = warn if warn is not None and _DAGSTER_MIN_WINDOW <= warn < fail else None
        policies[key] = dg.FreshnessPolicy.time_window(fail_window=timedelta(seconds=fail),
                                                       warn_window=timedelta(seconds=warn) if warn else None)
    return policies


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
                f"the {len(covered)} asset(s) upstream (age of the published version, attainment, error budget, "
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
    head = "| asset | state | age | attainment | budget left | " + " | ".join(
        f"burn {format_duration(w)}" for w in windows) + " | level |"
    sep = "|" + "---|" * (6 + len(windows))
    rows = [head, sep]
    for a in figs.assets:
        rows.append(f"| `{a.asset}` | {a.state} | {human_duration(a.age)} | {_pct(a.attainment)} | "
                    f"{_pct(a.budget_remaining)} | " + " | ".join(f"{a.burn[w]:.2f}" for w in windows)
                    + f" | {a.level} |")
    rows += [f"| `{k}` | unknown (not defined yet) | - | - | - | " + " | ".join("-" for _ in windows) + " | - |"
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
