"""The SLO resource: where the SLO file and its history are, and where state changes are posted."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from gtm_pipeline.config import ALERT_WEBHOOK_ENV, SLACK_WEBHOOK_ENV, Settings
from gtm_pipeline.slo.contract import SloFile, load_slo_file
from gtm_pipeline.slo.evaluate import coverage_for, evaluate
from gtm_pipeline.slo.health import SloHealth, health_of
from gtm_pipeline.slo.history import History


class SloResource(dg.ConfigurableResource):
    """Freshness SLOs (contracts/slos.yaml): evaluation history, webhooks, and the decision nodes' pre-check.

    Decision nodes call ``slo.health(context.instance, context.repository_def.asset_graph, assets=[...])``.
    """

    slo_file: str
    history_path: str
    webhook_url: str | None = None
    slack_webhook_url: str | None = None
    timeout_seconds: float = 5.0

    def load(self) -> SloFile:
        return load_slo_file(Path(self.slo_file))

    def history(self) -> History:
        return History(Path(self.history_path))

    def health(self, instance: dg.DagsterInstance, asset_graph, assets=None, *,
               now: float | None = None) -> SloHealth:
        """SLO health for the pre-check of a decision node (optionally only for the assets it reads)."""
        slo_file = self.load()
        with self.history() as h:
            ev = evaluate(slo_file, coverage_for(slo_file, asset_graph), h, instance, now=now)
            return health_of(ev, h, assets=assets)


def slo_resource(settings: Settings) -> SloResource:
    # Webhook URLs are secrets (a Slack URL is a credential): pass them as EnvVar so the UI shows the variable's
    # name. Which variable, and whether it is set, is decided in config.py.
    return SloResource(
        slo_file=str(settings.slo_file), history_path=str(settings.slo_history_path),
        webhook_url=dg.EnvVar(ALERT_WEBHOOK_ENV) if settings.alert_webhook_url else None,
        slack_webhook_url=dg.EnvVar(SLACK_WEBHOOK_ENV) if settings.slack_webhook_url else None,
    )
