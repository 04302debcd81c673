"""The Dagster UI in a real browser (Debian's /usr/bin/chromium driven by Playwright; no browser download).

Flow: generate a small demo into temp settings -> `gtm-pipeline demo` materializes it into a temp DAGSTER_HOME ->
`dagster dev` on 127.0.0.1:<free port> over that instance -> GraphQL: every stage group, the lineage from ingest
through to the last stage, every check executed -> the browser: the global lineage page shows every stage, the
expanded graph shows every asset, and each stage's checks are listed on its asset page. Screenshots go to
``artifacts/``: lineage.png (the graph, the README picture; GTM_UPDATE_DOCS_SCREENSHOT=1 copies it to
docs/lineage.png), lineage_page.png (the whole page), lineage_<stage>.png and checks_<stage>.png.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPO, require
from procs import free_port, graphql, run_checked, start_group, stop_group, venv_tool, wait_for_webserver

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts"
# The stages of docs/design.md §1, in lineage order. With STRICT_FULL_LINEAGE each of them must be defined and reach
# back to ingest; set it to False only while a stage is being rebuilt (then only REQUIRED_STAGES must exist).
STAGE_ORDER = ("ingest", "clean", "contracts", "metrics", "decisions")
# Groups beside the main line: the SLO stage watches the published metrics rather than feeding decisions.
SIDE_GROUPS = ("slo",)
REQUIRED_STAGES = ("ingest", "clean", "contracts")
# The SLO sensor ticks on the daemon's first sensor loop after the code location loads (well under a minute).
SENSOR_REPORT_BUDGET = 120.0
STRICT_FULL_LINEAGE = True
VIEWPORT = {"width": 1600, "height": 900}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

ASSET_QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path }
    assetMaterializations(limit: 1) { runId }
    assetChecksOrError { __typename ... on AssetChecks { checks { name
        executionForLatestMaterialization { status } } } } } }
"""
GRAPH_SVG = 'svg[class*="svgContainer"]'
NODE_LABELS_JS = """() => Array.from(document.querySelectorAll('svg[class*="svgContainer"] foreignObject'))
    .map(f => f.textContent)"""


def expected_stages() -> list[str]:
    from gtm_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    missing = [s for s in (STAGE_ORDER if STRICT_FULL_LINEAGE else REQUIRED_STAGES) if s not in groups]
    assert not missing, f"asset groups missing from the definitions: {missing}"
    unknown = groups - set(STAGE_ORDER) - set(SIDE_GROUPS)
    assert not unknown, f"asset groups that are not stages of docs/design.md: {sorted(unknown)}"
    return [s for s in STAGE_ORDER + SIDE_GROUPS if s in groups]


def label_matches(name: str, label: str) -> bool:
    """A node label is the asset name, possibly shortened in the middle with '…' when zoomed out."""
    label = label.strip()
    if label == name:
        return True
    if "…" in label:
        head, _, tail = label.partition("…")
        return name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)
    return False


@pytest.fixture
def demo_env(tmp_path) -> dict[str, str]:
    data = tmp_path / "data"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # nux off: no "Join the Dagster community" dialog over the page in a fresh instance.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "GTM_PIPELINE_DATA_DIR": str(data),
                "GTM_PIPELINE_LANDING_DIR": str(data / "landing"), "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
                "PYTHONUNBUFFERED": "1"})
    cli = venv_tool("gtm-pipeline")
    # A smaller demo than the README's 90 days at full volume, then the README's own command. Ten days is enough:
    # every asset materializes (a metric whose audit a short history fails keeps its state and says so, and a
    # decision node without published inputs proposes nothing and says why).
    run_checked([cli, "generate", "--days", "10", "--scale", "0.3", "--seed", "7", "--out", str(data / "landing"),
                 "--no-progress"], env=env, cwd=REPO)
    out = run_checked([cli, "demo"], env=env, cwd=REPO, timeout=600)
    assert "What landed where" in out
    return env


