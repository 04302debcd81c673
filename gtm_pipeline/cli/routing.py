"""Commands for the routing engine (spec 002 §4.4): validate rule sets, route unassigned leads, shadow-compare, DLQ."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import transaction

# Imports of the routing engine, quarantine and contract modules are function-local: they load Dagster and pandas,
# and `gtm-pipeline --help` imports every command module (routing.engine alone ~1 s, quarantine.repair ~2 s; --help:
# about half a second without them).


def _days(first, last) -> list[str]:
    a = first.date()
    b = (last or first).date()
    if b < a:
        raise GtmPipelineError(f"--to {b} is before --from {a}")
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _rule_set(path: Path | None):
    from gtm_pipeline.routing import engine as routing

    s = load_settings()
    return routing.load_rule_set(path, s.contracts_dir) if path else routing.current_rule_set(s.contracts_dir)


_rules_option = click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="Rule set file (default: the one with status: current in contracts/routing).")
_seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random tie-breaker.")
_from_option = click.option("--from", "first", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
                            help="First delivery day.")
_to_option = click.option("--to", "last", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                          help="Last delivery day (default: --from).")


@click.group()
def routing():
    """Routing rules (spec 002 §4.4): validate rule sets, route unassigned leads, compare rule sets, replay the DLQ.

    \b
    Example:
      gtm-pipeline routing validate
    """


@routing.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
def validate(files):
    """Load and check rule sets (all of contracts/routing by default); the first problem names file and field.

    \b
    Example:
      gtm-pipeline routing validate contracts/routing/rules_v2.yaml
    """
    from gtm_pipeline.routing import engine as r

    s = load_settings()
    sets = ([r.load_rule_set(f, s.contracts_dir) for f in files] if files
            else list(r.load_rule_sets(s.contracts_dir).values()))
    if not files:
        r.current_rule_set(s.contracts_dir)
    for rs in sets:
        click.echo(f"ok: {rs.where}: {rs.label} ({rs.status}), {len(rs.rules)} rules")


@routing.command(name="assign-leads")
@_from_option
@_to_option
@_rules_option
@_seed_option
def assign_leads(first, last, rules_file, seed):
    """Route the unassigned leads of some delivery days; leads no rule can place go to the DLQ (ops.routing_dlq).

    \b
    Example:
      gtm-pipeline routing assign-leads --from 2026-08-01 --to 2026-08-07
    """
    from gtm_pipeline.routing import engine as r

    rs = _rule_set(rules_file)
    with connect() as con:
        result = r.route_leads(con, rs, _days(first, last), seed)
    click.echo(f"{rs.label}: {len(result.assignments)} lead(s) assigned (ops.routing_assignments), "
               f"{len(result.unrouted)} to the DLQ")
    for u in result.unrouted[:20]:
        click.echo(f"  {u.record.record_id}: {u.reason}")


@routing.command()
@click.option("--candidate", "candidate_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The candidate rule set, e.g. contracts/routing/rules_v2.yaml.")
@click.option("--current", "current_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The rule set to compare with (default: the one with status: current).")
@_from_option
@_to_option
@click.option("--kind", type=click.Choice(["lead", "opportunity"]), default="lead", show_default=True,
              help="Which records to route.")
@_seed_option
def shadow(candidate_file, current_file, first, last, kind, seed):
    """Shadow-compare two rule sets on the same records: match %, unassigned, fairness Gini, decision latency.

    \b
    Example:
      gtm-pipeline routing shadow --candidate contracts/routing/rules_v2.yaml --from 2026-08-01 --to 2026-08-07
    """
    from gtm_pipeline.routing import engine as r

    cur, cand = _rule_set(current_file), _rule_set(candidate_file)
    days = _days(first, last)
    with connect() as con:
        records = r.records_from_clean(con, kind, days)
        owners = r.load_owners(con, {rec.day for rec in records})
    rep = r.shadow_evaluate(records, cur, cand, owners, seed)
    click.echo(f"{rep.records} {kind}(s) of {days[0]}..{days[-1]}: {cand.label} vs {cur.label}")
    click.echo(f"  shadow match:  {rep.match_pct:.2f}% ({rep.identical} identical; promote at >= "
               f"{r.SHADOW_MATCH_MIN_PCT}%: {'yes' if rep.meets_match_threshold else 'no'})")
    click.echo(f"  unassigned:    {rep.unassigned_current} -> {rep.unassigned_candidate}")
    click.echo(f"  fairness Gini: {rep.gini_current:.3f} -> {rep.gini_candidate:.3f} (pre-check <= {r.GINI_MAX})")
    click.echo(f"  decision p95:  {rep.latency_current.p95_ms:.3f} ms -> {rep.latency_candidate.p95_ms:.3f} ms")
    for d in rep.differences[:10]:
        click.echo(f"  {d['record_id']}: {d['current_owner']} ({d['current_rule']}) -> "
                   f"{d['candidate_owner']} ({d['candidate_rule']})")


@routing.group()
def dlq():
    """The routing dead-letter queue: records no rule could place, and their replay after a fix.

    \b
    Example:
      gtm-pipeline routing dlq list
    """


@dlq.command(name="list")
@click.option("--status", type=click.Choice(["open", "replayed", "all"]), default="open", show_default=True,
              help="Which entries to show.")
@click.option("--kind", type=click.Choice(["lead", "opportunity"]), default=None, help="Only leads or opportunities.")
def dlq_list(status, kind):
    """List DLQ entries with their reason and attempts.

    \b
    Example:
      gtm-pipeline routing dlq list --status all
    """
    from gtm_pipeline.routing import engine as r

    with connect() as con:
        df = r.dlq_entries(con, None if status == "all" else status, kind)
    if df.empty:
        click.echo("the routing DLQ is empty" if status == "all" else f"no {status} DLQ entries")
        return
    click.echo(f"{len(df)} entr{'y' if len(df) == 1 else 'ies'}")
    for _, row in df.iterrows():
        placed = f" -> {row['owner_id']} ({row['rule']})" if row["status"] == "replayed" else ""
        click.echo(f"{row['dlq_id']}  {row['kind']} {row['record_id']}  {row['status']}{placed}  "
                   f"attempts {row['attempts']}  rule set {row['rule_set']}  source {row['source'] or '-'}  "
                   f"last try {row['last_attempt_at']}")
        click.echo(f"    reason: {row['reason']}")


@dlq.command(name="replay")
@_rules_option
@_seed_option
@click.option("--kind", type=click.Choice(["lead", "opportunity"]), default=None, help="Only leads or opportunities.")
@click.option("--id", "ids", multiple=True, help="Only this DLQ id (repeatable).")
@click.option("--actor", default=None, help="Who replays, for the repair audit (default: your OS user name).")
def dlq_replay(rules_file, seed, kind, ids, actor):
    """Re-route the open DLQ entries after a fix (new rule set, more capacity): the playbook's "replay DLQ".

    Replayed quarantined opportunities become 'repaired' rows (release them next); leads get an assignment.

    \b
    Example:
      gtm-pipeline routing dlq replay --rules contracts/routing/rules_v2.yaml
    """
    from gtm_pipeline.clean.contract import load_entity_contracts
    from gtm_pipeline.quarantine import repair, rows
    from gtm_pipeline.routing import engine as r

    rs = _rule_set(rules_file)
    contracts = load_entity_contracts(load_settings().contracts_dir)
    with connect() as con:
        rows.ensure_repair_tables(con, contracts)
        with transaction(con):
            rep = r.replay_dlq(con, rs, seed=seed, kind=kind, ids=list(ids) or None)
        fixed = repair.repair_from_replay(con, contracts, rep, actor=actor or rows.default_actor())
    click.echo(f"{rs.label}: {len(rep.replayed)} replayed, {len(rep.still_unrouted)} still unroutable")
    for i, a in rep.replayed[:20]:
        click.echo(f"  {i}: {a.kind} {a.record_id} -> {a.owner_id} ({a.rule})")
    for i, why in rep.still_unrouted[:20]:
        click.echo(f"  {i}: still unroutable: {why}")
    if fixed.outcomes:
        click.echo(fixed.summary())
        if fixed.count("repaired"):
            click.echo("next: gtm-pipeline quarantine release")


def register(main: click.Group) -> None:
    main.add_command(routing)
