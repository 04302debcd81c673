"""Experiment contracts, ``contracts/experiments/<id>.yaml`` (spec 000 §6: "every initiative has an owner, metric,
baseline and decision threshold"). Loaded by the one contract loader (`gtm_pipeline.contract_loader`): an unknown
or missing field fails at load with file and field named.

```yaml
experiment: lead_form_short          # = the file name
title: Shorter lead form
owner: Marketing Ops                 # a role of contracts/decisions/roster.yaml
hypothesis: Three fields instead of seven convert more leads to SQL.
unit: lead                           # what is randomised: lead | account
salt: lead_form_short-2026-08        # with the unit id, decides the arm (deterministic)
arms: [{name: control, weight: 0.5}, {name: short_form, weight: 0.5}]   # the first arm is the control
holdout_share: 0.0                   # units kept out of every arm (a long-term holdout)
primary_metric: {metric: sql_funnel, column: sql_rate}
baseline: 0.20                       # the control's expected value
decision_threshold: 0.02             # ship when the lift is credibly at least this (absolute)
mde: 0.03                            # the smallest effect worth finding; sizes planned_units
planned_units: 4000                  # S of the always-valid method (total units at the planned end)
guardrails: [{metric: routing_health, column: unassigned, direction: no_rise, tolerance: 0.01}]
min_runtime_days: 14
max_runtime_days: 42
method: always_valid                 # or fixed_horizon (read once, at the planned size)
alpha: 0.05
starts: 2026-08-01
flag: FF_EXP_LEAD_FORM_SHORT
```
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, load
from gtm_pipeline.errors import ContractError
from gtm_pipeline.experiments.outcomes import OUTCOMES, outcome_for
from gtm_pipeline.metrics.contract import load_metric_contracts
from gtm_pipeline.metrics.registry import computations

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
Share = Annotated[float, Field(ge=0.0, lt=1.0)]


class ArmSpec(Strict):
    name: str
    weight: Annotated[float, Field(gt=0.0)]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENT.fullmatch(v):
            raise ValueError(f"{v!r} is not a lowercase identifier (letters, digits, _), e.g. short_form")
        return v


class MetricRef(Strict):
    metric: str
    column: str

    @property
    def label(self) -> str:
        return f"{self.metric}.{self.column}"


class Guardrail(MetricRef):
    direction: Literal["no_drop", "no_rise"]
    tolerance: Annotated[float, Field(ge=0.0)]    # absolute: how far the treatment may move it the wrong way


class Experiment(Strict):
    experiment: str
    title: str
    owner: str
    hypothesis: str
    unit: Literal["lead", "account"]
    salt: Annotated[str, Field(min_length=8)]
    arms: Annotated[list[ArmSpec], Field(min_length=2)]
    holdout_share: Share = 0.0
    primary_metric: MetricRef
    baseline: float
    decision_threshold: float
    mde: Annotated[float, Field(gt=0.0)]
    planned_units: Annotated[int, Field(gt=0)]
    guardrails: list[Guardrail] = []
    min_runtime_days: Annotated[int, Field(ge=1)]
    max_runtime_days: Annotated[int, Field(ge=1)]
    method: Literal["always_valid", "fixed_horizon"] = "always_valid"
    alpha: Annotated[float, Field(gt=0.0, le=0.2)] = 0.05
    starts: date
    flag: str

    @field_validator("experiment")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT.fullmatch(v):
            raise ValueError(f"{v!r} is not a lowercase identifier (letters, digits, _), e.g. lead_form_short")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        if self.max_runtime_days < self.min_runtime_days:
            raise ValueError(f"max_runtime_days {self.max_runtime_days} is shorter than min_runtime_days "
                             f"{self.min_runtime_days}")
        for ref in (self.primary_metric, *self.guardrails):
            if outcome_for(self.unit, ref.metric, ref.column) is None:
                known = sorted(f"{m}.{c}" for (u, m, c) in OUTCOMES if u == self.unit)
                raise ValueError(f"{ref.label} has no per-{self.unit} definition to read an experiment on; "
                                 f"known for unit {self.unit}: {', '.join(known)} (gtm_pipeline/experiments/"
                                 f"outcomes.py)")
        return self

    @property
    def control(self) -> str:
        return self.arms[0].name

    @property
    def where(self) -> str:
        return f"contracts/experiments/{self.experiment}.yaml"


def load_experiments(contracts_dir: Path, metric_columns: dict[str, set[str]] | None = None) -> dict[str, Experiment]:
    """Every ``contracts/experiments/*.yaml``; ``metric_columns`` (metric -> its published columns) checks that the
    metrics referenced exist in the metric layer."""
    out: dict[str, Experiment] = {}
    for path in sorted((Path(contracts_dir) / "experiments").glob("*.yaml")):
        where = f"contracts/experiments/{path.name}"
        exp = load(Experiment, path, where)
        if exp.experiment != path.stem:
            raise ContractError(f"{where}: experiment: {exp.experiment!r} must equal the file name {path.stem!r}")
        if metric_columns is not None:
            for field_name, ref in [("primary_metric", exp.primary_metric),
                                    *((f"guardrails[{i}]", g) for i, g in enumerate(exp.guardrails))]:
                cols = metric_columns.get(ref.metric)
                if cols is None:
                    raise ContractError(f"{where}: {field_name}.metric: {ref.metric!r} is not a metric "
                                        f"(contracts/metrics/{ref.metric}.yaml does not exist)")
                if ref.column not in cols:
                    raise ContractError(f"{where}: {field_name}.column: {ref.column!r} is not a column of "
                                        f"metrics.{ref.metric}; it has {', '.join(sorted(cols))}")
        out[exp.experiment] = exp
    return out


def metric_columns(contracts_dir: Path) -> dict[str, set[str]]:
    """metric -> the columns it publishes (its computation's base columns plus the formula targets)."""
    comps = computations()
    return {name: set(comps[name].columns) | set(c.targets) if name in comps else set(c.targets)
            for name, c in load_metric_contracts(contracts_dir).items()}
