"""Experiment contracts (one loader, the project's error style), deterministic assignment (Python = SQL), and
readouts from a warehouse: an A/A experiment read every day never ships, a planted effect ships, a broken split is
caught by SRM, a guardrail rolls back, and the readout's SQL rate is the metric layer's own definition."""

from __future__ import annotations

import random
import shutil
from datetime import date, datetime, timedelta

import duckdb
import pytest
import yaml
from conftest import REPO

from gtm_pipeline.errors import ContractError
from gtm_pipeline.experiments import assignment
from gtm_pipeline.experiments.contract import load_experiments, metric_columns
from gtm_pipeline.experiments.readout import readout

START = date(2026, 8, 1)


@pytest.fixture(scope="module")
def experiments():
    return load_experiments(REPO / "contracts", metric_columns(REPO / "contracts"))


def _broken(tmp_path, edit) -> str:
    root = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", root)
    path = root / "experiments" / "lead_form_short.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ContractError) as e:
        load_experiments(root, metric_columns(root))
    return str(e.value)


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d.update(ownr=d.pop("owner")),
     'lead_form_short.yaml: ownr: unknown field; allowed: experiment, title, owner'),
    (lambda d: d.pop("decision_threshold"), "lead_form_short.yaml: decision_threshold: is required"),
    (lambda d: d.update(method="bayes"), "method: 'bayes' is not allowed; allowed: always_valid, fixed_horizon"),
    (lambda d: d["arms"][1].update(weigth=d["arms"][1].pop("weight")),
     'arms[1].weigth: unknown field; allowed: name, weight; did you mean "weight"?'),
    (lambda d: d["arms"][1].update(weight=0), "arms[1].weight: input should be greater than 0"),
    (lambda d: d.update(planned_units="lots"), "planned_units: input should be a valid integer"),
    (lambda d: d.update(max_runtime_days=7), "max_runtime_days 7 is shorter than min_runtime_days 14"),
    (lambda d: d["arms"].append({"name": "control", "weight": 0.5}), "arms: names must be unique"),
    (lambda d: d.update(primary_metric={"metric": "sql_funnel", "column": "win_rate"}),
     "sql_funnel.win_rate has no per-lead definition to read an experiment on; known for unit lead: "
     "routing_health.unassigned, sql_funnel.sql_rate"),
    (lambda d: d.update(experiment="other_name"), "experiment: 'other_name' must equal the file name"),
    (lambda d: d.update(starts="August"), "starts: input should be a valid date"),
])
def test_a_bad_contract_names_file_field_and_fix(tmp_path, edit, expected):
    msg = _broken(tmp_path, edit)
    assert msg.startswith("contracts/experiments/lead_form_short.yaml: ") and expected in msg, msg


def test_an_unknown_metric_column_is_named(tmp_path, monkeypatch):
    from gtm_pipeline.experiments import outcomes

    fake = outcomes.Outcome("lead", "sql_funnel", "sql_ratio", True, "", "", "")
    monkeypatch.setitem(outcomes.OUTCOMES, ("lead", "sql_funnel", "sql_ratio"), fake)
    msg = _broken(tmp_path, lambda d: d.update(primary_metric={"metric": "sql_funnel", "column": "sql_ratio"}))
    assert "primary_metric.column: 'sql_ratio' is not a column of metrics.sql_funnel; it has" in msg


