"""Commands for incidents (ops.incidents): list, show, ack, resolve, open (docs/operations.md, "Incidents")."""

from __future__ import annotations

import json
from datetime import datetime

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ops import incidents as inc_mod

# Imports of the contract loaders and quarantine.rows are function-local: they load pandas and Dagster (~2 s), and
# `gtm-pipeline --help` imports every command module (--help: about half a second). ops.incidents needs only DuckDB.

_SHORT_STATUS = {"open": "open", "acknowledged": "ack", "resolved": "done"}


@click.group()
def incidents():
    """List, inspect, acknowledge, resolve and declare incidents (one per cause, with owner and next step).

    \b
    Example:
      gtm-pipeline incidents list
    """


def _when(inc: dict, which: str) -> str:
    """A partitioned incident is seen on delivery days; the others at a time."""
    part = inc.get(f"{which}_partition")
    if part:
        return str(part)
    at = inc.get(f"{which}_seen_at") or inc.get("opened_at")
    return at.strftime("%Y-%m-%d %H:%M") if isinstance(at, datetime) else "-"


def _jsonable(inc: dict) -> dict:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in inc.items()}
    for k in ("details", "samples"):
        try:
            out[k] = json.loads(out[k]) if isinstance(out[k], str) else out[k]
        except ValueError:
            pass  # written by hand or by an old version: keep the text
    out["next_step"] = inc_mod.next_step(inc)
    out["runbook"] = inc_mod.runbook(inc)
    return out


