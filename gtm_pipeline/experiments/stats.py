"""The statistics of an experiment readout, in numpy and math only (no scipy or statsmodels at runtime).

* **Always-valid inference** (the default, ``always_valid``): the asymptotic confidence sequence of Waudby-Smith et
  al. 2023 (arXiv 2103.06476v7, eqs. 9, 155, 161; GrowthBook calls it GAVI) with the normal mixture's parameter set
  once per experiment from ``S``, the planned total sample size (``rho`` of eq. 161). Its interval and p-value may be
  read at every look without inflating the error rate; the p-value reported is the running minimum over looks
  (it is an anytime-valid p-value, so the minimum is still valid).
* **Fixed horizon** (``fixed_z``): the two-sided z-test, valid read once, at the planned size; peeking at it daily is
  what the always-valid method exists to avoid (the A/A tests show the difference).
* **Sample-ratio mismatch**: Pearson's chi-square of the arms' counts against the planned weights.
* **CUPED**: the pre-period covariate's adjustment ``y - theta (x - mean x)`` with theta pooled over the arms.
* **Benjamini-Hochberg** across guardrail metrics.

Statistics of an arm are sums (n, sum, sum of squares), so a readout is computed from one SQL aggregate per arm.
The reference figures pinned in ``gtm_pipeline_tests/reference/experiments_gbstats.json`` come from gbstats 0.8.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_975 = 1.959963984540054   # two-sided 95 %


@dataclass(frozen=True)
class Arm:
    """Sufficient statistics of one arm: units, the metric's sum and its sum of squares."""

    n: int
    total: float
    total_sq: float
    binary: bool = False       # a 0/1 metric (conversion): variance p (1 - p)

    @classmethod
    def proportion(cls, n: int, conversions: float) -> Arm:
        return cls(n, float(conversions), float(conversions), binary=True)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance of the unit values (n - 1 in the denominator; p (1 - p) for a 0/1 metric)."""
        if self.n < 2:
            return 0.0
        if self.binary:
            p = self.mean
            return p * (1 - p)
        return max(0.0, (self.total_sq - self.total ** 2 / self.n) / (self.n - 1))


@dataclass(frozen=True)
class Estimate:
    method: str
    estimate: float            # treatment mean - control mean (absolute)
    ci_low: float
    ci_high: float
    p_value: float
    n: int                     # units in both arms
    se: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def _diff(control: Arm, treatment: Arm) -> tuple[float, float]:
    """(absolute difference of means, its variance)."""
    var = treatment.variance / treatment.n + control.variance / control.n
    return treatment.mean - control.mean, var


def mixture_rho(planned_n: float, alpha: float = 0.05) -> float:
    """The normal mixture's parameter tuned to be tightest at ``planned_n`` total units (eq. 161)."""
    if planned_n <= 0 or not 0 < alpha < 1:
        raise ValueError(f"planned_n must be > 0 and alpha in (0, 1), got {planned_n!r}, {alpha!r}")
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / planned_n)


def always_valid(control: Arm, treatment: Arm, *, planned_n: float, alpha: float = 0.05,
                 test_value: float = 0.0) -> Estimate:
    """The always-valid interval (eq. 9) and p-value (1 / e-value, eq. 155) at this look; the p-value tests
    difference = ``test_value`` (0: no effect; a guardrail's tolerance: no harm beyond it)."""
    if control.n < 2 or treatment.n < 2:
        return Estimate("always_valid", 0.0, -math.inf, math.inf, 1.0, control.n + treatment.n, math.inf)
    est, var = _diff(control, treatment)
    n = control.n + treatment.n
    rho = mixture_rho(planned_n, alpha)
    if var <= 0:
        # Every unit has the same value in both arms (e.g. no conversion yet): no information about the difference.
        return Estimate("always_valid", est, -math.inf, math.inf, 1.0, n, math.inf)
    s2 = var * n
    tr2p1 = n * rho ** 2 + 1
    width = math.sqrt(s2) * math.sqrt(2 * tr2p1 * math.log(math.sqrt(tr2p1) / alpha) / (n * rho) ** 2)
    st2 = (est - test_value) ** 2 * n / var
    log_evalue = rho ** 2 * st2 / (2 * tr2p1) - 0.5 * math.log(tr2p1)
    p = 1.0 if log_evalue <= 0 else min(1.0, math.exp(-log_evalue))
    return Estimate("always_valid", est, est - width, est + width, p, n, math.sqrt(var))


