"""The items of a launch gate (spec 000 §6, issue 20 §2), each judged on its evidence and hashed.

One `Item` per contract field that needs evidence. ``digest`` is ``sha256:<hex>`` of the evidence file's bytes, or of
the canonical JSON of the content when the contract text is itself the evidence (positioning, ICP, pricing, the
escalation path, a region's regime entry). ``stable`` items are compared at apply with the digest recorded at the
check -- an evidence file changed in between refuses the apply; live items (event volume, a rehearsal's age) are only
judged again, because their figures move with the clock.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gtm_pipeline.decisions.hashing import canonical_json, sha256_hex
from gtm_pipeline.launches.contract import REGIMES_FILE, Launch, RegimesSpec
from gtm_pipeline.warehouse import table_exists

EVAL_COLUMNS = ("case_id", "task_success", "hallucinated")


@dataclass(frozen=True)
class Item:
    field: str                  # the contract field, as messages name it: rollback.rehearsal, events[0], ...
    passed: bool
    detail: str                 # the figure on a pass; the problem and its fix on a failure
    evidence: str = ""          # what was hashed: a file (relative to the repository) or "content"
    digest: str = ""            # sha256:<hex>; empty when there is nothing to hash
    stable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_digest(value: Any) -> str:
    return "sha256:" + sha256_hex(canonical_json(value))


def _file(launch: Launch, rel: str) -> tuple[Path, str]:
    return launch.evidence_dir / rel, f"contracts/launches/{rel}"


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _missing(field: str, shown: str, what: str) -> Item:
    return Item(field, False, f"evidence file {shown} not found; {what} and point {field} at it", shown)


def content_items(launch: Launch) -> list[Item]:
    s = launch.spec
    return [Item(f, True, "stated in the contract", "content", content_digest(v)) for f, v in (
        ("positioning", s.positioning), ("icp", s.icp.model_dump()),
        ("pricing_hypotheses", [p.model_dump() for p in s.pricing_hypotheses]),
        ("escalation", [e.model_dump() for e in s.escalation]))]


def _flag(raw: str | None, field: str, row: int) -> int:
    if raw is None or raw.strip() not in ("0", "1"):
        raise ValueError(f"row {row}: {field} must be 0 or 1, got {raw!r}")
    return int(raw)


def eval_item(launch: Launch) -> Item:
    """Task-success and hallucination rates of the eval results file against the suite's thresholds."""
    suite, field = launch.spec.eval_suite, "eval_suite.evidence"
    path, shown = _file(launch, suite.evidence)
    if not path.is_file():
        return _missing(field, shown, f"run the eval suite {suite.suite!r}, save its results "
                                      f"(CSV: {', '.join(EVAL_COLUMNS)})")
    digest = file_digest(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in EVAL_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"missing column(s) {', '.join(missing)}; expected {', '.join(EVAL_COLUMNS)}")
            rows = [(_flag(r["task_success"], "task_success", i), _flag(r["hallucinated"], "hallucinated", i))
                    for i, r in enumerate(reader, 2)]
    except (ValueError, UnicodeDecodeError) as e:
        return Item(field, False, f"{shown} is not a valid eval results file: {e}", shown, digest)
    if len(rows) < suite.min_cases:
        return Item(field, False, f"{shown} holds {len(rows)} case(s), fewer than eval_suite.min_cases "
                                  f"{suite.min_cases}; run the whole suite", shown, digest)
    success = sum(r[0] for r in rows) / len(rows)
    halluc = sum(r[1] for r in rows) / len(rows)
    t = suite.thresholds
    figures = f"task success {success:.3f} (min {t.task_success_min}), hallucination rate {halluc:.3f} " \
              f"(max {t.hallucination_rate_max}) over {len(rows)} cases of {shown}"
    if success < t.task_success_min:
        return Item("eval_suite.thresholds.task_success_min", False, f"{figures}: task success below the "
                    f"threshold; fix the failing cases and re-run the suite", shown, digest)
    if halluc > t.hallucination_rate_max:
        return Item("eval_suite.thresholds.hallucination_rate_max", False, f"{figures}: hallucination rate above "
                    f"the threshold; fix the ungrounded answers and re-run the suite", shown, digest)
    return Item(field, True, figures, shown, digest)