def test_assignment_is_deterministic_balanced_and_the_same_in_sql(experiments):
    exp = experiments["lead_form_short"]
    ids = [f"L{i:06d}" for i in range(20000)]
    arms = [assignment.arm_of(exp, i) for i in ids]
    assert arms == [assignment.arm_of(exp, i) for i in ids]
    share = arms.count("short_form") / len(arms)
    assert 0.49 < share < 0.51
    con = duckdb.connect()
    con.execute("CREATE TABLE u AS SELECT * FROM (VALUES " + ", ".join(f"('{i}')" for i in ids) + ") t(id)")
    in_sql = [r[0] for r in con.execute(f"SELECT {assignment.arm_sql(exp, 'id')} FROM u ORDER BY id").fetchall()]
    assert in_sql == arms
    # a holdout and unequal weights, in both
    held = exp.model_copy(update={"holdout_share": 0.1, "arms": [exp.arms[0].model_copy(update={"weight": 3}),
                                                                  exp.arms[1]]})
    py = [assignment.arm_of(held, i) for i in ids]
    sq = [r[0] for r in con.execute(f"SELECT {assignment.arm_sql(held, 'id')} FROM u ORDER BY id").fetchall()]
    assert py == sq
    assert 0.09 < py.count("holdout") / len(py) < 0.11
    assert 0.845 < py.count("control") / (len(py) - py.count("holdout")) < 0.87   # 3 : 0.5
    # a new salt re-randomises
    other = exp.model_copy(update={"salt": "lead_form_short-2026-09"})
    assert sum(a != assignment.arm_of(other, i) for a, i in zip(arms, ids)) > 0.4 * len(ids)


def _warehouse(tmp_path, exp, *, rate_control, rate_treatment, seed, drop_treatment=0.0, unassigned_treatment=0.0,
               days=60, per_day=80) -> duckdb.DuckDBPyConnection:
    """clean.lead with ``per_day`` leads a day from START, each arm converting at its rate (SQL a day later)."""
    rng = random.Random(seed)
    con = duckdb.connect(str(tmp_path / f"wh{seed}.duckdb"))
    con.execute("CREATE SCHEMA clean")
    rows = []
    for d in range(days):
        for j in range(per_day):
            lid = f"L{d:03d}{j:04d}"
            arm = assignment.arm_of(exp, lid)
            if arm != exp.control and rng.random() < drop_treatment:
                continue
            created = datetime.combine(START + timedelta(days=d), datetime.min.time()) + timedelta(minutes=j)
            rate = rate_control if arm == exp.control else rate_treatment
            sql = rng.random() < rate
            no_owner = arm != exp.control and rng.random() < unassigned_treatment
            rows.append((lid, created, "sql" if sql else "working", created + timedelta(days=1),
                         None if no_owner else "U1", None if no_owner else created + timedelta(minutes=1)))
    con.execute("CREATE TABLE clean.lead (lead_id VARCHAR, created_at TIMESTAMP, status VARCHAR, "
                "status_changed_at TIMESTAMP, owner_id VARCHAR, assigned_at TIMESTAMP, industry VARCHAR, "
                "size_band VARCHAR, segment VARCHAR, dq_reason VARCHAR)")
    con.executemany("INSERT INTO clean.lead VALUES (?, ?, ?, ?, ?, ?, 'software', '11-50', 'smb', NULL)", rows)
    return con


def _exp(experiments, **update):
    return experiments["lead_form_short"].model_copy(update={"max_runtime_days": 60, **update})


def test_an_aa_experiment_read_every_day_never_ships(experiments, tmp_path):
    exp = _exp(experiments)
    shipped = 0
    for seed in range(3):
        looks = readout(_warehouse(tmp_path, exp, rate_control=0.24, rate_treatment=0.24, seed=seed), exp,
                        START + timedelta(days=60))
        assert len(looks) == 60 and looks[-1].units == 60 * 80
        shipped += any(lk.verdict.startswith("ship") for lk in looks)
        assert all(not lk.verdict.startswith("invalid") for lk in looks[13:]), [lk.verdict for lk in looks]
    assert shipped == 0


def test_a_planted_effect_ships_after_the_minimum_runtime(experiments, tmp_path):
    exp = _exp(experiments, decision_threshold=0.02)
    looks = readout(_warehouse(tmp_path, exp, rate_control=0.20, rate_treatment=0.32, seed=1), exp,
                    START + timedelta(days=60))
    first = next(lk for lk in looks if lk.verdict.startswith("ship"))
    assert first.look >= exp.min_runtime_days
    assert all(lk.verdict.startswith("keep running: minimum runtime") for lk in looks[:exp.min_runtime_days - 1])
    c = first.comparisons[0]
    assert c.estimate.ci_low >= 0.02 and c.estimate.ci_low <= 0.12 <= c.estimate.ci_high
    assert "ship short_form" in first.verdict


