"""``metrics.experiment_readout``: every look of every experiment in ``contracts/experiments`` (one row per
experiment, look and arm), computed by `gtm_pipeline.experiments.readout` from the clean and published tables.

A computation of the metric layer like any other, so the readout is written, audited and published (WAP), stays
under the ``metric_age`` SLO, and a blocked or stale input shows as a blocked or stale readout rather than a
confident figure over old data.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from gtm_pipeline.experiments.contract import load_experiments
from gtm_pipeline.experiments.readout import readout
from gtm_pipeline.metrics.registry import BuildContext, computation

COLUMNS = ("experiment", "look", "as_of", "arm", "is_control", "units", "total", "total_sq", "holdout_units",
           "estimate", "ci_low", "ci_high", "p_value", "p_min", "srm_p", "method", "guardrails", "verdict")


def _num(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) or math.isnan(x) else float(x)


@computation("experiment_readout", reads=("clean.lead", "clean.account", "fact_bookings"), kinds={"duckdb", "python"},
             columns=COLUMNS, order_by="experiment, look DESC, is_control DESC, arm")
def experiment_readout(con, ctx: BuildContext) -> pd.DataFrame:
    rows = []
    exps = load_experiments(ctx.contracts_dir) if ctx.contracts_dir is not None else {}
    for exp in exps.values():
        for look in readout(con, exp, ctx.now.date(), table=ctx.table):
            comps = {c.arm: c for c in look.comparisons}
            guards = json.dumps([{"metric": g.metric, "arm": g.arm, "direction": g.direction,
                                  "tolerance": g.tolerance, "estimate": _num(g.estimate.estimate),
                                  "p_adjusted": g.p_adjusted, "breached": g.breached} for g in look.guardrails])
            for a in look.arms:
                c = comps.get(a.arm)
                rows.append({
                    "experiment": exp.experiment, "look": look.look, "as_of": look.as_of, "arm": a.arm,
                    "is_control": a.arm == exp.control, "units": a.n, "total": a.total, "total_sq": a.total_sq,
                    "holdout_units": look.holdout,
                    "estimate": _num(c.estimate.estimate) if c else None,
                    "ci_low": _num(c.estimate.ci_low) if c else None,
                    "ci_high": _num(c.estimate.ci_high) if c else None,
                    "p_value": c.estimate.p_value if c else None, "p_min": c.p_min if c else None,
                    "srm_p": look.srm_p, "method": exp.method, "guardrails": guards, "verdict": look.verdict})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if frame.empty:
        # typed empty columns, so the published table has the schema even before the first experiment
        return frame.astype({"experiment": "string", "look": "int64", "as_of": "datetime64[us]", "arm": "string",
                             "is_control": "bool", "units": "int64", "total": "float64", "total_sq": "float64",
                             "holdout_units": "int64", "estimate": "float64", "ci_low": "float64",
                             "ci_high": "float64", "p_value": "float64", "p_min": "float64", "srm_p": "float64",
                             "method": "string", "guardrails": "string", "verdict": "string"})
    return frame