def instrumentation_items(con: duckdb.DuckDBPyConnection, launch: Launch, now: datetime) -> list[Item]:
    """Each listed event must have volume > 0 in the window that ends now (judged on the one clock)."""
    ins = launch.spec.instrumentation
    schema, table = ins.table.split(".")
    if not table_exists(con, schema, table):
        return [Item("instrumentation.table", False, f"table {ins.table} is not in the warehouse; load it "
                     f"(gtm-pipeline run) or name the table that holds the events", ins.table, stable=False)]
    since = now - timedelta(days=ins.window_days)
    counts = dict(con.execute(
        f'SELECT "{ins.event_column}", count(*) FROM {schema}."{table}" WHERE "{ins.time_column}" > ? AND '
        f'"{ins.time_column}" <= ? AND "{ins.event_column}" IN (SELECT unnest(?)) GROUP BY 1',
        [since, now, list(ins.events)]).fetchall())
    window = f"{since:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC"
    out = []
    for i, ev in enumerate(ins.events):
        n = int(counts.get(ev, 0))
        where = f"{ins.table}.{ins.event_column} = {ev!r}"
        if n > 0:
            out.append(Item(f"instrumentation.events[{i}]", True, f"{where}: {n:,} event(s) in {window}",
                            ins.table, content_digest({"event": ev, "count": n, "window": window}), stable=False))
        else:
            out.append(Item(f"instrumentation.events[{i}]", False, f"{where}: no event in the last "
                            f"{ins.window_days} days ({window}); instrument it and ship it to the source before "
                            f"the launch", ins.table, stable=False))
    return out


def rehearsal_item(launch: Launch, today: date) -> Item:
    """The rollback must have been rehearsed within ``max_rehearsal_age_days`` (inclusive), on the product clock."""
    rb, field = launch.spec.rollback, "rollback.rehearsal"
    fix = (f"rehearse the rollback (flip {rb.flag} back within {rb.time_limit_minutes:g} minutes), record the drill "
           f"and set {field}.rehearsed_on and {field}.evidence")
    if rb.rehearsal is None:
        return Item(field, False, f"no rehearsal recorded; {fix}")
    age = (today - rb.rehearsal.rehearsed_on).days
    path, shown = _file(launch, rb.rehearsal.evidence)
    if age < 0:
        return Item(f"{field}.rehearsed_on", False, f"{rb.rehearsal.rehearsed_on} is in the future (today is "
                    f"{today}); record the day the drill was run", shown)
    if age > rb.max_rehearsal_age_days:
        return Item(f"{field}.rehearsed_on", False, f"rehearsed {rb.rehearsal.rehearsed_on}, {age} days ago, more "
                    f"than rollback.max_rehearsal_age_days {rb.max_rehearsal_age_days}; {fix}", shown)
    if not path.is_file():
        return _missing(f"{field}.evidence", shown, "record the drill")
    digest = content_digest({"rehearsed_on": rb.rehearsal.rehearsed_on.isoformat(), "file": file_digest(path)})
    return Item(f"{field}", True, f"rehearsed {rb.rehearsal.rehearsed_on} ({age} days ago, limit "
                f"{rb.max_rehearsal_age_days}); record {shown}", shown, digest)


def enablement_items(launch: Launch) -> list[Item]:
    out = []
    for i, e in enumerate(launch.spec.enablement):
        field = f"enablement[{i}].evidence"
        path, shown = _file(launch, e.evidence)
        out.append(Item(field, True, f"{e.name} for {e.audience}: {shown}", shown, file_digest(path))
                   if path.is_file() else _missing(field, shown, f"publish {e.name!r} for {e.audience}"))
    return out


def region_items(launch: Launch, regimes: RegimesSpec, today: date) -> list[Item]:
    """Each region must be a regime of the regimes file; its entry (source, as_of, obligations) is the evidence."""
    out = []
    for i, r in enumerate(launch.spec.regions):
        reg = regimes.regimes.get(r)
        if reg is None:
            out.append(Item(f"regions[{i}]", False, f"{r!r} is not a regime of {REGIMES_FILE}; known: "
                            f"{', '.join(sorted(regimes.regimes))}; add it there (with source and as_of)"))
            continue
        in_force = [o.id for o in reg.obligations if o.effective <= today]
        out.append(Item(f"regions[{i}]", True, f"{r} ({reg.name}, {regimes.version}, as of {reg.as_of}, source "
                        f"{reg.source}): in force {', '.join(in_force) or 'none yet'}", REGIMES_FILE,
                        content_digest({"version": regimes.version, r: reg.model_dump(mode="json")})))
    return out


def judge(con: duckdb.DuckDBPyConnection, launch: Launch, regimes: RegimesSpec, now: datetime) -> list[Item]:
    """Every item of the gate, in the contract's order."""
    return [*content_items(launch)[:3], eval_item(launch), *instrumentation_items(con, launch, now),
            rehearsal_item(launch, now.date()), *enablement_items(launch), content_items(launch)[3],
            *region_items(launch, regimes, now.date())]
