"""Review packets (issue 14 §6): the cadences' days and times of day as the spec writes them, the period a packet
covers, and what it must list -- pending decisions, refusals, monitoring breaches, SLO health -- with the decision
log's integrity said exactly as `verify` says it (never "verified" for a log no key checked). The schedules that
build them are tested tick by tick in test_decision_dagster.py."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import duckdb
import pytest
from decision_fixtures import CHANGE_DAY, PUBLISHED_AT, TEST_KEY, green, pricing_metrics

from gtm_pipeline.config import ReviewTimes, load_settings
from gtm_pipeline.decisions import lifecycle, monitoring, nodes, open_context
from gtm_pipeline.decisions.packets import (
    build_packet,
    is_first_wednesday,
    is_quarterly_plan_day,
    next_quarter_start,
    period_for,
    previous_review_day,
)
from gtm_pipeline.errors import GtmPipelineError

# ---- the days -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("day,first", [(date(2026, 11, 4), True), (date(2026, 11, 11), False),
                                       (date(2026, 7, 1), True), (date(2026, 7, 8), False),
                                       (date(2026, 11, 5), False), (date(2026, 10, 7), True),
                                       (date(2026, 9, 30), False)])
def test_first_wednesday(day, first):
    assert is_first_wednesday(day) is first


PLAN_DAYS = [date(y, m, d) for y in (2024, 2026, 2027, 2028) for m, d in ((3, 22), (6, 21), (9, 21), (12, 22))]


@pytest.mark.parametrize("day", PLAN_DAYS, ids=str)
def test_quarterly_plan_is_ten_days_before_the_quarter_starts(day):
    assert is_quarterly_plan_day(day)
    assert (next_quarter_start(day) - day).days == 10 and next_quarter_start(day).day == 1
    # the days either side are not (and nor is the old rule's "10 days before quarter end", a day earlier)
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        assert not is_quarterly_plan_day(other), other


def test_exactly_four_plan_days_a_year_leap_or_not():
    for year in (2026, 2028):             # 2028-02-29 exists
        days = [date(year, 1, 1) + timedelta(days=i) for i in range(366 if year == 2028 else 365)]
        assert [d for d in days if is_quarterly_plan_day(d)] == [date(year, 3, 22), date(year, 6, 21),
                                                                 date(year, 9, 21), date(year, 12, 22)]
    assert next_quarter_start(date(2026, 12, 31)) == date(2027, 1, 1)
    assert next_quarter_start(date(2028, 2, 29)) == date(2028, 4, 1)
    assert next_quarter_start(date(2026, 4, 1)) == date(2026, 7, 1)


@pytest.mark.parametrize("cadence,as_of,previous", [
    ("weekly_ops", date(2026, 12, 8), date(2026, 12, 1)),           # a Tuesday: the Tuesday before
    ("weekly_ops", date(2026, 12, 10), date(2026, 12, 8)),          # an ad-hoc Thursday: since this week's
    ("monthly_business_review", date(2026, 11, 4), date(2026, 10, 7)),
    ("monthly_business_review", date(2026, 1, 7), date(2025, 12, 3)),
    ("quarterly_plan", date(2026, 12, 22), date(2026, 9, 21)),
    ("quarterly_plan", date(2027, 3, 22), date(2026, 12, 22)),
])
def test_previous_review_day(cadence, as_of, previous):
    assert previous_review_day(cadence, as_of) == previous


# ---- the period -----------------------------------------------------------------------------------------------------

def test_period_starts_at_the_previous_review_in_et_across_dst():
    late = datetime(2030, 1, 1)
    # Tue 2026-03-10 (EDT since Sunday): the previous review, Tue 03-03 10:00, was EST = 15:00 UTC
    p = period_for("weekly_ops", date(2026, 3, 10), time(10), late)
    assert (p.start, p.end) == (datetime(2026, 3, 3, 15), datetime(2026, 3, 11, 4))   # back-dated: to 03-10 24:00 EDT
    p = period_for("quarterly_plan", date(2026, 12, 22), time(9), late)
    assert p.start == datetime(2026, 9, 21, 13)                                          # 09:00 EDT
    p = period_for("monthly_business_review", date(2026, 11, 4), time(13), late)
    assert p.start == datetime(2026, 10, 7, 17)                                          # 13:00 EDT
    built = datetime(2026, 12, 8, 15, 0, 7)                                              # just after Tue 10:00 EST
    p = period_for("weekly_ops", date(2026, 12, 8), time(10), built)
    assert (p.start, p.end) == (datetime(2026, 12, 1, 15), built)
    # (start, end]: an entry at the previous review's instant belonged to that packet; one written as this packet is
    # built belongs to it
    assert p.start not in p and p.start + timedelta(seconds=1) in p and built in p
    assert built + timedelta(microseconds=1) not in p


def test_bad_cadence_names_the_choices():
    with pytest.raises(GtmPipelineError, match="review cadence 'weekly' is not one of weekly_ops, "
                                               "monthly_business_review, quarterly_plan"):
        previous_review_day("weekly", date(2026, 12, 8))


# ---- the times of day are settings ----------------------------------------------------------------------------------

def test_review_times_default_to_the_spec_and_follow_the_environment():
    assert load_settings({}).review_times == ReviewTimes(time(10), time(13), time(9))
    t = load_settings({"GTM_PIPELINE_WEEKLY_OPS_AT": "8:05", "GTM_PIPELINE_MONTHLY_REVIEW_AT": "16:30",
                       "GTM_PIPELINE_QUARTERLY_PLAN_AT": " 23:59 "}).review_times
    assert (t.weekly_ops, t.monthly_business_review, t.quarterly_plan) == (time(8, 5), time(16, 30), time(23, 59))
    assert load_settings({"GTM_PIPELINE_QUARTERLY_PLAN_AT": ""}).review_times.quarterly_plan == time(9)


@pytest.mark.parametrize("bad", ["9am", "24:00", "10:60", "10", "10:00:00", "1000", "10.30", "-1:00"])
def test_a_bad_review_time_fails_at_load_naming_setting_value_and_example(bad):
    with pytest.raises(GtmPipelineError) as e:
        load_settings({"GTM_PIPELINE_QUARTERLY_PLAN_AT": bad})
    assert str(e.value) == (f"GTM_PIPELINE_QUARTERLY_PLAN_AT={bad!r}: expected a time of day HH:MM (24-hour clock, "
                            f"America/New_York), e.g. GTM_PIPELINE_QUARTERLY_PLAN_AT=16:30; unset it to keep the "
                            f"default (09:00)")


# ---- what a packet lists --------------------------------------------------------------------------------------------

class Clock:
    """A clock the test sets (``clock.t = ...``); every reading returns it."""

    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "wh.duckdb"))
    pricing_metrics(c, rate_before=0.30, rate_after=0.20, published_at=PUBLISHED_AT)
    yield c
    c.close()


def _dc(con, settings, clock, key=None):
    return open_context(con, settings, clock=clock, health_fn=green, log_key=key)


def _propose(dc) -> str:
    [did] = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green).new_proposals
    return did


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


TIMES = ReviewTimes()      # the spec's: weekly ops Tue 10:00 ET


def test_packet_sections_in_the_spec_order(con, env_settings):
    dc = _dc(con, env_settings, Clock(datetime(2026, 11, 2, 9)))
    did = _propose(dc)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green: 4 SLOs met", TIMES)
    headings = [line[3:] for line in p.markdown.splitlines() if line.startswith("## ")]
    assert headings[:4] == ["Pending decisions", "Refusals", "Monitoring breaches", "SLO health"]
    assert did in _section(p.markdown, "Pending decisions") and "Finance, Sales Ops" in p.markdown
    assert "- SLO health green: 4 SLOs met" in _section(p.markdown, "SLO health")
    assert "Period of the refusals and breaches below: 2026-10-27 10:00 EDT (the previous weekly ops review) to " \
           "2026-11-02 04:00 EST" in p.markdown
    assert (p.pending, p.refusals, p.breaches) == (1, 0, 0)


def test_a_refusal_of_the_period_is_in_the_packet_and_one_before_it_is_not(con, env_settings):
    clock = Clock(datetime(2026, 11, 2, 9))
    dc = _dc(con, env_settings, clock)
    did = _propose(dc)
    # The weekly ops packet of Tue 2026-11-10 covers (Tue 11-03 10:00 EST, when it is built]: 15:00 UTC exactly is
    # the previous packet's, one second later is this one's.
    clock.t = datetime(2026, 11, 3, 15, 0, 0)
    with pytest.raises(GtmPipelineError, match="'CRO' is not an approver"):
        lifecycle.approve(dc, did, role="CRO", person="dana@example.com")
    clock.t = datetime(2026, 11, 3, 15, 0, 1)
    with pytest.raises(GtmPipelineError, match="'rex@example.com' may not act as 'Finance'"):
        lifecycle.approve(dc, did, role="Finance", person="rex@example.com")
    clock.t = datetime(2026, 11, 10, 15, 0, 4)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 10), "SLO health green", TIMES)
    refusals = _section(p.markdown, "Refusals")
    assert p.refusals == 1 and refusals.count(f"`{did}`") == 1
    assert ("2026-11-03 10:00 EST" in refusals and "approve by rex@example.com as Finance -- refused:" in refusals
            and "may not act as 'Finance'" in refusals and "(gate `roster`; log entry #3)" in refusals), refusals
    assert "dana@example.com" not in refusals
    # the week before's packet, back-dated, has the other one (its period ends with its day, 11-03 24:00 EST)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    assert p.refusals == 2 and "approve by dana@example.com as CRO" in _section(p.markdown, "Refusals")


def test_a_monitoring_breach_is_in_the_packet_with_what_followed(con, env_settings):
    clock = Clock(datetime(2026, 11, 2, 9))
    dc = _dc(con, env_settings, clock)
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    lifecycle.apply(dc, did, person="dana@example.com", effective=CHANGE_DAY)
    clock.t = datetime(2026, 11, 2, 10)
    [out] = monitoring.evaluate_all(dc)          # smb booking rate 0.30 -> 0.20: outside the ±5 % band
    assert out.event == "reversal_proposed"
    clock.t = datetime(2026, 11, 3, 15, 0, 2)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    breaches = _section(p.markdown, "Monitoring breaches")
    assert p.breaches == 1
    assert f"2026-11-02 05:00 EST `{did}` pricing.change (+7% list price for smb; hold discount ladders): " \
           f"booking_rate" in breaches
    assert "booking_rate 0.2000 vs baseline 0.3000 (-33.3%; band ±5%): BREACH" in breaches
    assert f"reversal proposed, not done yet: the owner or an approver runs gtm-pipeline decisions reverse {did}" \
        in breaches
    assert "owner/approver to reverse" in _section(p.markdown, "Pending decisions")
    # the next week's packet: the breach is older than its period, but the reversal is still open -- it says so
    clock.t = datetime(2026, 11, 10, 15, 0, 2)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 10), "SLO health green", TIMES)
    breaches = _section(p.markdown, "Monitoring breaches")
    assert p.breaches == 0 and f"still open from before this period: `{did}` pricing.change, reversal proposed " \
                               f"2026-11-02 05:00 EST and not done yet" in breaches
    # reversed: the (back-dated) packet of the breach's week says how
    lifecycle.reverse(dc, did, person="farah@example.com", reason="booking rate out of band")
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    assert "-- reversed: restored price_card.smb v1 (as v3)" in _section(p.markdown, "Monitoring breaches")
    assert "still open" not in p.markdown


def _integrity(p) -> str:
    return _section(p.markdown, "Decision log integrity")


def test_an_unkeyed_log_is_not_reported_as_verified(con, env_settings):
    dc = _dc(con, env_settings, Clock(datetime(2026, 11, 2, 9)))
    _propose(dc)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    text = _integrity(p)
    assert p.log_status == "unkeyed"
    assert "**UNKEYED**: tamper evidence limited" in text and "set GTM_PIPELINE_DECISION_LOG_KEY" in text
    assert "gtm-pipeline decisions verify: UNKEYED: 1 entries, plain sha256 chain intact" in text
    assert "WARNING: NO KEY: GTM_PIPELINE_DECISION_LOG_KEY is not set" in text
    assert "verified" not in text.replace("UNVERIFIED", "").lower()


def test_a_keyed_log_is_verified_and_without_its_key_unverified(con, env_settings):
    dc = _dc(con, env_settings, Clock(datetime(2026, 11, 2, 9)), key=TEST_KEY)
    _propose(dc)
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    assert p.log_status == "ok" and "**Keyed and verified**" in _integrity(p)
    assert "gtm-pipeline decisions verify: ok: 1 entries, HMAC chain intact under key" in _integrity(p)
    # the same log, read by a process without the key: it cannot say verified
    p = build_packet(_dc(con, env_settings, Clock(datetime(2026, 11, 2, 9))), "weekly_ops", date(2026, 11, 3),
                     "SLO health green", TIMES)
    assert p.log_status == "unverified" and "**UNVERIFIED**: 1 keyed entries could not be checked" in _integrity(p)
    assert "Keyed and verified" not in p.markdown


@pytest.mark.parametrize("key", [TEST_KEY, None], ids=["keyed", "unkeyed"])
def test_an_edited_log_is_broken_at_the_entry(con, env_settings, key):
    dc = _dc(con, env_settings, Clock(datetime(2026, 11, 2, 9)), key=key)
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    con.execute("UPDATE decisions.log SET actor = 'mallory@example.com' WHERE entry_id = 2")
    p = build_packet(dc, "weekly_ops", date(2026, 11, 3), "SLO health green", TIMES)
    text = _integrity(p)
    assert p.log_status == "tampered" and "**BROKEN at entry #2** (edited)" in text, text
    assert "gtm-pipeline decisions verify: TAMPERED: entry #2: edited" in text
    assert "Keyed and verified" not in text and "UNKEYED" not in text


def test_the_packet_period_follows_the_configured_time(con, env_settings, monkeypatch):
    monkeypatch.setenv("GTM_PIPELINE_WEEKLY_OPS_AT", "08:30")
    dc = _dc(con, env_settings, Clock(datetime(2026, 11, 10, 14)))
    p = build_packet(dc, "weekly_ops", date(2026, 11, 10), "SLO health green")       # times from the settings
    assert p.period.start == datetime(2026, 11, 3, 13, 30)                             # Tue 08:30 EST
    assert "2026-11-03 08:30 EST (the previous weekly ops review)" in p.markdown
    with pytest.raises(GtmPipelineError, match="review cadence 'daily' is not one of"):
        build_packet(dc, "daily", date(2026, 11, 10), "SLO health green", TIMES)


def test_a_red_slo_verdict_lists_each_reason_on_its_own_line():
    from gtm_pipeline.decisions.packets import _slo_lines

    red = "SLO health red: metric_age: metrics/cac is stale: its data is 2d old; forecast_age: burning fast (page)"
    assert _slo_lines(red) == ["- **SLO health red**", "  - metric_age: metrics/cac is stale: its data is 2d old",
                               "  - forecast_age: burning fast (page)"]
    assert _slo_lines("SLO health green") == ["- SLO health green"]
