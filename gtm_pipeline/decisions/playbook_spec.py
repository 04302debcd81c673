"""The YAML schema of a playbook (`contracts/decisions/<node>.yaml`): one pydantic model per node, read by the one
contract loader (`gtm_pipeline.contract_loader`), so a problem raises ContractError naming file, field and fix.

A playbook carries what spec 002 §4 says about one decision node -- inputs, pre-checks, thresholds, action,
owner/approvers, risk, reversal and monitoring -- plus the §1 taxonomy (owner, reversibility, risk class, cadence).
Thresholds are named numbers checked against a per-node model whose defaults are the spec's numbers; nothing in a
playbook is ever run as code. `gtm_pipeline.decisions.playbook` turns a validated file into a `Playbook`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from gtm_pipeline.contract_loader import Strict, error_at

Node = Literal["pricing.change", "channel.invest", "icp.update", "routing.policy", "experiment.ship"]
Level = Literal["High", "Medium", "Low"]
Cadence = Literal["weekly_ops", "monthly_business_review", "quarterly_plan"]
Severity = Literal["SEV1", "SEV2", "SEV3", "SEV4"]
WatchRule = Literal["band", "max_drop", "max_drop_abs", "max_increase", "max", "min", "report"]
# Which open incidents block a node: those on what the node reads (`dependencies`) or every open one (`any`).
Scope = Literal["dependencies", "any"]
NODES, LEVELS, CADENCES, SEVERITIES, WATCH_RULES, INCIDENT_SCOPES = (
    get_args(t) for t in (Node, Level, Cadence, Severity, WatchRule, Scope))
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
# Covariant: the models are frozen, so a Monitoring[Literal["cm_per_seat", ...]] is a Monitoring[str].
W = TypeVar("W", covariant=True)




def num(default: Any = None, lo: float | None = None, hi: float | None = None, *, nullable: bool = False,
        hint: str = "") -> Any:
    """A number field, used like pydantic's ``Field``: never a bool or text, within [lo, hi], with the spec's default
    (None: required, unless ``nullable``, where null switches the check off). ``hint`` is added to the message for a
    null. The annotation gives the type (``float``, ``int``, ``float | None``): ``x: float = num(0.5, 0)`` for a
    field with a default, ``x: Annotated[float, num(None, 0)]`` for a required one (a value after ``=`` would tell
    a type checker the field has a default)."""
    def check(v: object) -> object:
        if v is None:
            if nullable:
                return None
            if default is None:
                raise ValueError("is required: give a number")
            raise ValueError(f"must be a number (remove the line to use the spec's default {default!r}){hint}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number, got {v!r}" + (f"; e.g. {default!r}" if default is not None else ""))
        return v

    required = default is None and not nullable
    info: FieldInfo = Field(ge=lo, le=hi) if required else Field(default=default, ge=lo, le=hi)
    info.metadata.append(BeforeValidator(check))   # after the bounds, so it runs first: a null is named as such
    return info


def _reasons(v: object) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(r, str) and r.strip()
                                          for k, r in v.items()):
        raise ValueError(f"must map each name to the reason in words, e.g. {{partner: \"partner-registered leads "
                         f"enter the CRM without a web session\"}}; got {v!r}")
    return {k: r.strip() for k, r in v.items()}


def _text_version(v: object) -> object:
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v   # version: 1 means "1"


# ---- the parts every playbook has -----------------------------------------------------------------------------------

class Taxonomy(Strict):
    owner: Text
    reversibility: Level
    risk_class: Level
    cadence: Cadence


class Prechecks(Strict):
    """The pre-checks every node shares (spec: SLO health green, no open SEV2+ incident); nodes add their own."""

    slo_health_green: bool = True
    max_open_incident: Severity = "SEV2"
    incident_scope: Scope = "dependencies"

    @field_validator("slo_health_green")
    @classmethod
    def _green(cls, v: bool) -> bool:
        if v is not True:
            raise ValueError("the spec requires SLO health green for every node; it can only be true")
        return v

    def node_specific(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(Prechecks.model_fields))


class Action(Strict):
    flag: Text
    summary: Text


class Reversal(Strict):
    plan: Text
    within_minutes: Annotated[float, num(None, 0.01)]
    automatic_on_breach: StrictBool = False


class WatchSpec(Strict, Generic[W]):
    model_config = ConfigDict(validate_default=True)   # a missing limit is checked against the rule

    metric: W                           # the node's watchable metrics (a Literal per node)
    rule: WatchRule
    limit: float | None = num(None, 0, nullable=True)  # unused by rule report

    @field_validator("limit")
    @classmethod
    def _needed(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None and info.data.get("rule", "report") != "report":
            raise ValueError("is required: give a number")
        return v


class Monitoring(Strict, Generic[W]):
    window_days: Annotated[int, num(None, 1, 366)]
    watch: Annotated[list[WatchSpec[W]], Field(min_length=1)]


class PlaybookSpec(Strict):
    """What every playbook file holds; one subclass per node fixes its thresholds, pre-checks, the metric tables its
    rules read (``NEEDS``) and what its monitoring may watch."""

    NEEDS: ClassVar[frozenset[str]] = frozenset()

    node: Node
    version: Annotated[Text, BeforeValidator(_text_version)]
    title: Text
    description: str | None = None
    spec: str | None = None
    taxonomy: Taxonomy
    approvers: Annotated[list[Text], Field(min_length=1)]
    inputs: Annotated[list[str], Field(min_length=1)]
    prechecks: Prechecks = Prechecks()
    thresholds: Strict = Strict()       # each node's model has its own
    action: Action
    risk: Text
    reversal: Reversal
    monitoring: Monitoring[str]
    review_after_days: int | None = num(None, 1, 366, nullable=True)   # default: monitoring.window_days

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str], info: ValidationInfo) -> list[str]:
        owner = info.data["taxonomy"].owner if "taxonomy" in info.data else None
        if owner in v:
            raise ValueError(f"the owner {owner!r} cannot also approve; list other roles")
        twice = sorted({a for a in v if v.count(a) > 1})
        if twice:
            raise ValueError(f"lists the role {twice[0]!r} twice")
        return v

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: list[str], info: ValidationInfo) -> list[str]:
        missing = sorted(cls.NEEDS - set(v))
        if missing:
            raise ValueError(f"must include {', '.join(missing)} (the node's rules read them)")
        known = (info.context or {}).get("known_metrics")
        bad = [i for i in v if i not in known] if known is not None else []
        if bad:
            raise ValueError(f"{bad[0]!r} is not a metric table; known: {', '.join(sorted(known or ()))}")
        return v


# ---- per node: thresholds (the spec's numbers as defaults), pre-checks, inputs, what monitoring watches --------------

class PricingThresholds(Strict):
    elasticity_min: float = num(-1.0, -20, 0)
    elasticity_max: float = num(-0.3, -20, 0)
    cm_per_seat_uplift_min: float = num(3.0, 0)
    payback_worsening_max_months: float = num(0.5, 0)
    raise_pct_min: float = num(5, 0.1, 100)
    raise_pct_max: float = num(10, 0.1, 100)
    raise_pct_step: float = num(1, 0.1, 100)
    variable_cost_rate: float = num(0.129, 0, 0.99)
    # sample minimums (issue 14 §2): below them a segment is held, "insufficient data"
    min_closed: int = num(20, 0)
    elasticity_se_max: float | None = num(0.5, 0, nullable=True)

    @model_validator(mode="after")
    def _ordered(self) -> PricingThresholds:
        if self.elasticity_min > self.elasticity_max:
            raise error_at(("elasticity_min",), f"{self.elasticity_min} is above elasticity_max {self.elasticity_max}; "
                                           f"swap them")
        if self.raise_pct_min > self.raise_pct_max:
            raise error_at(("raise_pct_min",), f"{self.raise_pct_min} is above raise_pct_max {self.raise_pct_max}")
        return self


class PricingChange(PlaybookSpec):
    NEEDS = frozenset({"price_elasticity", "cm_per_seat", "gm_pct", "payback_by_segment", "booking_rate"})
    node: Literal["pricing.change"]
    thresholds: PricingThresholds = PricingThresholds()
    monitoring: Monitoring[Literal["booking_rate", "cm_per_seat", "list_price"]]


class ChannelThresholds(Strict):
    shift_cac_per_sqo_max_ratio: float = num(0.9, 0)
    shift_sql_to_win_min_pp: float = num(2.0, -100, 100)
    shift_budget_pct: float = num(20, 0, 1000)
    pause_cac_per_sqo_min_ratio: float = num(1.2, 0)
    pause_attribution_validity_min: float = num(
        0.995, 0, 1, hint="; the spec pauses every channel below 0.995 -- to exempt a channel whose leads structurally "
                          "lack web touches, list it under attribution_validity_exempt")
    attribution_validity_exempt: Annotated[dict[str, str], BeforeValidator(_reasons)] = {}
    min_sqos: int = num(10, 0)

    @field_validator("attribution_validity_exempt")
    @classmethod
    def _channels(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        known = (info.context or {}).get("channels")    # the lead contract's channel enum, when there is one
        bad = sorted(set(v) - set(known)) if known is not None else []
        if bad:
            raise ValueError(f"{bad[0]!r} is not a channel; known (contracts/entities/lead.yaml): "
                             f"{', '.join(known or ())}")
        return v

    @model_validator(mode="after")
    def _shift_below_pause(self) -> ChannelThresholds:
        if self.shift_cac_per_sqo_max_ratio >= self.pause_cac_per_sqo_min_ratio:
            raise error_at(("shift_cac_per_sqo_max_ratio",),
                           "must be below pause_cac_per_sqo_min_ratio, a channel could be shifted and paused at once")
        return self


class ChannelPrechecks(Prechecks):
    attribution_validity_min: float = num(0.995, 0, 1)


class ChannelInvest(PlaybookSpec):
    NEEDS = frozenset({"cac_per_sqo", "sql_funnel", "attribution_validity", "attribution", "fact_pipeline",
                       "payback_by_segment", "booking_rate"})
    node: Literal["channel.invest"]
    prechecks: ChannelPrechecks = ChannelPrechecks()
    thresholds: ChannelThresholds = ChannelThresholds()
    monitoring: Monitoring[Literal["bookings", "payback", "marketing_spend"]]


class IcpThresholds(Strict):
    win_rate_diff_pp: float = num(5.0, 0, 100)
    months: int = num(2, 1, 36)
    min_closed_per_month: int = num(5, 0)
    payback_improvement_months: float = num(1.0, 0)
    dq_reason_coverage_min: float = num(0.98, 0, 1)
    min_disqualified: int = num(50, 0)
    dimensions: Annotated[list[Literal["industry", "size_band", "segment"]], Field(min_length=1)] = \
        ["industry", "size_band"]


class IcpPrechecks(Prechecks):
    routing_availability_min: float = num(0.995, 0, 1)
    routing_unassigned_max: float = num(0.005, 0, 1)


class IcpUpdate(PlaybookSpec):
    NEEDS = frozenset({"win_rate_by_segment", "dq_reason_coverage", "cac_per_sqo", "cm_by_line", "fact_bookings",
                       "routing_health", "sql_funnel"})
    node: Literal["icp.update"]
    prechecks: IcpPrechecks = IcpPrechecks()
    thresholds: IcpThresholds = IcpThresholds()
    monitoring: Monitoring[Literal["sql_volume", "win_rate"]]


class RoutingThresholds(Strict):
    shadow_match_min_pct: float = num(99.5, 0, 100)
    gini_max: float = num(0.2, 0, 1)
    min_gini_improvement: float = num(0.01, 0, 1)
    min_latency_improvement_pct: float | None = num(None, 0, 100, nullable=True)
    unassigned_max: float = num(0.005, 0, 1)
    shadow_days: int = num(14, 1, 366)
    min_shadow_records: int = num(200, 1)
    seed: int = num(0, 0)


class RoutingPolicy(PlaybookSpec):
    NEEDS = frozenset({"routing_health"})
    node: Literal["routing.policy"]
    thresholds: RoutingThresholds = RoutingThresholds()
    monitoring: Monitoring[Literal["unassigned_rate", "availability"]]


class ExperimentThresholds(Strict):
    srm_min_p: float = num(0.001, 0, 0.1)


class ExperimentShip(PlaybookSpec):
    NEEDS = frozenset({"experiment_readout"})
    node: Literal["experiment.ship"]
    thresholds: ExperimentThresholds = ExperimentThresholds()
    monitoring: Monitoring[Literal["experiment_lift"]]


SPECS: dict[str, type[PlaybookSpec]] = {"pricing.change": PricingChange, "channel.invest": ChannelInvest,
                                        "icp.update": IcpUpdate, "routing.policy": RoutingPolicy,
                                        "experiment.ship": ExperimentShip}
