"""ICP fit and engagement scoring (issue 19 §1, Layer A; docs/metrics.md, "Scoring").

* `contract`: the scoring model, ``contracts/scoring/<model>.yaml``;
* `points`: learned points (shrunk win-rate lift), decay, caps and the grade grid, as plain functions;
* `fit`: win rates from the metric layer into per-value points and SQL;
* `explain`: every point of one lead or account and why (``gtm-pipeline scoring explain``).

The published tables are computations of the metric layer (`gtm_pipeline.metrics.scoring`).
"""
