"""What a metric column means for one randomised unit, so an experiment can be read per arm.

A metric of the metric layer aggregates units (``sql_funnel.sql_rate`` = SQLs / leads); an experiment needs the
unit-level value that aggregate is made of, as of a look. Each entry gives the units (which records, exposed when)
and the value of one unit as of the end of a look (``{as_of}``, an exclusive TIMESTAMP literal), in SQL over the
clean and published tables. The aggregate of the values over all units is the metric's own definition (the tests
hold the two together), so a readout and the metric layer never disagree about what "SQL rate" is.
"""

from __future__ import annotations

from dataclasses import dataclass

from gtm_pipeline.metrics.funnel import SQL_STATUSES


@dataclass(frozen=True)
class Outcome:
    unit: str               # lead | account
    metric: str
    column: str
    binary: bool            # a 0/1 value per unit (a rate) or a number (a mean)
    units_sql: str          # SELECT unit_id, exposed_at FROM ... (every unit that can enter the experiment)
    value_sql: str          # SELECT unit_id, value FROM ... WHERE ... (as of {as_of}); units absent count 0
    description: str
    # Dollars of contribution margin that +1 of the value is worth, from the metric layer (the backlog's $ impact);
    # None: not a metric an experiment is run to move (a guardrail).
    dollars_sql: str | None = None
    dollars_text: str = ""

    @property
    def reads(self) -> tuple[str, ...]:
        import re

        return tuple(sorted(set(re.findall(r"\{([a-z_.]+)\}", self.units_sql + self.value_sql)) - {"as_of"}))

    def sql(self, text: str, table, as_of: str | None = None) -> str:
        """``text`` with each {input} replaced by ``table(input)`` (and {as_of} by the look's end)."""
        for name in self.reads:
            text = text.replace("{" + name + "}", table(name))
        return text.replace("{as_of}", as_of) if as_of is not None else text


# Tables are named by their input names in braces ({clean.lead}, {fact_bookings}), resolved by the caller (the metric
# layer's BuildContext.table keeps lineage honest); `reads` lists them.
_LEADS = "SELECT lead_id AS unit_id, created_at AS exposed_at FROM {clean.lead}"
_ACCOUNTS = "SELECT account_id AS unit_id, created_at AS exposed_at FROM {clean.account}"

OUTCOMES: dict[tuple[str, str, str], Outcome] = {
    ("lead", "sql_funnel", "sql_rate"): Outcome(
        "lead", "sql_funnel", "sql_rate", True, _LEADS,
        f"SELECT lead_id AS unit_id, 1.0 AS value FROM {{clean.lead}} WHERE status IN {SQL_STATUSES} "
        "AND coalesce(status_changed_at, created_at) < {as_of}",
        "the lead reached SQL (status sql or converted) by the end of the look",
        "SELECT (SELECT sql_to_win FROM metrics.sql_funnel WHERE channel = 'all' AND week = 'all') "
        "* (SELECT monthly_cm FROM metrics.payback_by_segment WHERE segment = 'all') * 12",
        "one more SQL = SQL-to-win (sql_funnel) x a new customer's monthly CM (payback_by_segment) x 12 months"),
    ("lead", "routing_health", "unassigned"): Outcome(
        "lead", "routing_health", "unassigned", True, _LEADS,
        "SELECT lead_id AS unit_id, 1.0 AS value FROM {clean.lead} "
        "WHERE owner_id IS NULL OR assigned_at IS NULL OR assigned_at >= {as_of}",
        "the lead had no owner at the end of the look"),
    ("account", "fact_bookings", "amount"): Outcome(
        "account", "fact_bookings", "amount", False, _ACCOUNTS,
        "SELECT account_id AS unit_id, sum(amount) AS value FROM {fact_bookings} "
        "WHERE booked_at < {as_of} GROUP BY 1",
        "bookings of the account (sum of amount) by the end of the look",
        "SELECT gm_pct FROM metrics.gm_pct WHERE segment = 'all'",
        "one more dollar booked = its gross margin (gm_pct)"),
}


def outcome_for(unit: str, metric: str, column: str) -> Outcome | None:
    return OUTCOMES.get((unit, metric, column))
