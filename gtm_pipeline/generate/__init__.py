"""Deterministic, seeded generator of realistic GTM source exports (web, ads, crm, calendar, vendors).

    from gtm_pipeline.generate import generate, DefectRates, GenerateConfig
    manifest = generate(out_dir, GenerateConfig(days=90, seed=7), progress=True)

Writes the files exactly as contracts/sources.yaml describes them, with benign spelling variants, injected defects
at configurable rates (every one listed in the manifest with its file and line) and the ground truth.
"""

from .config import DefectRates, GenerateConfig, PlantedEffect
from .run import generate

__all__ = ["generate", "DefectRates", "GenerateConfig", "PlantedEffect"]
