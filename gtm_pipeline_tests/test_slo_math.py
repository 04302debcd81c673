"""SLI, error budget and burn rates as tables (simulated time: epoch seconds, H = one hour)."""

from __future__ import annotations

import pytest

from gtm_pipeline.slo.contract import BurnWindow, Slo
from gtm_pipeline.slo.sli import TimeSplit, asset_figures, burn_rate, level_for, split

H, D = 3600.0, 86400.0
WORKBOOK = (BurnWindow("page", 3600, 300, 14.4), BurnWindow("page", 21600, 1800, 6.0),
            BurnWindow("ticket", 86400, 7200, 3.0), BurnWindow("ticket", 259200, 21600, 1.0))
WINDOWS = (300, 1800, 3600, 7200, 21600, 86400, 259200)
FORECAST = Slo(name="forecast_age", statement="P(ForecastAge<4h) >= 0.98", description="", threshold=4 * 3600,
               warn_after=2 * 3600, objective=0.98, window=28 * 86400, owner="RevOps", selectors=(), exclude=())


@pytest.mark.parametrize("pubs,start,end,expected", [
    # never published: all unknown, never "fresh"
    ([], 0, 10 * H, TimeSplit(0, 0, 10 * H)),
    # published at 2h: unknown before, fresh 4h, stale after
    ([2 * H], 0, 10 * H, TimeSplit(4 * H, 4 * H, 2 * H)),
    # hourly publications: always fresh
    ([h * H for h in range(11)], 0, 10 * H, TimeSplit(10 * H, 0, 0)),
    # a 6h gap between publications: 4h fresh + 2h stale, then fresh again
    ([0, 6 * H], 0, 10 * H, TimeSplit(8 * H, 2 * H, 0)),
    # the publication in force at the window start counts (window starts inside a stale stretch)
    ([0], 5 * H, 10 * H, TimeSplit(0, 5 * H, 0)),
    # publications after the window end are ignored
    ([0, 20 * H], 0, 10 * H, TimeSplit(4 * H, 6 * H, 0)),
])
def test_split(pubs, start, end, expected):
    assert split(pubs, 4 * H, start, end) == expected


@pytest.mark.parametrize("stale_for,window,expected", [
    (0, 1 * H, 0.0),
    (1 * H, 1 * H, 50.0),            # the highest possible burn at 98%
    (17.28 * 60, 1 * H, 14.4),       # 28.8% of an hour stale = the page threshold
    (1 * H, 1 * D, 1 / 24 / 0.02),   # one stale hour in a day
    (1.44 * H, 3 * D, 1.0),          # 2% of 3 days: burns the budget exactly
])
def test_burn_rate(stale_for, window, expected):
    now = 100 * H
    pubs = [now - 4 * H - stale_for]   # stale since now - stale_for
    assert burn_rate(pubs, 4 * H, 0.98, window, now) == pytest.approx(expected)


@pytest.mark.parametrize("burns,level", [
    ({w: 0.0 for w in WINDOWS}, "ok"),
    ({**{w: 0.0 for w in WINDOWS}, 3600: 15.0, 300: 15.0}, "page"),
    ({**{w: 0.0 for w in WINDOWS}, 3600: 15.0, 300: 14.0}, "ok"),         # long window alone does not page
    ({**{w: 0.0 for w in WINDOWS}, 3600: 14.0, 300: 50.0}, "ok"),         # short window alone does not page
    ({**{w: 0.0 for w in WINDOWS}, 21600: 6.5, 1800: 7.0}, "page"),
    ({**{w: 0.0 for w in WINDOWS}, 86400: 3.5, 7200: 4.0}, "ticket"),
    ({**{w: 0.0 for w in WINDOWS}, 259200: 1.1, 21600: 1.1}, "ticket"),
    ({w: 50.0 for w in WINDOWS}, "page"),                                  # page wins over ticket
])
def test_level_for(burns, level):
    assert level_for(burns, WORKBOOK) == level


def _fig(pubs, now):
    return asset_figures(FORECAST, "metrics/forecast", pubs, now, WORKBOOK, WINDOWS)


def test_never_published_is_unknown_not_fresh():
    f = _fig([], now=10 * D)
    assert (f.state, f.age, f.attainment, f.level, f.budget_remaining) == ("unknown", None, None, "ok", 1.0)
    assert f.window.unknown == 28 * D


@pytest.mark.parametrize("age_h,state", [(1, "fresh"), (2.5, "warn"), (4, "stale"), (30, "stale")])
def test_state_by_age(age_h, state):
    now = 10 * D
    assert _fig([now - age_h * H], now).state == state


def test_forecast_stale_for_more_than_4h_burns_budget_and_pages():
    """Hourly forecast for 27 days, then the last refresh 5h ago: 1h stale."""
    now = 28 * D
    pubs = [h * H for h in range(int((now - 5 * H) / H) + 1)]
    f = _fig(pubs, now)
    assert f.state == "stale" and f.age == pytest.approx(5 * H)
    assert f.window.bad == pytest.approx(1 * H)
    assert f.budget_remaining == pytest.approx(1 - 1 * H / (0.02 * 28 * D))   # 1h of a 13.44h budget: 92.6% left
    assert f.attainment == pytest.approx(1 - 1 * H / (28 * D))
    assert f.burn[3600] == pytest.approx(50.0) and f.burn[300] == pytest.approx(50.0)
    assert f.level == "page"
    assert f.stale_since == pytest.approx(now - 1 * H)


def test_page_fires_17_minutes_into_staleness_and_ticket_after_86():
    """The workbook's prediction: 28.8% of 1h -> page ~17.3 min after the age crosses 4h; 6% of 1d -> ticket ~86 min."""
    pubs = [0.0]
    crossed = 4 * H
    assert _fig(pubs, crossed + 17 * 60).level == "ok"
    assert _fig(pubs, crossed + 18 * 60).level == "page"
    assert _fig(pubs, crossed + 18 * 60).burn[86400] < 3.0    # ticket not yet
    ticket = asset_figures(FORECAST, "x", pubs, crossed + 87 * 60, [b for b in WORKBOOK if b.severity == "ticket"],
                           WINDOWS)
    assert ticket.level == "ticket"


def test_budget_overspent_goes_negative():
    now = 28 * D
    f = _fig([now - 4 * H - 20 * H], now)   # 20h stale > 13.44h budget
    assert f.budget_remaining == pytest.approx(1 - 20 / 13.44)
    assert f.budget_remaining < 0
