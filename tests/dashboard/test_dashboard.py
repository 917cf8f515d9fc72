"""The dashboard end to end: a real store, the real server on 127.0.0.1, a real headless
Chromium (Debian's, driven by Playwright) clicking through every page.

Screenshots of every page land in ``tests/dashboard/artifacts/`` (ignored by git), or in
``$CONVEYOR_TEST_ARTIFACTS/dashboard`` when that is set (CI keeps them); the run's summary
names the folder and the pictures. The browser tests skip only when no ``chromium`` is on PATH
(``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import Tab, free_port, needs_chromium, serving, warm
from tests.dashboard.project import TOKEN, build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build(tmp_path_factory.mktemp("dash") / "shop")


@pytest.fixture(scope="module")
def site(store: dict[str, Any]) -> Iterator[str]:
    with serving(store["config"], TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def readonly(store: dict[str, Any]) -> Iterator[str]:
    with serving(store["config"], None) as url:
        yield url


@pytest.fixture
def tab(browser: Any, site: str, shots: Path) -> Iterator[Tab]:
    t = Tab(browser, site, shots)
    yield t
    t.close()


def _runs(site: str) -> list[dict]:
    return httpx.get(site + "/runs.json").json()["runs"]


# -- every page renders, with data, and its links work -------------------------------------------


@needs_chromium
def test_every_page_renders_without_console_errors_and_its_links_answer(
    tab: Tab, site: str, store: dict
) -> None:
    runs = _runs(site)
    pages = {
        "overview": "/",
        "runs": "/runs",
        "run": f"/runs/{store['run_id']}",
        "failed-run": f"/runs/{runs[0]['run_id']}",
        "models": "/models",
        "version": "/models/churn/2",
        "releases": "/releases",
        "release": f"/releases/{store['canary']}",
        "monitoring": "/monitoring",
        "monitoring-production": "/monitoring/churn/production",
        "audit-log": "/events",
    }
    _settled(site)  # pages that reload until their reports are in would move under the tab
    warm(site, "/monitoring/churn/production")
    checked: set[str] = set()
    for name, path in pages.items():
        tab.open(path, shot=name)
        assert tab.page.locator("h1").first.is_visible(), path
        links = tab.page.eval_on_selector_all(
            "a[href^='/']", "els => els.map(e => e.getAttribute('href'))"
        )
        for href in links:
            if href in checked or "/artifacts/" in href:
                continue
            checked.add(href)
            answer = tab.page.request.get(site + href, max_redirects=0)
            # acts need the token: their confirmation pages answer 401 to this signed-out tab
            expected = 401 if re.search(r"/(promote|pause|resume|abort|rollback)$", href) else 200
            assert answer.status == expected, (path, href, answer.status)
    assert tab.errors == []
    assert len(checked) > 30  # runs, versions, releases, filters and twins were followed


@needs_chromium
def test_run_page_draws_the_dag_coloured_by_status_and_metric_series(
    tab: Tab, site: str, store: dict
) -> None:
    failed, second, first = _runs(site)
    dag = tab.page.locator("#dag svg")

    def colours() -> dict[str, str]:
        return dict(
            dag.locator("rect.node").evaluate_all(
                "e => e.map(x => [x.nextElementSibling.textContent, x.className.baseVal])"
            )
        )

    tab.open(f"/runs/{failed['run_id']}", shot="run-failed-dag")
    # data.rows -> prepare -> train, curve; train and prepare -> evaluate
    assert dag.locator("path.edge").count() == 5
    assert colours() == {
        "data.rows": "node data",
        "prepare": "node ran",
        "train": "node ran",
        "curve": "node failed",
        "evaluate": "node ran",
    }
    tab.open(f"/runs/{second['run_id']}", shot="run-cached-dag")
    assert colours()["prepare"] == "node cached" and colours()["train"] == "node ran"
    tab.open(f"/runs/{store['run_id']}", shot="run")
    assert set(colours().values()) == {"node ran", "node data"}
    chart = tab.page.locator("#metric-charts svg", has_text="curve: loss")
    d = chart.locator("path").get_attribute("d")
    assert d is not None and d.count("L") == 7  # eight values of the loss curve
    params = tab.page.locator("#params").inner_text()
    assert re.search(r"train\s+C\s+1\.0", params), params
    assert tab.errors == []


@needs_chromium
def test_an_artifact_downloads_with_the_bytes_the_store_holds(
    tab: Tab, site: str, store: dict
) -> None:
    from conveyor.store.stores import open_stores

    tab.open(f"/runs/{store['run_id']}")
    link = tab.page.locator("a.download").first
    href = link.get_attribute("href")
    assert href is not None
    with tab.page.expect_download() as info:
        link.click()
    path = info.value.path()
    digest = href.rsplit("/", 1)[1]
    with open_stores(store["config"]) as stores:
        assert Path(path).read_bytes() == stores.artifacts.read_bytes(digest)
    # a digest the run does not name is not served, whatever the store holds
    other = httpx.get(f"{site}/runs/{store['run_id']}/artifacts/{'0' * 64}")
    assert other.status_code == 404 and "has no artifact" in other.text


@needs_chromium
def test_version_page_shows_gates_with_evidence_and_lineage_to_environments(
    tab: Tab, store: dict
) -> None:
    tab.open("/models/churn/1", shot="version-1")
    gates = tab.page.locator("#gates")
    assert "roc_auc >= 0.55" in gates.inner_text() and gates.locator(".v-pass").count() >= 1
    lineage = tab.page.locator("#lineage").inner_text()
    assert "rows" in lineage and store["run_id"] in lineage
    assert store["staging"] in lineage and "staging" in lineage
    tab.page.locator("#lineage a.run").click()
    assert tab.page.url.endswith(f"/runs/{store['run_id']}")
    assert tab.errors == []


@needs_chromium
def test_releases_timeline_and_the_canary_weight_chart(tab: Tab, store: dict) -> None:
    tab.open("/releases", shot="releases")
    lanes = tab.page.locator("figure.timeline svg")
    assert lanes.count() == 2  # churn@production and churn@staging
    assert tab.page.locator("figure.timeline path.release").count() == 3
    tab.page.locator(f"a.release[href='/releases/{store['canary']}']").first.click()
    weight = tab.page.locator("#weight svg path").first.get_attribute("d")
    assert weight is not None and "V" in weight  # 0% then the canary's 10%
    assert "release.started" in tab.page.locator("#timeline").inner_text()
    assert tab.errors == []


@needs_chromium
def test_runs_page_filters_and_pages(tab: Tab, site: str) -> None:
    runs = _runs(site)
    tab.open("/runs?limit=1", shot="runs-page-1")
    assert tab.page.locator("#runs tbody tr").count() == 1
    tab.page.locator("#next").click()
    assert runs[1]["run_id"] in tab.page.locator("#runs").inner_text()
    tab.open("/runs")
    tab.page.select_option("select[name=status]", "failed")
    tab.page.locator("form.filters button").click()
    tab.page.wait_for_url(re.compile(r"status=failed"))
    rows = tab.page.locator("#runs tbody tr")
    assert rows.count() == 1 and "failed" in rows.inner_text()
    assert tab.errors == []


@needs_chromium
def test_bad_input_gets_a_page_saying_what_was_wrong(tab: Tab) -> None:
    tab.open("/runs/20990101-000000-abcdef", status=404, shot="not-found")
    assert "No run '20990101-000000-abcdef'" in tab.page.locator("#error").inner_text()
    tab.open("/models/churn/99", status=404)
    assert "no version 99" in tab.page.locator("#error").inner_text()
    tab.open("/releases/r-missing", status=404)
    tab.open("/nowhere", status=404)
    tab.open("/runs?status=weird", status=400, shot="bad-request")
    assert "'status'" in tab.page.locator("#error").inner_text()
    tab.open("/events?after=-1", status=400)
    tab.open("/events?kind=run.started&kind=run.failed", status=400)
    assert "given twice" in tab.page.locator("#error").inner_text()
    tab.open("/runs?since=2026-02-30", status=400)
    # Chromium logs each 4xx document as a console error; nothing else may appear
    assert all("status of 40" in e for e in tab.errors), tab.errors


def test_hostile_input_never_reaches_sql_text_or_the_filesystem(site: str, store: dict) -> None:
    """Values that would change a query built as text, or name a file outside the store, are
    refused by the route or the parameter's reader, or looked up as plain values (bound
    parameters) and not found; the store keeps every row and no file appears."""
    from conveyor.store.stores import open_stores

    root = Path(store["config"].root)
    files_before = sorted(p for p in root.rglob("*") if ".conveyor" not in p.parts)
    events_before = httpx.get(site + "/events.json").json()["events"][0]["id"]
    refused = {
        "/runs?step=train'%20OR%20'1'='1": 400,  # a quote is not a step name
        "/runs?status=failed;DROP%20TABLE%20runs": 400,
        "/events?entity_id=%25": 400,  # a LIKE wildcard is not an id
        "/events?after=1%20OR%201=1": 400,
        "/monitoring/churn/production?every=1h;rm": 400,
        "/monitoring/churn/production?every=0m": 400,
        "/monitoring/churn/production?every=30d": 400,
        "/monitoring?x=1": 400,
        "/runs/..%2F..%2Fconveyor.yaml": 404,  # an id never holds a slash
        "/static/..%2F..%2Fapp.py": 404,
        "/static/app.css": 404,  # the static files are a fixed list
        f"/runs/{store['run_id']}/artifacts/..%2F..%2Fconveyor.yaml": 404,
        "/models/churn/1%20OR%201=1": 404,
        "/monitoring/churn/nowhere": 404,
        "/monitoring/..%2F.conveyor/production": 404,
    }
    for path, status in refused.items():
        r = httpx.get(site + path)
        assert r.status_code == status, (path, r.status_code, r.text[:300])
        assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower(), path
    # read as values: a model named with SQL is a model not found, named in the 404
    r = httpx.get(site + "/models.json", params={"model": "churn OR 1=1"})
    assert r.status_code == 404
    assert (
        r.json()["error"]["message"] == "No model 'churn OR 1=1' is registered; /models lists them."
    )
    r = httpx.get(site + "/monitoring/churn/nowhere.json")
    assert r.json()["error"]["message"] == (
        "churn@nowhere serves nothing; /monitoring lists what is served."
    )
    r = httpx.get(site + "/monitoring/churn/production.json", params={"every": "5x"})
    assert r.json()["error"]["message"] == (
        "Query parameter 'every' is '5x'; it takes a duration such as 5m, 1h or 1d, from 60 s "
        "to 7 days."
    )
    assert httpx.get(site + "/events.json").json()["events"][0]["id"] == events_before
    with open_stores(store["config"]) as stores:
        assert len(stores.metadata.runs(limit=10)) == 3
    assert sorted(p for p in root.rglob("*") if ".conveyor" not in p.parts) == files_before


@needs_chromium
def test_an_unknown_environment_is_a_404_page_naming_it(tab: Tab) -> None:
    tab.open("/monitoring/churn/nowhere", status=404, shot="not-found-environment")
    assert "churn@nowhere serves nothing" in tab.page.locator("#error").inner_text()
    tab.open("/monitoring/churn/production?every=soon", status=400, shot="bad-parameter")
    assert "'every'" in tab.page.locator("#error").inner_text()
    assert all("status of 40" in e for e in tab.errors), tab.errors


# -- JSON twins ----------------------------------------------------------------------------------


def test_every_page_has_a_json_twin(site: str, store: dict) -> None:
    expect = {
        "/index.json": {"environments", "releases_in_progress", "firing_alerts", "last_runs"},
        "/runs.json": {"runs", "next_cursor", "filters"},
        f"/runs/{store['run_id']}.json": {"steps", "metrics", "params", "artifacts"},
        "/models.json": {"models", "versions"},
        "/models/churn/1.json": {"gates", "metrics", "lineage_chain"},
        "/releases.json": {"releases"},
        f"/releases/{store['canary']}.json": {"timeline", "weights", "verdicts"},
        "/monitoring.json": {"environments"},
        "/monitoring/churn/production.json": {"model", "environment"},
        "/events.json": {"events", "kinds"},
    }
    for path, keys in expect.items():
        r = httpx.get(site + path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert keys <= set(r.json()), (path, set(r.json()))
    run = httpx.get(f"{site}/runs/{store['run_id']}.json").json()
    assert [p[1] for p in run["metrics"]["curve"]["loss"]["series"]][0] == 1.0
    missing = httpx.get(site + "/runs/nope.json")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "status": 404,
            "message": "No run 'nope' in this project's store; /runs lists the runs.",
        }
    }
    bad = httpx.get(site + "/events.json", params={"limit": "9999"})
    assert bad.status_code == 400 and "'limit'" in bad.json()["error"]["message"]


def test_audit_log_filters_by_kind_entity_and_time(site: str, store: dict) -> None:
    page = httpx.get(site + "/events.json", params={"kind": "release.started"}).json()
    assert {e["entity_id"] for e in page["events"]} >= {store["staging"], store["canary"]}
    one = httpx.get(
        site + "/events.json", params={"entity": "release", "entity_id": store["canary"]}
    ).json()
    assert {e["entity_id"] for e in one["events"]} == {store["canary"]}
    first = httpx.get(site + "/events.json", params={"limit": "5"}).json()
    after = httpx.get(
        site + "/events.json", params={"limit": "5", "after": first["next_cursor"]}
    ).json()
    assert max(e["id"] for e in after["events"]) < min(e["id"] for e in first["events"])
    future = httpx.get(site + "/events.json", params={"since": "2999-01-01"}).json()
    assert future["events"] == []


# -- the acts ------------------------------------------------------------------------------------


def test_without_the_token_acts_answer_401(site: str, readonly: str, store: dict) -> None:
    rid = store["canary"]
    for base in (site, readonly):
        for method in ("GET", "POST"):
            r = httpx.request(method, f"{base}/releases/{rid}/pause", data={"who": "mallory"})
            assert r.status_code == 401, (base, method, r.text)
        r = httpx.post(f"{base}/environments/churn/production/rollback", data={"who": "m"})
        assert r.status_code == 401
    wrong = httpx.post(
        f"{site}/releases/{rid}/pause",
        data={"who": "m"},
        headers={"Authorization": "Bearer not-the-token-at-all"},
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{site}/releases/{rid}.json").json()["state"] == "running"
    assert "read-only" in httpx.get(readonly + "/").text
    assert httpx.get(readonly + "/login").status_code == 401


def test_a_form_from_another_site_is_refused(site: str, store: dict) -> None:
    r = httpx.post(
        f"{site}/releases/{store['canary']}/pause",
        data={"who": "eve"},
        headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert httpx.get(f"{site}/releases/{store['canary']}.json").json()["state"] == "running"


@needs_chromium
def test_with_the_token_a_person_pauses_resumes_promotes_and_rolls_back(
    browser: Any, site: str, shots: Path, store: dict
) -> None:
    rid = store["canary"]
    tab = Tab(browser, site, shots)
    try:
        tab.open(f"/releases/{rid}")
        assert tab.page.locator("#acts").count() == 0  # no buttons before signing in
        tab.page.get_by_text("Sign in to act").click()
        tab.page.fill("input[name=token]", "wrong-token-wrong-token")
        tab.page.locator("form button").click()
        assert "not the dashboard's token" in tab.page.locator("#error").inner_text()
        assert [e for e in tab.errors if "401" not in e] == []  # the refused sign-in's 401
        tab.errors.clear()
        tab.page.fill("input[name=token]", TOKEN)
        tab.page.locator("main form button").click()
        tab.page.wait_for_url(f"{site}/releases/{rid}")
        tab.page.screenshot(path=str(shots / "release-signed-in.png"), full_page=True)

        def act(name: str, who: str, reason: str) -> None:
            tab.page.locator(f"#acts a[href$='/{name}']").click()
            tab.page.wait_for_url(f"{site}/releases/{rid}/{name}")
            tab.page.screenshot(path=str(shots / f"confirm-{name}.png"), full_page=True)
            tab.page.fill("input[name=who]", who)
            tab.page.fill("input[name=reason]", reason)
            tab.page.locator("#confirm button").click()
            tab.page.wait_for_url(f"{site}/releases/{rid}")

        act("pause", "ana", "checking latency")
        assert "paused" in tab.page.locator("h1").inner_text()
        act("resume", "ana", "latency fine")
        act("promote", "bo", "looks good")
        assert "promoted" in tab.page.locator("h1").inner_text()
        assert tab.page.locator("#acts").count() == 0  # a finished release offers nothing
        timeline = tab.page.locator("#timeline").inner_text()
        assert "checking latency (by ana, via the dashboard)" in timeline
        assert "looks good (by bo, via the dashboard)" in timeline

        tab.open("/", shot="overview-signed-in")
        tab.page.locator("a[href='/environments/churn/production/rollback']").click()
        tab.page.fill("input[name=who]", "cy")
        tab.page.locator("#confirm button").click()
        tab.page.wait_for_url(f"{site}/")
        rows = tab.page.locator("#environments").inner_text()
        assert re.search(r"churn\s+production\s+churn v1", rows), rows
        events = httpx.get(
            site + "/events.json", params={"kind": "environment.rolled_back"}
        ).json()["events"]
        assert events and "by cy, via the dashboard" in events[0]["payload"]["why"]
        assert tab.errors == []
    finally:
        tab.close()


def test_a_bearer_client_gets_json_from_an_act(site: str, store: dict) -> None:
    r = httpx.post(
        f"{site}/releases/{store['canary']}/pause",
        data={"who": "ci-bot"},
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    # the canary finished in the browser test above, or is still running when run alone
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert "cannot pause" in r.json()["error"]["message"]
    nameless = httpx.post(
        f"{site}/releases/{store['canary']}/resume",
        data={"who": " "},
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    assert nameless.status_code == 400 and "'who'" in nameless.json()["error"]["message"]


# -- the command ---------------------------------------------------------------------------------


def test_conveyor_ui_serves_the_project_it_is_pointed_at(store: dict) -> None:
    port = free_port()
    root = store["config"].root
    code = "import typer; from conveyor.cli.ui import ui; typer.run(ui)"
    env = {**os.environ, "CONVEYOR_TOKEN": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port), "-C", str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/index.json", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "conveyor ui did not answer"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["project"] == "shop"
        assert "read-only" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def _settled(site: str) -> dict:
    """The monitoring list once no report is still being computed by the worker."""
    deadline = time.monotonic() + 120
    while True:
        page = httpx.get(site + "/monitoring.json", timeout=60).json()
        if page["computing"] == 0 or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


@needs_chromium
def test_monitoring_shows_the_drift_and_live_quality_of_what_the_gateway_served(
    tab: Tab, site: str, store: dict
) -> None:
    assert store["requests"] == 40
    listed = _settled(site)
    warm(site, "/monitoring/churn/production")
    warm(site, "/monitoring/churn/production?every=1m")
    production = next(e for e in listed["environments"] if e["environment"] == "production")
    assert production["state"] in ("fresh", "stale") and production["age_s"] >= 0
    tab.open("/monitoring", shot="monitoring-traffic")
    row = tab.page.locator("#monitored tr", has_text="churn@production")
    assert row.locator("td.requests").inner_text() == "40"
    assert "tenure" in row.inner_text()  # the traffic's tenure was shifted: it drifted
    assert re.search(r"accuracy 0\.\d+, .* on 200 labelled rows", row.inner_text())
    assert re.search(r"\d+ s ago", row.inner_text())
    row.locator("a.env-link").click()
    tab.page.wait_for_url(re.compile(r"/monitoring/churn/production$"))
    tenure = tab.page.locator("#drift tr", has_text="tenure").first
    assert "drifted" in tenure.inner_text()
    assert "40 (0.0% errors" in tab.page.locator("#requests").inner_text()
    assert "on 200 labelled rows" in tab.page.locator("#quality").inner_text()
    # a histogram per feature, reference and live, and each feature's statistic over time
    features = tab.page.locator("#features figure.distribution svg")
    assert features.count() == 3
    for i in range(3):
        one = features.nth(i)
        assert one.locator("rect.bin.reference").count() >= 3
        assert one.locator("rect.bin.live").count() >= 3
    assert tab.page.locator("#features figure.over-time svg circle.point").count() >= 3
    assert tab.page.locator("#predictions svg rect.bin.live").count() >= 1
    assert tab.page.locator("#quality-over-time svg circle.point").count() >= 2
    assert tab.page.locator("#service svg").count() == 3
    tab.page.screenshot(path=str(tab.shots / "monitoring-distributions.png"), full_page=True)
    twin = httpx.get(site + "/monitoring/churn/production.json").json()
    assert twin["computing"] == 0 and len(twin["history"]) >= 12
    assert twin["history"][-1]["rows"] == 400  # the open window holds the traffic
    assert twin["distributions"]["features"]["tenure"]["n_live"] == 400
    assert sum(twin["distributions"]["features"]["tenure"]["live"]) == pytest.approx(1.0)
    tab.open("/monitoring/churn/production?every=1m", shot="monitoring-every-minute")
    assert "of 60 s before now" in tab.page.locator("main").inner_text()
    assert tab.errors == []
