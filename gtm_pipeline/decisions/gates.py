"""The gates a decision passes, at propose and again at approve and at apply (issue 14 §1; spec 002 §4 "Inputs &
Pre-checks"; docs/decisions.md, "Gates").

Shared by every node:
* ``slo_health``: SLO health green for the SLOs covering the node's inputs (``health_fn``, injected: the Dagster
  asset passes the SLO resource's check, the CLI the same check over the Dagster instance). It fails closed.
* ``no_open_incident``: no open (or acknowledged) incident at the playbook's severity or worse in the node's scope,
  whoever opened it -- a contract, a metric audit, the SLO sensor or a person (``gtm-pipeline incidents open``).
* ``input_data_time``: every input's data time (how far its inputs are complete, `gtm_pipeline.datatime`) younger
  than the threshold of the SLOs that cover it, on the product's clock (``GTM_PIPELINE_NOW`` freezes it).

A failed gate names its current value, the limit and how to clear it; `refusal` turns it into the one-line message a
refused step prints and logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gtm_pipeline.datatime import published_data_time
from gtm_pipeline.decisions.playbook import Playbook
from gtm_pipeline.decisions.playbook_spec import SEVERITIES
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.metrics.contract import load_metric_contracts
from gtm_pipeline.ops import incidents
from gtm_pipeline.slo.contract import format_duration, human_duration, load_slo_file
from gtm_pipeline.warehouse import table_exists

# health_fn(asset keys like "metrics/cm_per_seat") -> an object with .green (bool) and .reasons (list of text)
HealthFn = Callable[[list[str]], Any]


@dataclass(frozen=True)
class Precheck:
    name: str
    passed: bool
    detail: str
    value: str = ""        # the gate's current value: "open SEV2 incident INC-3f9a0c1d2e (opportunity: ...)"
    limit: str = ""        # what it must be: "no open SEV1/SEV2 incident on what channel.invest reads"
    fix: str = ""          # how to clear it, a command where there is one

    def __str__(self) -> str:
        return f"{self.name}: {'pass' if self.passed else 'FAIL'} -- {self.detail}"

    def refusal(self, node: str) -> str:
        """``refused: <value> blocks <node> (<gate>: needs <limit>); <fix>``."""
        return (f"refused: {self.value or self.detail} blocks {node} ({self.name}: needs {self.limit or 'to pass'})"
                + (f"; {self.fix}" if self.fix else ""))

    def as_dict(self) -> dict:
        return {"gate": self.name, "passed": self.passed, "detail": self.detail, "value": self.value,
                "limit": self.limit, "fix": self.fix}


class GateRefused(GtmPipelineError):
    """A lifecycle step refused by a gate; the message names gate, value, limit and fix, and the refusal is logged."""

    def __init__(self, message: str, gate: Precheck):
        super().__init__(message)
        self.gate = gate


# ---- SLO health -----------------------------------------------------------------------------------------------------

_SLO_FIX = "see which input is stale with 'gtm-pipeline slo report', refresh it ('gtm-pipeline refresh'), then retry"


def slo_precheck(health_fn: HealthFn | None, assets: list[str]) -> Precheck:
    limit = "SLO health green for the SLOs covering its inputs"
    if health_fn is None:
        return Precheck("slo_health", False, "SLO health unknown: no SLO health source is wired (fails closed)",
                        "SLO health unknown (no SLO health source)", limit, _SLO_FIX)
    try:
        h = health_fn(assets)
    except Exception as e:  # any failure to judge health must block, never pass
        why = f"{type(e).__name__}: {str(e)[:300]}"
        return Precheck("slo_health", False, f"SLO health unknown: {why}", f"SLO health unknown ({why})", limit,
                        _SLO_FIX)
    green = bool(getattr(h, "green", False))
    reasons = list(getattr(h, "reasons", ()) or ())
    said = "; ".join(reasons[:5]) or "no reason given"
    if green:
        return Precheck("slo_health", True, "SLO health green", "green", limit)
    return Precheck("slo_health", False, f"SLO health not green: {said}", f"SLO health red ({said})", limit, _SLO_FIX)


# ---- incidents ------------------------------------------------------------------------------------------------------

def metric_dependencies(contracts_dir: Path, inputs: tuple[str, ...] | list[str]) -> set[str]:
    """The metric tables and clean entities ``inputs`` read, directly or through other metrics (from the metric
    contracts' ``inputs``): e.g. {"metrics/cm_per_seat", "metrics/cm_by_line", "clean/opportunity", ...}."""
    contracts = load_metric_contracts(Path(contracts_dir))
    seen: set[str] = set()
    stack = list(inputs)
    while stack:
        name = stack.pop()
        key = name.replace("clean.", "clean/") if name.startswith("clean.") else f"metrics/{name}"
        if key in seen:
            continue
        seen.add(key)
        if name in contracts:
            stack.extend(contracts[name].inputs)
    return seen


def _concerns(asset_key: str | None, deps: set[str]) -> bool:
    """Does an incident on ``asset_key`` bear on a node reading ``deps``? Only an incident about metric tables or
    clean entities that are all outside ``deps`` does not; anything else (ingest, contracts, platform) does."""
    parts = [p.strip() for p in (asset_key or "").split(",") if p.strip()]
    if not parts:
        return True
    return any(not (p.startswith("metrics/") or p.startswith("clean/")) or p in deps for p in parts)


def _incident_fix(con, incident_id: str) -> str:
    resolve = f"resolve it with gtm-pipeline incidents resolve {incident_id} --by NAME --note TEXT"
    try:
        inc = incidents.get(con, incident_id)
    except GtmPipelineError:
        return resolve
    step = incidents.next_step(inc)
    if inc.get("origin") == "manual" or step.startswith("gtm-pipeline incidents resolve"):
        return resolve
    return f"clear its cause ({step}; it then resolves itself), or {resolve}"


def incident_precheck(con, max_severity: str, deps: set[str] | None = None) -> Precheck:
    """No open incident at ``max_severity`` or worse (SEV1 is the worst) in ops.incidents, whatever opened it. With
    ``deps`` (scope ``dependencies``), incidents about metric tables or entities the node does not depend on are
    ignored."""
    blocking = list(SEVERITIES[: SEVERITIES.index(max_severity) + 1])
    limit = f"no open {'/'.join(blocking)} incident" + (" on what it reads" if deps is not None else "")
    if not table_exists(con, "ops", "incidents"):
        return Precheck("no_open_incident", True, "no incidents table: nothing open", "none open", limit)
    # An acknowledged incident is still open: someone is on it, the decision still waits.
    rows = con.execute(f"SELECT incident_id, severity, title, asset_key, coalesce(entity, asset_key) "
                       f"FROM ops.incidents WHERE status IN ('open', 'acknowledged') AND "
                       f"severity IN ({', '.join('?' for _ in blocking)}) ORDER BY severity, opened_at",
                       blocking).fetchall()
    ignored = [r for r in rows if deps is not None and not _concerns(r[3], deps)]
    rows = [r for r in rows if r not in ignored]
    if rows:
        iid, sev, title, _, target = rows[0]
        listed = "; ".join(f"{i} {s} {t}" for i, s, t, _, _ in rows[:3])
        value = f"open {sev} incident {iid} ({target}: {title})" + (f" and {len(rows) - 1} more" if len(rows) > 1
                                                                     else "")
        return Precheck("no_open_incident", False, f"{len(rows)} open {'/'.join(blocking)} incident(s): {listed}",
                        value, limit, _incident_fix(con, iid))
    return Precheck("no_open_incident", True, f"no open {'/'.join(blocking)} incident"
                    + (f" on what this node reads ({len(ignored)} elsewhere: "
                       f"{', '.join(r[0] + ' ' + str(r[3]) for r in ignored[:3])})" if ignored else ""),
                    "none open", limit)


# ---- data time of each input ----------------------------------------------------------------------------------------

def _covers(slo, key: str) -> bool:
    def hit(sel) -> bool:
        return ((sel.kind == "key" and sel.value == key) or (sel.kind == "prefix" and key.startswith(sel.value))
                or (sel.kind == "group" and key.split("/", 1)[0] == sel.value))
    return any(hit(s) for s in slo.selectors) and not any(hit(s) for s in slo.exclude)


def datatime_precheck(con, slo_file: Path | None, inputs: tuple[str, ...] | list[str], now: datetime) -> Precheck:
    """Every input's data time within the threshold of the SLOs covering it (age = now - data time, stale from
    the threshold on, as the SLOs count it). Fails closed: no SLO file, or an input never published."""
    limit = "every input's data time within its SLO threshold"
    fix_all = "refresh the metric layer ('gtm-pipeline refresh'), clearing any blocked input first"
    try:
        slos = load_slo_file(Path(slo_file)).slos if slo_file is not None else None
    except Exception as e:  # a broken SLO file must block, never pass
        slos, err = None, f"{type(e).__name__}: {str(e)[:200]}"
    else:
        err = "no SLO file configured"
    if slos is None:
        return Precheck("input_data_time", False, f"data time unknown: {err}", f"input data time unknown ({err})",
                        limit, "fix the SLO file (gtm-pipeline slo validate), then retry")
    has_pubs = table_exists(con, "ops", "publications")
    stale, checked = [], []
    for name in sorted(set(inputs)):
        key = f"metrics/{name}"
        covering = [s for s in slos if _covers(s, key)]
        if not covering:
            continue
        slo = min(covering, key=lambda s: s.threshold)
        dt = published_data_time(con, key) if has_pubs else None
        if dt is None or dt.at is None:
            stale.append((key, f"{key} was never published (data time unknown)", slo,
                          f"publish it: gtm-pipeline metrics refresh {name}"))
            continue
        age = (now - dt.at).total_seconds()
        checked.append(f"{key} {human_duration(age)} old (< {format_duration(slo.threshold)})")
        if age >= slo.threshold:
            held = f", held back by {', '.join(dt.blocking[:2])}" if dt.blocking else ""
            stale.append((key, f"data time of {key} is {dt.at:%Y-%m-%d %H:%M} ({human_duration(age)} old{held})",
                          slo, f"refresh it: gtm-pipeline metrics refresh {name}"
                               + (" after clearing the blocked inputs" if dt.blocking else "")))
    if stale:
        key, value, slo, fix = stale[0]
        more = f" and {len(stale) - 1} more input(s)" if len(stale) > 1 else ""
        return Precheck("input_data_time", False, "; ".join(s[1] for s in stale[:5]), value + more,
                        f"data younger than {format_duration(slo.threshold)} (SLO {slo.name})",
                        fix if len(stale) == 1 else f"{fix}; or {fix_all}")
    return Precheck("input_data_time", True, "every input within its SLO: " + ("; ".join(checked[:5]) or
                                                                           "no input covered by an SLO"),
                    "within", limit)


def shared_prechecks(dc, pb: Playbook, health_fn: HealthFn | None) -> list[Precheck]:
    """The three pre-checks every node shares, in the order a refusal names them."""
    deps = metric_dependencies(dc.contracts_dir, pb.inputs) if pb.incident_scope == "dependencies" else None
    return [incident_precheck(dc.con, pb.max_open_incident, deps),
            slo_precheck(health_fn, [f"metrics/{t}" for t in pb.inputs]),
            datatime_precheck(dc.con, dc.slo_file, pb.inputs, dc.clock())]
