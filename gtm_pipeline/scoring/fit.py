"""Fit points from the metric layer: read win rates from ``metrics.win_rate_by_segment``, learn each group's points
(`gtm_pipeline.scoring.points`), and turn them into DuckDB ``CASE`` expressions over a row's columns.

A value that stops matching loses its points: the expression maps the row's *current* value, so an account whose
industry changes gets the new industry's points, and a missing value gets 0 (as HubSpot's score properties do).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from gtm_pipeline.scoring.contract import FIT_GROUPS, LEARNABLE, ScoringModel
from gtm_pipeline.scoring.points import Rate, ValuePoints, group_points, learn_points

RATES_TABLE = "metrics.win_rate_by_segment"


@dataclass(frozen=True)
class GroupTable:
    values: dict[str, ValuePoints]
    unseen: ValuePoints | None        # what a value missing from ``values`` gets (None: 0 points)

    def lookup(self, value: str | None) -> ValuePoints | None:
        if value is None:
            return None
        return self.values.get(value, self.unseen)


def read_rates(con: duckdb.DuckDBPyConnection, table: str = RATES_TABLE, before_month: str | None = None
               ) -> tuple[dict[str, list[Rate]], Rate]:
    """Won and closed per (dimension, value) and overall: the rollup month 'all', or -- to learn on the past
    only -- the sum of the months before ``before_month`` (``YYYY-MM``)."""
    if before_month is None:
        sql = f"SELECT dimension, value, won, closed, win_rate_se FROM {table} WHERE month = 'all'"
        params: list = []
    else:
        sql = (f"SELECT dimension, value, sum(won), sum(closed), NULL FROM {table} "
               f"WHERE month <> 'all' AND month < ? GROUP BY ALL")
        params = [before_month]
    by_dim: dict[str, list[Rate]] = {}
    overall = Rate("all", 0, 0)
    for dim, value, won, closed, se in con.execute(sql, params).fetchall():
        r = Rate(value, int(won or 0), int(closed or 0), None if se is None else float(se))
        if dim == "all":
            overall = r
        elif value != "unknown":      # the metric's label for a missing value, which scores 0 here
            by_dim.setdefault(dim, []).append(r)
    return by_dim, overall


def fit_tables(model: ScoringModel, rates: dict[str, list[Rate]], overall: Rate) -> dict[str, GroupTable]:
    out = {}
    for name, group in model.fit.groups().items():
        learned = (learn_points(rates.get(name, []), overall, group.cap, model.lift_for_cap)
                   if name in LEARNABLE and group.points == "learned" else {})
        values, unseen = group_points(group, learned, group.cap, model.lift_for_cap)
        out[name] = GroupTable(values, unseen)
    return out


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def points_sql(column: str, table: GroupTable) -> str:
    """``CASE`` over ``column``: each value's points, the unseen-value points, 0 for a missing value."""
    whens = " ".join(f"WHEN {column} = {_quote(v)} THEN {p.points!r}" for v, p in sorted(table.values.items()))
    unseen = repr(table.unseen.points) if table.unseen is not None else "0.0"
    return f"CAST(CASE WHEN {column} IS NULL THEN 0.0 {whens} ELSE {unseen} END AS DOUBLE)"


def fit_columns_sql(tables: dict[str, GroupTable], qualify: str = "") -> list[str]:
    """``fit_<group>`` select items for a row whose columns are ``<qualify><group>``."""
    return [f"{points_sql(qualify + g, tables[g])} AS fit_{g}" for g in FIT_GROUPS]
