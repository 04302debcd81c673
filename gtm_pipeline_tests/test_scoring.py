"""ICP fit and engagement scoring (issue 19 §1, Layer A): the model contract's errors, the shrinkage arithmetic on a
table of inputs, and on a generated world: the learned industry points recover the generator's truth
(catalog.WIN_MULT_INDUSTRY: fintech 1.6 top, retail 0.45 bottom), fit ranks a held-out month's wins, a value that
stops matching loses its points, the total never passes its cap, and `scoring explain` agrees with the table."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from gtm_pipeline.errors import ContractError
from gtm_pipeline.scoring.contract import load_active_model, load_model
from gtm_pipeline.scoring.points import (
    Rate,
    engagement_grade,
    fit_grade,
    grade_sql,
    learn_points,
    points_for_lift,
)

MODEL = REPO / "contracts" / "scoring" / "icp_v1.yaml"
START, DAYS = date(2026, 1, 1), 180
NOW = datetime(2026, 6, 30)


def _contracts(tmp_path, edit=None):
    root = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", root)
    if edit is not None:
        path = root / "scoring" / "icp_v1.yaml"
        doc = yaml.safe_load(path.read_text())
        edit(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


# ---- the contract --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,expected", [
    (lambda d: d.update(ownr=d.pop("owner")),
     'ownr: unknown field; allowed: model, version, active, owner, description, lift_for_cap, total_cap, fit, '
     'engagement, grades; did you mean "owner"?'),
    (lambda d: d["fit"]["industry"].update(cap="thirty"), "fit.industry.cap: input should be a valid number"),
    (lambda d: d["fit"].update(industy=d["fit"].pop("industry")),
     'fit.industy: unknown field; allowed: industry, size_band, region, segment; did you mean "industry"?'),
    (lambda d: d["engagement"].update(form_fil=d["engagement"].pop("form_fill")),
     'engagement.form_fil: unknown field; allowed: half_life_days, form_fill, demo, page_view, intent; '
     'did you mean "form_fill"?'),
    (lambda d: d["fit"]["region"]["overrides"].update(emaa=d["fit"]["region"]["overrides"].pop("emea")),
     "fit.region.overrides.emaa: 'emaa' is not a value of region in contracts/entities/account.yaml; allowed: na, "
     'emea, apac, latam; did you mean "emea"?'),
    (lambda d: d["fit"]["industry"].update(points="guessed"),
     "fit.industry.points: 'guessed' is not allowed; allowed: learned, manual"),
    (lambda d: d["fit"]["region"].update(points="learned"),
     "fit.region.points: learned needs a 'region' dimension in metrics.win_rate_by_segment"),
    (lambda d: d["fit"]["region"].pop("overrides"), "fit.region: points: manual needs overrides"),
    (lambda d: d["fit"]["region"]["overrides"]["na"].update(points=6),
     "fit.region.overrides.na.points: 6 is above the group's cap 5"),
    (lambda d: d["fit"]["region"]["overrides"]["na"].pop("why"), "fit.region.overrides.na.why: is required"),
    (lambda d: d.update(total_cap=120), "total_cap: input should be less than or equal to 100"),
    (lambda d: d["grades"]["fit"].update(B=40), "grades.fit.A: 30 must be above B (40)"),
    (lambda d: d["grades"]["fit"].update(A=90), "grades.fit.A: 90 is above the most fit points (55"),
    (lambda d: d["grades"]["engagement"].update({"2": 25}), "grades.engagement.1: 20 must be above 2 (25)"),
])
def test_a_bad_model_names_file_field_and_fix(tmp_path, edit, expected):
    root = _contracts(tmp_path, edit)
    with pytest.raises(ContractError) as e:
        load_model(root / "scoring" / "icp_v1.yaml", root)
    assert str(e.value).startswith("contracts/scoring/icp_v1.yaml: ") and expected in str(e.value), str(e.value)


def test_exactly_one_model_is_active(tmp_path):
    root = _contracts(tmp_path)
    assert load_active_model(root).spec.model_version == "icp_v1@1.0.0"
    shutil.copy(root / "scoring" / "icp_v1.yaml", root / "scoring" / "icp_v2.yaml")
    with pytest.raises(ContractError, match="exactly one model must have active: true, found "
                                            "contracts/scoring/icp_v1.yaml, contracts/scoring/icp_v2.yaml"):
        load_active_model(root)


# ---- shrinkage and points ------------------------------------------------------------------------------------------

def test_shrinkage_worked_by_hand():
    # p0 = 40/200 = 0.2. Variances: a 0.3*0.7/100 = 0.0021 (above the pooled floor 0.0016); b 0.1*0.9/100 =
    # 0.0009, floored to 0.0016. Spread (100*0.01 + 100*0.01)/200 = 0.01, noise 0.00185, tau^2 = 0.00815.
    # w_a = 0.00815/0.01025 = 0.7951 -> 0.2795, lift +0.3976 -> 10*(0.5 + 0.3976) = 8.98 of cap 10 (lift_for_cap 0.5);
    # w_b = 0.00815/0.00975 = 0.8359 -> 0.1164, lift -0.4179 -> 0.82.
    out = learn_points([Rate("a", 30, 100), Rate("b", 10, 100)], Rate("all", 40, 200), cap=10, lift_for_cap=0.5)
    assert out["a"].weight == pytest.approx(0.7951, abs=1e-4) and out["a"].shrunk == pytest.approx(0.2795, abs=1e-4)
    assert out["a"].points == pytest.approx(8.98) and out["b"].points == pytest.approx(0.82)
    assert out["b"].weight == pytest.approx(0.8359, abs=1e-4)


@pytest.mark.parametrize("rates,overall,expect", [
    # the same rate everywhere: no spread to learn, every value at half the cap
    ([Rate("a", 30, 100), Rate("b", 30, 100)], Rate("all", 60, 200), {"a": 5.0, "b": 5.0}),
    # spread no larger than the noise: tau^2 = 0, fully shrunk (3 of 10 vs 2 of 10)
    ([Rate("a", 3, 10), Rate("b", 2, 10)], Rate("all", 5, 20), {"a": 5.0, "b": 5.0}),
    # no closed deal: no evidence, the overall rate
    ([Rate("a", 60, 100), Rate("b", 20, 100), Rate("c", 0, 0)], Rate("all", 80, 200), {"c": 5.0}),
    # no win anywhere: nothing to compare with
    ([Rate("a", 0, 10)], Rate("all", 0, 10), {"a": 5.0}),
])
def test_learned_points_table(rates, overall, expect):
    out = learn_points(rates, overall, cap=10, lift_for_cap=0.5)
    assert {v: out[v].points for v in expect} == expect


def test_a_small_segment_cannot_dominate():
    # 3 of 3 won is a 100 % rate, but three deals: it is shrunk harder than 60 of 100 and earns fewer points
    rates = [Rate("tiny", 3, 3), Rate("big", 60, 100), Rate("low", 20, 100), Rate("mid", 40, 100)]
    out = learn_points(rates, Rate("all", 123, 303), cap=10, lift_for_cap=0.5)
    assert out["tiny"].rate == 1.0 > out["big"].rate
    assert out["tiny"].weight < out["big"].weight and out["tiny"].points < out["big"].points
    assert all(0 <= lr.points <= 10 for lr in out.values())


@pytest.mark.parametrize("lift,points", [(0.0, 15.0), (0.5, 30.0), (-0.5, 0.0), (0.25, 22.5), (3.0, 30.0),
                                         (-1.0, 0.0)])
def test_points_for_lift(lift, points):
    assert points_for_lift(lift, cap=30, lift_for_cap=0.5) == points


@pytest.mark.parametrize("fit,eng,grade", [
    (30, 20, "A1"), (29.99, 20, "B1"), (22, 19.99, "B2"), (21.99, 8, "C2"), (0, 7.99, "C3"), (55, 50, "A1"),
])
def test_grade_grid_boundaries_in_python_and_sql(fit, eng, grade):
    model = load_active_model(REPO / "contracts").spec   # fit A >= 30, B >= 22; engagement 1 >= 20, 2 >= 8
    assert fit_grade(fit, model) + engagement_grade(eng, model) == grade
    f, e = grade_sql("f", "e", model)
    sql = f"SELECT ({f}) || ({e}) FROM (SELECT {fit}::DOUBLE AS f, {eng}::DOUBLE AS e)"
    assert duckdb.connect().execute(sql).fetchone() == (grade,)


# ---- on a generated world ------------------------------------------------------------------------------------------

SCORED = ["fact_pipeline", "win_rate_by_segment", "account_fit_score", "lead_score"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """180 generated days without defects, clean tables bulk-loaded, the win rates and both scores published."""
    from metrics_fixtures import bulk_load_clean

    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate
    from gtm_pipeline.metrics import run_layer

    tmp = tmp_path_factory.mktemp("scoring_world")
    generate(tmp / "landing", GenerateConfig(days=DAYS, seed=11, start=START, scale=2.0, defects=DefectRates.none()),
             progress=False)
    path = tmp / "gen.duckdb"
    with duckdb.connect(str(path)) as con:
        bulk_load_clean(tmp / "landing", con)
        out = run_layer(con, REPO / "contracts", only=SCORED, now=NOW)
        assert all(o.published for o in out.values()), {n: o.blocked_by for n, o in out.items()}
        con.execute("CHECKPOINT")
    return path


@pytest.fixture
def world_copy(world, tmp_path):
    dst = tmp_path / "gen.duckdb"
    shutil.copy(world, dst)
    con = duckdb.connect(str(dst))
    yield con
    con.close()


def _auc(won: np.ndarray, score: np.ndarray) -> float:
    """Rank-based AUC (Mann-Whitney U / n1 n0), ties at their average rank."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inv = np.unique(score, return_inverse=True)
    ranks = (np.bincount(inv, ranks) / np.bincount(inv))[inv]
    n1, n0 = int(won.sum()), int((~won).sum())
    return float((ranks[won].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_auc_helper_on_known_orders():
    assert _auc(np.array([False, False, True, True]), np.array([1.0, 2.0, 3.0, 4.0])) == 1.0
    assert _auc(np.array([True, True, False, False]), np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert _auc(np.array([True, False, True, False]), np.array([1.0, 1.0, 1.0, 1.0])) == 0.5


def test_learned_industry_points_recover_the_generators_truth(world_copy):
    from gtm_pipeline.generate.catalog import INDUSTRIES, WIN_MULT_INDUSTRY

    pts = dict(world_copy.execute("SELECT industry, max(fit_industry) FROM metrics.account_fit_score "
                                  "WHERE industry IS NOT NULL GROUP BY ALL").fetchall())
    ranked = sorted(pts, key=lambda v: -pts[v])
    truth = sorted(INDUSTRIES, key=lambda v: -WIN_MULT_INDUSTRY[INDUSTRIES.index(v)])
    assert (ranked[0], ranked[-1]) == (truth[0], truth[-1]) == ("fintech", "retail"), pts
    assert pts["fintech"] > pts["retail"] + 10
    versions = world_copy.execute("SELECT DISTINCT model_version FROM metrics.lead_score").fetchall()
    assert versions == [("icp_v1@1.0.0",)]


def _held_out(con, month: str):
    from gtm_pipeline.generate.catalog import INDUSTRIES, WIN_MULT_INDUSTRY
    from gtm_pipeline.scoring.contract import FIT_GROUPS
    from gtm_pipeline.scoring.fit import fit_columns_sql, fit_tables, read_rates

    model = load_active_model(REPO / "contracts").spec
    rates, overall = read_rates(con, before_month=month)       # learn on the months before only
    tables = fit_tables(model, rates, overall)
    rows = con.execute(f"""
        SELECT p.is_won, {' + '.join(f'fit_{g}' for g in FIT_GROUPS)}, a.industry
        FROM metrics.fact_pipeline p
        JOIN (SELECT account_id, industry, {', '.join(fit_columns_sql(tables))} FROM clean.account) a
          USING (account_id)
        WHERE (p.is_won OR p.is_lost) AND strftime(p.snapshot_date, '%Y-%m') = ?""", [month]).fetchall()
    won = np.array([r[0] for r in rows], dtype=bool)
    truth = np.array([WIN_MULT_INDUSTRY[INDUSTRIES.index(r[2])] for r in rows])
    return tables, won, np.array([r[1] for r in rows]), truth


def test_fit_ranks_a_held_out_months_wins(world_copy):
    """Learned on January-May, scored on June's closed opportunities. The generator's win probability also depends
    on channel and price, which fit cannot see, so even scoring by the true industry multipliers reaches only
    ~0.57-0.60 (seeds 11-13); fit must clear 0.55 and come within 0.03 of that oracle."""
    tables, won, score, truth = _held_out(world_copy, "2026-06")
    assert len(won) > 300 and 0 < won.sum() < len(won)
    ind = {v: p.points for v, p in tables["industry"].values.items()}
    assert max(ind, key=ind.__getitem__) == "fintech" and min(ind, key=ind.__getitem__) == "retail", ind
    auc, oracle = _auc(won, score), _auc(won, truth)
    assert auc > 0.55 and auc >= oracle - 0.03, (auc, oracle)


def _rerun(con, root, *names):
    from gtm_pipeline.metrics import run_layer

    out = run_layer(con, root, only=list(names), now=NOW)
    assert all(o.published for o in out.values()), {n: o.blocked_by for n, o in out.items()}


def test_a_value_that_stops_matching_loses_its_points(world_copy):
    con = world_copy
    pts = dict(con.execute("SELECT industry, max(fit_industry) FROM metrics.account_fit_score GROUP BY ALL")
               .fetchall())
    acc, lead = con.execute("SELECT l.account_id, l.lead_id FROM clean.lead l JOIN clean.account a "
                            "USING (account_id) WHERE a.industry = 'retail' ORDER BY 1 LIMIT 1").fetchone()
    con.execute("UPDATE clean.account SET industry = 'fintech' WHERE account_id = ?", [acc])
    _rerun(con, REPO / "contracts", "account_fit_score", "lead_score")
    q_acc = "SELECT industry, fit_industry FROM metrics.account_fit_score WHERE account_id = ?"
    q_lead = "SELECT industry, fit_industry FROM metrics.lead_score WHERE lead_id = ?"
    assert con.execute(q_acc, [acc]).fetchone() == ("fintech", pts["fintech"])
    assert con.execute(q_lead, [lead]).fetchone() == ("fintech", pts["fintech"])
    con.execute("UPDATE clean.account SET industry = NULL WHERE account_id = ?", [acc])
    con.execute("UPDATE clean.lead SET industry = NULL WHERE lead_id = ?", [lead])
    _rerun(con, REPO / "contracts", "account_fit_score", "lead_score")
    assert con.execute(q_acc, [acc]).fetchone() == (None, 0.0)
    assert con.execute(q_lead, [lead]).fetchone() == (None, 0.0)


def _flood(con, lead: str, account: str) -> None:
    """Far more touches than any cap allows, an hour before the evaluation time."""
    at = NOW - timedelta(hours=1)
    for i, (kind, n) in enumerate((("demo", 10), ("form_fill", 10), ("page_view", 100))):
        for j in range(n):
            con.execute("INSERT INTO clean.activity (activity_id, activity_type, occurred_at, lead_id) "
                        "VALUES (?, ?, ?, ?)", [f"T{i}-{j}", kind, at, lead])
    for j in range(10):
        con.execute("INSERT INTO clean.intent (record_id, account_id, intent_score, observed_at) VALUES (?, ?, 100, ?)",
                    [f"I-{j}", account, at])


def test_the_total_never_passes_its_cap(world_copy, tmp_path):
    con = world_copy
    assert con.execute("SELECT max(total_score) <= 100 FROM metrics.lead_score").fetchone() == (True,)
    lead, account = con.execute("SELECT lead_id, account_id FROM metrics.lead_score ORDER BY fit_score DESC, lead_id "
                                "LIMIT 1").fetchone()
    _flood(con, lead, account)
    root = _contracts(tmp_path, lambda d: d.update(total_cap=40))
    _rerun(con, root, "lead_score")
    row = con.execute("SELECT fit_score, eng_form_fill, eng_demo, eng_page_view, eng_intent, engagement_score, "
                      "total_score, grade FROM metrics.lead_score WHERE lead_id = ?", [lead]).fetchone()
    fit, ff, demo, pv, intent, eng, total, grade = row
    assert (ff, demo, pv, intent, eng) == (15.0, 20.0, 5.0, 10.0, 50.0)    # every group stopped at its cap
    assert fit + eng > 40 and total == 40.0 and grade.endswith("1")
    assert con.execute("SELECT max(total_score) FROM metrics.lead_score").fetchone() == (40.0,)


def test_explain_agrees_with_the_published_row(world_copy):
    from gtm_pipeline.scoring.explain import explain, render

    con = world_copy
    lead, account = con.execute("SELECT lead_id, account_id FROM metrics.lead_score ORDER BY fit_score DESC, lead_id "
                                "LIMIT 1").fetchone()
    _flood(con, lead, account)
    _rerun(con, REPO / "contracts", "lead_score")
    sample = [r[0] for r in con.execute("SELECT lead_id FROM metrics.lead_score USING SAMPLE 20 ROWS (reservoir, 3)")
              .fetchall()]
    for lid in [lead, *sample]:
        e = explain(con, REPO / "contracts", lid)
        pub = e.published
        assert pub is not None and e.total == pytest.approx(pub["total_score"], abs=1e-6), lid
        assert e.grade == pub["grade"] and e.fit_score == pytest.approx(pub["fit_score"], abs=1e-6), lid
    text = "\n".join(render(explain(con, REPO / "contracts", lead)))
    assert "cap 20 hit" in text and "learned:" in text and "override by RevOps" in text and "differs" not in text


def test_the_explain_command(world, env_settings):
    from gtm_pipeline.cli import main

    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(world, env_settings.duckdb_path)
    with duckdb.connect(str(world), read_only=True) as con:
        lead, account = con.execute("SELECT lead_id, account_id FROM metrics.lead_score LIMIT 1").fetchone()
    res = CliRunner().invoke(main, ["scoring", "explain", lead])
    assert res.exit_code == 0, res.output
    assert f"lead {lead}: model icp_v1@1.0.0" in res.output and "grade" in res.output and "published:" in res.output
    res = CliRunner().invoke(main, ["scoring", "explain", account])
    assert res.exit_code == 0 and f"account {account}" in res.output and "engagement" not in res.output, res.output
    res = CliRunner().invoke(main, ["scoring", "explain", "L-nope"])
    assert res.exit_code == 2 and "'L-nope' is neither a lead_id of clean.lead nor an account_id" in res.output


def test_intent_counts_as_a_percentile_within_its_vendor_and_topic():
    """Vendors score on scales of their own: the top signal of a vendor whose scores run 10-30 counts as much as the
    top of one whose scores run 60-90; a signal after the evaluation time does not exist yet."""
    import duckdb

    from gtm_pipeline.scoring.points import intent_strength_sql

    con = duckdb.connect()
    con.execute("CREATE TABLE intent (account_id VARCHAR, vendor VARCHAR, topic VARCHAR, intent_score DOUBLE, "
                "observed_at TIMESTAMP)")
    con.executemany("INSERT INTO intent VALUES (?, ?, ?, ?, ?)", [
        ("A1", "low_scale", "crm", 30, "2026-08-01"), ("A2", "low_scale", "crm", 10, "2026-08-01"),
        ("A3", "high_scale", "crm", 90, "2026-08-01"), ("A4", "high_scale", "crm", 60, "2026-08-01"),
        ("A5", "high_scale", "pricing", 20, "2026-08-01"), ("A6", "low_scale", "crm", 99, "2026-09-01")])
    sql = intent_strength_sql("intent", "TIMESTAMP '2026-08-15'")
    got = dict(con.execute(f"SELECT account_id, strength FROM ({sql}) ORDER BY 1").fetchall())
    assert got == {"A1": 1.0, "A2": 0.5, "A3": 1.0, "A4": 0.5, "A5": 1.0}


def test_the_score_in_force_follows_the_audience_filter_at_once_and_names_its_version():
    """icp.update excludes retail: the same transaction that writes the flag re-grades retail leads (no fit, grade
    C) under a model version naming the filter version; reversing it restores them -- the playbook and the scores
    never disagree."""
    import duckdb

    from gtm_pipeline.decisions import flags, in_force

    con = duckdb.connect()
    con.execute("CREATE SCHEMA clean")
    con.execute("CREATE SCHEMA metrics")
    con.execute("CREATE TABLE clean.lead (lead_id VARCHAR, industry VARCHAR, size_band VARCHAR, segment VARCHAR, "
                "status VARCHAR, dq_reason VARCHAR)")
    con.execute("INSERT INTO clean.lead VALUES ('L1', 'retail', '11-50', 'smb', 'working', NULL), "
                "('L2', 'fintech', '11-50', 'smb', 'working', NULL)")
    con.execute("CREATE TABLE metrics.lead_score AS SELECT * FROM (VALUES "
                "('L1', 'icp_v1@1.0.0', 40.0, 'A', 25.0, '1', 'A1', 100.0, 65.0), "
                "('L2', 'icp_v1@1.0.0', 35.0, 'A', 5.0, '3', 'A3', 100.0, 40.0)) t(lead_id, model_version, "
                "fit_score, fit_grade, engagement_score, engagement_grade, grade, total_cap, total_score)")
    made = in_force.install(con, {"icp.update": "icp_audience_filter"})
    assert in_force.LEAD_SCORE_IN_FORCE in made

    def scores():
        return con.execute(f"SELECT lead_id, model_version, fit_score, grade, total_score, icp_excluded "
                           f"FROM {in_force.LEAD_SCORE_IN_FORCE} ORDER BY 1").fetchall()

    assert scores() == [("L1", "icp_v1@1.0.0+icp_audience_filter.v0", 40.0, "A1", 65.0, False),
                        ("L2", "icp_v1@1.0.0+icp_audience_filter.v0", 35.0, "A3", 40.0, False)]
    flags.set_flag(con, "icp_audience_filter", {"include": ["industry=fintech"], "exclude": ["industry=retail"]},
                   set_by="t", reason="icp.update applied")
    assert scores() == [("L1", "icp_v1@1.0.0+icp_audience_filter.v1", 0.0, "C1", 25.0, True),
                        ("L2", "icp_v1@1.0.0+icp_audience_filter.v1", 35.0, "A3", 40.0, False)]
    flags.set_flag(con, "icp_audience_filter", {"include": [], "exclude": []}, set_by="t", reason="reversed",
                   restores_version=0)
    assert scores()[0] == ("L1", "icp_v1@1.0.0+icp_audience_filter.v2", 40.0, "A1", 65.0, False)
