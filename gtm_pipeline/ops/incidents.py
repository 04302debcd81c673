"""Incidents a team can live with (``ops.incidents``): one per cause, self-resolving, each with an owner and a
next step.

- **Grouped.** A contract break opens one incident per (entity, break action, rule) -- e.g. every delivery day
  whose activity rows carry unknown enum values feeds the one ``contract:activity:quarantine:enum`` incident --
  with the number of rows, the first and last day and time it was seen, a few sample rows (file, line, column,
  value) and the set of affected days. What each day contributes is kept in ``ops.incident_partitions``.
- **Self-resolving.** Re-running a day (a fixed re-delivery, a released repair) replaces that day's contribution.
  An incident no day contributes to any more resolves itself: ``resolved_by`` "auto: condition cleared" and the
  evidence ("0 rows remain; last day re-run 2026-08-16 by run X"). A new break after that opens a new incident.
- **Operable.** `declare` (an operator's SEV1/SEV2 seen by every decision pre-check), `acknowledge` (still open for
  gates), `resolve` (who, note, when), and `next_step`: the runbook line per origin and rule that
  ``gtm-pipeline incidents list`` prints.

Severities follow spec 002 §3: an enum (or type, required, row check) break quarantines and opens a SEV3; an
out-of-range value blocks the day's publication and notifies the owner (SEV3: a notification, not a page); a
metric whose contract says block_publish_and_page_owner and an SLO fast burn are SEV2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from gtm_pipeline.datatime import blocked_text
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import (
    OPEN_SQL,
    OPEN_STATUSES,
    ensure_base,
    notify_owner,
    one_row,
    open_incident,
    resolve_incidents,
    scalar,
    utcnow,
)

SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")  # SEV1 is the worst
SAMPLES = 5
QUARANTINE_KIND = "quarantine"
BLOCK_KIND = "block_publish"
COLUMNS = ("incident_id", "opened_at", "severity", "origin", "asset_key", "rule", "title", "details", "owner",
           "status", "resolved_at", "dedup_key", "entity", "occurrences", "first_seen_at", "last_seen_at",
           "first_partition", "last_partition", "partitions", "samples", "acknowledged_at", "acknowledged_by",
           "resolved_by", "resolution", "updated_at")


@dataclass
class Finding:
    """One cause seen on one partition (delivery day): how many rows broke it there, and a few of them."""
    kind: str                 # QUARANTINE_KIND or BLOCK_KIND: the break action that decides severity and notice
    rule: str                 # enum | type | required | range | row_check:<name> ...
    partition: str            # YYYY-MM-DD
    rows: int = 0
    columns: dict[str, int] = field(default_factory=dict)   # column -> rows of this partition that broke it there
    samples: list[dict] = field(default_factory=list)       # {file, line, column, value, reason}
    held: int = 0             # BLOCK_KIND: the partition's other rows, waiting in quarantine


def contract_key(entity: str, kind: str, rule: str) -> str:
    return f"contract:{entity}:{kind}:{rule}"


def _legacy_keys(entity: str, days: list[str]) -> list[str]:
    """Keys of the per-day incidents opened before grouping (contract:<entity>:<day>:<action>): re-running their
    day resolves them, and whatever still breaks feeds the grouped incident instead."""
    return [f"contract:{entity}:{d}:{k}" for d in days for k in (QUARANTINE_KIND, BLOCK_KIND)]


def record_contract_findings(con: duckdb.DuckDBPyConnection, *, entity: str, owner: str, version: str,
                             days: list[str], findings: list[Finding], run_id: str | None,
                             now: datetime) -> dict[str, list[str]]:
    """Replace what ``days`` contribute to the contract incidents of ``entity`` with ``findings`` (this run's), open
    the incidents of new causes (notifying the owner of a newly blocked publication), and resolve those no day
    contributes to any more. Runs inside the caller's transaction. Returns incident ids per day."""
    by_run = f"run {run_id}" if run_id else "a call outside Dagster (no run id)"
    _resolve_legacy(con, entity, days, now, by_run)
    scope = f"contract:{entity}:"
    open_rows = con.execute(f"SELECT dedup_key, incident_id FROM ops.incidents WHERE {OPEN_SQL} AND origin = "
                            f"'contract' AND starts_with(dedup_key, ?)", [scope]).fetchall()
    open_by_key = dict(open_rows)
    day_list = sorted(set(days))
    # When this day first showed the cause (kept across re-runs), and which open incidents the re-run days fed.
    earlier = {}
    touched: dict[str, list[str]] = {}
    if open_by_key:
        for iid, part, first in con.execute(
                "SELECT incident_id, partition_key, first_seen_at FROM ops.incident_partitions WHERE incident_id IN "
                "(SELECT unnest(?::VARCHAR[])) AND partition_key IN (SELECT unnest(?::VARCHAR[]))",
                [list(open_by_key.values()), day_list]).fetchall():
            earlier[(iid, part)] = first
            touched.setdefault(iid, []).append(part)
        con.execute("DELETE FROM ops.incident_partitions WHERE incident_id IN (SELECT unnest(?::VARCHAR[])) "
                    "AND partition_key IN (SELECT unnest(?::VARCHAR[]))", [list(open_by_key.values()), day_list])

    per_day: dict[str, list[str]] = {d: [] for d in day_list}
    new_ids: dict[str, Finding] = {}
    rows = []
    for f in sorted(findings, key=lambda f: (f.kind, f.rule, f.partition)):
        key = contract_key(entity, f.kind, f.rule)
        iid = open_by_key.get(key)
        if iid is None:
            iid, _ = open_incident(
                con, severity="SEV3", origin="contract", asset_key=f"clean/{entity}", rule=f.rule,
                title=f"{entity}: {f.rule}", details={}, owner=owner, dedup_key=key, opened_at=now, entity=entity,
                partition_key=f.partition)
            open_by_key[key] = iid
            new_ids[iid] = f
        touched.setdefault(iid, [])
        per_day.setdefault(f.partition, []).append(iid)
        rows.append([iid, f.partition, f.rows, earlier.get((iid, f.partition), now), now, run_id,
                     json.dumps(f.samples[:SAMPLES], default=str),
                     json.dumps({"columns": f.columns, "held": f.held, "kind": f.kind})])
    if rows:
        con.executemany("INSERT INTO ops.incident_partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    key_of = {v: k for k, v in open_by_key.items()}
    for iid, parts in touched.items():
        _refresh_contract_incident(con, iid, key_of[iid], entity, version, now, by_run, parts)
    for iid, f in new_ids.items():
        if f.kind == BLOCK_KIND:
            _notify_blocked(con, iid, f, entity=entity, owner=owner)
    return per_day


def _resolve_legacy(con: duckdb.DuckDBPyConnection, entity: str, days: list[str], now: datetime,
                    by_run: str) -> None:
    """Resolve the per-day incidents of ``days`` opened before grouping (see `_legacy_keys`)."""
    resolve_legacy = con.execute(
        f"SELECT dedup_key FROM ops.incidents WHERE {OPEN_SQL} AND dedup_key IN (SELECT unnest(?::VARCHAR[]))",
        [_legacy_keys(entity, days)]).fetchall()
    for (key,) in resolve_legacy:
        resolve_incidents(con, key, resolved_at=now,
                          evidence=f"superseded by the grouped incidents: day {key.split(':')[2]} re-run by {by_run}")


def _notify_blocked(con: duckdb.DuckDBPyConnection, iid: str, f: Finding, *, entity: str, owner: str) -> None:
    """Tell the owner that a new incident blocks the publication of ``f.partition``, with the rows to repair."""
    # Local: keys loads Dagster, and the CLI imports this module at start-up (`gtm-pipeline --help` stays quick).
    from gtm_pipeline import keys

    title, samples = one_row(con, "SELECT title, samples FROM ops.incidents WHERE incident_id = ?", [iid])
    lines = "\n".join(f"- {s['file']}:{s['line']} {s['reason']}" for s in json.loads(samples or "[]"))
    notify_owner(con, owner=owner, subject=title, asset_key=f"clean/{entity}", incident_id=iid,
                 # The sentence every output uses for a blocked day (datatime.blocked_text), then the rows.
                 body=blocked_text(f"clean/{entity}", (f.partition,),
                                   check=keys.RULE_CHECKS.get(f.rule.split(":")[0], f.rule),
                                   rule=f.rule.split(":")[0], rows=f.rows)
                      + f"\nRepair these rows and the day publishes:\n{lines}"
                      f"\nIncident: gtm-pipeline incidents show {iid} (it resolves itself when no day is "
                      f"blocked any more)")


def _refresh_contract_incident(con, iid: str, key: str, entity: str, version: str, now: datetime, by_run: str,
                               rerun_days: list[str]) -> None:
    """Recompute an incident's count, days, first/last seen and samples from its partitions; resolve it with the
    evidence when none is left."""
    parts = con.execute("SELECT partition_key, occurrences, first_seen_at, last_seen_at, samples, details "
                        "FROM ops.incident_partitions WHERE incident_id = ? ORDER BY partition_key",
                        [iid]).fetchall()
    if not parts:
        last = max(rerun_days) if rerun_days else "-"
        resolve_incidents(con, key, resolved_at=now,
                          evidence=f"0 rows remain; last day re-run {last} by {by_run}")
        return
    kind, rule = key.split(":", 3)[2:4]
    n = sum(p[1] for p in parts)
    days = [p[0] for p in parts]
    columns: dict[str, int] = {}
    held = 0
    samples: list[dict] = []
    for p in parts:
        det = json.loads(p[5] or "{}")
        for c, k in det.get("columns", {}).items():
            columns[c] = columns.get(c, 0) + k
        held += det.get("held", 0)
    # Samples: the first of each day before the second of any, so a few lines show the spread over days.
    per = [json.loads(p[4] or "[]") for p in parts]
    for i in range(SAMPLES):
        for day, smp in zip(days, per):
            if i < len(smp) and len(samples) < SAMPLES:
                samples.append({**smp[i], "day": day})
    span = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    cols = ", ".join(f"{c} {k}" for c, k in sorted(columns.items(), key=lambda kv: -kv[1])) or "row check"
    if kind == BLOCK_KIND:
        what = "value(s) out of range" if rule == "range" else f"row(s) breaking {rule}"
        title = (f"{entity} not published on {len(days)} day(s) ({span}): {n} {what} ({cols}); {held} row(s) "
                 f"held (contract {entity}@{version})")
    else:
        title = (f"{entity}: {n} row(s) quarantined for {rule} ({cols}) on {len(days)} day(s) ({span}) "
                 f"(contract {entity}@{version})")
    details = {"kind": kind, "rows": n, "columns": columns, "days": len(days), "held": held,
               "contract": f"{entity}@{version}"}
    con.execute("UPDATE ops.incidents SET occurrences = ?, first_partition = ?, last_partition = ?, partitions = ?, "
                "first_seen_at = least(coalesce(first_seen_at, ?), ?), last_seen_at = ?, samples = ?, title = ?, "
                "details = ?, updated_at = ? WHERE incident_id = ?",
                [n, days[0], days[-1], days, min(p[2] for p in parts), min(p[2] for p in parts),
                 max(p[3] for p in parts), json.dumps(samples, default=str), title, json.dumps(details), now, iid])


# --- operating incidents: declare, acknowledge, resolve, read -------------------------------------------------


def declare(con: duckdb.DuckDBPyConnection, *, severity: str, title: str, by: str, entity: str | None = None,
            asset_key: str | None = None, owner: str | None = None, now: datetime | None = None) -> str:
    """An operator declares an incident. Its asset key names the entity's clean table and/or the asset, so the
    decision pre-checks (which read asset keys) see a SEV2 on opportunity or on metrics/cac_per_sqo."""
    if severity not in SEVERITIES:
        raise GtmPipelineError(f"incidents open: severity {severity!r} is not one of {', '.join(SEVERITIES)}; "
                               f"use e.g. --severity SEV2")
    if not title.strip():
        raise GtmPipelineError("incidents open: --title is empty; say what is wrong, e.g. --title 'CRM export "
                               "double-counts renewals'")
    ensure_base(con)
    now = now or utcnow()
    keys = ([f"clean/{entity}"] if entity else []) + ([asset_key] if asset_key else [])
    n = scalar(con, "SELECT count(*) FROM ops.incidents WHERE origin = 'manual'")
    # Each declaration is its own incident: the key is unique, so nothing dedups it away.
    iid, _ = open_incident(con, severity=severity, origin="manual", asset_key=", ".join(keys) or "platform",
                           rule="manual", title=title.strip(), details={"declared_by": by},
                           owner=owner or by, dedup_key=f"manual:{now.isoformat()}:{n}", opened_at=now,
                           entity=entity)
    return iid


def get(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict:
    ensure_base(con)
    row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM ops.incidents WHERE incident_id = ?",
                      [incident_id]).fetchone()
    if row is None:
        raise GtmPipelineError(f"incident {incident_id!r} not found in ops.incidents; list the ids with "
                               f"'gtm-pipeline incidents list --all'")
    return dict(zip(COLUMNS, row))


def acknowledge(con: duckdb.DuckDBPyConnection, incident_id: str, *, by: str, now: datetime | None = None) -> dict:
    """Someone is on it: status acknowledged. It stays open for every gate (dedup, decision pre-checks)."""
    inc = get(con, incident_id)
    if inc["status"] not in OPEN_STATUSES:
        raise GtmPipelineError(f"incident {incident_id} is {inc['status']} (by {inc['resolved_by']}); nothing to "
                               f"acknowledge -- open a new one with 'gtm-pipeline incidents open' if it is back")
    now = now or utcnow()
    con.execute("UPDATE ops.incidents SET status = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?, "
                "updated_at = ? WHERE incident_id = ?", [now, by, now, incident_id])
    return get(con, incident_id)


def resolve(con: duckdb.DuckDBPyConnection, incident_id: str, *, by: str, note: str,
            now: datetime | None = None) -> dict:
    """A person resolves an incident, saying what was done. A partitioned (contract) incident whose days still
    break reopens as a new incident on the next run of such a day."""
    inc = get(con, incident_id)
    if inc["status"] not in OPEN_STATUSES:
        raise GtmPipelineError(f"incident {incident_id} is already {inc['status']} at {inc['resolved_at']} by "
                               f"{inc['resolved_by']}; nothing to resolve")
    if not note.strip():
        raise GtmPipelineError(f"incidents resolve {incident_id}: --note is empty; say what fixed it")
    now = now or utcnow()
    con.execute("UPDATE ops.incidents SET status = 'resolved', resolved_at = ?, resolved_by = ?, resolution = ?, "
                "updated_at = ? WHERE incident_id = ?", [now, by, note.strip(), now, incident_id])
    # Its days no longer feed it: the next run of a day that still breaks opens a fresh incident.
    con.execute("DELETE FROM ops.incident_partitions WHERE incident_id = ?", [incident_id])
    return get(con, incident_id)


def list_incidents(con: duckdb.DuckDBPyConnection, include_closed: bool = False) -> list[dict]:
    """Open (and acknowledged) incidents, worst severity first, then most recently seen; all with
    ``include_closed``."""
    ensure_base(con)
    where = "" if include_closed else f"WHERE {OPEN_SQL}"
    rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM ops.incidents {where} "
                       f"ORDER BY status IN ('open', 'acknowledged') DESC, severity, "
                       f"coalesce(last_seen_at, opened_at) DESC, incident_id").fetchall()
    return [dict(zip(COLUMNS, r)) for r in rows]


def target(inc: dict) -> str:
    """What the incident is about, short: the entity or the asset key(s)."""
    return inc.get("entity") or inc.get("asset_key") or "-"


def runbook(inc: dict) -> list[str]:
    """The steps that move an incident forward, first one first (``incidents list`` shows the first, ``incidents
    show`` all). Contract incidents resolve themselves once their days are re-run clean; the rest say how."""
    origin, rule, e, iid = inc.get("origin"), inc.get("rule") or "", inc.get("entity"), inc["incident_id"]
    if inc.get("status") not in OPEN_STATUSES:
        return []
    if origin == "contract" and e:
        blocked = f":{BLOCK_KIND}:" in (inc.get("dedup_key") or "")
        first = (f"gtm-pipeline quarantine repair --enum-map MAP.yaml --entity {e}" if rule == "enum" and not blocked
                 else f"gtm-pipeline quarantine list --entity {e} --rule {rule} --export fix.csv")
        return [first,
                *([] if first.startswith("gtm-pipeline quarantine repair") else
                  ["edit fix.csv, then: gtm-pipeline quarantine repair --csv fix.csv"]),
                f"gtm-pipeline quarantine release --entity {e}",
                "gtm-pipeline quarantine backfill   (re-cleans the affected days; the incident resolves itself)",
                "or, for a corrected re-delivery of the files: gtm-pipeline run --from FIRST_DAY --to LAST_DAY"]
    if origin == "contract":  # a per-day incident from before grouping: re-running its day resolves it
        return ["gtm-pipeline run --from DAY --to DAY   (the day in its title)"]
    if origin == "metric":
        name = (inc.get("asset_key") or "").removeprefix("metrics/")
        return [f"gtm-pipeline metrics refresh {name}   (after fixing the data or the contract; resolves on publish)",
                "gtm-pipeline metrics status"]
    if origin == "slo":
        return ["gtm-pipeline slo report   (which input is stale, and since when)",
                "re-run or repair that input; the SLO sensor resolves the incident when the burn stops"]
    return [f"gtm-pipeline incidents resolve {iid} --by NAME --note TEXT   (when fixed)"]


def next_step(inc: dict) -> str:
    steps = runbook(inc)
    return steps[0].split("   (")[0] if steps else "-"
