"""The biweekly architecture sync's sections (spec 000 §5 "Biweekly architecture sync"; issue 20 §4): automation
reliability, the routing DLQ, schema drift, quarantine and contract changes over the period since the previous sync.
Read from ops.partition_status, ops.publications, ops.notifications, ops.routing_dlq, raw.schema_drift, the
quarantine schema and decisions.log.

"Every other week" counts ISO weeks without a break from Monday 2024-01-01 (2024-W01) and runs on the even counts.
The parity of the ISO week *number* would not do: 2026 has 53 weeks, so 2026-W53 and 2027-W01 are both odd and a
number rule would leave three weeks between two syncs; the count alternates across every year boundary.
"""

from __future__ import annotations

from datetime import date

import duckdb

from gtm_pipeline.decisions import lifecycle
from gtm_pipeline.warehouse import existing_tables, one_row, scalar, table_exists

SYNC_WEEKDAY = 3                          # Thursday
EPOCH_MONDAY = date(2024, 1, 1)           # ISO 2024-W01; weeks counted from here


def weeks_since_epoch(d: date) -> int:
    monday = d.toordinal() - d.weekday()
    return (monday - EPOCH_MONDAY.toordinal()) // 7


def is_architecture_sync_day(d: date) -> bool:
    """A Thursday of an even week counted from 2024-W01 (every other ISO week, unbroken across 53-week years)."""
    return d.weekday() == SYNC_WEEKDAY and weeks_since_epoch(d) % 2 == 0


def _in(period) -> list:
    return [period.start, period.end]


def reliability_lines(con: duckdb.DuckDBPyConnection, period) -> list[str]:
    """Day partitions published vs blocked, metric publications held back by a blocked input, undelivered alerts."""
    out = []
    if table_exists(con, "ops", "partition_status"):
        rows = con.execute("SELECT split_part(asset_key, '/', 1) AS stage, status, count(*) FROM ops.partition_status "
                           "WHERE updated_at > ? AND updated_at <= ? GROUP BY 1, 2 ORDER BY 1, 2",
                           _in(period)).fetchall()
        by: dict[str, dict[str, int]] = {}
        for stage, status, n in rows:
            by.setdefault(stage, {})[status] = int(n)
        for stage, c in by.items():
            total = sum(c.values())
            out.append(f"- {stage} partitions updated: {total:,}, published {c.get('published', 0):,}, blocked "
                       f"{c.get('blocked', 0):,} ({c.get('published', 0) / total:.1%} published)")
    if table_exists(con, "ops", "publications"):
        n, held = one_row(con, "SELECT count(*), count(*) FILTER (WHERE len(coalesce(blocked_inputs, [])) > 0) "
                               "FROM ops.publications WHERE published_at > ? AND published_at <= ?", _in(period))
        out.append(f"- Publications: {n:,}, {held:,} of them with a blocked input (data time held back)")
    if table_exists(con, "ops", "notifications"):
        waiting = scalar(con, "SELECT count(*) FROM ops.notifications WHERE status IN ('pending', 'failed')")
        out.append(f"- Notifications not delivered yet: {waiting:,}")
    return out or ["- No run has recorded anything yet."]


def dlq_lines(con: duckdb.DuckDBPyConnection, period) -> list[str]:
    if not table_exists(con, "ops", "routing_dlq"):
        return ["- No routing DLQ yet."]
    by = dict(con.execute("SELECT status, count(*) FROM ops.routing_dlq GROUP BY 1").fetchall())
    new = scalar(con, "SELECT count(*) FROM ops.routing_dlq WHERE first_failed_at > ? AND first_failed_at <= ?",
                 _in(period))
    out = [f"- Routing DLQ: {by.get('open', 0):,} open, {by.get('replayed', 0):,} replayed; {new:,} new this period"]
    for reason, n, oldest in con.execute("SELECT reason, count(*), min(first_failed_at) FROM ops.routing_dlq WHERE "
                                         "status = 'open' GROUP BY 1 ORDER BY 2 DESC LIMIT 5").fetchall():
        out.append(f"  - {reason}: {n:,} open, oldest {oldest:%Y-%m-%d %H:%M} UTC")
    return out


