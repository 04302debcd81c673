"""The scoring model, ``contracts/scoring/<model>.yaml`` (issue 19 §1, Layer A): fit groups, engagement groups, caps,
decay and the A1-C3 grade grid.

Read by the one contract loader (`gtm_pipeline.contract_loader`): an unknown field, a wrong type or a typo fails at
load with file and field. The group names are fixed (they are columns of clean.account / clean.lead, and of
clean.activity's activity_type), so a typo in one is an unknown field with a "did you mean". Override values are
checked against the column's values in ``contracts/entities/account.yaml``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, load, read_yaml
from gtm_pipeline.errors import ContractError

Text = Annotated[str, Field(min_length=1)]
Points = Annotated[float, Field(ge=0)]
FIT_GROUPS = ("industry", "size_band", "region", "segment")
ACTIVITY_GROUPS = ("form_fill", "demo", "page_view")          # activity_type values of clean.activity
ENGAGEMENT_GROUPS = (*ACTIVITY_GROUPS, "intent")               # intent: clean.intent
# Dimensions of metrics.win_rate_by_segment, the only ones whose points can be learned.
LEARNABLE = ("segment", "industry", "size_band")


class Override(Strict):
    points: Points
    by: Text                                  # who set it
    why: Text                                 # the reason, shown by `scoring explain`


class FitGroup(Strict):
    cap: Annotated[float, Field(gt=0)]
    points: Literal["learned", "manual"]      # manual: only the overrides score; other values get 0
    overrides: dict[str, Override] = {}

    @model_validator(mode="after")
    def _overrides(self, info: ValidationInfo) -> FitGroup:
        if self.points == "manual" and not self.overrides:
            raise ValueError("points: manual needs overrides (value: {points, by, why}); or use points: learned")
        for value, o in self.overrides.items():
            if o.points > self.cap:
                raise error_at(("overrides", value, "points"), f"{o.points:g} is above the group's cap {self.cap:g}")
        return self


class Fit(Strict):
    industry: FitGroup
    size_band: FitGroup
    region: FitGroup
    segment: FitGroup

    def groups(self) -> dict[str, FitGroup]:
        return {g: getattr(self, g) for g in FIT_GROUPS}


class EngagementGroup(Strict):
    points: Annotated[float, Field(gt=0)]    # per event (intent: per signal at intent_score 100) before decay
    cap: Annotated[float, Field(gt=0)]


class Engagement(Strict):
    half_life_days: Annotated[float, Field(gt=0)]
    form_fill: EngagementGroup
    demo: EngagementGroup
    page_view: EngagementGroup
    intent: EngagementGroup

    def groups(self) -> dict[str, EngagementGroup]:
        return {g: getattr(self, g) for g in ENGAGEMENT_GROUPS}


class FitGrades(Strict):
    A: Annotated[float, Field(gt=0)]
    B: Annotated[float, Field(ge=0)]


class EngagementGrades(Strict):
    one: Annotated[float, Field(gt=0, alias="1")]
    two: Annotated[float, Field(ge=0, alias="2")]


class Grades(Strict):
    fit: FitGrades
    engagement: EngagementGrades


class ScoringModel(Strict):
    model: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    version: Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")]   # quoted into SQL rows
    active: bool = False
    owner: Text
    description: str = ""
    lift_for_cap: Annotated[float, Field(gt=0)]
    total_cap: Annotated[float, Field(gt=0, le=100)]
    fit: Fit
    engagement: Engagement
    grades: Grades

    @property
    def model_version(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def fit_max(self) -> float:
        return sum(g.cap for g in self.fit.groups().values())

    @property
    def engagement_max(self) -> float:
        return sum(g.cap for g in self.engagement.groups().values())

    @field_validator("fit")
    @classmethod
    def _learnable_and_known(cls, v: Fit, info: ValidationInfo) -> Fit:
        values: dict[str, list[str]] = (info.context or {}).get("values", {})
        for name, g in v.groups().items():
            if g.points == "learned" and name not in LEARNABLE:
                raise error_at((name, "points"), f"learned needs a {name!r} dimension in "
                               f"metrics.win_rate_by_segment, which has {', '.join(LEARNABLE)}; use points: manual "
                               f"with overrides")
            known = values.get(name)
            for value in g.overrides:
                if known and value not in known:
                    raise error_at((name, "overrides", value), _unknown_value(value, name, known))
        return v

    @model_validator(mode="after")
    def _grid(self) -> ScoringModel:
        f, e = self.grades.fit, self.grades.engagement
        if not f.A > f.B:
            raise error_at(("grades", "fit", "A"), f"{f.A:g} must be above B ({f.B:g})")
        if f.A > self.fit_max:
            raise error_at(("grades", "fit", "A"), f"{f.A:g} is above the most fit points ({self.fit_max:g}, "
                           f"the sum of the fit caps): nothing could be graded A")
        if not e.one > e.two:
            raise error_at(("grades", "engagement", "1"), f"{e.one:g} must be above 2 ({e.two:g})")
        if e.one > self.engagement_max:
            raise error_at(("grades", "engagement", "1"), f"{e.one:g} is above the most engagement points "
                           f"({self.engagement_max:g}, the sum of the engagement caps)")
        return self


def _unknown_value(value: str, column: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return (f"{value!r} is not a value of {column} in contracts/entities/account.yaml; allowed: "
            f"{', '.join(known)}{hint}")


@dataclass(frozen=True)
class Model:
    where: str                                # repo-relative file, for messages
    spec: ScoringModel


def _column_values(contracts_dir: Path) -> dict[str, list[str]]:
    doc = read_yaml(Path(contracts_dir) / "entities" / "account.yaml", "contracts/entities/account.yaml")
    cols = (doc or {}).get("columns", {}) if isinstance(doc, dict) else {}
    return {c: list(cols[c].get("values", [])) for c in FIT_GROUPS if isinstance(cols.get(c), dict)}


def load_model(path: Path, contracts_dir: Path) -> Model:
    where = f"contracts/scoring/{Path(path).name}"
    return Model(where, load(ScoringModel, Path(path), where, context={"values": _column_values(contracts_dir)}))


def load_active_model(contracts_dir: Path) -> Model:
    """The one model of ``contracts/scoring/`` with ``active: true``: the one the metric layer scores with."""
    files = sorted((Path(contracts_dir) / "scoring").glob("*.yaml"))
    active = [m for m in (load_model(f, contracts_dir) for f in files) if m.spec.active]
    if len(active) != 1:
        found = ", ".join(m.where for m in active) or "none"
        raise ContractError(f"contracts/scoring: exactly one model must have active: true, found {found}; "
                            f"set active: true on the model to score with and false on the others")
    return active[0]
