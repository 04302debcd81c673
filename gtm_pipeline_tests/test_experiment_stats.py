"""The readout statistics against a reference implementation (gbstats 0.8.0 figures pinned with their inputs in
reference/experiments_gbstats.json) and against what they promise: an A/A experiment peeked at every day stays under
its error rate with the always-valid method and not with the fixed-horizon test; a planted effect is found; SRM,
CUPED and Benjamini-Hochberg behave as defined."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gtm_pipeline.experiments import stats

REFERENCE = json.loads((Path(__file__).parent / "reference" / "experiments_gbstats.json").read_text())


def _arms(case: dict) -> tuple[stats.Arm, stats.Arm]:
    if case["kind"] == "proportion":
        return stats.Arm.proportion(case["n_a"], case["sum_a"]), stats.Arm.proportion(case["n_b"], case["sum_b"])
    return (stats.Arm(case["n_a"], case["sum_a"], case["sumsq_a"]),
            stats.Arm(case["n_b"], case["sum_b"], case["sumsq_b"]))


@pytest.mark.parametrize("case", REFERENCE["sequential"], ids=lambda c: f"{c['kind']}-{c['n_a']}-S{c['S']}")
def test_always_valid_matches_the_reference(case):
    a, b = _arms(case)
    e = stats.always_valid(a, b, planned_n=case["S"], alpha=case["alpha"])
    assert e.estimate == pytest.approx(case["estimate"], abs=1e-12)
    assert (e.ci_low, e.ci_high) == pytest.approx(tuple(case["ci"]), abs=1e-9)
    assert e.p_value == pytest.approx(case["p"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", REFERENCE["srm"], ids=lambda c: str(c["observed"]))
def test_srm_matches_the_reference(case):
    assert stats.srm_p_value(case["observed"], case["weights"]) == pytest.approx(case["p"], rel=1e-7, abs=1e-12)


def test_chi2_survival_known_values():
    # textbook critical values: P(X > x) = 0.05 at x = 3.841 (1 df), 5.991 (2 df), 18.307 (10 df)
    for x, df in ((3.841458820694124, 1), (5.991464547107979, 2), (18.307038053275146, 10)):
        assert stats.chi2_sf(x, df) == pytest.approx(0.05, rel=1e-9)
    assert stats.chi2_sf(0.0, 3) == 1.0 and stats.chi2_sf(500.0, 2) < 1e-100


def test_normal_quantile():
    assert stats.normal_quantile(0.975) == pytest.approx(stats.Z_975, abs=1e-12)
    for q in (1e-9, 0.01, 0.3, 0.5, 0.8, 0.999999):
        x = stats.normal_quantile(q)
        assert 0.5 * math.erfc(-x / math.sqrt(2)) == pytest.approx(q, rel=1e-10)


def _aa_looks(rng, experiments: int, looks: int, per_look: int, rate: float):
    """Cumulative conversions per look of ``experiments`` A/A experiments (both arms at ``rate``)."""
    conv = rng.binomial(per_look, rate, size=(experiments, looks, 2)).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    return conv, n


def test_an_aa_experiment_peeked_daily_stays_under_alpha_with_always_valid_and_not_with_the_fixed_test():
    """1,000 A/A experiments x 20 daily looks: a false positive is any look that calls a difference."""
    rng = np.random.default_rng(20261207)
    experiments, looks, per_look = 1000, 20, 100
    conv, n = _aa_looks(rng, experiments, looks, per_look, 0.2)
    planned = 2 * per_look * looks
    fp_valid = fp_peek = fp_once = 0
    for e in range(experiments):
        called_valid = called_peek = False
        for k in range(looks):
            a = stats.Arm.proportion(int(n[k]), int(conv[e, k, 0]))
            b = stats.Arm.proportion(int(n[k]), int(conv[e, k, 1]))
            called_valid |= stats.always_valid(a, b, planned_n=planned).significant
            z = stats.fixed_z(a, b)
            called_peek |= z.significant
        fp_valid += called_valid
        fp_peek += called_peek
        fp_once += z.significant           # the fixed test read once, at the planned size
    rate_valid, rate_peek, rate_once = fp_valid / experiments, fp_peek / experiments, fp_once / experiments
    assert rate_valid <= 0.05, rate_valid
    assert rate_peek > 0.15, rate_peek          # peeking at a fixed-horizon test: several times alpha
    assert 0.02 <= rate_once <= 0.08, rate_once  # read once it is a valid 5 % test (binomial noise of 1,000 runs)


def test_a_planted_effect_is_detected():
    """20 % vs 25 % with 2 x 4,000 units planned: detected at the planned size in nearly every run (the always-valid
    interval's price is power: at 2 x 2,000 it finds this effect in ~78 % of runs), and it covers the true
    difference."""
    rng = np.random.default_rng(7)
    detected = covered = 0
    runs = 200
    for _ in range(runs):
        a = stats.Arm.proportion(4000, int(rng.binomial(4000, 0.20)))
        b = stats.Arm.proportion(4000, int(rng.binomial(4000, 0.25)))
        e = stats.always_valid(a, b, planned_n=8000)
        detected += e.significant and e.estimate > 0
        covered += e.ci_low <= 0.05 <= e.ci_high
    assert detected / runs >= 0.95
    assert covered / runs >= 0.95


def test_the_always_valid_interval_is_wider_than_the_fixed_one_and_both_shrink():
    a, b = stats.Arm.proportion(1000, 200), stats.Arm.proportion(1000, 240)
    v, z = stats.always_valid(a, b, planned_n=4000), stats.fixed_z(a, b)
    assert v.estimate == z.estimate and (v.ci_high - v.ci_low) > (z.ci_high - z.ci_low)
    a4, b4 = stats.Arm.proportion(4000, 800), stats.Arm.proportion(4000, 960)
    assert stats.always_valid(a4, b4, planned_n=4000).ci_high - stats.always_valid(a4, b4, planned_n=4000).ci_low \
        < v.ci_high - v.ci_low


def test_degenerate_arms_never_claim_a_result():
    empty = stats.Arm.proportion(0, 0)
    one = stats.Arm.proportion(1, 1)
    for e in (stats.always_valid(empty, one, planned_n=100), stats.fixed_z(one, empty)):
        assert e.p_value == 1.0 and not e.significant
    with pytest.raises(ValueError, match="planned_n must be > 0"):
        stats.mixture_rho(0)


def test_srm_flags_a_broken_split_and_rejects_bad_input():
    assert stats.srm_p_value([5000, 5000], [0.5, 0.5]) == pytest.approx(1.0)
    assert stats.srm_p_value([4700, 5300], [0.5, 0.5]) < 0.001
    with pytest.raises(ValueError, match="same length"):
        stats.srm_p_value([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="must be > 0"):
        stats.srm_p_value([1, 2], [1.0, 0.0])


def _cuped_arm(x, y) -> stats.CupedArm:
    return stats.CupedArm(len(y), float(y.sum()), float((y ** 2).sum()), float(x.sum()), float((x ** 2).sum()),
                          float((x * y).sum()))


def test_cuped_keeps_the_effect_and_cuts_the_variance():
    rng = np.random.default_rng(11)
    n = 5000
    xa, xb = rng.normal(100, 20, n), rng.normal(100, 20, n)
    ya = 0.8 * xa + rng.normal(0, 5, n)
    yb = 0.8 * xb + rng.normal(0, 5, n) + 2.0          # planted +2
    arms = [_cuped_arm(xa, ya), _cuped_arm(xb, yb)]
    theta = stats.cuped_theta(arms)
    assert theta == pytest.approx(0.8, abs=0.02)
    adj_a, adj_b = stats.cuped_adjust(arms, theta)
    raw = stats.fixed_z(stats.Arm(n, ya.sum(), (ya ** 2).sum()), stats.Arm(n, yb.sum(), (yb ** 2).sum()))
    cup = stats.fixed_z(adj_a, adj_b)
    # the adjusted statistics equal the adjusted unit values' own sums
    m = (xa.sum() + xb.sum()) / (2 * n)
    direct = ya - theta * (xa - m)
    assert adj_a.total == pytest.approx(direct.sum()) and adj_a.total_sq == pytest.approx((direct ** 2).sum())
    assert cup.estimate == pytest.approx(2.0, abs=0.3) and raw.estimate == pytest.approx(cup.estimate, abs=1.0)
    assert cup.se < raw.se / 3                      # most of the variance was the pre-period's
    assert stats.cuped_theta([_cuped_arm(np.ones(10), rng.normal(size=10))]) == 0.0   # x constant: no adjustment


def test_benjamini_hochberg():
    adj, rejected = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005, 0.5])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> x5/1, x5/2, x5/3, x5/4, x5/5 = 0.025, 0.025, 0.05, 0.05, 0.5
    assert adj == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])
    assert rejected == [True, True, True, True, False]
    assert stats.benjamini_hochberg([]) == ([], [])
    # never smaller than the raw p-value, never above 1
    adj, _ = stats.benjamini_hochberg([0.9, 0.95, 0.99])
    assert all(1.0 >= q >= p - 1e-12 for q, p in zip(adj, [0.9, 0.95, 0.99]))
