"""Deterministic assignment: a unit's arm is a function of (salt, unit id) only, the same in Python and in SQL.

The first 60 bits of md5(``salt:unit_id``) give a number u in [0, 1): units with u < holdout_share are held out of
every arm; the rest are split over the arms by their weights in order. A different salt re-randomises; the same salt
never moves a unit, whatever else changes (so a re-run, a backfill or a second reader agree).
"""

from __future__ import annotations

import hashlib

from gtm_pipeline.experiments.contract import Experiment

_BITS = 60
_SCALE = float(1 << _BITS)
HOLDOUT = "holdout"


def bucket(unit_id: str, salt: str) -> float:
    h = hashlib.md5(f"{salt}:{unit_id}".encode()).hexdigest()
    return int(h[:15], 16) / _SCALE


def _cuts(exp: Experiment) -> list[tuple[float, str]]:
    """(upper bound of u, arm) in order; units above the holdout share the rest by weight."""
    total = sum(a.weight for a in exp.arms)
    cuts, edge = [], exp.holdout_share
    for a in exp.arms:
        edge += (1 - exp.holdout_share) * a.weight / total
        cuts.append((edge, a.name))
    cuts[-1] = (1.0, cuts[-1][1])   # no unit falls off the end to rounding
    return cuts


def arm_of(exp: Experiment, unit_id: str) -> str:
    u = bucket(unit_id, exp.salt)
    if u < exp.holdout_share:
        return HOLDOUT
    for edge, name in _cuts(exp):
        if u < edge:
            return name
    return exp.arms[-1].name


def arm_sql(exp: Experiment, id_expr: str) -> str:
    """SQL CASE giving the arm of the unit whose id is ``id_expr`` (identical to `arm_of`)."""
    salt = exp.salt.replace("'", "''")
    u = (f"(CAST(('0x' || substr(md5('{salt}:' || CAST({id_expr} AS VARCHAR)), 1, 15)) AS UBIGINT) "
         f"/ {_SCALE!r})")
    whens = [f"WHEN {u} < {exp.holdout_share!r} THEN '{HOLDOUT}'"] if exp.holdout_share > 0 else []
    whens += [f"WHEN {u} < {edge!r} THEN '{name}'" for edge, name in _cuts(exp)[:-1]]
    return f"CASE {' '.join(whens)} ELSE '{exp.arms[-1].name}' END"
