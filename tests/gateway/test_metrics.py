"""Prometheus ``/metrics``: the right series with the right counts, and no labels from clients.

Counts are read as differences between two scrapes, so the tests do not depend on what else the
gateway answered. With several workers the figures must be the sum over all of them, whichever
worker answers the scrape (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.servers import Running, gateway_project, running, spawn, trained

Labels = tuple[tuple[str, str], ...]
GHOST_MODEL = "ghost-model-x9"
GHOST_ENV = "evil-env-x9"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("metrics") / "p")
    with running(config) as gateway:
        yield gateway


class Scrape:
    """One parsed scrape: ``value(sample, **labels)`` and every sample's labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[str, dict[Labels, float]] = collections.defaultdict(dict)
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                self.samples[sample.name][key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[name].get(tuple(sorted(labels.items())), 0.0)

    def series(self, name: str) -> set[Labels]:
        return set(self.samples[name])

    def label_values(self) -> set[str]:
        return {v for by_labels in self.samples.values() for key in by_labels for _, v in key}


def scrape(client: httpx.Client | Running, url: str = "") -> Scrape:
    r = client.get(url + "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return Scrape(r.text)


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def _v2_one_row(value: float | str = 0.0) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [value] * 5}]}


def _send_traffic(gw: Running) -> None:
    """Answers of each kind: 200, 400 and 422 (counted) and 404s (not: no series to hang on)."""
    t = trained()
    num = t["num_holdout"].head(2).values.tolist()
    for _ in range(3):
        assert gw.predict("num", num).status_code == 200  # 2 rows each
    for _ in range(2):
        assert gw.predict("num", num[:1], params={"env": "staging"}).status_code == 200
    assert gw.predict("num", [[1, 2, 3, 4, "five"]]).status_code == 422
    assert gw.post("/v2/models/num/infer", json=_v2_one_row()).status_code == 200
    assert gw.post("/v2/models/num/infer", json=_v2_one_row("zero")).status_code == 400
    records = t["mixed_holdout"].head(4).to_dict(orient="records")
    assert gw.predict("mixed", records).status_code == 200
    for bad in ({"grade": "A", "years": "ten", "amount": 1.0}, {"grade": "A", "years": 1}):
        assert gw.predict("mixed", [bad]).status_code == 422
    # 404s: a model, an environment and a version that are not served. Their names come from
    # the client, so they must not become label values.
    assert gw.predict(GHOST_MODEL, num).status_code == 404
    assert gw.predict("num", num, params={"env": GHOST_ENV}).status_code == 404
    assert gw.predict("num", num, headers={"x-conveyor-env": GHOST_ENV}).status_code == 404
    assert gw.post("/v2/models/num/versions/77/infer", json=_v2_one_row()).status_code == 404
    assert gw.post(f"/v2/models/{GHOST_MODEL}/infer", json=_v2_one_row()).status_code == 404


# (model, version, environment) -> {status: requests}, rows predicted, predict calls
EXPECTED = {
    ("num", "1", "production"): ({"200": 4, "400": 1, "422": 1}, 3 * 2 + 1, 4),
    ("num", "2", "staging"): ({"200": 2}, 2, 2),
    ("mixed", "1", "production"): ({"200": 1, "422": 2}, 4, 1),
}


def test_requests_rows_and_latency_by_model_version_environment_status(gw: Running) -> None:
    before = scrape(gw)
    _send_traffic(gw)
    after = scrape(gw)
    assert after.types["conveyor_requests"] == "counter"
    assert after.types["conveyor_request_duration_seconds"] == "histogram"
    seen = {
        dict(key)["status"]
        for key in after.series("conveyor_requests_total")
        if delta(after, before, "conveyor_requests_total", **dict(key))
    }
    assert seen == {"200", "400", "422"}  # the 404s are not counted under anyone's name
    for (model, version, env), (statuses, rows, _calls) in EXPECTED.items():
        labels = {"model": model, "version": version, "environment": env}
        for status, n in statuses.items():
            assert delta(after, before, "conveyor_requests_total", **labels, status=status) == n
        answered = sum(statuses.values())
        count = "conveyor_request_duration_seconds_count"
        assert delta(after, before, count, **labels) == answered
        inf = "conveyor_request_duration_seconds_bucket"
        assert delta(after, before, inf, **labels, le="+Inf") == answered
        assert delta(after, before, "conveyor_rows_total", **labels) == rows


