"""Metric contracts (`contracts/metrics/<name>.yaml`): loading and validation.

The shape is the spec's (§3 "Example Contract"): ``metric, definition, grain, inputs, formula, qa_tests`` (each with
``name`` and ``assert``), ``break_action`` and ``owner``; the spec's Payback contract loads verbatim. Optional,
richer fields:

* ``kind``: ``metric`` (default) or ``fact`` (a fact table has no formula);
* ``description``, ``unit``, ``version`` (default ``"1"``);
* ``formula`` may also be a list of ``"target = expression"`` lines, evaluated in order (later lines may use earlier
  targets);
* ``parameters``: named constants a formula or assert may use, so that assumptions (cost to serve per seat, churn)
  live in the contract rather than in code: ``name: 6.0``, ``name: {value: 6.0, description: ...}`` or
  ``name: {by: segment, values: {smb: 6.0, enterprise: 9.0}, default: 7.0, description: ...}``;
* per test: ``severity`` (``error`` blocks publication, ``warn`` is reported only) and ``description``;
* ``null_policy``: ``fail`` (default) or ``allow``: whether a zero or missing denominator may leave the metric
  empty (NULL) on a row instead of failing the audit. A negative denominator always fails.

The file name is the table name (``payback.yaml`` -> ``metrics.payback``). Everything is checked when the Dagster
definitions load, by the one contract loader (`gtm_pipeline.contract_loader`; `MetricDoc` below is the file's
shape): unknown fields, unknown inputs, unknown columns in grain/formula/assert (through `gtm_pipeline.expressions`,
the only compiler of contract text), duplicate test names, unknown break actions.
Names in formulas and asserts match the computation's columns case-insensitively (``Monthly_CM`` ->
``monthly_cm``).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from gtm_pipeline.contract_loader import Strict, error_at, read_yaml, validate
from gtm_pipeline.errors import ContractError
from gtm_pipeline.expressions import compile_assertion, compile_formula

# Re-exported: the checks every metric gets are named where the contracts are loaded.
from gtm_pipeline.metrics.contract_model import CHECK_DENOMINATOR as CHECK_DENOMINATOR
from gtm_pipeline.metrics.contract_model import CHECK_GRAIN_UNIQUE as CHECK_GRAIN_UNIQUE
from gtm_pipeline.metrics.contract_model import (
    RESERVED_TESTS,
    BreakAction,
    Formula,
    Kind,
    MetricContract,
    NullPolicy,
    Parameter,
    QaTest,
    Severity,
)
from gtm_pipeline.metrics.registry import CLEAN_PREFIX, Computation, computations

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ctx(info: ValidationInfo) -> dict:
    """What `parse_metric_contract` passes: the file (``where``), its computation (``name``, ``comp``), every
    computation (``comps``) and the names a contract may list as inputs (``inputs_known``)."""
    return info.context or {}


def _column(v: str, info: ValidationInfo) -> str:
    """A column of the computation, written in any case (``Monthly_CM`` -> ``monthly_cm``)."""
    ctx = _ctx(info)
    lowered = {c.lower(): c for c in ctx["comp"].columns}
    if v.lower() not in lowered:
        raise ValueError(f'unknown column "{v}"; the computation of {ctx["name"]} has: '
                         f"{', '.join(ctx['comp'].columns)}")
    return lowered[v.lower()]


def _known_input(v: str, info: ValidationInfo) -> str:
    ctx = _ctx(info)
    if v not in ctx["inputs_known"]:
        raise ValueError(f'unknown input "{v}"; known: metric-layer tables ({", ".join(sorted(ctx["comps"]))}) '
                         f"or clean.<entity>")
    return v


def _number(v: object) -> object:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {v!r}")
    return v


def _as_text(v: object) -> object:
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v   # version: 1 means "1"


def _as_list(v: object) -> object:
    return [v] if isinstance(v, str) else v                                            # grain: segment


def _as_parameter(v: object) -> object:
    return v if isinstance(v, dict) else {"value": _number(v)}                         # name: 6.0


def _formula_lines(v: object) -> object:
    if not (v is None or isinstance(v, str) or (isinstance(v, list) and v)):
        raise ValueError(f'must be "target = expression" or a list of such lines, got {v!r}')
    for i, line in enumerate(v if isinstance(v, list) else []):
        if not isinstance(line, str):
            raise error_at((i,), f'must be text "target = expression", got {line!r}')
    return v


Number = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_as_text), StringConstraints(strip_whitespace=True, min_length=1)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ParameterSpec(Strict):
    """``name: 6.0``, ``name: {value: 6.0}`` or ``name: {by: segment, values: {smb: 6.0}, default: 7.0}``."""

    value: Number | None = None
    by: Annotated[str, AfterValidator(_column)] | None = None
    values: dict[str, Number] | None = None
    default: Number | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ParameterSpec:
        if self.by is None and self.value is None:
            raise ValueError("needs value: <number> (or by: <column> with values: {level: number})")
        if self.by is None and (self.values is not None or self.default is not None):
            raise ValueError("values/default need by: <column>")
        if self.by is not None and self.value is not None:
            raise ValueError("use either value (one constant) or by + values (one per level), not both")
        if self.by is not None and not self.values:
            raise error_at(("values",), "must map each level of the 'by' column to a number, e.g. {smb: 0.03}")
        return self

    def parameter(self, name: str) -> Parameter:
        return Parameter(name=name, value=self.value, by=self.by, default=self.default,
                         values=tuple((str(k), v) for k, v in (self.values or {}).items()),
                         description=(self.description or "").strip())


# `assert` is a Python keyword, so no class body can declare it; create_model can. (An alias would not do: the
# loader's "allowed:" list and its "did you mean" name the fields, and would say assert_.)
if TYPE_CHECKING:
    # What a type checker can know of the class create_model builds: every field but "assert" (read with getattr).
    class _QaTestFields(Strict):
        name: str
else:
    _QaTestFields = create_model("QaTestSpec", __base__=Strict, name=(str, ...), **{"assert": (str, ...)})


class QaTestSpec(_QaTestFields):
    severity: Severity = "error"
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be letters, digits and _ (it names a Dagster asset check)")
        if v in RESERVED_TESTS:
            raise ValueError(f"{v!r} is reserved for the automatic check of that name; rename the test")
        return v


class MetricDoc(Strict):
    """One metric contract file: the spec's fields first (§3 "Example Contract"), then the optional ones."""

    metric: Text
    definition: Text
    grain: Annotated[list[Annotated[Name, AfterValidator(_column)]], BeforeValidator(_as_list), Field(min_length=1)]
    inputs: Annotated[list[Annotated[Name, AfterValidator(_known_input)]], BeforeValidator(_as_list),
                      Field(min_length=1)]
    formula: Annotated[str | list[str] | None, BeforeValidator(_formula_lines)] = None
    qa_tests: Annotated[list[QaTestSpec], Field(min_length=1)]
    break_action: BreakAction
    owner: Text
    kind: Kind = "metric"
    description: str | None = None
    unit: str | None = None
    version: Text = "1"
    parameters: dict[str, Annotated[ParameterSpec, BeforeValidator(_as_parameter)]] = {}
    null_policy: NullPolicy = "fail"
    _formulas: tuple[Formula, ...] = PrivateAttr(default=())
    _tests: tuple[QaTest, ...] = PrivateAttr(default=())

    @field_validator("inputs")
    @classmethod
    def _what_the_computation_reads(cls, v: list[str], info: ValidationInfo) -> list[str]:
        comp, name = _ctx(info)["comp"], _ctx(info)["name"]
        if len(set(v)) != len(v):
            raise ValueError(f"lists an input twice: {v}")
        not_listed = [r for r in comp.reads if r not in v]
        if not_listed:
            raise ValueError(f"the computation of {name} reads {not_listed}, which the contract does not list; add "
                             f"them to inputs")
        not_read = [i for i in v if i not in comp.reads]
        if not_read:
            raise ValueError(f"{not_read} are not read by the computation of {name} (it reads {list(comp.reads)}); "
                             f"remove them")
        return v

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, v: dict[str, ParameterSpec], info: ValidationInfo) -> dict[str, ParameterSpec]:
        comp, name = _ctx(info)["comp"], _ctx(info)["name"]
        for p in v:
            if not _NAME.match(p):
                raise error_at((p,), "a parameter name must be letters, digits and _ (it is used in formulas)")
            if p.lower() in {c.lower() for c in comp.columns}:
                raise error_at((p,), f'"{p}" is already a column of {name}; rename it')
        return v

    @field_validator("qa_tests")
    @classmethod
    def _unique_tests(cls, v: list[QaTestSpec]) -> list[QaTestSpec]:
        seen: set[str] = set()
        for i, t in enumerate(v):
            if t.name in seen:
                raise error_at((i, "name"),
                               f"{t.name!r} is used by another test of this contract; names must be unique")
            seen.add(t.name)
        return v

    @model_validator(mode="after")
    def _compile(self, info: ValidationInfo) -> MetricDoc:
        """Formulas in order (a line may use the targets above it), then the asserts, through the allow-list
        compiler; its ExpressionError already names file and field."""
        ctx = _ctx(info)
        if self.formula is None and self.kind == "metric":
            raise error_at(("formula",), 'is required ("target = expression"); only kind: fact may omit it')
        known = list(ctx["comp"].columns) + list(self.parameters)
        lines = [self.formula] if isinstance(self.formula, str) else self.formula or []
        formulas = []
        for i, text in enumerate(lines):
            field = "formula" if isinstance(self.formula, str) else f"formula[{i}]"
            target, expr = compile_formula(text, known, where=f"{ctx['where']}: {field}")
            if target.lower() in {k.lower() for k in known}:
                raise error_at(("formula",) if isinstance(self.formula, str) else ("formula", i),
                          f'the target "{target}" is already a column or parameter of {ctx["name"]}; choose a new '
                          f"name")
            formulas.append(Formula(text=text.strip(), target=target, expression=expr))
            known.append(target)
        self._formulas = tuple(formulas)
        self._tests = tuple(
            QaTest(name=t.name, text=getattr(t, "assert").strip(), severity=t.severity,
                   description=(t.description or "").strip(),
                   expression=compile_assertion(getattr(t, "assert"), known,
                                                where=f"{ctx['where']}: qa_tests[{i}].assert"))
            for i, t in enumerate(self.qa_tests))
        return self

    def contract(self, path: Path) -> MetricContract:
        return MetricContract(
            path=path, name=path.stem, metric=self.metric, definition=self.definition, grain=tuple(self.grain),
            inputs=tuple(self.inputs), formulas=self._formulas, qa_tests=self._tests, break_action=self.break_action,
            owner=self.owner, kind=self.kind, description=(self.description or "").strip(),
            unit=(self.unit or "").strip(), version=self.version,
            parameters=tuple(p.parameter(k) for k, p in self.parameters.items()), null_policy=self.null_policy,
            digest=hashlib.sha256(path.read_bytes()).hexdigest()[:12])