def test_a_broken_split_is_invalid_whatever_the_estimate(experiments, tmp_path):
    exp = _exp(experiments)
    looks = readout(_warehouse(tmp_path, exp, rate_control=0.2, rate_treatment=0.35, seed=2, drop_treatment=0.15),
                    exp, START + timedelta(days=30))
    assert looks[-1].srm_p < 0.001 and looks[-1].verdict.startswith("invalid: sample ratio mismatch")


def test_a_guardrail_breach_rolls_back_even_when_the_primary_metric_wins(experiments, tmp_path):
    exp = _exp(experiments)
    looks = readout(_warehouse(tmp_path, exp, rate_control=0.2, rate_treatment=0.3, seed=3,
                               unassigned_treatment=0.15), exp, START + timedelta(days=40))
    last = looks[-1]
    [g] = last.guardrails
    assert g.breached and g.estimate.estimate == pytest.approx(0.15, abs=0.03)
    assert last.verdict.startswith("roll back: guardrail routing_health.unassigned")
    # within tolerance: no breach
    ok = readout(_warehouse(tmp_path, exp, rate_control=0.2, rate_treatment=0.2, seed=4,
                            unassigned_treatment=0.005), exp, START + timedelta(days=40))
    assert not any(g.breached for lk in ok for g in lk.guardrails)


def test_the_readout_rate_is_the_metric_layers_sql_rate(experiments, small_warehouse):
    """All arms together, the per-unit SQL outcome averages to sql_funnel's sql_rate over the same leads."""
    exp = experiments["lead_form_short"]
    con = duckdb.connect(str(small_warehouse), read_only=True)
    first, last = con.execute("SELECT min(created_at)::DATE, max(created_at)::DATE + 1 FROM clean.lead").fetchone()
    exp = exp.model_copy(update={"starts": first, "min_runtime_days": 1, "max_runtime_days": (last - first).days})
    [*_, final] = readout(con, exp, last)
    units = sum(a.n for a in final.arms)
    sqls = sum(a.total for a in final.arms)
    leads, want = con.execute("SELECT count(*), count(*) FILTER (WHERE status IN ('sql', 'converted')) "
                              "FROM clean.lead").fetchone()
    assert units == leads and sqls == want


def test_the_metric_layer_publishes_the_readout_of_every_experiment(warehouse_copy, monkeypatch):
    """metrics.experiment_readout: written, audited and published like any metric, one row per experiment, look and
    arm, equal to the readout computed directly."""
    from gtm_pipeline.experiments.contract import load_experiments
    from gtm_pipeline.metrics import run_layer

    con = duckdb.connect(str(warehouse_copy))
    first = con.execute("SELECT min(created_at)::DATE FROM clean.lead").fetchone()[0]
    now = datetime.combine(first + timedelta(days=12), datetime.min.time())
    monkeypatch.setenv("GTM_PIPELINE_NOW", now.isoformat())
    root = REPO / "contracts"
    out = run_layer(con, root, only=["fact_bookings", "experiment_readout"])
    assert out["experiment_readout"].published
    exp = load_experiments(root)["lead_form_short"]
    rows = con.execute("SELECT look, arm, units, total, verdict FROM metrics.experiment_readout "
                       "WHERE experiment = 'lead_form_short' ORDER BY look, arm").fetchall()
    direct = readout(con, exp, now.date())
    assert rows == sorted((lk.look, a.arm, a.n, a.total, lk.verdict) for lk in direct for a in lk.arms)
    assert len(rows) == 2 * (now.date() - exp.starts).days


