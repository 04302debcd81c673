"""Decision nodes (spec 002 §4-5): playbooks, rules, the tamper-evident decision log, approvals, the flag store,
reversals, monitoring, memos and review packets -- plain modules, no Dagster decorators. The Dagster wiring is in
`gtm_pipeline.decisions.defs`, the commands in `gtm_pipeline.cli.decisions`; see docs/decisions.md.

* `context`: `DecisionContext` and `open_context` (re-exported here for callers outside the package);
* `playbook`: load and validate ``contracts/decisions/*.yaml`` and the roster;
* `inputs`: the only SQL that reads the metric layer for decisions;
* `rules`: the four playbooks' thresholds as functions of metric rows;
* `gates`: the shared pre-checks (SLO health, open incidents, input data time); `nodes`: pre-checks + inputs +
  rules -> proposals, and `recheck` at approve/apply; `refusals`: the roster and the gates at approve and apply;
* `log`: the append-only, keyed hash chain; `anchor`: its checkpoint file, key and Prometheus gauge; `verify`;
  `flags`: the versioned flag store; `in_force`: the views that read the flags (what an apply changes);
* `record`: a decision as the log tells it; `propose`: a new proposal; `lifecycle`: approve, reject, apply,
  reverse, monitoring entries; `monitoring`: watch plans after apply;
* `memo`, `packets`: markdown for people.

The package's own modules import from `context` (never from this ``__init__``), so importing the package pulls in
no module that imports it back.
"""

from __future__ import annotations

from gtm_pipeline.decisions.context import DecisionContext, known_metric_tables, open_context

__all__ = ["DecisionContext", "known_metric_tables", "open_context"]
