"""Price elasticity of the win probability, by segment (the pricing playbook's "Elasticity E", spec 002 §4.1).

Model: P(win) = exp(a + E * ln(net price per seat) + industry + channel + creation month), i.e. a constant
elasticity E = d ln P(win) / d ln price, estimated per segment on the opportunities closed so far (won = 1, lost =
0) by a log-link (quasi-Poisson) regression. This is the generator's own model (``win_probability`` in the manifest)
and a standard one for conversion elasticities; the log link makes E the coefficient of ln(price) directly.

* Net price = list price x (1 - discount): discounts and list-price changes are the price variation.
* Industry, channel and creation-month effects are controls. The month effects also absorb right-censoring (recent
  opportunities that closed early are more often losses), which would otherwise bias E when the list price changed
  mid-window. They carry a small ridge penalty so that a level with no win cannot diverge; E is not penalised.
* The standard error is the sandwich (robust) one, valid although a 0/1 outcome is not Poisson. With the price
  variation real discounts give, E needs thousands of closed opportunities per segment to be tight: the table
  says so through ``e_se`` and ``closed``, and the contract warns when E is too imprecise to act on.

Row work is SQL; the regression runs on one small frame per segment (one row per closed opportunity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gtm_pipeline.metrics.registry import BuildContext, computation

RIDGE = 1.0
MAX_ITER = 100
TOL = 1e-10
MIN_CLOSED = 20


@dataclass(frozen=True)
class Fit:
    e: float | None
    se: float | None
    n: int
    converged: bool
    reason: str = ""


def _design(ln_price: np.ndarray, controls: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """[1, ln price, dummies of each control (first level dropped)]; returns X and the number of unpenalised
    columns."""
    cols = [np.ones_like(ln_price), ln_price - ln_price.mean()]
    for c in controls:
        levels = pd.unique(c)
        for lev in levels[1:]:
            cols.append((c == lev).astype(float))
    return np.column_stack(cols), 2


def fit_log_link(y: np.ndarray, ln_price: np.ndarray, controls: list[np.ndarray], ridge: float = RIDGE) -> Fit:
    """Penalised IRLS for E[y] = exp(X b); returns the coefficient of ln price and its sandwich standard error."""
    y = np.asarray(y, float)
    ln_price = np.asarray(ln_price, float)
    n = y.shape[0]
    if n < MIN_CLOSED:
        return Fit(None, None, n, False, f"{n} closed opportunities; at least {MIN_CLOSED} are needed")
    if y.sum() == 0:
        return Fit(None, None, n, False, "no wins")
    if np.std(ln_price) < 1e-9:
        return Fit(None, None, n, False, "no price variation")
    X, free = _design(ln_price, [np.asarray(c) for c in controls])
    penalty = np.full(X.shape[1], ridge)
    penalty[:free] = 0.0
    P = np.diag(penalty)
    b = np.zeros(X.shape[1])
    b[0] = np.log(y.mean())
    converged = False
    for _ in range(MAX_ITER):
        eta = np.clip(X @ b, -30, 30)
        mu = np.exp(eta)
        H = X.T @ (X * mu[:, None]) + P
        g = X.T @ (y - mu) - P @ b
        step = np.linalg.solve(H, g)
        b = b + step
        if np.max(np.abs(step)) < TOL:
            converged = True
            break
    mu = np.exp(np.clip(X @ b, -30, 30))
    H = X.T @ (X * mu[:, None]) + P
    Hinv = np.linalg.inv(H)
    meat = X.T @ (X * ((y - mu) ** 2)[:, None])
    V = Hinv @ meat @ Hinv
    se = float(np.sqrt(V[1, 1])) if V[1, 1] > 0 else None
    return Fit(float(b[1]), se, n, converged, "" if converged else f"did not converge in {MAX_ITER} iterations")


@computation(
    "price_elasticity", reads=("clean.opportunity", "clean.opportunity_stage"), order_by="segment",
    kinds={"duckdb", "python"},
    columns=("segment", "closed", "won", "ln_price_sd", "mean_net_price", "e_hat", "e_se", "note"),
)
def price_elasticity(con, ctx: BuildContext) -> pd.DataFrame:
    opp, ev = ctx.table("clean.opportunity"), ctx.table("clean.opportunity_stage")
    df = con.execute(f"""
        WITH closing AS (
            SELECT opportunity_id, arg_min(to_stage, changed_at) AS outcome FROM {ev}
            WHERE to_stage IN ('closed_won', 'closed_lost') GROUP BY 1)
        SELECT o.segment, coalesce(o.industry, 'unknown') AS industry, coalesce(o.channel, 'unknown') AS channel,
               strftime(o.created_at, '%Y-%m') AS month,
               CAST(o.list_price * (1 - coalesce(o.discount, 0)) AS DOUBLE) AS net_price,
               CASE WHEN c.outcome = 'closed_won' THEN 1.0 ELSE 0.0 END AS won
        FROM {opp} o JOIN closing c USING (opportunity_id)
        WHERE o.segment IS NOT NULL AND o.list_price > 0 AND coalesce(o.discount, 0) < 1
        ORDER BY o.opportunity_id""").df()
    rows = []
    for seg, g in df.groupby("segment", sort=True):
        lp = np.log(g["net_price"].to_numpy())
        fit = fit_log_link(g["won"].to_numpy(), lp,
                           [g["industry"].to_numpy(), g["channel"].to_numpy(), g["month"].to_numpy()])
        rows.append({"segment": seg, "closed": int(len(g)), "won": int(g["won"].sum()),
                     "ln_price_sd": float(np.std(lp)), "mean_net_price": float(g["net_price"].mean()),
                     "e_hat": fit.e, "e_se": fit.se, "note": fit.reason})
    out = pd.DataFrame(rows, columns=["segment", "closed", "won", "ln_price_sd", "mean_net_price", "e_hat", "e_se",
                                      "note"])
    return out.astype({"closed": "int64", "won": "int64", "ln_price_sd": "float64", "mean_net_price": "float64",
                       "e_hat": "float64", "e_se": "float64", "note": "object"})
