"""Launch contracts, ``contracts/launches/<id>.yaml`` (spec 000 §6: "no major launch proceeds without eval +
instrumentation + rollback plan"; Layer F), and the regional regimes they name, ``contracts/compliance/regimes.yaml``.

Both are read by the one contract loader (`gtm_pipeline.contract_loader`): a missing or unknown field, a wrong type
or a typo fails at load with file and field. What a launch needs *evidence* for (an eval results file, a rollback
rehearsal, the enablement files, event volume in the warehouse) is judged by `gtm_pipeline.launches.gate`, not here:
a contract may be declared before its evidence exists, and the gate then blocks naming the file and the field.
Evidence paths are relative to ``contracts/launches/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.errors import ContractError

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# schema.table of a warehouse table, and a column: quoted into SQL, so only plain identifiers are allowed.
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
Text = Annotated[str, Field(min_length=1)]


def _inside(v: str) -> str:
    # Evidence lives beside the contracts (and is reviewed with them): no absolute path, no way out of the folder.
    if Path(v).is_absolute() or ".." in Path(v).parts:
        raise ValueError(f"{v!r} must be a path relative to contracts/launches/ without '..', "
                         f"e.g. evidence/<launch>/eval_results.csv")
    return v


EvidencePath = Annotated[str, Field(min_length=1), AfterValidator(_inside)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
REGIMES_FILE = "contracts/compliance/regimes.yaml"


# ---- regimes -------------------------------------------------------------------------------------------------------

class Obligation(Strict):
    id: Text
    text: Text
    effective: date                          # the day it applies from (a future day: announced, not in force yet)


class Regime(Strict):
    name: Text
    source: Text                             # where the dates come from (a URL or a document id)
    as_of: date                              # when the entry was last checked against its source
    obligations: Annotated[list[Obligation], Field(min_length=1)]


class RegimesSpec(Strict):
    version: Text
    regimes: Annotated[dict[str, Regime], Field(min_length=1)]


def load_regimes(contracts_dir: Path) -> RegimesSpec:
    return load(RegimesSpec, Path(contracts_dir) / "compliance" / "regimes.yaml", REGIMES_FILE)


# ---- launches ------------------------------------------------------------------------------------------------------

class Icp(Strict):
    description: Text
    segments: Annotated[list[Text], Field(min_length=1)]


class PricingHypothesis(Strict):
    hypothesis: Text
    metric: Text                             # how it will be judged (a metric-layer figure, in words)


class EvalThresholds(Strict):
    task_success_min: Rate
    hallucination_rate_max: Rate


class EvalSuite(Strict):
    suite: Text
    # A CSV with one row per eval case: columns case_id, task_success (0/1) and hallucinated (0/1); the gate computes
    # the task-success and hallucination rates from it and compares them with the thresholds.
    evidence: EvidencePath
    min_cases: Annotated[int, Field(ge=1)] = 20
    thresholds: EvalThresholds


class Instrumentation(Strict):
    table: Text                              # schema.table holding one row per event
    event_column: Text
    time_column: Text
    window_days: Annotated[int, Field(ge=1)] = 7
    events: Annotated[list[Text], Field(min_length=1)]

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _TABLE.fullmatch(v):
            raise ValueError(f"{v!r} is not schema.table in lowercase, e.g. clean.activity")
        return v

    @field_validator("event_column", "time_column")
    @classmethod
    def _column(cls, v: str) -> str:
        if not _IDENT.fullmatch(v):
            raise ValueError(f"{v!r} is not a lowercase column name, e.g. occurred_at")
        return v


class Rehearsal(Strict):
    rehearsed_on: date
    evidence: EvidencePath                           # the drill's record (who flipped what, how long it took)


class Rollback(Strict):
    flag: Text                               # the flag the launch flips; rolling back flips it back
    time_limit_minutes: Annotated[float, Field(gt=0)]
    max_rehearsal_age_days: Annotated[int, Field(ge=1)] = 30
    rehearsal: Rehearsal | None = None       # none recorded: the gate blocks


class EnablementItem(Strict):
    name: Text
    audience: Text
    evidence: EvidencePath


class EscalationStep(Strict):
    level: Annotated[int, Field(ge=1)]
    role: Text
    contact: Text
    within_minutes: Annotated[float, Field(gt=0)]


class LaunchSpec(Strict):
    launch: Text                             # = the file name
    title: Text
    owner: Text
    positioning: Text
    icp: Icp
    pricing_hypotheses: Annotated[list[PricingHypothesis], Field(min_length=1)]
    eval_suite: EvalSuite
    instrumentation: Instrumentation
    rollback: Rollback
    enablement: Annotated[list[EnablementItem], Field(min_length=1)]
    escalation: Annotated[list[EscalationStep], Field(min_length=1)]
    regions: Annotated[list[Text], Field(min_length=1)]

    @model_validator(mode="after")
    def _known_regions(self, info: ValidationInfo) -> LaunchSpec:
        known: set[str] | None = (info.context or {}).get("regions")
        if known is None:             # loaded on its own (no regimes file given): checked by the gate instead
            return self
        for i, r in enumerate(self.regions):
            if r not in known:
                raise error_at(("regions", i), f"{r!r} is not a regime of {REGIMES_FILE}; known: "
                                               f"{', '.join(sorted(known))}; add it there (with source and as_of) "
                                               f"or fix the name")
        return self

    @model_validator(mode="after")
    def _escalation_order(self) -> LaunchSpec:
        levels = [s.level for s in self.escalation]
        if levels != sorted(set(levels)):
            raise error_at(("escalation",), f"levels must rise without repeats (1, 2, ...); got {levels}")
        return self


@dataclass(frozen=True)
class Launch:
    spec: LaunchSpec
    path: Path                               # the contract file
    where: str                               # contracts/launches/<id>.yaml, as messages name it

    @property
    def id(self) -> str:
        return self.spec.launch

    @property
    def evidence_dir(self) -> Path:
        return self.path.parent


def load_launch(path: Path, regions: set[str] | None) -> Launch:
    where = f"contracts/launches/{path.name}"
    spec = load(LaunchSpec, path, where, {"regions": regions} if regions is not None else None)
    if spec.launch != path.stem:
        raise ContractError(f"{where}: launch: {spec.launch!r} must equal the file name {path.stem!r}")
    return Launch(spec, path, where)


def load_launches(contracts_dir: Path) -> dict[str, Launch]:
    """Every launch contract, each region checked against the regimes file."""
    regions = set(load_regimes(contracts_dir).regimes)
    return {p.stem: load_launch(p, regions) for p in sorted((Path(contracts_dir) / "launches").glob("*.yaml"))}