def drift_lines(con: duckdb.DuckDBPyConnection, period) -> list[str]:
    if not table_exists(con, "raw", "schema_drift"):
        return ["- No schema drift recorded."]
    rows = con.execute("SELECT _source, _table, count(*), list_distinct(flatten(list(missing_columns))), "
                       "list_distinct(flatten(list(unexpected_columns))), list_distinct(flatten(list(renamed))) "
                       "FROM raw.schema_drift WHERE detected_at > ? AND detected_at <= ? GROUP BY 1, 2 ORDER BY 1, 2",
                       _in(period)).fetchall()
    out = []
    for src, tbl, n, missing, unexpected, renamed in rows:
        parts = [f"{k} {', '.join(sorted(v))}" for k, v in (("missing", missing), ("unexpected", unexpected),
                                                               ("renamed", renamed)) if v]
        out.append(f"- {src}.{tbl}: {n:,} file(s) drifted -- " + ("; ".join(parts) or "columns reordered"))
    return out or ["- None in this period."]


def quarantine_lines(con: duckdb.DuckDBPyConnection, period) -> list[str]:
    out = []
    for t in sorted(existing_tables(con, "quarantine") - {"repairs"}):
        cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                          "'quarantine' AND table_name = ?", [t]).fetchall()}
        if "status" not in cols:
            continue
        opened, total = one_row(con, f"SELECT count(*) FILTER (WHERE status = 'open'), count(*) "
                                     f'FROM quarantine."{t}"')
        if total:
            out.append(f"- quarantine.{t}: {opened:,} open of {total:,}")
    if table_exists(con, "quarantine", "repairs"):
        n = scalar(con, "SELECT count(*) FROM quarantine.repairs WHERE changed_at > ? AND changed_at <= ?",
                   _in(period))
        out.append(f"- Repairs this period: {n:,}")
    return out or ["- Empty."]


def contract_change_lines(con: duckdb.DuckDBPyConnection, decisions: list[lifecycle.Decision], period) -> list[str]:
    """Metric contracts published under a new version in the period (ops.publications), and playbooks whose version
    changed between a node's proposals before and in the period (decisions.log)."""
    out = []
    if table_exists(con, "ops", "publications"):
        rows = con.execute("""
            WITH now AS (SELECT asset_key, list_distinct(list(version)) AS versions FROM ops.publications
                         WHERE published_at > ? AND published_at <= ? GROUP BY 1),
                 before AS (SELECT asset_key, arg_max(version, published_at) AS version FROM ops.publications
                            WHERE published_at <= ? GROUP BY 1)
            SELECT now.asset_key, before.version, now.versions FROM now JOIN before USING (asset_key) ORDER BY 1""",
            [period.start, period.end, period.start]).fetchall()
        out += [f"- {key}: contract version {old} -> {', '.join(changed)}" for key, old, new in rows
                if (changed := sorted(v for v in new if v != old))]
    seen: dict[str, str] = {}
    for d in sorted(decisions, key=lambda x: x.proposal.entry_id):
        node, version, ts = d.node, d.proposal.playbook_version, d.proposal.ts
        if node in seen and seen[node] != version and ts in period:
            out.append(f"- {node}: playbook {seen[node]} -> {version}")
        seen[node] = version
    return out or ["- None in this period."]


def architecture_sync_sections(dc: lifecycle.DecisionContext, decisions: list[lifecycle.Decision],
                               period) -> list[str]:
    con = dc.con
    return ["## Automation reliability", "", *reliability_lines(con, period),
            "", "## Routing DLQ", "", *dlq_lines(con, period),
            "", "## Schema drift", "", *drift_lines(con, period),
            "", "## Quarantine", "", *quarantine_lines(con, period),
            "", "## Contract changes", "", *contract_change_lines(con, decisions, period), ""]
