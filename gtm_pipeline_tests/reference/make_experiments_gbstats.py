"""How gtm_pipeline_tests/reference/experiments_gbstats.json was made: the reference implementation GrowthBook's gbstats
0.8.0 (a test oracle only, never a runtime dependency; it pins numpy<2 and pandas<2, so it was installed with --no-deps
into a scratch venv beside numpy, pandas, scipy, pydantic and packaging). Run it there:
python make_experiments_gbstats.py > experiments_gbstats.json
"""
import json

from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic
from gbstats.utils import check_srm

out = []
looks = [(500, 97, 500, 121), (1000, 201, 1000, 247), (1500, 298, 1500, 372), (2000, 402, 2000, 498)]
for S in (4000, 5000):
    for na, ca, nb, cb in looks:
        t = SequentialTwoSidedTTest(ProportionStatistic(n=na, sum=ca), ProportionStatistic(n=nb, sum=cb),
                                    SequentialConfig(sequential_tuning_parameter=S, difference_type="absolute"))
        ci = t.confidence_interval
        out.append({"kind": "proportion", "n_a": na, "sum_a": ca, "n_b": nb, "sum_b": cb, "S": S, "alpha": 0.05,
                    "estimate": float(t.point_estimate), "ci": [float(ci[0]), float(ci[1])], "p": float(t.p_value)})
# a mean metric (revenue per unit): n, sum, sum of squares
means = [(800, 41000.0, 4.1e6, 820, 45800.0, 4.9e6), (3000, 152000.0, 1.6e7, 2950, 160100.0, 1.8e7)]
for (na, sa, qa, nb, sb, qb) in means:
    t = SequentialTwoSidedTTest(SampleMeanStatistic(n=na, sum=sa, sum_squares=qa),
                                SampleMeanStatistic(n=nb, sum=sb, sum_squares=qb),
                                SequentialConfig(sequential_tuning_parameter=5000, difference_type="absolute"))
    ci = t.confidence_interval
    out.append({"kind": "mean", "n_a": na, "sum_a": sa, "sumsq_a": qa, "n_b": nb, "sum_b": sb, "sumsq_b": qb,
                "S": 5000, "alpha": 0.05, "estimate": float(t.point_estimate), "ci": [float(ci[0]), float(ci[1])],
                "p": float(t.p_value)})
srm = []
srm_cases = [([5000, 5000], [0.5, 0.5]), ([5000, 5210], [0.5, 0.5]), ([4700, 5300], [0.5, 0.5]),
             ([3000, 3100, 2950], [1/3, 1/3, 1/3]), ([9000, 1080], [0.9, 0.1])]
for obs, w in srm_cases:
    srm.append({"observed": obs, "weights": w, "p": float(check_srm(obs, w))})
print(json.dumps({"source": "gbstats 0.8.0 SequentialTwoSidedTTest (absolute), gbstats.utils.check_srm",
                  "sequential": out, "srm": srm}, indent=1))
