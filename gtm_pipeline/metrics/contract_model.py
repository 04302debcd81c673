"""A metric contract once loaded (see :mod:`gtm_pipeline.metrics.contract` for the file and its checks): the
dataclasses the metric layer reads, and the values a contract may use for its enumerated fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from gtm_pipeline.expressions import Denominator, Expression

BreakAction = Literal["block_publish_and_page_owner", "block_publish_and_notify_owner"]
Severity = Literal["error", "warn"]            # error blocks publication, warn is reported only
NullPolicy = Literal["fail", "allow"]          # allow: a zero or missing denominator may leave a row NULL
Kind = Literal["metric", "fact"]               # a fact table has no formula
PAGE, NOTIFY = get_args(BreakAction)
BREAK_ACTIONS = {
    PAGE: "the previous version stays published; a SEV2 incident opens and the owner is paged",
    NOTIFY: "the previous version stays published; a SEV2 incident opens and the owner is notified",
}
SEVERITIES, NULL_POLICIES, KINDS = get_args(Severity), get_args(NullPolicy), get_args(Kind)
# Checks every metric gets without writing them; contract tests may not use these names.
CHECK_GRAIN_UNIQUE = "grain_unique"
CHECK_DENOMINATOR = "denominator_positive"
RESERVED_TESTS = (CHECK_GRAIN_UNIQUE, CHECK_DENOMINATOR)


@dataclass(frozen=True)
class Parameter:
    name: str
    value: float | None = None               # a constant ...
    by: str | None = None                    # ... or a value per level of a grain column
    values: tuple[tuple[str, float], ...] = ()
    default: float | None = None
    description: str = ""

    def sql(self) -> str:
        if self.by is None:
            return f"CAST({self.value!r} AS DOUBLE)"
        cases = " ".join(f"WHEN '{k.replace(chr(39), chr(39) * 2)}' THEN CAST({v!r} AS DOUBLE)"
                         for k, v in self.values)
        default = "NULL" if self.default is None else f"CAST({self.default!r} AS DOUBLE)"
        return f'CASE CAST("{self.by}" AS VARCHAR) {cases} ELSE {default} END'

    def describe(self) -> str:
        if self.by is None:
            return f"{self.name} = {self.value:g}"
        vals = ", ".join(f"{k}: {v:g}" for k, v in self.values)
        return f"{self.name} by {self.by} = {{{vals}}}" + (f", otherwise {self.default:g}"
                                                          if self.default is not None else "")


@dataclass(frozen=True)
class Formula:
    text: str
    target: str
    expression: Expression


@dataclass(frozen=True)
class QaTest:
    name: str
    text: str
    expression: Expression
    severity: str = "error"
    description: str = ""


@dataclass(frozen=True)
class MetricContract:
    path: Path
    name: str                        # table / asset name = file stem
    metric: str                      # display name from the contract
    definition: str
    grain: tuple[str, ...]
    inputs: tuple[str, ...]
    formulas: tuple[Formula, ...]
    qa_tests: tuple[QaTest, ...]
    break_action: str
    owner: str
    kind: str = "metric"
    description: str = ""
    unit: str = ""
    version: str = "1"
    parameters: tuple[Parameter, ...] = ()
    null_policy: str = "fail"
    digest: str = ""                 # sha256 of the file, for code versions

    @property
    def where(self) -> str:
        return f"contracts/metrics/{self.path.name}"

    @property
    def formula_text(self) -> str:
        return "; ".join(f.text for f in self.formulas)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(f.target for f in self.formulas)

    @property
    def pages(self) -> bool:
        return self.break_action == PAGE

    def denominators(self) -> tuple[Denominator, ...]:
        out: list[Denominator] = []
        for f in self.formulas:
            for d in f.expression.denominators():
                if d not in out:
                    out.append(d)
        return tuple(out)

    def check_names(self) -> tuple[str, ...]:
        """The Dagster asset checks of this metric: its qa_tests, then the automatic ones."""
        auto = (CHECK_GRAIN_UNIQUE,) + ((CHECK_DENOMINATOR,) if self.denominators() else ())
        return tuple(t.name for t in self.qa_tests) + auto
