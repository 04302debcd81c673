"""The playbooks' rules as plain functions: metric rows in, proposed action (or the reason for none) out.

No warehouse and no Dagster here: `gtm_pipeline.decisions.inputs` reads the metric tables into the small row
dicts these functions take, and the table-style tests call them directly with boundary values. Thresholds come from
the playbook (`Playbook.thresholds`); every comparison is inclusive ("≥", "≤" as in the spec) with a tolerance of
1e-9 so that a value sitting exactly on a threshold is not lost to floating-point rounding.

No threshold passes on missing data (issue 14 §2): when an input a rule needs is NULL, zero where zero makes the
figure meaningless, or below the playbook's minimum sample, the item (segment, channel, industry, rule set) is
**held** with reason ``insufficient data``. A held item is never passed, never silently skipped and never changed
(a held channel keeps its budget): it is listed in ``Outcome.held`` (and in ``figures["held"]``, which the memo
renders as a table) with the figure that was missing. docs/decisions.md, "How the thresholds are read", states
each rule's behaviour on NULL, zero and small samples.
"""

from __future__ import annotations

from gtm_pipeline.decisions.rules.channel import (
    attribution_validity_precheck,
    evaluate_channel,
    new_budget_split,
)
from gtm_pipeline.decisions.rules.common import EPS, INSUFFICIENT_DATA, UNALLOCATED, Outcome, ge, le
from gtm_pipeline.decisions.rules.experiment import evaluate_experiment
from gtm_pipeline.decisions.rules.icp import evaluate_icp
from gtm_pipeline.decisions.rules.pricing import evaluate_pricing, pricing_data_gap, project_raise
from gtm_pipeline.decisions.rules.routing import evaluate_routing, shadow_report

__all__ = [
    "EPS", "INSUFFICIENT_DATA", "UNALLOCATED", "Outcome", "attribution_validity_precheck", "evaluate_channel",
    "evaluate_experiment",
    "evaluate_icp", "evaluate_pricing", "evaluate_routing", "ge", "le", "new_budget_split", "pricing_data_gap",
    "project_raise", "shadow_report",
]