def known_inputs(contracts_dir: Path, comps: dict[str, Computation]) -> set[str]:
    """Names a contract may list under inputs: the metric layer's tables and ``clean.<entity>``."""
    entities = {p.stem for p in (contracts_dir / "entities").glob("*.yaml")}
    return set(comps) | {CLEAN_PREFIX + e for e in entities}


def parse_metric_contract(path: Path, comps: dict[str, Computation], inputs_known: set[str]) -> MetricContract:
    where = f"contracts/metrics/{path.name}"
    doc = read_yaml(path, where)
    name = path.stem
    comp = comps.get(name)
    if comp is None:
        raise ContractError(f'{where}: no computation is registered for "{name}" (the file name is the table name); '
                            f"known: {', '.join(sorted(comps))}")
    if not isinstance(doc, dict):
        raise ContractError(f"{where}: expected a mapping of fields at the top level (metric, definition, grain, "
                            f"inputs, formula, qa_tests, break_action, owner), got {type(doc).__name__}")
    context = {"where": where, "name": name, "comp": comp, "comps": comps, "inputs_known": inputs_known}
    return validate(MetricDoc, doc, where, context).contract(path)


@lru_cache(maxsize=256)
def _cached(path_str: str, mtime: float, size: int, contracts_dir: str) -> MetricContract:
    comps = computations()
    return parse_metric_contract(Path(path_str), comps, known_inputs(Path(contracts_dir), comps))


def load_metric_contracts(contracts_dir: Path) -> dict[str, MetricContract]:
    """Every metric contract, validated, in dependency order (inputs before the metrics that read them)."""
    folder = contracts_dir / "metrics"
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ContractError(f"{folder}: no metric contracts found (expected one <metric>.yaml per metric table)")
    out: dict[str, MetricContract] = {}
    for f in files:
        st = f.stat()
        c = _cached(str(f), st.st_mtime, st.st_size, str(contracts_dir))
        out[c.name] = c
    missing = sorted(set(computations()) - set(out))
    if missing:
        raise ContractError(f"{folder}: no contract for metric table(s) {missing}; add contracts/metrics/<name>.yaml "
                            f"for each (metric, definition, grain, inputs, formula, qa_tests, break_action, owner)")
    return {name: out[name] for name in _topological(out)}


def _topological(contracts: dict[str, MetricContract]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ContractError(f"contracts/metrics: inputs form a cycle: {' -> '.join(trail + [name])}")
        state[name] = 1
        for inp in contracts[name].inputs:
            if inp in contracts:
                visit(inp, trail + [name])
        state[name] = 2
        order.append(name)

    for n in sorted(contracts):
        visit(n, [])
    return order
