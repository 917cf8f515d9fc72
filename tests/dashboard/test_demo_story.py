"""The demo's story, as ``make demo`` tells it, visible on the dashboard: the run, the refused
candidate with its evidence, the canary's traffic steps, the drift alert and the automatic
rollback, each on its own page in a real Chromium (the store is made like the demo's, by the
same parts: ``project.build_demo``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import Tab, needs_chromium, serving, warm
from tests.dashboard.project import build_demo

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_demo(tmp_path_factory.mktemp("demo") / "shop")


@pytest.fixture(scope="module")
def site(demo: dict[str, Any]) -> Iterator[str]:
    with serving(demo["config"], None) as url:
        yield url


@pytest.fixture
def tab(browser: Any, site: str, shots: Path) -> Iterator[Tab]:
    t = Tab(browser, site, shots)
    yield t
    t.close()


def test_the_run_that_registered_version_1(tab: Tab, demo: dict) -> None:
    tab.open(f"/runs/{demo['run_id']}", shot="story-1-run")
    assert "churn v1" in tab.page.locator("dl").first.inner_text()
    assert tab.page.locator("#dag svg rect.node").count() == 4  # data.rows and three steps
    assert tab.page.locator("#refused").count() == 0
    assert tab.errors == []


def test_the_refused_candidate_with_its_evidence(tab: Tab, demo: dict) -> None:
    tab.open("/runs", shot="story-2-runs")
    tab.page.locator(f"a.run[href='/runs/{demo['refused_run_id']}']").first.click()
    tab.page.wait_for_url(re.compile(rf"/runs/{demo['refused_run_id']}$"))
    refused = tab.page.locator("#refused")
    assert "was not registered: roc_auc >= 0.70 failed" in refused.inner_text()
    gate = refused.locator("tr", has_text="roc_auc >= 0.70")
    assert gate.locator("td.v-fail").inner_text() == "fail"
    evidence = gate.locator("td").last.inner_text()
    assert re.search(r"0\.\d+", evidence), evidence  # the measured AUC against its bound
    assert "Registered" not in tab.page.locator("dl").first.inner_text()
    tab.page.screenshot(path=str(tab.shots / "story-2-refused.png"), full_page=True)
    assert tab.errors == []


def test_the_canary_traffic_steps(tab: Tab, demo: dict) -> None:
    tab.open(f"/releases/{demo['canary']}", shot="story-3-canary")
    assert "promoted" in tab.page.locator("h1").inner_text()
    path = tab.page.locator("#weight svg path").first.get_attribute("d")
    assert path is not None
    levels = [float(v) for v in re.findall(r"V([\d.]+)", path)]
    # 0% -> 20% -> 50% -> 100%: three rises, each higher on the chart (smaller y)
    assert len(levels) == 3 and levels[0] > levels[1] > levels[2], path
    timeline = tab.page.locator("#timeline").inner_text()
    assert timeline.count("traffic.changed") >= 2 and "release.promoted" in timeline
    weights = httpx.get(f"{tab.base}/releases/{demo['canary']}.json").json()["weights"]
    assert [w for _at, w in weights] == [0.0, 20.0, 50.0, 100.0]
    assert tab.errors == []


def test_the_drift_alert(tab: Tab, demo: dict) -> None:
    tab.open("/", shot="story-4-overview")
    assert "churn@production:tenure drift" in tab.page.locator("#alerts").inner_text()
    warm(tab.base, "/monitoring/churn/production")
    tab.open("/monitoring/churn/production", shot="story-4-drift-alert")
    fired = tab.page.locator("#alerts tr.alert-fired")
    assert fired.count() == 1 and "tenure drift" in fired.inner_text()
    assert "drifted" in tab.page.locator("#drift tr", has_text="tenure").inner_text()
    assert tab.errors == []


def test_the_automatic_rollback(tab: Tab, demo: dict) -> None:
    tab.open("/releases", shot="story-5-releases")
    assert tab.page.locator("figure.timeline path.rollback").count() == 1
    tab.open(f"/releases/{demo['rollback']}", shot="story-5-rollback")
    assert "rolled_back" in tab.page.locator("h1").inner_text()
    box = tab.page.locator("#rolled-back").inner_text()
    assert demo["rollback_why"][:40] in box
    # the verdict's evidence: the check that failed, with the value it measured
    failed = tab.page.locator("#verdicts li.v-fail", has_text="agreement")
    assert failed.count() >= 1 and re.search(r"\(0\.\d+\)", failed.first.inner_text())
    # nobody acted: the analysis did (the event's actor is not a person on the dashboard)
    assert "via the dashboard" not in tab.page.locator("#timeline").inner_text()
    tab.open("/", shot="story-5-overview")
    assert re.search(
        r"churn\s+production\s+churn v2", tab.page.locator("#environments").inner_text()
    )
    assert tab.errors == []