@pytest.mark.parametrize("multiplier,ships", [(1.6, True), (1.0, False)])
def test_the_generator_plants_an_effect_the_readout_recovers(experiments, tmp_path, multiplier, ships):
    """Ground truth from the generator: leads of the short_form arm reach SQL 1.6x as often (or, at 1.0, an A/A
    experiment). Through the clean tables, the readout ships the planted arm -- and never the A/A one."""
    from metrics_fixtures import bulk_load_clean

    from gtm_pipeline.generate import DefectRates, GenerateConfig, PlantedEffect, generate

    exp = experiments["lead_form_short"]
    cfg = GenerateConfig(days=75, seed=11, start=START, scale=0.8, defects=DefectRates.none(),
                         planted=(PlantedEffect(exp, "short_form", multiplier),))
    generate(tmp_path / "landing", cfg, progress=False)
    con = duckdb.connect(str(tmp_path / "gen.duckdb"))
    bulk_load_clean(tmp_path / "landing", con)
    looks = readout(con, exp, START + timedelta(days=75))
    c = looks[-1].comparisons[0]
    ctrl, treat = looks[-1].arms
    ratio = (treat.total / treat.n) / (ctrl.total / ctrl.n)
    assert ratio == pytest.approx(multiplier, rel=0.25)
    assert any(lk.verdict.startswith("ship short_form") for lk in looks) is ships, [lk.verdict for lk in looks[-3:]]
    if ships:
        assert c.estimate.ci_low > 0


def test_the_backlog_ranks_by_p_win_times_dollars_over_weeks(experiments, tmp_path):
    from gtm_pipeline.experiments.backlog import backlog

    exp = _exp(experiments, planned_units=8000, max_runtime_days=120)
    con = _warehouse(tmp_path, exp, rate_control=0.20, rate_treatment=0.30, seed=5, days=30)
    con.execute("CREATE SCHEMA metrics")
    con.execute("CREATE TABLE metrics.sql_funnel AS SELECT 'all' AS channel, 'all' AS week, 0.1 AS sql_to_win")
    con.execute("CREATE TABLE metrics.payback_by_segment AS SELECT 'all' AS segment, 500.0 AS monthly_cm")
    later = exp.model_copy(update={"experiment": "later", "starts": START + timedelta(days=60)})
    now = datetime.combine(START + timedelta(days=30), datetime.min.time())
    running, planned = backlog(con, {"lead_form_short": exp, "later": later}, now)
    # one SQL is worth 0.1 x $500 x 12 = $600; 80 leads a day = 560 a week
    assert running.dollars_per_unit == pytest.approx(600.0) and running.units_per_week == pytest.approx(560.0)
    assert running.experiment == "lead_form_short" and running.p_win > 0.95
    assert running.impact_per_year == pytest.approx(running.lift * 560 * 52 * 600)
    assert running.weeks == pytest.approx((8000 - 30 * 80) / 560)
    assert planned.status == "planned" and planned.lift == exp.mde
    assert 0 < planned.p_win < 1 / 3 and "prior 0.33 x power" in planned.why
    assert running.score > planned.score
    # without the metric layer's figures the $ impact is unknown, said, and ranked last
    con.execute("DROP TABLE metrics.payback_by_segment")
    [a, b] = backlog(con, {"lead_form_short": exp, "later": later}, now)
    assert a.score is None and b.score is None and "$ value of sql_funnel.sql_rate unknown" in a.why