def test_latency_buckets_are_cumulative(gw: Running) -> None:
    _send_traffic(gw)
    after = scrape(gw)
    for key in after.series("conveyor_request_duration_seconds_count"):
        labels = dict(key)
        buckets = sorted(
            (float(dict(k)["le"]), v)
            for k, v in after.samples["conveyor_request_duration_seconds_bucket"].items()
            if {n: v2 for n, v2 in k if n != "le"} == labels
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and buckets[-1][0] == float("inf")
        assert counts[-1] == after.value("conveyor_request_duration_seconds_count", **labels)


def test_batch_rows_and_queue_time_per_model_version(gw: Running) -> None:
    before = scrape(gw)
    _send_traffic(gw)
    after = scrape(gw)
    versions = {("num", "1"), ("num", "2"), ("mixed", "1")}
    for name in ("conveyor_batch_rows_count", "conveyor_queue_seconds_count"):
        assert {(dict(k)["model"], dict(k)["version"]) for k in after.series(name)} == versions
    for (model, version, _env), (_statuses, rows, calls) in EXPECTED.items():
        labels = {"model": model, "version": version}
        # One client waiting for each answer: every predict call is a batch of one request.
        assert delta(after, before, "conveyor_batch_rows_count", **labels) == calls
        assert delta(after, before, "conveyor_batch_rows_sum", **labels) == rows
        assert delta(after, before, "conveyor_queue_seconds_count", **labels) == calls
        assert delta(after, before, "conveyor_queue_seconds_sum", **labels) >= 0


def test_loaded_versions_and_routes(gw: Running) -> None:
    after = scrape(gw)
    loaded = {
        (d["model"], d["version"], d["runtime"]): v
        for d, v in ((dict(k), v) for k, v in after.samples["conveyor_model_loaded"].items())
    }
    assert loaded == {("num", "1", "onnx"): 1, ("num", "2", "onnx"): 1, ("mixed", "1", "native"): 1}
    routes = {
        (dict(k)["model"], dict(k)["environment"]): v
        for k, v in after.samples["conveyor_route_version"].items()
    }
    assert routes == {("num", "production"): 1, ("num", "staging"): 2, ("mixed", "production"): 1}
    assert after.value("conveyor_shed_requests_total") == 0
    assert after.value("conveyor_model_load_failures_total", model="num", version="1") == 0


def test_client_supplied_names_never_become_label_values(gw: Running) -> None:
    _send_traffic(gw)
    after = scrape(gw)
    values = after.label_values()
    assert GHOST_MODEL not in values and GHOST_ENV not in values and "77" not in values
    assert GHOST_MODEL not in after.text and GHOST_ENV not in after.text
    models = _values_of(after, "model")
    assert models == {"num", "mixed"}
    assert _values_of(after, "environment") == {"production", "staging"}
    assert _values_of(after, "version") == {"1", "2"}


def _values_of(scraped: Scrape, label: str) -> set[str]:
    return {
        v
        for by_labels in scraped.samples.values()
        for key in by_labels
        for n, v in key
        if n == label
    }


# -- several workers -------------------------------------------------------------------------


def _worker_of(response: httpx.Response) -> str:
    # A request id is the answering worker's random 8-hex-digit prefix and a counter (app.py).
    return response.headers["x-request-id"][:8]


def _wait_for_every_worker(url: str, *, workers: int, timeout: float = 60.0) -> None:
    """``spawn`` waited for one worker's /readyz; the others may still be loading models."""
    ready: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < workers:
        assert time.monotonic() < deadline, f"only {len(ready)} of {workers} workers got ready"
        r = _fresh(url, "GET", "/readyz")
        if r.status_code == 200:
            ready.add(_worker_of(r))
        else:
            time.sleep(0.05)


def _fresh(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request on its own connection: the kernel hands connections to any worker."""
    with httpx.Client(timeout=30) as client:
        return client.request(method, url + path, **kw)


@pytest.mark.slow
def test_metrics_aggregate_every_worker(tmp_path: Path) -> None:
    gateway_project(tmp_path / "p")
    rows = trained()["num_holdout"].head(3).values.tolist()
    with spawn(tmp_path / "p", workers=2) as gw:
        _wait_for_every_worker(gw.url, workers=2)
        sent = 0
        workers: collections.Counter[str] = collections.Counter()
        while sent < 40 or (len(workers) < 2 and sent < 400):
            r = _fresh(gw.url, "POST", "/v1/models/num/predict", json={"instances": rows})
            assert r.status_code == 200, r.text
            workers[_worker_of(r)] += 1
            sent += 1
        assert len(workers) == 2, f"one worker answered all {sent} requests: {workers}"
        bad = _fresh(gw.url, "POST", "/v1/models/num/predict", json={"instances": [[1]]})
        assert bad.status_code == 422
        scrapers: set[str] = set()
        for _ in range(60):
            r = _fresh(gw.url, "GET", "/metrics")
            scrapers.add(_worker_of(r))
            s = Scrape(r.text)
            labels = {"model": "num", "version": "1", "environment": "production"}
            assert s.value("conveyor_requests_total", **labels, status="200") == sent
            assert s.value("conveyor_requests_total", **labels, status="422") == 1
            assert s.value("conveyor_request_duration_seconds_count", **labels) == sent + 1
            assert s.value("conveyor_rows_total", **labels) == sent * len(rows)
            assert s.value("conveyor_batch_rows_count", model="num", version="1") == sent
            assert _loaded(s) == {
                ("num", "1", "onnx"),
                ("num", "2", "onnx"),
                ("mixed", "1", "native"),
            }
            if len(scrapers) == 2:
                break
        assert len(scrapers) == 2, "every scrape was answered by the same worker"


def _loaded(s: Scrape) -> set[tuple[str, ...]]:
    """Loaded versions, one series each whatever the number of workers (no pid label)."""
    keys: Iterable[Labels] = (k for k, v in s.samples["conveyor_model_loaded"].items() if v == 1)
    return {(d["model"], d["version"], d["runtime"]) for d in map(dict, keys)}


def test_a_worker_that_has_not_read_the_store_yet_answers_503(tmp_path: Path) -> None:
    from conveyor.gateway.app import Gateway

    # Not started: the state of a worker that accepts connections before its first store read.
    gateway = Gateway(gateway_project(tmp_path / "p"))

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/models/num/predict", json={"instances": [[0.0] * 5]})

    r = asyncio.run(ask())
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
