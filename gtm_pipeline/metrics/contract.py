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
definitions load: unknown fields, unknown inputs, unknown columns in grain/formula/assert (through
`gtm_pipeline.expressions`, the only compiler of contract text), duplicate test names, unknown break actions.
Names in formulas and asserts match the computation's columns case-insensitively (``Monthly_CM`` ->
``monthly_cm``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from gtm_pipeline.errors import ContractError
from gtm_pipeline.expressions import Denominator, Expression, compile_assertion, compile_formula
from gtm_pipeline.metrics.registry import CLEAN_PREFIX, Computation, computations

PAGE = "block_publish_and_page_owner"
NOTIFY = "block_publish_and_notify_owner"
BREAK_ACTIONS = {
    PAGE: "the previous version stays published; a SEV2 incident opens and the owner is paged",
    NOTIFY: "the previous version stays published; a SEV2 incident opens and the owner is notified",
}
SEVERITIES = ("error", "warn")
NULL_POLICIES = ("fail", "allow")
KINDS = ("metric", "fact")
# Checks every metric gets without writing them; contract tests may not use these names.
CHECK_GRAIN_UNIQUE = "grain_unique"
CHECK_DENOMINATOR = "denominator_positive"
RESERVED_TESTS = (CHECK_GRAIN_UNIQUE, CHECK_DENOMINATOR)

_REQUIRED = ("metric", "definition", "grain", "inputs", "qa_tests", "break_action", "owner")
_OPTIONAL = ("formula", "kind", "description", "unit", "version", "parameters", "null_policy")
_TEST_KEYS = ("name", "assert", "severity", "description")
_PARAM_KEYS = ("value", "by", "values", "default", "description")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _err(where: str, msg: str) -> ContractError:
    return ContractError(f"{where}: {msg}")


