"""Prometheus recording and alerting rules, a Prometheus config and an Alertmanager example, from the SLO file.

The Prometheus side computes its own SLI from the exported **data time** (how far the published version's inputs are
complete; docs/slo.md "What is measured: data age"), so alerting keeps working if Dagster or the exporter is down
(the timestamp keeps ageing in ``time() - ts``) and a recompute over unchanged inputs does not make an asset look
fresh:

    gtm_slo:age_seconds                    time() - data time, only for assets that published (the exporter
                                           exports a data time once there is a version in force)
    gtm_slo:sli_error                      1 while the age is at or beyond the threshold, else 0
    gtm_slo:sli_error:ratio_rate<W>        stale share of the last W, for every alerting window W

The stale share over W is the larger of two lower bounds of the truth: the recorded stale samples divided by the
number of evaluations W *should* hold (so a short history -- a cold start, a Prometheus restart -- is not
extrapolated into a page), and the current stale stretch ``clamp(age - threshold, 0, W) / W`` (exact, read off the
timestamp, so an asset found stale at start-up still pages at once). An asset that never published has no data time
and a publication timestamp of 0: no SLI (unknown, not stale), only the "SLI absent" alert. A version that could not
name its data time is exported with data time 0: stale, never fresh.

Alerts (SRE Workbook multi-window, multi-burn-rate): page when the long and the short window of a page pair both
exceed ``burn_rate x (1 - objective)``; ticket likewise for the ticket pairs. Beside them, from the warehouse's
operational series (`gtm_pipeline.slo.ops_state`):

    GtmPublicationBlocked   a day of an asset is blocked (spec 002 §3: out of range -> block publish, notify the
                            owner): ticket, SEV3, like the incident the clean stage opens for it
    GtmIncidentOpen         an open (or acknowledged) SEV1/SEV2 incident: page. Not for the SLO's own incidents
                            (origin slo): they record the burn GtmFreshnessSloPageBurn already pages for, and
                            paging on them too would page twice for one cause and again during the sensor's
                            resolve_after hysteresis after Prometheus saw the recovery
    GtmOpsStateStale        those series are older than 30 minutes (a run has held the write lock that long) or
                            missing: ticket

Every alert carries ``owner`` and ``severity``/``sev`` labels and a ``runbook`` annotation with the next command. The
Alertmanager example routes pages and tickets to separate receivers, groups blocked days per owner and asset and
incidents per incident, and lets a page inhibit the ticket of the same SLO and asset.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gtm_pipeline.slo.contract import SEVERITIES, Slo, SloFile
from gtm_pipeline.slo.durations import format_duration

RULES_FILE = "gtm_slo_rules.yml"
PROMETHEUS_FILE = "prometheus.yml"
ALERTMANAGER_FILE = "alertmanager.yml"

LAST_SUCCESS = "gtm_asset_last_success_timestamp_seconds"
DATA_TIME = "gtm_asset_data_time_seconds"
BLOCKED = "gtm_publication_blocked"
INCIDENT_OPENED = "gtm_incident_open_timestamp_seconds"
SNAPSHOT_TIME = "gtm_warehouse_snapshot_timestamp_seconds"
AGE = "gtm_slo:age_seconds"
ERROR = "gtm_slo:sli_error"
PAGE_ALERT = "GtmFreshnessSloPageBurn"
TICKET_ALERT = "GtmFreshnessSloTicketBurn"
ABSENT_ALERT = "GtmFreshnessSloSliAbsent"
ALERT_NAMES = {"page": PAGE_ALERT, "ticket": TICKET_ALERT}
BLOCKED_ALERT = "GtmPublicationBlocked"
INCIDENT_ALERT = "GtmIncidentOpen"
OPS_STALE_ALERT = "GtmOpsStateStale"
PAGED_SEVERITIES = ("SEV1", "SEV2")        # spec 002 §4: "no active SEV2+ incidents"
OPS_STALE_AFTER = 1800                     # seconds; a daily run holding the write lock longer than this is news


def ratio_name(window: int) -> str:
    return f"{ERROR}:ratio_rate{format_duration(window)}"


def _num(x: float) -> str:
    return repr(round(x, 10))


def _sel(slo: Slo) -> str:
    return f'{{slo="{slo.name}"}}'


def _ratio_expr(slo: Slo, window: int, rule_interval: int) -> str:
    w = format_duration(window)
    expected = window / rule_interval
    observed = f"clamp_max(sum_over_time({ERROR}{_sel(slo)}[{w}]) / {_num(expected)}, 1)"
    current = f"clamp({AGE}{_sel(slo)} - {slo.threshold}, 0, {window}) / {window}"
    return f"(\n  {observed}\n    >= {current}\n)\nor\n{current}\nor\n{observed}\n"


def _burn_expr(slo: Slo, slo_file: SloFile, severity: str) -> str:
    parts = []
    for b in slo_file.alerting:
        if b.severity != severity:
            continue
        limit = _num(b.burn_rate * (1.0 - slo.objective))
        parts.append(f"(\n  {ratio_name(b.long)}{_sel(slo)} > {limit}\n  and\n  {ratio_name(b.short)}{_sel(slo)} > "
                     f"{limit}\n)")
    return "\nor\n".join(parts) + "\n"


def rule_groups(slo_file: SloFile) -> dict:
    groups = []
    interval = format_duration(slo_file.rule_interval)
    for slo in slo_file.slos:
        thr = format_duration(slo.threshold)
        # The static `slo` label (already on every series) keeps each SLO's recording rules distinct for promtool.
        tag = {"slo": slo.name}
        rules: list[dict] = [
            {"record": AGE, "expr": f"time() - {DATA_TIME}{_sel(slo)}", "labels": tag},
            {"record": ERROR, "expr": f"{AGE}{_sel(slo)} >= bool {slo.threshold}", "labels": tag},
        ]
        rules += [{"record": ratio_name(w), "expr": _ratio_expr(slo, w, slo_file.rule_interval), "labels": tag}
                  for w in slo_file.windows]
        for severity in ("page", "ticket"):
            if not any(b.severity == severity for b in slo_file.alerting):
                continue
            pairs = ", ".join(f"{b.label} > {b.burn_rate:g}x" for b in slo_file.alerting if b.severity == severity)
            rules.append({
                "alert": ALERT_NAMES[severity],
                "expr": _burn_expr(slo, slo_file, severity),
                "labels": {"severity": severity, "sev": SEVERITIES[severity], "slo": slo.name, "owner": slo.owner},
                "annotations": {
                    "summary": f"{{{{ $labels.asset }}}} is burning the {slo.name} error budget "
                               f"({'fast' if severity == 'page' else 'slowly'})",
                    "description": f"{slo.statement}: the data of {{{{ $labels.asset }}}}'s published version has "
                                   f"been older than {thr} for too much of the recent windows (burn-rate pairs "
                                   f"{pairs}). Owner: {slo.owner}.",
                    "runbook": "gtm-pipeline slo report (which input holds {{ $labels.asset }} back, and since "
                               "when); re-run or repair that input (docs/slo.md, docs/quarantine-repair.md)",
                },
            })
        rules.append({
            "alert": ABSENT_ALERT,
            "expr": f"absent({LAST_SUCCESS}{_sel(slo)})\nor\n{LAST_SUCCESS}{_sel(slo)} == 0\n",
            "for": format_duration(slo_file.absent_for),
            "labels": {"severity": "ticket", "sev": SEVERITIES["ticket"], "slo": slo.name, "owner": slo.owner},
            "annotations": {
                "summary": f"No freshness SLI for {slo.name}"
                           "{{ if $labels.asset }} ({{ $labels.asset }} never published){{ end }}",
                "description": f"{slo.statement} cannot be evaluated: the exporter is not scraped or an asset has "
                               f"never published. Freshness is unknown, not good.",
                "runbook": "gtm-pipeline slo validate (what the SLO covers), then check the exporter's /metrics; "
                           "an asset that never published needs its first run (gtm-pipeline refresh)",
            },
        })
        groups.append({"name": f"gtm-slo-{slo.name}", "interval": interval, "rules": rules})
    groups.append({"name": "gtm-ops", "interval": interval, "rules": ops_rules(slo_file)})
    return {"groups": groups}


def ops_rules(slo_file: SloFile) -> list[dict]:
    """Alerts on the warehouse's operational series: blocked publications, open SEV1/SEV2 incidents, and the
    staleness of those series themselves."""
    paged = "|".join(PAGED_SEVERITIES)
    return [
        {
            "alert": BLOCKED_ALERT,
            "expr": f"{BLOCKED} == 1",
            # Spec 002 §3: an out-of-range value blocks the day's publish and notifies the owner -- a notification,
            # not a page (the clean stage opens a SEV3 for it). If the block lasts, the metrics it holds back go
            # stale and the burn-rate page follows on its own.
            "labels": {"severity": "ticket", "sev": SEVERITIES["ticket"]},
            "annotations": {
                "summary": "{{ $labels.asset }} is not published for {{ $labels.partition }} (blocked)",
                "description": "A contract rule whose break action is block_publish failed on the "
                               "{{ $labels.partition }} delivery of {{ $labels.entity }}: that day is not published "
                               "and everything downstream is complete only through the day before. Owner: "
                               "{{ $labels.owner }}.",
                "runbook": "gtm-pipeline quarantine list --entity {{ $labels.entity }} --day {{ $labels.partition }}; "
                           "repair and release the rows (docs/quarantine-repair.md), then gtm-pipeline quarantine "
                           "backfill -- the alert resolves when the day publishes",
            },
        },
        {
            "alert": INCIDENT_ALERT,
            "expr": f'{INCIDENT_OPENED}{{sev=~"{paged}", origin!="slo"}}',
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "Open {{ $labels.sev }} incident {{ $labels.incident_id }} on {{ $labels.asset }}",
                "description": "{{ $labels.incident_id }} ({{ $labels.origin }}, rule {{ $labels.rule }}) is open; "
                               "decision nodes refuse to act while a SEV2+ incident is open (spec 002 §4). Owner: "
                               "{{ $labels.owner }}.",
                "runbook": "gtm-pipeline incidents show {{ $labels.incident_id }} (its runbook gives the next step); "
                           "gtm-pipeline incidents ack {{ $labels.incident_id }} --by NAME",
            },
        },
        {
            "alert": OPS_STALE_ALERT,
            "expr": f"time() - {SNAPSHOT_TIME} > {OPS_STALE_AFTER}\nor\nabsent({SNAPSHOT_TIME})\n",
            "for": format_duration(slo_file.absent_for),
            "labels": {"severity": "ticket", "sev": SEVERITIES["ticket"]},
            "annotations": {
                "summary": "Blocked-publication, incident and quarantine figures are stale or missing",
                "description": f"The exporter has not read the warehouse for more than "
                               f"{format_duration(OPS_STALE_AFTER)} (or never): {BLOCKED}, gtm_incidents_open and "
                               f"gtm_quarantine_rows show an old snapshot, or nothing. A blocked day or an incident "
                               f"opened since would not alert.",
                "runbook": "check gtm_exporter_warehouse_read_failures_total on the exporter's /metrics: a run "
                           "holding the DuckDB write lock this long (Dagster UI, Runs), or an exporter pointed at "
                           "another file (GTM_PIPELINE_DUCKDB)",
            },
        },
    ]


def prometheus_config(*, exporter: str, alertmanager: str, scrape_interval: str, rule_interval: int) -> dict:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": format_duration(rule_interval)},
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "gtm-pipeline-slo", "static_configs": [{"targets": [exporter]}]}],
    }


def alertmanager_config(*, page_url: str, ticket_url: str, group_wait: str, group_interval: str) -> dict:
    def receiver(name: str, url: str) -> dict:
        return {"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]}

    return {
        "route": {
            "receiver": "gtm-ticket", "group_by": ["alertname", "slo", "asset"],
            "group_wait": group_wait, "group_interval": group_interval, "repeat_interval": "4h",
            "routes": [
                # One page per incident; the blocked days of one asset reach its owner as one ticket.
                {"matchers": [f'alertname="{INCIDENT_ALERT}"'], "receiver": "gtm-page",
                 "group_by": ["alertname", "incident_id"], "repeat_interval": "1h"},
                {"matchers": [f'alertname="{BLOCKED_ALERT}"'], "receiver": "gtm-ticket",
                 "group_by": ["alertname", "owner", "asset"]},
                {"matchers": ['severity="page"'], "receiver": "gtm-page", "repeat_interval": "1h"},
                {"matchers": ['severity="ticket"'], "receiver": "gtm-ticket"},
            ],
        },
        # A page already tells the owner; the ticket for the same SLO and asset would only repeat it.
        "inhibit_rules": [{
            "source_matchers": ['severity="page"', f'alertname="{PAGE_ALERT}"'],
            "target_matchers": ['severity="ticket"', f'alertname="{TICKET_ALERT}"'],
            "equal": ["slo", "asset"],
        }],
        "receivers": [receiver("gtm-page", page_url), receiver("gtm-ticket", ticket_url)],
    }


def _dump(data: dict) -> str:
    class Dumper(yaml.SafeDumper):
        pass

    def literal(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, literal)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True)


def write_all(slo_file: SloFile, out_dir: Path, *, exporter: str, alertmanager: str, page_url: str,
              ticket_url: str, scrape_interval: str = "15s", group_wait: str = "30s",
              group_interval: str = "5m") -> list[Path]:
    """Write the rules, a Prometheus config that loads them, and the Alertmanager example; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated by 'gtm-pipeline slo rules' from {slo_file.where}; edit that file, not this one.\n")
    files = {
        RULES_FILE: rule_groups(slo_file),
        PROMETHEUS_FILE: prometheus_config(exporter=exporter, alertmanager=alertmanager,
                                           scrape_interval=scrape_interval, rule_interval=slo_file.rule_interval),
        ALERTMANAGER_FILE: alertmanager_config(page_url=page_url, ticket_url=ticket_url, group_wait=group_wait,
                                               group_interval=group_interval),
    }
    paths = []
    for name, data in files.items():
        p = out_dir / name
        p.write_text(header + _dump(data))
        paths.append(p)
    return paths
