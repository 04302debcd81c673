"""`contracts/slos.yaml`: loading, validation and which assets each SLO covers.

Two steps, because they need different things:
- `load_slo_file(path)` checks the file on its own (fields, durations, objectives, alert windows, statements);
- `resolve_coverage(slo_file, asset_index)` turns the selectors (``key``, ``group``, ``prefix``, ``exclude``) into
  asset keys against the assets that exist when definitions load, and rejects unknown keys with close matches.
Every error names the file, the field and the fix (STYLE rule 8).
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gtm_pipeline.errors import ContractError

log = logging.getLogger(__name__)

SEVERITIES = {"page": "SEV2", "ticket": "SEV3"}  # fast burn pages (SEV2), slow burn opens a ticket (SEV3)
LEVELS = ("ok", "ticket", "page")                 # ordered: an alert level only rises immediately
# Stages whose assets can be covered (keys are [stage, name], gtm_pipeline.keys).
STAGES = ("ingest", "clean", "contracts", "metrics", "decisions")

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# "P(ForecastAge<4h) >= 0.98" or with the spec's "≥"
_STATEMENT = re.compile(r"^P\((\w+)\s*<\s*(\d+[smhdw])\)\s*(?:>=|≥)\s*([0-9.]+)$")

_TOP_KEYS = {"version", "defaults", "alerting", "prometheus", "slos"}
_DEFAULT_KEYS = {"objective", "window", "evaluation_interval", "resolve_after", "report_interval"}
_ALERT_KEYS = {"severity", "long", "short", "burn_rate"}
_PROM_KEYS = {"rule_interval", "absent_for"}
_SLO_KEYS = {"name", "statement", "description", "threshold", "warn_after", "objective", "window", "owner",
             "assets", "exclude"}
_SELECTOR_KEYS = ("key", "group", "prefix")

# The SRE Workbook's pairs (ch. 5, table 5-8), used when the file has no `alerting` section.
DEFAULT_ALERTING = (("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0), ("ticket", "1d", "2h", 3.0),
                    ("ticket", "3d", "6h", 1.0))


def parse_duration(value: object, where: str) -> int:
    """'28d' -> seconds. Whole numbers with one unit (s, m, h, d, w), the subset Prometheus also accepts."""
    m = _DURATION.match(str(value).strip()) if isinstance(value, (str, int)) else None
    if not m or int(m.group(1)) <= 0:
        raise ContractError(f"{where}: {value!r} is not a duration; write a positive whole number with one unit "
                            f"(s, m, h, d, w), e.g. 30s, 5m, 4h, 28d")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: float) -> str:
    """The largest unit that divides exactly: 86400 -> '1d', 300 -> '5m' (valid in PromQL and in the YAML)."""
    s = int(round(seconds))
    for unit in ("w", "d", "h", "m"):
        if s and s % _UNIT_SECONDS[unit] == 0:
            return f"{s // _UNIT_SECONDS[unit]}{unit}"
    return f"{s}s"


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


def _check_keys(body: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _objective(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ContractError(f"{where}: objective {value!r} must be a number strictly between 0 and 1, e.g. 0.98")
    return float(value)


def _selectors(items: object, where: str, *, allow_plain: bool) -> tuple[Selector, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ContractError(f"{where}: expected a list of selectors such as '- key: metrics/forecast', "
                            f"'- group: metrics' or '- prefix: metrics/fact_'")
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if isinstance(item, str) and allow_plain:
            out.append(Selector("key", item, w))
            continue
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in _SELECTOR_KEYS:
            raise ContractError(f"{w}: a selector is exactly one of key:, group:, prefix: "
                                f"(e.g. '- key: metrics/forecast'), got {item!r}")
        kind, value = next(iter(item.items()))
        if not isinstance(value, str) or not value.strip():
            raise ContractError(f"{w}.{kind}: expected a non-empty string")
        out.append(Selector(kind, value.strip(), f"{w}.{kind}"))
    return tuple(out)


def load_slo_file(path: Path) -> SloFile:
    """Parse and validate an SLO file; raise ContractError naming file, field and fix."""
    path = Path(path)
    where = _where(path)
    if not path.exists():
        raise ContractError(f"{where}: SLO file not found; create it (see docs/slo.md) or point "
                            f"GTM_PIPELINE_SLO_FILE at one")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ContractError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ContractError(f"{where}: expected a mapping with 'version' and 'slos'")
    _check_keys(raw, _TOP_KEYS, where)
    if raw.get("version") != 1:
        raise ContractError(f"{where}: version: expected 1, got {raw.get('version')!r}")

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ContractError(f"{where}: defaults: expected a mapping")
    _check_keys(defaults, _DEFAULT_KEYS, f"{where}: defaults")
    d_objective = _objective(defaults.get("objective", 0.98), f"{where}: defaults.objective")
    d_window = parse_duration(defaults.get("window", "28d"), f"{where}: defaults.window")
    evaluation_interval = parse_duration(defaults.get("evaluation_interval", "1m"),
                                         f"{where}: defaults.evaluation_interval")
    resolve_after = (0 if str(defaults.get("resolve_after", "")).strip() in ("0", "0s")
                     else parse_duration(defaults.get("resolve_after", "10m"), f"{where}: defaults.resolve_after"))
    report_interval = parse_duration(defaults.get("report_interval", "15m"), f"{where}: defaults.report_interval")

    alerting_raw = raw.get("alerting")
    if alerting_raw is None:
        alerting = tuple(BurnWindow(s, parse_duration(lo, where), parse_duration(sh, where), r)
                         for s, lo, sh, r in DEFAULT_ALERTING)
    else:
        if not isinstance(alerting_raw, list) or not alerting_raw:
            raise ContractError(f"{where}: alerting: expected a non-empty list of "
                                f"{{severity, long, short, burn_rate}}")
        items = []
        for i, a in enumerate(alerting_raw):
            w = f"{where}: alerting[{i}]"
            if not isinstance(a, dict):
                raise ContractError(f"{w}: expected a mapping {{severity, long, short, burn_rate}}")
            _check_keys(a, _ALERT_KEYS, w)
            missing = sorted(_ALERT_KEYS - set(a))
            if missing:
                raise ContractError(f"{w}: missing {', '.join(missing)}")
            if a["severity"] not in SEVERITIES:
                raise ContractError(f"{w}.severity: {a['severity']!r} is not one of {', '.join(SEVERITIES)}")
            long_s, short_s = parse_duration(a["long"], f"{w}.long"), parse_duration(a["short"], f"{w}.short")
            if short_s >= long_s:
                raise ContractError(f"{w}: short window {a['short']} must be shorter than long window {a['long']} "
                                    f"(the workbook uses short = long / 12)")
            rate = a["burn_rate"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
                raise ContractError(f"{w}.burn_rate: {rate!r} must be a positive number, e.g. 14.4")
            items.append(BurnWindow(a["severity"], long_s, short_s, float(rate)))
        alerting = tuple(items)

    prom = raw.get("prometheus") or {}
    if not isinstance(prom, dict):
        raise ContractError(f"{where}: prometheus: expected a mapping")
    _check_keys(prom, _PROM_KEYS, f"{where}: prometheus")
    rule_interval = parse_duration(prom.get("rule_interval", "30s"), f"{where}: prometheus.rule_interval")
    absent_for = parse_duration(prom.get("absent_for", "10m"), f"{where}: prometheus.absent_for")
    for b in alerting:
        if b.short < 2 * rule_interval:
            raise ContractError(f"{where}: alerting window {format_duration(b.short)} holds fewer than two rule "
                                f"evaluations at prometheus.rule_interval {format_duration(rule_interval)}; "
                                f"lengthen the window or shorten the interval")

    slos_raw = raw.get("slos")
    if not isinstance(slos_raw, list) or not slos_raw:
        raise ContractError(f"{where}: slos: expected a non-empty list of SLOs")
    slos: list[Slo] = []
    for i, body in enumerate(slos_raw):
        if not isinstance(body, dict):
            raise ContractError(f"{where}: slos[{i}]: expected a mapping")
        name = body.get("name")
        w = f"{where}: slos[{i}]" + (f" ({name})" if name else "")
        _check_keys(body, _SLO_KEYS, w)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ContractError(f"{w}.name: {name!r} must be snake_case (letters, digits, underscores), "
                                f"e.g. forecast_age")
        if name in {s.name for s in slos}:
            raise ContractError(f"{w}.name: SLO {name!r} is defined twice; names must be unique")
        for req in ("threshold", "owner", "assets"):
            if not body.get(req):
                raise ContractError(f"{w}: missing {req}")
        threshold = parse_duration(body["threshold"], f"{w}.threshold")
        warn_after = parse_duration(body["warn_after"], f"{w}.warn_after") if body.get("warn_after") else None
        if warn_after is not None and warn_after >= threshold:
            raise ContractError(f"{w}.warn_after: {body['warn_after']} must be shorter than threshold "
                                f"{body['threshold']}")
        objective = _objective(body.get("objective", d_objective), f"{w}.objective")
        window = parse_duration(body["window"], f"{w}.window") if "window" in body else d_window
        longest = max(b.long for b in alerting)
        if window < longest:
            raise ContractError(f"{w}.window: {format_duration(window)} is shorter than the longest alerting window "
                                f"{format_duration(longest)}; lengthen the window or shorten the alerting windows")
        statement = str(body.get("statement") or f"P(Age<{format_duration(threshold)}) >= {objective:g}")
        if body.get("statement"):
            m = _STATEMENT.match(statement.strip())
            if not m:
                raise ContractError(f"{w}.statement: {statement!r} is not of the form 'P(ForecastAge<4h) >= 0.98'")
            if parse_duration(m.group(2), f"{w}.statement") != threshold or abs(float(m.group(3)) - objective) > 1e-9:
                raise ContractError(f"{w}.statement: {statement!r} disagrees with threshold "
                                    f"{format_duration(threshold)} / objective {objective}; make them match")
        if not isinstance(body["owner"], str):
            raise ContractError(f"{w}.owner: expected a team name, e.g. RevOps")
        slos.append(Slo(
            name=name, statement=statement, description=str(body.get("description") or "").strip(),
            threshold=threshold, warn_after=warn_after, objective=objective, window=window,
            owner=body["owner"].strip(),
            selectors=_selectors(body["assets"], f"{w}.assets", allow_plain=True),
            exclude=_selectors([{"key": e} if isinstance(e, str) else e for e in body.get("exclude") or []],
                               f"{w}.exclude", allow_plain=False),
        ))
    return SloFile(path=path, slos=tuple(slos), alerting=alerting, evaluation_interval=evaluation_interval,
                   resolve_after=resolve_after, report_interval=report_interval, rule_interval=rule_interval,
                   absent_for=absent_for)


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
    return ContractError(f"{sel.where}: unknown asset key {sel.value!r} ({hint}); "
                         f"fix the key or remove it (list the keys with 'dagster asset list -m gtm_pipeline.definitions')")


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


def human_duration(seconds: float | None) -> str:
    """For people: 3725 -> '1h02m', 90061 -> '1d01h', 42 -> '42s'; None -> '-'."""
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"
