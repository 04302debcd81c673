"""The lifecycle contract, ``contracts/lifecycle/stages.yaml``: the automatic stages in order, each with an entry
criterion and an optional exit criterion, and the manual stages (entered only by an explicit move).

Criteria are safe expressions (`gtm_pipeline.expressions`, never eval) over one *moment* of a lead's evidence, the
rows `gtm_pipeline.metrics.lifecycle` builds from the clean tables; a typo in a column name fails at load with the
file and the field. The columns of a moment:

* ``event``: ``created`` (clean.lead.created_at), ``touch`` (a form fill, demo or page view in clean.activity, or an
  intent signal of the lead's account), ``status`` (clean.lead.status at status_changed_at), ``opportunity`` (an
  opportunity created for the lead) or ``opportunity_stage`` (a stage change of one, clean.opportunity_stage);
* ``status``, ``to_stage``, ``activity_type``: the moment's own values (NULL when the event has none);
* ``fit_score``, ``fit_grade``, ``engagement_score``, ``engagement_grade``: the lead's grade as of the moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.expressions import Expression, compile_assertion

WHERE = "contracts/lifecycle/stages.yaml"
EVIDENCE_COLUMNS = ("event", "status", "to_stage", "activity_type", "fit_score", "fit_grade",
                    "engagement_score", "engagement_grade")
RECYCLED = "recycled"
StageName = Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,30}$")]   # quoted into SQL rows


class StageSpec(Strict):
    name: StageName
    entry: Annotated[str, Field(min_length=1)]
    exit: str | None = None


class StagesDoc(Strict):
    owner: Annotated[str, Field(min_length=1)]
    description: str = ""
    stages: Annotated[list[StageSpec], Field(min_length=2)]
    manual_stages: list[StageName]

    @field_validator("stages")
    @classmethod
    def _unique(cls, v: list[StageSpec]) -> list[StageSpec]:
        seen: set[str] = set()
        for i, s in enumerate(v):
            if s.name in seen:
                raise error_at((i, "name"), f"{s.name!r} is listed twice; each stage once, lowest first")
            seen.add(s.name)
        return v

    @model_validator(mode="after")
    def _manual(self, info: ValidationInfo) -> StagesDoc:
        automatic = {s.name for s in self.stages}
        for i, m in enumerate(self.manual_stages):
            if m in automatic:
                raise error_at(("manual_stages", i), f"{m!r} is also an automatic stage; list it in one place")
        if RECYCLED not in self.manual_stages:
            raise error_at(("manual_stages",), f"must include {RECYCLED!r}: 'gtm-pipeline lifecycle recycle' "
                           f"moves a record there")
        return self


@dataclass(frozen=True)
class Stage:
    name: str
    rank: int                       # 1 = the first automatic stage
    entry: Expression
    exit: Expression | None


@dataclass(frozen=True)
class Lifecycle:
    owner: str
    stages: tuple[Stage, ...]       # automatic, lowest first
    manual: tuple[str, ...]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages) + self.manual


def load_lifecycle(contracts_dir: Path) -> Lifecycle:
    """Load and compile ``contracts/lifecycle/stages.yaml``; every problem names the file and the field."""
    doc = load(StagesDoc, Path(contracts_dir) / "lifecycle" / "stages.yaml", WHERE)
    stages = []
    for i, s in enumerate(doc.stages):
        entry = compile_assertion(_one_line(s.entry), EVIDENCE_COLUMNS, where=f"{WHERE}: stages[{i}].entry")
        exit_ = None if s.exit is None else compile_assertion(
            _one_line(s.exit), EVIDENCE_COLUMNS, where=f"{WHERE}: stages[{i}].exit")
        stages.append(Stage(s.name, i + 1, entry, exit_))
    return Lifecycle(doc.owner, tuple(stages), tuple(doc.manual_stages))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
