"""contracts/slos.yaml: the shipped file loads with the spec's three SLOs; a bad file fails with a message naming the
file, the field and the fix; selectors resolve against the asset keys that exist."""

from __future__ import annotations

import pytest
import yaml

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.slo.contract import Coverage, load_slo_file, resolve_coverage
from gtm_pipeline.slo.durations import parse_duration

SHIPPED = CONTRACTS_DIR_DEFAULT / "slos.yaml"

INDEX = {  # key -> group, like the metric layer plus one clean asset
    "metrics/fact_bookings": "metrics", "metrics/cac_by_channel": "metrics", "metrics/payback": "metrics",
    "metrics/forecast": "metrics", "metrics/attribution": "metrics", "metrics/attribution_validity": "metrics",
    "clean/lead": "clean",
}


def test_shipped_file_has_the_spec_slos():
    f = load_slo_file(SHIPPED)
    got = {s.name: (s.statement, s.threshold, s.objective, s.window, s.owner) for s in f.slos}
    assert got == {
        "metric_age": ("P(MetricAge<24h) >= 0.98", 86400, 0.98, 28 * 86400, "FP&A"),
        "forecast_age": ("P(ForecastAge<4h) >= 0.98", 4 * 3600, 0.98, 28 * 86400, "RevOps"),
        "attribution_age": ("P(AttributionAge<24h) >= 0.98", 86400, 0.98, 28 * 86400, "Demand Gen"),
    }
    # The workbook's pairs (short/long, rate) by severity.
    assert [(b.severity, b.label, b.burn_rate) for b in f.alerting] == [
        ("page", "5m/1h", 14.4), ("page", "30m/6h", 6.0), ("ticket", "2h/1d", 3.0), ("ticket", "6h/3d", 1.0)]
    assert f.windows == (300, 1800, 3600, 7200, 21600, 86400, 259200)
    assert f.get("forecast_age").budget_seconds == pytest.approx(0.02 * 28 * 86400)  # 13.44 h


def test_shipped_file_covers_the_metric_layer():
    cov = resolve_coverage(load_slo_file(SHIPPED), INDEX)
    assert cov.assets == {
        "metric_age": ("metrics/cac_by_channel", "metrics/fact_bookings", "metrics/payback"),
        "forecast_age": ("metrics/forecast",),
        "attribution_age": ("metrics/attribution", "metrics/attribution_validity"),
    }
    assert cov.pending == {}


def test_keys_of_an_undeployed_stage_wait_instead_of_failing():
    """Before the metric layer exists, the named keys are pending (unknown), not an error."""
    cov = resolve_coverage(load_slo_file(SHIPPED), {"clean/lead": "clean"})
    assert cov.assets["forecast_age"] == ()
    assert cov.pending["forecast_age"] == ("metrics/forecast",)
    assert cov.all_keys("attribution_age") == ("metrics/attribution", "metrics/attribution_validity")


def _write(tmp_path, mutate) -> object:
    body = yaml.safe_load(SHIPPED.read_text())
    mutate(body)
    p = tmp_path / "contracts" / "slos.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    return p


def _set(path: list, value):
    def mutate(body):
        node = body
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate,expected", [
    (_set(["slos", 1, "threshold"], "4 hours"),
     "contracts/slos.yaml: slos[1] (forecast_age).threshold: '4 hours' is not a duration; write a positive whole "
     "number with one unit"),
    (_set(["slos", 1, "thresold"], "4h"),
     'contracts/slos.yaml: slos[1] (forecast_age).thresold: unknown field; allowed: name, statement, description, '
     'threshold, warn_after, objective, window, owner, assets, exclude; did you mean "threshold"?'),
    (_set(["slos", 1, "warn_after"], "5h"),
     "contracts/slos.yaml: slos[1] (forecast_age).warn_after: 5h must be shorter than threshold 4h"),
    (_set(["slos", 1, "statement"], "P(ForecastAge<6h) >= 0.98"),
     "slos[1] (forecast_age).statement: 'P(ForecastAge<6h) >= 0.98' disagrees with threshold 4h / objective 0.98"),
    (_set(["slos", 0, "objective"], 98),
     "slos[0] (metric_age).objective: 98 must be a number strictly between 0 and 1, e.g. 0.98"),
    (_set(["slos", 1, "window"], "2d"),
     "slos[1] (forecast_age).window: 2d is shorter than the longest alerting window 3d"),
    (_set(["slos", 2, "name"], "forecast_age"),
     "slos[2] (forecast_age).name: SLO 'forecast_age' is defined twice"),
    (_set(["slos", 1, "owner"], None), "slos[1] (forecast_age).owner: is required: the team that answers for the "
                                       "SLO, e.g. RevOps"),
    (_set(["slos", 1, "assets"], [{"key": "metrics/forecast", "group": "metrics"}]),
     "slos[1] (forecast_age).assets[0]: a selector is exactly one of key:, group:, prefix:"),
    (_set(["alerting", 0, "severity"], "sev1"), "alerting[0].severity: 'sev1' is not allowed; allowed: page, ticket"),
    (_set(["alerting", 0, "short"], "2h"), "alerting[0]: short window 2h must be shorter than long window 1h"),
    (_set(["version"], 2), "contracts/slos.yaml: version: 2 is not allowed; allowed: 1"),
])
def test_bad_file_names_file_field_and_fix(tmp_path, mutate, expected):
    with pytest.raises(ContractError) as e:
        load_slo_file(_write(tmp_path, mutate))
    assert expected in str(e.value)


def test_unknown_key_lists_close_matches(tmp_path):
    f = load_slo_file(_write(tmp_path, _set(["slos", 1, "assets"], [{"key": "metrics/forcast"}])))
    with pytest.raises(ContractError) as e:
        resolve_coverage(f, INDEX)
    assert str(e.value).startswith("contracts/slos.yaml: slos[1] (forecast_age).assets[0].key: unknown asset key "
                                   "'metrics/forcast' (close matches: metrics/forecast)")


def test_unknown_key_in_exclude_and_unknown_stage_fail(tmp_path):
    f = load_slo_file(_write(tmp_path, _set(["slos", 0, "exclude"], ["metrics/forecst"])))
    with pytest.raises(ContractError, match=r"slos\[0\] \(metric_age\)\.exclude\[0\]\.key: unknown asset key "
                                            r"'metrics/forecst' \(close matches: metrics/forecast"):
        resolve_coverage(f, INDEX)
    f = load_slo_file(_write(tmp_path, _set(["slos", 1, "assets"], ["metric/forecast"])))
    with pytest.raises(ContractError, match="unknown asset key 'metric/forecast'"):
        resolve_coverage(f, INDEX)
    f = load_slo_file(_write(tmp_path, _set(["slos", 0, "assets"], [{"group": "metric"}])))
    with pytest.raises(ContractError, match="unknown asset group 'metric' .*close matches: metrics"):
        resolve_coverage(f, INDEX)


def test_prefix_selector(tmp_path):
    f = load_slo_file(_write(tmp_path, _set(["slos", 0, "assets"], [{"prefix": "metrics/fact_"}, "clean/lead"])))
    cov: Coverage = resolve_coverage(f, INDEX)
    assert cov.assets["metric_age"] == ("clean/lead", "metrics/fact_bookings")


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("28d", 2419200),
                                          ("2w", 1209600)])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["0s", "1.5h", "4 h", "h", "-1m", "", "1h30m"])
def test_bad_durations(text):
    with pytest.raises(ContractError, match="is not a duration"):
        parse_duration(text, "x")