def fixed_z(control: Arm, treatment: Arm, *, alpha: float = 0.05, test_value: float = 0.0) -> Estimate:
    """The fixed-horizon two-sided z-test of difference = ``test_value`` (valid read once)."""
    if control.n < 2 or treatment.n < 2:
        return Estimate("fixed_z", 0.0, -math.inf, math.inf, 1.0, control.n + treatment.n, math.inf)
    est, var = _diff(control, treatment)
    se = math.sqrt(var)
    z = normal_quantile(1 - alpha / 2)
    if se == 0:
        return Estimate("fixed_z", est, -math.inf, math.inf, 1.0, control.n + treatment.n, math.inf)
    p = math.erfc(abs((est - test_value) / se) / math.sqrt(2))
    return Estimate("fixed_z", est, est - z * se, est + z * se, p, control.n + treatment.n, se)


def normal_quantile(q: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation refined by one Newton step; |error| <
    1e-12 on (1e-10, 1 - 1e-10))."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    lo = 0.02425
    if q < lo:
        t = math.sqrt(-2 * math.log(q))
        x = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / \
            ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
    elif q <= 1 - lo:
        t = q - 0.5
        r = t * t
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * t / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    else:
        t = math.sqrt(-2 * math.log(1 - q))
        x = -(((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / \
            ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
    err = 0.5 * math.erfc(-x / math.sqrt(2)) - q
    return x - err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


# ---- sample-ratio mismatch ------------------------------------------------------------------------------------------

def srm_p_value(observed: Sequence[int], weights: Sequence[float]) -> float:
    """Pearson chi-square p-value of the arms' unit counts against the planned weights (k - 1 degrees of freedom).
    A small p (the convention: < 0.001) means the assignment is broken and no estimate should be trusted."""
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    if obs.shape != w.shape or len(obs) < 2:
        raise ValueError("observed and weights need the same length, at least 2 arms")
    if np.any(w <= 0):
        raise ValueError(f"every planned weight must be > 0, got {list(weights)}")
    total = obs.sum()
    if total == 0:
        return 1.0
    expected = w / w.sum() * total
    x2 = float(((obs - expected) ** 2 / expected).sum())
    return chi2_sf(x2, len(obs) - 1)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma (series below a + 1, Lentz's continued fraction above)."""
    gln = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - gln))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - gln) * h)


# ---- CUPED ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CupedArm:
    """Sufficient statistics of one arm with a pre-period covariate x (e.g. the metric's own 7 days before exposure)."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float


def cuped_theta(arms: Sequence[CupedArm]) -> float:
    """theta = cov(y, x) / var(x), pooled over the arms (within-arm centring, so the treatment effect does not leak
    into it). 0 when x does not vary."""
    cov = var = 0.0
    for a in arms:
        if a.n < 2:
            continue
        cov += a.sum_xy - a.sum_x * a.sum_y / a.n
        var += a.sum_x2 - a.sum_x ** 2 / a.n
    return cov / var if var > 0 else 0.0


def cuped_adjust(arms: Sequence[CupedArm], theta: float) -> list[Arm]:
    """Each arm's statistics of y - theta (x - mean x over all arms): same expected difference, less variance."""
    n_all = sum(a.n for a in arms)
    mx = sum(a.sum_x for a in arms) / n_all if n_all else 0.0
    out = []
    for a in arms:
        # sum of (y - t(x - m)) and of its square, from the sums
        s = a.sum_y - theta * (a.sum_x - a.n * mx)
        s2 = (a.sum_y2 - 2 * theta * (a.sum_xy - mx * a.sum_y)
              + theta ** 2 * (a.sum_x2 - 2 * mx * a.sum_x + a.n * mx ** 2))
        out.append(Arm(a.n, s, s2))
    return out


# ---- multiple guardrails ---------------------------------------------------------------------------------------------

def benjamini_hochberg(p_values: Sequence[float], q: float = 0.05) -> tuple[list[float], list[bool]]:
    """(BH-adjusted p-values, which are rejected at false discovery rate ``q``), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return [], []
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adj_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj.tolist(), (adj <= q).tolist()