@incidents.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Also list resolved incidents (newest last-seen first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every field, plus next_step and runbook).")
def list_(show_all, as_json):
    """One line per open (or acknowledged) incident: id, severity, status, entity/asset, rule, rows or occurrences,
    first and last seen (delivery day, or time), owner and the next step.

    \b
    Example:
      gtm-pipeline incidents list
      gtm-pipeline incidents list --all --json
    """
    with connect() as con:
        rows = inc_mod.list_incidents(con, include_closed=show_all)
    if as_json:
        click.echo(json.dumps([_jsonable(r) for r in rows], indent=2, default=str))
        return
    if not rows:
        click.echo("no open incidents" + ("" if show_all else " (gtm-pipeline incidents list --all for resolved)"))
        return
    table = [("id", "sev", "status", "entity/asset", "rule", "count", "first", "last", "owner", "next step")]
    for r in rows:
        table.append((r["incident_id"], r["severity"], _SHORT_STATUS.get(r["status"], r["status"]),
                      inc_mod.target(r)[:28], (r["rule"] or "-")[:34], str(r["occurrences"] or 1),
                      _when(r, "first"), _when(r, "last"), (r["owner"] or "-")[:14], inc_mod.next_step(r)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    open_ = [r for r in rows if r["status"] in ("open", "acknowledged")]
    by_sev: dict[str, int] = {}
    for r in open_:
        by_sev[r["severity"]] = by_sev.get(r["severity"], 0) + 1
    click.echo(f"\n{len(open_)} open ({', '.join(f'{s} {n}' for s, n in sorted(by_sev.items())) or 'none'}); "
               f"every step and sample row: gtm-pipeline incidents show ID")


@incidents.command()
@click.argument("incident_id")
def show(incident_id):
    """Everything about one incident: what, where, how often, sample rows, affected days, who acked or resolved it
    and why, and the runbook.

    \b
    Example:
      gtm-pipeline incidents show INC-3f9a0c1d2e
    """
    with connect() as con:
        inc = _jsonable(inc_mod.get(con, incident_id))
    click.echo(f"{inc['incident_id']}  {inc['severity']}  {inc['status']}  ({inc['origin']}, key {inc['dedup_key']})")
    click.echo(f"title:     {inc['title']}")
    click.echo(f"about:     {inc_mod.target(inc)} (asset {inc['asset_key']}); rule {inc['rule']}; "
               f"owner {inc['owner']}")
    click.echo(f"count:     {inc['occurrences'] or 1}; opened {inc['opened_at']}; first seen {inc['first_seen_at']}, "
               f"last seen {inc['last_seen_at']}")
    days = inc.get("partitions") or []
    if days:
        shown = ", ".join(days[:20]) + (f", ... ({len(days)} days)" if len(days) > 20 else "")
        click.echo(f"days:      {shown}")
    if inc.get("acknowledged_by"):
        click.echo(f"acked:     by {inc['acknowledged_by']} at {inc['acknowledged_at']}")
    if inc["status"] == "resolved":
        click.echo(f"resolved:  {inc['resolved_at']} by {inc['resolved_by'] or '-'}: {inc['resolution'] or '-'}")
    samples = inc.get("samples") or []
    if samples:
        click.echo("samples:")
        for smp in samples:
            click.echo(f"  {smp.get('day', '')} {smp.get('file')}:{smp.get('line')}  {smp.get('column') or '-'}="
                       f"{smp.get('value')!r}  {smp.get('reason', '')}")
    if inc.get("details"):
        click.echo(f"details:   {json.dumps(inc['details'], default=str)[:600]}")
    if inc["runbook"]:
        click.echo("next steps:")
        for i, step in enumerate(inc["runbook"], 1):
            click.echo(f"  {i}. {step}")


@incidents.command()
@click.argument("incident_id")
@click.option("--by", "by", required=True, help="Who is on it (name or handle), for the record.")
def ack(incident_id, by):
    """Acknowledge an incident: someone is on it. It stays open for every gate (decision pre-checks, dedup).

    \b
    Example:
      gtm-pipeline incidents ack INC-3f9a0c1d2e --by jane
    """
    with connect() as con:
        inc = inc_mod.acknowledge(con, incident_id, by=by)
    click.echo(f"{inc['incident_id']} acknowledged by {by} at {inc['acknowledged_at']} (still open: decisions that "
               f"check {inc['severity']} incidents keep waiting)")


@incidents.command()
@click.argument("incident_id")
@click.option("--by", "by", required=True, help="Who resolves it (name or handle), for the record.")
@click.option("--note", required=True, help="What fixed it, or why it needs no fix.")
def resolve(incident_id, by, note):
    """Resolve an incident by hand, recording who, when and why. Contract incidents resolve themselves once their
    days are re-run clean; if a day still breaks, its next run opens a new incident.

    \b
    Example:
      gtm-pipeline incidents resolve INC-3f9a0c1d2e --by jane --note "vendor re-sent the file"
    """
    with connect() as con:
        inc = inc_mod.resolve(con, incident_id, by=by, note=note)
    click.echo(f"{inc['incident_id']} resolved by {by} at {inc['resolved_at']}: {note}")


@incidents.command(name="open")
@click.option("--severity", required=True, type=click.Choice(["SEV1", "SEV2", "SEV3", "SEV4"]),
              help="SEV1 is the worst; a SEV2 or worse stops the decision nodes that read what it is about.")
@click.option("--title", required=True, help="What is wrong, in one line.")
@click.option("--entity", default=None, help="The entity it is about (e.g. opportunity): its clean table.")
@click.option("--asset", "asset", default=None, help="The asset it is about, e.g. metrics/cac_per_sqo.")
@click.option("--owner", default=None, help="Who owns the fix (default: you).")
def open_(severity, title, entity, asset, owner):
    """Declare an incident by hand. Decision pre-checks see it like any other: a SEV2 on --entity opportunity or
    --asset metrics/cac_per_sqo stops every node that reads them (without either, every node).

    \b
    Example:
      gtm-pipeline incidents open --severity SEV2 --title "CRM export double-counts renewals" --entity opportunity
    """
    from gtm_pipeline.quarantine.rows import default_actor

    _check_target(entity, asset)
    by = default_actor()
    with connect() as con:
        iid = inc_mod.declare(con, severity=severity, title=title, by=by, entity=entity, asset_key=asset,
                              owner=owner)
        inc = inc_mod.get(con, iid)
    click.echo(f"{iid} opened: {severity} {title} (about {inc['asset_key']}, owner {inc['owner']})")
    click.echo(f"next: gtm-pipeline incidents ack {iid} --by NAME; when fixed: gtm-pipeline incidents resolve {iid} "
               f"--by NAME --note TEXT")


def _check_target(entity: str | None, asset: str | None) -> None:
    """A misspelt entity or metric would declare an incident no pre-check relates to anything: refuse it."""
    from gtm_pipeline.clean.contract import load_entity_contracts
    from gtm_pipeline.metrics.contract import load_metric_contracts

    s = load_settings()
    entities = load_entity_contracts(s.contracts_dir)
    if entity is not None and entity not in entities:
        raise GtmPipelineError(f"incidents open --entity {entity}: no such entity in {s.contracts_dir / 'entities'}; "
                               f"use one of {', '.join(sorted(entities))}")
    if asset is None:
        return
    kind, _, name = asset.partition("/")
    if kind == "metrics":
        metrics = load_metric_contracts(s.contracts_dir)
        if name not in metrics:
            raise GtmPipelineError(f"incidents open --asset {asset}: no metric {name!r} in "
                                   f"{s.contracts_dir / 'metrics'}; use metrics/<name>, e.g. metrics/"
                                   f"{sorted(metrics)[0]}")
    elif kind == "clean":
        if name not in entities:
            raise GtmPipelineError(f"incidents open --asset {asset}: no entity {name!r}; use clean/<entity> with "
                                   f"one of {', '.join(sorted(entities))}")
    elif not name:
        raise GtmPipelineError(f"incidents open --asset {asset}: expected an asset key such as "
                               f"metrics/cac_per_sqo or clean/opportunity")


def register(main: click.Group) -> None:
    main.add_command(incidents)
