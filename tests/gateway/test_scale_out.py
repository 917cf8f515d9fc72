"""Scale-out: several `conveyor serve` processes on one store behave as one gateway.

Two processes on one PostgreSQL database (or one SQLite file in WAL mode) and one artifact
folder both answer, both follow a moved alias, and both write their request logs as files of the
same prediction log without losing a row: after a graceful stop (SIGTERM flushes) there is
exactly one request per request sent. The log survives a restart, and feedback for logged
requests is accepted after it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.actions.models import set_alias
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import log_url
from conveyor.store.predictionlog.query import read_all
from tests.gateway.servers import TOKEN, Running, gateway_project, spawn, trained, wait_ready

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 30.0  # seconds before a wait gives up; a healthy run needs a fraction of a second


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the project's default SQLite file, else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    from tests.pg_server import drop_database, fresh_database, require_postgres

    url = fresh_database(require_postgres())
    yield url
    drop_database(url)


def _rows(n: int) -> list[list[float]]:
    return trained()["num_holdout"].head(n).values.tolist()


def _predict(gw: Running, i: int) -> dict[str, Any]:
    r = gw.predict("num", _rows(1 + i % 3))
    assert r.status_code == 200, f"{gw.url}: {r.status_code} {r.text}"
    return r.json()


def _labels(i: int, request_id: str) -> dict[str, Any]:
    """Feedback for the ``i``-th request sent: one label per row (it had ``1 + i % 3``)."""
    return {"request_id": request_id, "labels": [i % 2] * (1 + i % 3)}


def _wait_for_version(gw: Running, version: int, sent: list[str]) -> None:
    """Predict until ``gw`` answers with ``version``; every request id goes into ``sent``."""
    deadline = time.monotonic() + DEADLINE
    seen = None
    while time.monotonic() < deadline:
        answer = _predict(gw, len(sent))
        sent.append(answer["request_id"])
        seen = answer["version"]
        if seen == version:
            return
        time.sleep(0.02)
    pytest.fail(f"{gw.url} still answers with version {seen}, not {version}, after {DEADLINE} s")


def _flood(gateways: dict[str, Running], n: int) -> dict[str, list[tuple[int, int, str]]]:
    """Send ``n`` predicts to every gateway at once (one thread each, so their request logs
    flush concurrently); returns, per gateway, (status, version, request id) of each answer."""
    answers: dict[str, list[tuple[int, int, str]]] = {key: [] for key in gateways}

    def send(key: str) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(n):
                r = client.post(
                    f"{gateways[key].url}/v1/models/num/predict",
                    json={"instances": _rows(1 + i % 3)},
                )
                body = r.json()
                answers[key].append((r.status_code, body.get("version"), body.get("request_id")))

    threads = [threading.Thread(target=send, args=(key,)) for key in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert {key: len(got) for key, got in answers.items()} == {key: n for key in gateways}
    return answers


@contextlib.contextmanager
def _serving(root: Path, *, ready: bool = True) -> Iterator[Running]:
    """``spawn``, then check that SIGTERM stopped it gracefully (not killed after a timeout)."""
    with spawn(root, ready=ready) as gw:
        yield gw
    assert gw.process is not None
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done.
    assert gw.process.returncode in (0, -signal.SIGTERM), gw.process.returncode


def _logged(config: Any) -> dict[str, tuple[str, int, int]]:
    """request_id → (gateway, version, status) of every request in the prediction log."""
    table = read_all(LogFiles(log_url(config.artifacts_url())))
    first = [r for r in table.to_pylist() if r["row"] == 0]
    logged = {r["request_id"]: (r["gateway"], r["version"], r["status"]) for r in first}
    assert len(logged) == len(first), "a request id was logged twice"
    return logged


def _feedback(config: Any) -> list[dict[str, Any]]:
    return read_all(LogFiles(log_url(config.artifacts_url())), "feedback").to_pylist()


def test_two_gateways_share_one_store(tmp_path: Path, store_url: str | None) -> None:
    root = tmp_path / "p"
    config = gateway_project(root, store_url=store_url)
    sent: dict[str, list[str]] = {"a": [], "b": []}
    with contextlib.ExitStack() as stack:
        # Both start at once (a start takes seconds: imports, then loading and warming).
        gateways = {key: stack.enter_context(_serving(root, ready=False)) for key in ("a", "b")}
        for gw in gateways.values():
            wait_ready(gw.url, process=gw.process)
        first = _flood(gateways, 100)
        for key, answers in first.items():
            assert {(status, version) for status, version, _rid in answers} == {(200, 1)}
            sent[key] += [rid for _status, _version, rid in answers]
        names = {
            key: gw.get("/v1/status", headers=AUTH).json()["gateway"]
            for key, gw in gateways.items()
        }
        assert names["a"] != names["b"]
        # Feedback reaches any replica: b accepts labels for a's requests once a flushed them.
        labels = {"feedback": [_labels(i, rid) for i, rid in enumerate(sent["a"][:25])]}
        deadline = time.monotonic() + DEADLINE
        while (
            r := gateways["b"].post("/v1/feedback", json=labels, headers=AUTH)
        ).status_code == 422:
            assert "not in the request log" in r.text and time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": 25}

        set_alias(config, "num", 2, "production")
        for key, gw in gateways.items():
            _wait_for_version(gw, 2, sent[key])
        last = _flood(gateways, 100)
        for key, answers in last.items():
            assert {(status, version) for status, version, _rid in answers} == {(200, 2)}
            sent[key] += [rid for _status, _version, rid in answers]

    logged = _logged(config)
    assert len(logged) == len(sent["a"]) + len(sent["b"])
    for key in ("a", "b"):
        assert {logged[rid][0] for rid in sent[key]} == {names[key]}
        assert {logged[rid][2] for rid in sent[key]} == {200}
        assert {logged[rid][1] for rid in sent[key]} == {1, 2}
    feedback = [(f["request_id"], json.loads(f["labels"])) for f in _feedback(config)]
    expected = [(rid, _labels(i, rid)["labels"]) for i, rid in enumerate(sent["a"][:25])]
    assert sorted(feedback) == sorted(expected)


def test_request_log_survives_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "p"
    config = gateway_project(root)
    with _serving(root) as gw:
        ids = [_predict(gw, i)["request_id"] for i in range(10)]
    assert set(_logged(config)) == set(ids)

    with _serving(root) as gw:
        assert set(_logged(config)) == set(ids)
        feedback = [_labels(i, rid) for i, rid in enumerate(ids)]
        r = gw.post("/v1/feedback", json={"feedback": feedback}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": len(ids)}
        unknown = gw.post(
            "/v1/feedback", json={"request_id": "not-a-request", "label": 1}, headers=AUTH
        )
        assert unknown.status_code == 422, unknown.text

    stored = [(f["request_id"], f["actor"]) for f in _feedback(config)]
    assert sorted(stored) == sorted((rid, "api") for rid in ids)