@pytest.fixture
def dagster_dev(demo_env, tmp_path):
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    proc = start_group([venv_tool("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                       env=demo_env, cwd=REPO, log=log)
    try:
        locations = wait_for_webserver(port, proc, log)
        assert locations == ["gtm_pipeline"], locations
        yield port, locations[0]
    finally:
        stop_group(proc)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "dagster_dev.log")


def _check_graph_via_graphql(port: int, stages: list[str]) -> dict[str, dict]:
    from gtm_pipeline.definitions import defs

    nodes = graphql(port, ASSET_QUERY)["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    graph = defs.resolve_asset_graph()
    assert set(by_key) == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {n["groupName"] for n in nodes} == set(stages)

    # Lineage: every stage after ingest is reached from ingest through dependency edges.
    parents = {k: {"/".join(d["path"]) for d in n["dependencyKeys"]} for k, n in by_key.items()}

    def reaches_ingest(key: str, seen: set[str]) -> bool:
        if by_key[key]["groupName"] == "ingest":
            return True
        return any(p not in seen and p in by_key and reaches_ingest(p, seen | {p}) for p in parents[key])

    for stage in [s for s in stages if s in STAGE_ORDER][1:]:
        assert any(reaches_ingest(k, {k}) for k, n in by_key.items() if n["groupName"] == stage), \
            f"no asset of stage {stage} descends from ingest"

    # The demo materialized every main-line asset. The side groups (the slo/<name> assets and the data_freshness
    # checks) are reported by the SLO sensor of this dagster dev: wait for its first report, within a bound.
    not_materialized = sorted(k for k, n in by_key.items() if not n["assetMaterializations"]
                              and n["groupName"] not in SIDE_GROUPS)
    assert not not_materialized, f"not materialized by the demo: {not_materialized}"
    deadline = time.monotonic() + SENSOR_REPORT_BUDGET
    while True:
        unreported = sorted(k for k, n in by_key.items() if not n["assetMaterializations"]
                            or any(c["executionForLatestMaterialization"] is None
                                   for c in n["assetChecksOrError"].get("checks", [])))
        if not unreported or time.monotonic() > deadline:
            break
        time.sleep(2)
        by_key = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, ASSET_QUERY)["assetNodes"]}
    side = sorted(k for k, n in by_key.items() if not n["assetMaterializations"])
    assert not side, f"not reported by the SLO sensor within {SENSOR_REPORT_BUDGET:.0f}s: {side}"
    expected_checks = {f"{ck.asset_key.to_user_string()}:{ck.name}" for ck in graph.asset_check_keys}
    shown, not_run = set(), []
    for k, n in by_key.items():
        checks = n["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        for c in checks["checks"]:
            shown.add(f"{k}:{c['name']}")
            if c["executionForLatestMaterialization"] is None:
                not_run.append(f"{k}:{c['name']}")
    assert shown == expected_checks
    assert not not_run, f"checks never executed by the demo: {sorted(not_run)}"
    return by_key


def _scale(page) -> float:
    style = page.locator(GRAPH_SVG).evaluate("s => s.parentElement.getAttribute('style') || ''")
    m = re.search(r"matrix\(([0-9.e+-]+)", style)
    return float(m.group(1)) if m else 1.0


def _settle(page) -> None:
    """Wait until the graph's pan/zoom transform stops changing (the UI animates its initial centring)."""
    last, same = None, 0
    for _ in range(40):
        style = page.locator(GRAPH_SVG).evaluate("s => s.parentElement.getAttribute('style') || ''")
        same = same + 1 if style == last else 0
        if same >= 3:
            return
        last = style
        page.wait_for_timeout(150)


def _zoom_to_fit(page) -> None:
    """Make the whole graph visible with readable node labels. The UI stops drawing labels below a zoom of about
    0.2, so the window first grows with the graph (up to 6000 px) and the page is reloaded, so that the UI centres
    the graph in the final window; then the graph's own zoom-out button (which zooms about the window's centre) is
    clicked until the graph fits."""
    svg = page.locator(GRAPH_SVG)
    w, h = svg.evaluate("s => [s.width.baseVal.value, s.height.baseVal.value]")
    height = min(6000, max(VIEWPORT["height"], int(h * 0.3) + 250))
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.reload()
    svg.wait_for()
    _settle(page)
    box = svg.locator("xpath=../..").bounding_box()
    fit = min(box["width"] / w, box["height"] / h) * 0.95
    zoom_out = page.locator('button:has([aria-label="zoom_out"])')
    for _ in range(60):
        if _scale(page) <= fit:
            break
        zoom_out.click()
        page.wait_for_timeout(30)
    _settle(page)


def _dismiss_welcome_dialog(page) -> None:
    """Skip the 'Join the Dagster community' dialog if it shows anyway (the instance disables it with nux)."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()


def _wait_for(predicate, what: str, page, budget: float = 45.0):
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"the UI did not show {what}")


def test_lineage_in_a_real_browser(dagster_dev):
    require(Path(CHROMIUM).exists(), "Debian chromium (apt-get install chromium) at /usr/bin/chromium")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package (pip install -e '.[test]')")
    port, location = dagster_dev
    stages = expected_stages()
    by_key = _check_graph_via_graphql(port, stages)
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)

            # 1. Global asset lineage: one node per stage, with live statuses.
            page.goto(f"{base}/asset-groups")
            page.locator(GRAPH_SVG).wait_for()

            def statuses_loaded():
                ls = page.evaluate(NODE_LABELS_JS)
                return ls if ls and not any("fetching statuses" in t for t in ls) else None

            labels = _wait_for(statuses_loaded, "the stage groups with their statuses", page)
            _dismiss_welcome_dialog(page)
            shown_groups = {s for s in stages for t in labels if t.strip().startswith(s)}
            assert shown_groups == set(stages), f"groups on the lineage page: {labels}"
            page.screenshot(path=str(ARTIFACTS / "lineage_page.png"))
            # The README picture: the graph area only.
            page.screenshot(path=str(ARTIFACTS / "lineage.png"),
                            clip=page.locator(GRAPH_SVG).locator("xpath=../..").bounding_box())

            # 2. Each stage's own lineage page, zoomed to fit: every asset of the stage is a node.
            for stage in stages:
                page.goto(f"{base}/locations/{location}/asset-groups/{stage}/lineage")
                page.locator(GRAPH_SVG).wait_for()
                _zoom_to_fit(page)
                names = sorted(k.split("/")[-1] for k, n in by_key.items() if n["groupName"] == stage)

                def missing_nodes(names: list[str] = names) -> list[str]:
                    ls = page.evaluate(NODE_LABELS_JS)
                    return [n for n in names if not any(label_matches(n, lbl) for lbl in ls)]

                try:
                    _wait_for(lambda: not missing_nodes(), f"every asset of {stage}", page, budget=20)
                except AssertionError:
                    raise AssertionError(f"{stage}: assets missing from its lineage page: {missing_nodes()}") from None
                page.screenshot(path=str(ARTIFACTS / f"lineage_{stage}.png"))

            # 3. Each stage's checks, as the asset page lists them (the asset of the stage with the most checks).
            # Tall enough that the (virtualised) checks list renders every row without scrolling.
            page.set_viewport_size({"width": VIEWPORT["width"], "height": 2400})
            for stage in stages:
                with_checks = [(len(n["assetChecksOrError"]["checks"]), k) for k, n in by_key.items()
                               if n["groupName"] == stage and n["assetChecksOrError"]["checks"]]
                if not with_checks:
                    continue
                _, key = max(with_checks)
                check_names = [c["name"] for c in by_key[key]["assetChecksOrError"]["checks"]]
                page.goto(f"{base}/assets/{key}?view=checks")
                page.get_by_text(f"Checks ({len(check_names)})").wait_for()
                for name in check_names:
                    # The rows render after the "Checks (N)" header: wait for each one, within a bound.
                    try:
                        page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=20_000)
                    except PlaywrightTimeout:
                        raise AssertionError(f"{key}: check {name} not shown") from None
                page.screenshot(path=str(ARTIFACTS / f"checks_{stage}.png"))
        finally:
            browser.close()

    assert (ARTIFACTS / "lineage.png").stat().st_size > 5_000
    if os.environ.get("GTM_UPDATE_DOCS_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "lineage.png", REPO / "docs" / "lineage.png")