def test_the_experiments_commands(experiments, tmp_path, env_settings, monkeypatch):
    from click.testing import CliRunner

    from gtm_pipeline.cli import main

    exp = _exp(experiments)
    con = _warehouse(tmp_path, exp, rate_control=0.20, rate_treatment=0.32, seed=6, days=40)
    con.close()
    monkeypatch.setenv("GTM_PIPELINE_DUCKDB", str(tmp_path / "wh6.duckdb"))
    monkeypatch.setenv("GTM_PIPELINE_NOW", "2026-09-10T00:00:00")
    run = CliRunner().invoke
    out = run(main, ["experiments", "validate"])
    assert out.exit_code == 0 and "ok: contracts/experiments/lead_form_short.yaml" in out.output
    out = run(main, ["experiments", "readout", "lead_form_short", "--looks", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.count("\nlook ") == 2 and "verdict: ship short_form" in out.output
    out = run(main, ["experiments", "readout", "nope"])
    assert out.exit_code == 2 and "no experiment 'nope' in contracts/experiments; known: lead_form_short" in out.output
    out = run(main, ["experiments", "backlog"])
    assert out.exit_code == 0 and "1. lead_form_short: score -" in out.output and "unknown" in out.output


# ---- experiment.ship: the readout as a decision, under the shared gates ----------------------------------------------

def _ship_setup(tmp_path, env_settings, experiments, monkeypatch, **warehouse):
    """A generated-style warehouse with the readout published through the metric layer (all other inputs absent)."""
    from gtm_pipeline.decisions import open_context
    from gtm_pipeline.metrics.contract import load_metric_contracts
    from gtm_pipeline.metrics.publish import run_metric
    from gtm_pipeline.metrics.registry import computations

    exp = experiments["lead_form_short"]
    con = _warehouse(tmp_path, exp, days=40, **warehouse)
    con.execute("CREATE TABLE clean.account (account_id VARCHAR, created_at TIMESTAMP)")
    con.execute("CREATE SCHEMA IF NOT EXISTS metrics")
    con.execute("CREATE TABLE metrics.fact_bookings (account_id VARCHAR, booked_at TIMESTAMP, amount DOUBLE)")
    now = datetime.combine(START + timedelta(days=40), datetime.min.time()) + timedelta(hours=1)
    monkeypatch.setenv("GTM_PIPELINE_NOW", now.isoformat())
    out = run_metric(con, load_metric_contracts(REPO / "contracts")["experiment_readout"],
                     computations()["experiment_readout"], now=now)
    assert out.published
    return open_context(con, env_settings, health_fn=_green), exp


def _green(_assets):
    from types import SimpleNamespace
    return SimpleNamespace(green=True, reasons=[])


def test_a_winning_readout_is_proposed_logged_approved_and_flips_the_experiments_flag(experiments, tmp_path,
                                                                                   env_settings, monkeypatch):
    from gtm_pipeline.decisions import flags, lifecycle, log, nodes

    dc, exp = _ship_setup(tmp_path, env_settings, experiments, monkeypatch, rate_control=0.2, rate_treatment=0.32,
                          seed=7)
    pb = dc.playbooks["experiment.ship"]
    r = nodes.evaluate_node(dc, pb, _green)
    assert r.prechecks_passed, r.note
    [did] = r.new_proposals
    d = lifecycle.get(dc, did)
    assert d.proposal.chosen_action == "ship short_form of lead_form_short"
    fig = d.proposal.details_dict["figures"]
    # what the readout rests on is in the log: method, look, planned size, alpha, SRM p (and the rows in the hash)
    assert (fig["method"], fig["look"], fig["planned_units"], fig["alpha"]) == ("always_valid", 40, 4000, 0.05)
    assert fig["srm_p"] > 0.001 and fig["arms"]["short_form"]["ci_low"] > 0
    assert d.proposal.inputs_hash.startswith("sha256:")
    for role, person in (("Marketing Ops", "mona@example.com"), ("FP&A", "paul@example.com")):
        lifecycle.approve(dc, did, role=role, person=person)
    lifecycle.apply(dc, did, person="ana@example.com")
    cur = flags.current(dc.con, exp.flag)
    assert cur.value == {"experiment": "lead_form_short", "state": "shipped", "arm": "short_form"}
    assert log.verify(dc.con, dc.head).ok


def test_a_broken_split_or_a_stale_input_refuses_the_decision(experiments, tmp_path, env_settings, monkeypatch):
    from types import SimpleNamespace

    from gtm_pipeline.decisions import nodes

    dc, _ = _ship_setup(tmp_path, env_settings, experiments, monkeypatch, rate_control=0.2, rate_treatment=0.35,
                        seed=8, drop_treatment=0.15)
    pb = dc.playbooks["experiment.ship"]
    r = nodes.evaluate_node(dc, pb, _green)
    [o] = r.outcomes
    assert not r.proposals and o.held["lead_form_short"]["reason"] == "invalid readout"
    assert "sample ratio mismatch" in o.summary
    red = SimpleNamespace(green=False, reasons=["metric_age: metrics/experiment_readout is stale: its data is 2d old"])
    r = nodes.evaluate_node(dc, pb, lambda _assets: red)
    assert not r.prechecks_passed and not r.proposals and "slo_health" in r.note
