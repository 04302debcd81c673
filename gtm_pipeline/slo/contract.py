"""`contracts/slos.yaml`: loading, validation and which assets each SLO covers.

Two steps, because they need different things:
- `load_slo_file(path)` checks the file on its own (fields, durations, objectives, alert windows, statements), with
  the one contract loader (`gtm_pipeline.contract_loader`): `SloDoc` below is the file's shape;
- `resolve_coverage(slo_file, asset_index)` turns the selectors (``key``, ``group``, ``prefix``, ``exclude``) into
  asset keys against the assets that exist when definitions load, and rejects unknown keys with close matches.
Every error names the file, the field and the fix (docs/style.md rule 8).
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, read_yaml, validate
from gtm_pipeline.errors import ContractError
from gtm_pipeline.slo.durations import duration_seconds, not_a_duration

# format_duration and human_duration are re-exported: callers outside slo/ read them from here.
from gtm_pipeline.slo.durations import format_duration as format_duration
from gtm_pipeline.slo.durations import human_duration as human_duration

log = logging.getLogger(__name__)

SEVERITIES = {"page": "SEV2", "ticket": "SEV3"}  # fast burn pages (SEV2), slow burn opens a ticket (SEV3)
LEVELS = ("ok", "ticket", "page")                 # ordered: an alert level only rises immediately
# Stages whose assets can be covered (keys are [stage, name], gtm_pipeline.keys).
STAGES = ("ingest", "clean", "contracts", "metrics", "decisions")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# "P(ForecastAge<4h) >= 0.98" or with the spec's "≥"
_STATEMENT = re.compile(r"^P\((\w+)\s*<\s*(\d+[smhdw])\)\s*(?:>=|≥)\s*([0-9.]+)$")

# The SRE Workbook's pairs (ch. 5, table 5-8), used when the file has no `alerting` section.
DEFAULT_ALERTING = (("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0), ("ticket", "1d", "2h", 3.0),
                    ("ticket", "3d", "6h", 1.0))


def _duration(value: object) -> int:
    seconds = duration_seconds(value)
    if seconds is None:
        raise ValueError(not_a_duration(value))
    return seconds


def _duration_or_zero(value: object) -> int:
    return 0 if str(value).strip() in ("0", "0s") else _duration(value)


def _objective(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{value!r} must be a number strictly between 0 and 1, e.g. 0.98")
    return float(value)


def _team(value: object) -> object:
    if value is None or value == "":
        raise ValueError("is required: the team that answers for the SLO, e.g. RevOps")
    return value


def _as_key(value: object) -> object:
    return {"key": value} if isinstance(value, str) else value   # '- metrics/forecast' is short for '- key: ...'




Duration = Annotated[int, BeforeValidator(_duration)]
Objective = Annotated[float, BeforeValidator(_objective)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class DefaultsSpec(Strict):
    objective: Objective = 0.98
    window: Duration = 28 * 86400
    evaluation_interval: Duration = 60
    resolve_after: Annotated[int, BeforeValidator(_duration_or_zero)] = 600   # 0: step down at once
    report_interval: Duration = 900


class AlertSpec(Strict):
    severity: Literal["page", "ticket"]
    long: Duration
    short: Duration
    burn_rate: Annotated[float, Field(strict=True, gt=0)]

    @model_validator(mode="after")
    def _short_inside_long(self) -> AlertSpec:
        if self.short >= self.long:
            raise ValueError(f"short window {format_duration(self.short)} must be shorter than long window "
                             f"{format_duration(self.long)} (the workbook uses short = long / 12)")
        return self


class PrometheusSpec(Strict):
    rule_interval: Duration = 30
    absent_for: Duration = 600


class SelectorSpec(Strict):
    key: Text | None = None
    group: Text | None = None
    prefix: Text | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SelectorSpec:
        given = [k for k in ("key", "group", "prefix") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a selector is exactly one of key:, group:, prefix: (e.g. '- key: metrics/forecast'), "
                             f"got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("key", "group", "prefix") if getattr(self, k) is not None)


SelectorItem = Annotated[SelectorSpec, BeforeValidator(_as_key)]


class SloSpec(Strict):
    name: str
    statement: str | None = None
    description: str | None = None
    threshold: Duration                 # an asset is fresh while its published age is below this
    warn_after: Duration | None = None
    objective: Objective | None = None  # default: defaults.objective
    window: Duration | None = None      # default: defaults.window
    owner: Annotated[Text, BeforeValidator(_team)]
    assets: Annotated[list[SelectorItem], Field(min_length=1)]
    exclude: list[SelectorItem] = []

    @field_validator("name")
    @classmethod
    def _snake_case(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be snake_case (letters, digits, underscores), e.g. forecast_age")
        return v

    @field_validator("statement")
    @classmethod
    def _statement_form(cls, v: str | None) -> str | None:
        if v and not _STATEMENT.match(v.strip()):
            raise ValueError(f"{v!r} is not of the form 'P(ForecastAge<4h) >= 0.98'")
        return v

    @model_validator(mode="after")
    def _warn_before_stale(self) -> SloSpec:
        if self.warn_after is not None and self.warn_after >= self.threshold:
            raise error_at(("warn_after",), f"{format_duration(self.warn_after)} must be shorter than threshold "
                                       f"{format_duration(self.threshold)}")
        return self


class SloDoc(Strict):
    """The whole file; checks that need the file-wide defaults, alerting or Prometheus settings live here."""

    version: Literal[1]
    defaults: DefaultsSpec | None = None
    alerting: Annotated[list[AlertSpec], Field(min_length=1)] | None = None   # default: DEFAULT_ALERTING
    prometheus: PrometheusSpec | None = None
    slos: Annotated[list[SloSpec], Field(min_length=1)]

    def burn_windows(self) -> tuple[BurnWindow, ...]:
        if self.alerting is None:
            return tuple(BurnWindow(s, _duration(lo), _duration(sh), r) for s, lo, sh, r in DEFAULT_ALERTING)
        return tuple(BurnWindow(a.severity, a.long, a.short, float(a.burn_rate)) for a in self.alerting)

    @model_validator(mode="after")
    def _consistent(self) -> SloDoc:
        defaults, prom = self.defaults or DefaultsSpec(), self.prometheus or PrometheusSpec()
        alerting = self.burn_windows()
        for b in alerting:
            if b.short < 2 * prom.rule_interval:
                raise error_at(("prometheus", "rule_interval"),
                          f"{format_duration(prom.rule_interval)} leaves fewer than two rule evaluations in the "
                          f"alerting window {format_duration(b.short)}; shorten the interval or lengthen the window")
        longest = max(b.long for b in alerting)
        seen: set[str] = set()
        for i, s in enumerate(self.slos):
            if s.name in seen:
                raise error_at(("slos", i, "name"), f"SLO {s.name!r} is defined twice; names must be unique")
            seen.add(s.name)
            window = s.window or defaults.window
            if window < longest:
                raise error_at(("slos", i, "window"), f"{format_duration(window)} is shorter than the longest alerting "
                                                 f"window {format_duration(longest)}; lengthen the window or shorten "
                                                 f"the alerting windows")
            m = _STATEMENT.match(s.statement.strip()) if s.statement else None
            objective = defaults.objective if s.objective is None else s.objective
            if m and (_duration(m.group(2)) != s.threshold or abs(float(m.group(3)) - objective) > 1e-9):
                raise error_at(("slos", i, "statement"), f"{s.statement!r} disagrees with threshold "
                                                    f"{format_duration(s.threshold)} / objective {objective}; make "
                                                    f"them match")
        return self


@dataclass(frozen=True)
class BurnWindow:
    severity: str       # page | ticket
    long: int           # seconds
    short: int
    burn_rate: float

    @property
    def label(self) -> str:
        return f"{format_duration(self.short)}/{format_duration(self.long)}"


@dataclass(frozen=True)
class Selector:
    kind: str           # key | group | prefix
    value: str
    where: str          # 'slos[1] (forecast_age).assets[0].key', for messages


@dataclass(frozen=True)
class Slo:
    name: str
    statement: str
    description: str
    threshold: int      # seconds: an asset is fresh while its published age is below this
    warn_after: int | None
    objective: float
    window: int         # seconds
    owner: str
    selectors: tuple[Selector, ...]
    exclude: tuple[Selector, ...]

    @property
    def budget_seconds(self) -> float:
        """Stale time the window allows: (1 - objective) x window (13.4 h for 98% over 28 days)."""
        return (1.0 - self.objective) * self.window


@dataclass(frozen=True)
class SloFile:
    path: Path
    slos: tuple[Slo, ...]
    alerting: tuple[BurnWindow, ...]
    evaluation_interval: int
    resolve_after: int
    report_interval: int
    rule_interval: int
    absent_for: int

    @property
    def where(self) -> str:
        return _where(self.path)

    def get(self, name: str) -> Slo:
        for s in self.slos:
            if s.name == name:
                return s
        raise ContractError(f"{self.where}: no SLO named {name!r}; known: {', '.join(s.name for s in self.slos)}")

    @property
    def windows(self) -> tuple[int, ...]:
        """Every distinct alerting window, shortest first (5m, 30m, 1h, 2h, 6h, 1d, 3d by default)."""
        return tuple(sorted({w for b in self.alerting for w in (b.short, b.long)}))


def _where(path: Path) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] == "contracts" else str(path)


def _named(e: ContractError, doc: dict) -> ContractError:
    """'slos[1].threshold' -> 'slos[1] (forecast_age).threshold': the name finds the SLO faster than its index.
    Generic (a list field whose items have a name): it belongs in gtm_pipeline.contract_loader."""
    def label(m: re.Match) -> str:
        items, i = doc.get("slos"), int(m.group(1))
        item = items[i] if isinstance(items, list) and i < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        return f"{m.group(0)} ({name})" if isinstance(name, str) and name else m.group(0)

    return ContractError(re.sub(r"slos\[(\d+)\]", label, str(e), count=1))


def load_slo_file(path: Path) -> SloFile:
    """Parse and validate an SLO file; raise ContractError naming file, field and fix."""
    path = Path(path)
    where = _where(path)
    if not path.exists():
        raise ContractError(f"{where}: SLO file not found; create it (see docs/slo.md) or point "
                            f"GTM_PIPELINE_SLO_FILE at one")
    doc = read_yaml(path, where)
    if not isinstance(doc, dict):
        raise ContractError(f"{where}: expected a mapping with 'version' and 'slos'")
    try:
        spec = validate(SloDoc, doc, where)
    except ContractError as e:
        raise _named(e, doc) from None
    defaults, prom = spec.defaults or DefaultsSpec(), spec.prometheus or PrometheusSpec()
    slos = []
    for i, s in enumerate(spec.slos):
        objective = defaults.objective if s.objective is None else s.objective
        w = f"{where}: slos[{i}] ({s.name})"
        slos.append(Slo(
            name=s.name, statement=s.statement or f"P(Age<{format_duration(s.threshold)}) >= {objective:g}",
            description=(s.description or "").strip(), threshold=s.threshold, warn_after=s.warn_after,
            objective=objective, window=s.window or defaults.window, owner=s.owner,
            selectors=tuple(Selector(sel.kind, getattr(sel, sel.kind), f"{w}.assets[{j}].{sel.kind}")
                            for j, sel in enumerate(s.assets)),
            exclude=tuple(Selector(sel.kind, getattr(sel, sel.kind), f"{w}.exclude[{j}].{sel.kind}")
                          for j, sel in enumerate(s.exclude)),
        ))
    return SloFile(path=path, slos=tuple(slos), alerting=spec.burn_windows(),
                   evaluation_interval=defaults.evaluation_interval, resolve_after=defaults.resolve_after,
                   report_interval=defaults.report_interval, rule_interval=prom.rule_interval,
                   absent_for=prom.absent_for)


@dataclass(frozen=True)
class Coverage:
    """The asset keys (user strings, 'metrics/forecast') each SLO covers.

    ``pending`` holds keys named explicitly whose whole stage is not in this code location yet (e.g. the metric
    layer before it is deployed): they are reported as unknown, get no freshness policy, and become an error as
    soon as the stage exists and the key still does not.
    """

    assets: dict[str, tuple[str, ...]]
    pending: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def all_keys(self, slo: str) -> tuple[str, ...]:
        return tuple(sorted(set(self.assets.get(slo, ())) | set(self.pending.get(slo, ()))))

    def slos_of(self, asset_key: str) -> list[str]:
        return [s for s, keys in self.assets.items() if asset_key in keys]


def _unknown_key(sel: Selector, known: list[str]) -> ContractError:
    close = difflib.get_close_matches(sel.value, known, n=3, cutoff=0.8)
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    return ContractError(f"{sel.where}: unknown asset key {sel.value!r} ({hint}); fix the key or remove it "
                         "(list the keys with 'dagster asset list -m gtm_pipeline.definitions')")


def resolve_coverage(slo_file: SloFile, asset_index: dict[str, str | None]) -> Coverage:
    """Apply each SLO's selectors to ``asset_index`` ({'metrics/forecast': 'metrics', ...}: key -> group)."""
    known = sorted(asset_index)
    stages_present = {k.split("/", 1)[0] for k in known}
    groups = {g for g in asset_index.values() if g}
    covered: dict[str, tuple[str, ...]] = {}
    pending: dict[str, tuple[str, ...]] = {}
    for slo in slo_file.slos:
        keys: set[str] = set()
        waiting: set[str] = set()
        for sel in slo.selectors + slo.exclude:
            if sel.kind == "key":
                stage = sel.value.split("/", 1)[0]
                if sel.value in asset_index:
                    continue
                if stage in STAGES and stage not in stages_present:
                    continue  # the stage is not deployed yet: pending, see Coverage
                raise _unknown_key(sel, known)
            if sel.kind == "group" and sel.value not in groups and sel.value not in STAGES:
                close = difflib.get_close_matches(sel.value, sorted(groups | set(STAGES)), n=3)
                raise ContractError(f"{sel.where}: unknown asset group {sel.value!r}"
                                    f"{' (close matches: ' + ', '.join(close) + ')' if close else ''}; "
                                    f"groups are the stages: {', '.join(STAGES)}")
        for sel in slo.selectors:
            if sel.kind == "key":
                (keys if sel.value in asset_index else waiting).add(sel.value)
            elif sel.kind == "group":
                keys |= {k for k, g in asset_index.items() if g == sel.value}
            else:
                keys |= {k for k in known if k.startswith(sel.value)}
        excluded = {e.value for e in slo.exclude if e.kind == "key"}
        excluded |= {k for e in slo.exclude if e.kind == "group" for k, g in asset_index.items() if g == e.value}
        excluded |= {k for e in slo.exclude if e.kind == "prefix" for k in known if k.startswith(e.value)}
        covered[slo.name] = tuple(sorted(keys - excluded))
        pending[slo.name] = tuple(sorted(waiting - excluded))
        if not covered[slo.name]:
            log.warning("%s: SLO %s covers no asset of this code location yet%s", slo_file.where, slo.name,
                        f" (waiting for {', '.join(pending[slo.name])})" if pending[slo.name] else "")
    return Coverage(assets=covered, pending={k: v for k, v in pending.items() if v})
