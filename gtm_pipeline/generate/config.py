"""Configuration of the source-data generator: what to simulate and which defects to inject."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from gtm_pipeline.errors import GtmPipelineError

if TYPE_CHECKING:   # the generator imports the experiment contracts only when an effect is planted
    from gtm_pipeline.experiments.contract import Experiment


@dataclass(frozen=True)
class DefectRates:
    """Per-record probabilities of each defect kind (one defect per record at most).

    ``out_of_range`` applies to crm opportunities on ``out_of_range_days`` days only; ``missing_owner`` to crm
    opportunities only; ``wrong_encoding`` is a count of CSV lines written as latin-1. ``drift_day_offset`` is the day
    on which crm opportunities rename ``amount`` to ``amount_usd``; from ``extra_key_day_offset`` on, web sessions
    carry an extra ``utm_content`` key. ``None`` switches a drift off.
    """

    bad_enum: float = 0.004
    out_of_range: float = 0.05
    out_of_range_days: int = 1
    missing_owner: float = 0.01
    duplicate: float = 0.003
    malformed: float = 0.001
    wrong_type: float = 0.002
    late: float = 0.01
    wrong_encoding: int = 1
    drift_day_offset: int | None = 30
    extra_key_day_offset: int | None = 60

    @classmethod
    def none(cls) -> DefectRates:
        """Clean data: no defect of any kind (benign spelling variants are not defects and stay on)."""
        return cls(
            bad_enum=0.0,
            out_of_range=0.0,
            out_of_range_days=0,
            missing_owner=0.0,
            duplicate=0.0,
            malformed=0.0,
            wrong_type=0.0,
            late=0.0,
            wrong_encoding=0,
            drift_day_offset=None,
            extra_key_day_offset=None,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlantedEffect:
    """A known effect planted in the leads of one experiment arm (the readout must find it): leads created on or after
    the experiment's start whose arm (by the experiment's own assignment) is ``arm`` reach SQL with their probability
    multiplied by ``sql_rate_multiplier``. A multiplier of 1 plants an A/A experiment. ``experiment`` is a loaded
    `gtm_pipeline.experiments.contract.Experiment`."""

    experiment: Experiment
    arm: str
    sql_rate_multiplier: float

    def as_dict(self) -> dict:
        return {"experiment": getattr(self.experiment, "experiment", str(self.experiment)), "arm": self.arm,
                "sql_rate_multiplier": float(self.sql_rate_multiplier)}


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate: ``days`` delivery days from ``start``, volumes multiplied by ``scale``.

    ``variant_rate`` is the share of enum cells written as a benign spelling variant (e.g. "Paid Search", "EMEA")
    that normalisation must accept; these are not defects.
    """

    days: int = 90
    seed: int = 7
    start: date = date(2026, 8, 1)
    scale: float = 1.0
    defects: DefectRates = field(default_factory=DefectRates)
    variant_rate: float = 0.02
    planted: tuple[PlantedEffect, ...] = ()

    def validate(self) -> None:
        if not isinstance(self.days, int) or self.days < 1:
            raise GtmPipelineError(f"GenerateConfig.days must be an integer >= 1, got {self.days!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise GtmPipelineError(f"GenerateConfig.seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.start, date):
            raise GtmPipelineError(f"GenerateConfig.start must be a datetime.date, got {self.start!r}")
        if not (self.scale > 0):
            raise GtmPipelineError(f"GenerateConfig.scale must be > 0, got {self.scale!r}")
        for p in self.planted:
            arms = [a.name for a in getattr(p.experiment, "arms", [])]
            if p.arm not in arms:
                raise GtmPipelineError(f"PlantedEffect.arm {p.arm!r} is not an arm of the experiment (arms: {arms})")
            if not (0 < p.sql_rate_multiplier <= 4):
                raise GtmPipelineError(f"PlantedEffect.sql_rate_multiplier must be in (0, 4], got "
                                       f"{p.sql_rate_multiplier!r}")
        if not (0.0 <= self.variant_rate <= 0.5):
            raise GtmPipelineError(f"GenerateConfig.variant_rate must be in [0, 0.5], got {self.variant_rate!r}")
        d = self.defects
        rates = {k: getattr(d, k) for k in ("bad_enum", "out_of_range", "missing_owner", "duplicate", "malformed",
                                            "wrong_type", "late")}
        for name, value in rates.items():
            if not (0.0 <= value <= 1.0):
                raise GtmPipelineError(f"DefectRates.{name} must be in [0, 1], got {value!r}")
        if sum(rates.values()) >= 1.0:
            raise GtmPipelineError("DefectRates: the per-record rates must add up to less than 1")
        if d.out_of_range_days < 0 or d.wrong_encoding < 0:
            raise GtmPipelineError("DefectRates.out_of_range_days and wrong_encoding must be >= 0")

    def as_dict(self) -> dict:
        return {
            "days": self.days,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "scale": float(self.scale),
            "variant_rate": float(self.variant_rate),
            "defects": self.defects.as_dict(),
            **({"planted": [p.as_dict() for p in self.planted]} if self.planted else {}),
        }