def _text(where: str, value: object, field: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or str(value).strip() == "":
        raise _err(f"{where}: {field}", f"must be non-empty text, got {value!r}")
    return str(value).strip()


def _string_list(where: str, value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(f"{where}: {field}",
                   f'must be a non-empty list of names, like ["segment", "channel"]; got {value!r}')
    return tuple(v.strip() for v in value)


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(where, f"must be a number, got {value!r}")
    return float(value)


def _parameter(where: str, name: str, body: object, base: tuple[str, ...]) -> Parameter:
    w = f"{where}: parameters.{name}"
    if not _NAME.match(str(name)):
        raise _err(w, "a parameter name must be letters, digits and _ (it is used in formulas)")
    if not isinstance(body, dict):
        return Parameter(name=name, value=_number(w, body))
    unknown = sorted(set(body) - set(_PARAM_KEYS))
    if unknown:
        raise _err(w, f"unknown field(s) {unknown}; allowed: {', '.join(_PARAM_KEYS)}")
    desc = str(body.get("description", "")).strip()
    if "by" in body:
        by = body["by"]
        lowered = {c.lower(): c for c in base}
        if not isinstance(by, str) or by.lower() not in lowered:
            raise _err(f"{w}.by", f"{by!r} is not a column of the metric; known: {', '.join(base)}")
        vals = body.get("values")
        if not isinstance(vals, dict) or not vals:
            raise _err(f"{w}.values", "must map each level of the 'by' column to a number, e.g. {smb: 0.03}")
        if "value" in body:
            raise _err(w, "use either value (one constant) or by + values (one per level), not both")
        default = _number(f"{w}.default", body["default"]) if "default" in body else None
        return Parameter(name=name, by=lowered[by.lower()], default=default, description=desc,
                         values=tuple((str(k), _number(f"{w}.values.{k}", v)) for k, v in vals.items()))
    if "value" not in body:
        raise _err(w, "needs value: <number> (or by: <column> with values: {level: number})")
    if "values" in body or "default" in body:
        raise _err(w, "values/default need by: <column>")
    return Parameter(name=name, value=_number(f"{w}.value", body["value"]), description=desc)


def known_inputs(contracts_dir: Path, comps: dict[str, Computation]) -> set[str]:
    """Names a contract may list under inputs: the metric layer's tables and ``clean.<entity>``."""
    entities = {p.stem for p in (contracts_dir / "entities").glob("*.yaml")}
    return set(comps) | {CLEAN_PREFIX + e for e in entities}


def parse_metric_contract(path: Path, comps: dict[str, Computation], inputs_known: set[str]) -> MetricContract:
    where = f"contracts/metrics/{path.name}"
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _err(where, f"not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise _err(where, "must be a mapping with " + ", ".join(_REQUIRED))
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _err(where, f"unknown field(s) {unknown}; allowed: {', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise _err(where, f"missing required field(s) {missing}; a metric contract needs {', '.join(_REQUIRED)}")
    name = path.stem
    comp = comps.get(name)
    if comp is None:
        raise _err(where, f'no computation is registered for "{name}" (the file name is the table name); '
                          f"known: {', '.join(sorted(comps))}")
    kind = str(doc.get("kind", "metric"))
    if kind not in KINDS:
        raise _err(f"{where}: kind", f"{kind!r} is not allowed; use one of {', '.join(KINDS)}")
    base = comp.columns

    # inputs: known names, and exactly what the computation reads
    inputs = _string_list(where, doc["inputs"], "inputs")
    for i, inp in enumerate(inputs):
        if inp not in inputs_known:
            raise _err(f"{where}: inputs[{i}]", f'unknown input "{inp}"; known: metric-layer tables '
                                                f"({', '.join(sorted(comps))}) or clean.<entity>")
    if len(set(inputs)) != len(inputs):
        raise _err(f"{where}: inputs", f"lists an input twice: {list(inputs)}")
    not_listed = [r for r in comp.reads if r not in inputs]
    if not_listed:
        raise _err(f"{where}: inputs", f"the computation of {name} reads {not_listed}, which the contract does not "
                                       f"list; add them to inputs")
    not_read = [i for i in inputs if i not in comp.reads]
    if not_read:
        raise _err(f"{where}: inputs", f"{not_read} are not read by the computation of {name} "
                                       f"(it reads {list(comp.reads)}); remove them")

    # grain: columns of the base
    grain = _string_list(where, doc["grain"], "grain")
    lowered = {c.lower(): c for c in base}
    for i, g in enumerate(grain):
        if g.lower() not in lowered:
            raise _err(f"{where}: grain[{i}]", f'unknown column "{g}"; the computation of {name} has: '
                                               f"{', '.join(base)}")
    grain = tuple(lowered[g.lower()] for g in grain)

    # parameters
    params_raw = doc.get("parameters") or {}
    if not isinstance(params_raw, dict):
        raise _err(f"{where}: parameters", "must map parameter names to numbers")
    params = tuple(_parameter(where, str(k), v, base) for k, v in params_raw.items())
    for p in params:
        if p.name.lower() in lowered:
            raise _err(f"{where}: parameters.{p.name}", f'"{p.name}" is already a column of {name}; rename it')
    known = list(base) + [p.name for p in params]

    # formula(s)
    f_raw = doc.get("formula")
    if f_raw is None:
        if kind == "metric":
            raise _err(where, 'missing required field "formula" ("target = expression"); only kind: fact may omit it')
        f_list: list = []
    else:
        f_list = [f_raw] if isinstance(f_raw, str) else f_raw
        if not isinstance(f_list, list) or not f_list:
            raise _err(f"{where}: formula", 'must be "target = expression" or a list of such lines')
    formulas = []
    for i, text in enumerate(f_list):
        fw = f"{where}: formula" + (f"[{i}]" if not isinstance(f_raw, str) else "")
        if not isinstance(text, str):
            raise _err(fw, f'must be text "target = expression", got {text!r}')
        target, expr = compile_formula(text, known, where=fw)
        if target.lower() in {k.lower() for k in known}:
            raise _err(fw, f'the target "{target}" is already a column or parameter of {name}; choose a new name')
        formulas.append(Formula(text=text.strip(), target=target, expression=expr))
        known.append(target)

    # qa tests
    tests_raw = doc["qa_tests"]
    if not isinstance(tests_raw, list) or not tests_raw:
        raise _err(f"{where}: qa_tests", "must be a non-empty list of {name: ..., assert: ...}")
    tests, seen = [], set()
    for i, t in enumerate(tests_raw):
        tw = f"{where}: qa_tests[{i}]"
        if not isinstance(t, dict) or "name" not in t or "assert" not in t:
            raise _err(tw, "must be a mapping with name and assert")
        unknown = sorted(set(t) - set(_TEST_KEYS))
        if unknown:
            raise _err(tw, f"unknown field(s) {unknown}; allowed: {', '.join(_TEST_KEYS)}")
        tname = str(t["name"])
        if not _NAME.match(tname):
            raise _err(f"{tw}.name", f"{tname!r} must be letters, digits and _ (it names a Dagster asset check)")
        if tname in RESERVED_TESTS:
            raise _err(f"{tw}.name", f"{tname!r} is reserved for the automatic check of that name; rename the test")
        if tname in seen:
            raise _err(f"{tw}.name", f"{tname!r} is used by another test of this contract; names must be unique")
        seen.add(tname)
        sev = str(t.get("severity", "error"))
        if sev not in SEVERITIES:
            raise _err(f"{tw}.severity", f"{sev!r} is not allowed; use error (blocks publication) or warn")
        if not isinstance(t["assert"], str):
            raise _err(f"{tw}.assert", f"must be text, got {t['assert']!r}")
        expr = compile_assertion(t["assert"], known, where=f"{tw}.assert")
        tests.append(QaTest(name=tname, text=t["assert"].strip(), expression=expr, severity=sev,
                            description=str(t.get("description", "")).strip()))

    action = str(doc["break_action"])
    if action not in BREAK_ACTIONS:
        raise _err(f"{where}: break_action", f"{action!r} is not a break action; allowed: "
                                             + "; ".join(f"{k} ({v})" for k, v in BREAK_ACTIONS.items()))
    policy = str(doc.get("null_policy", "fail"))
    if policy not in NULL_POLICIES:
        raise _err(f"{where}: null_policy", f"{policy!r} is not allowed; use fail or allow")
    return MetricContract(
        path=path, name=name, metric=_text(where, doc["metric"], "metric"),
        definition=_text(where, doc["definition"], "definition"), grain=grain, inputs=inputs,
        formulas=tuple(formulas), qa_tests=tuple(tests), break_action=action,
        owner=_text(where, doc["owner"], "owner"), kind=kind,
        description=str(doc.get("description", "")).strip(), unit=str(doc.get("unit", "")).strip(),
        version=str(doc.get("version", "1")), parameters=params, null_policy=policy,
        digest=hashlib.sha256(raw).hexdigest()[:12])


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
