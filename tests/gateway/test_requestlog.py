"""The request log, label feedback and the admin token, on a real gateway and store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conveyor.exceptions import GatewayError
from conveyor.gateway.requestlog import RequestLog
from conveyor.gateway.server import load_token
from conveyor.store.metadata import Store
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import log_url
from conveyor.store.predictionlog.query import read_all
from tests.gateway.servers import TOKEN, gateway_project, load, running, trained

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def logged(config, **where) -> list[SimpleNamespace]:
    """The requests in the project's prediction log, one per request, in log order, with their
    inputs and outputs as JSON text again (typed rows as arrays; kept JSON as it was sent)."""
    table = read_all(LogFiles(log_url(config.artifacts_url())))
    if not table.num_rows:
        return []
    inputs = [c for c in table.column_names if c.startswith("in.")]
    out: list[SimpleNamespace] = []
    for row in table.to_pylist():
        if row["row"] == 0:
            out.append(SimpleNamespace(**row, values=[], predictions=[]))
        request = out[-1]
        request.values.append([None if v != v else v for v in (row[c] for c in inputs)])
        request.predictions.append(row["prediction"])
    for r in out:
        if r.raw_inputs is not None:
            r.inputs = r.raw_inputs
        elif r.status == 200 and r.role != "shadow":
            r.inputs = json.dumps(r.values)
        else:
            r.inputs = ""
        r.outputs = r.raw_outputs if r.raw_outputs is not None else ""
        if r.raw_outputs is None and r.status == 200:
            r.outputs = json.dumps({"predictions": r.predictions})
    return [r for r in out if all(getattr(r, k) == v for k, v in where.items())]


def wait_logged(config, n: int, **where) -> list[SimpleNamespace]:
    deadline = time.monotonic() + 20
    while True:
        rows = logged(config, **where)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_each_request_is_logged_with_inputs_outputs_and_version(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    rows = trained()["num_holdout"].head(3).values.tolist()
    with running(config) as gw:
        ok = gw.predict("num", rows)
        bad = gw.predict("num", [[1, 2]], params={"env": "staging"})
        assert (ok.status_code, bad.status_code) == (200, 422)
    # stopping the gateway flushed everything
    log = logged(config)
    assert [r.request_id for r in log] == [ok.headers["x-request-id"], bad.headers["x-request-id"]]
    first, second = log
    assert (first.model, first.version, first.environment, first.role) == (
        "num",
        1,
        "production",
        "serve",
    )
    assert (first.status, first.rows) == (200, 3)
    assert json.loads(first.inputs) == rows
    assert json.loads(first.outputs)["predictions"] == ok.json()["predictions"]
    assert first.latency_ms > 0 and first.gateway
    assert (second.status, second.version, second.environment) == (422, 2, "staging")
    assert "has 2 values" in second.outputs


def test_feedback_needs_a_known_request_and_the_token(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    with running(config) as gw:
        rid = gw.predict("num", [[0.1] * 5, [0.2] * 5]).headers["x-request-id"]
        wait_logged(config, 1)
        body = {"request_id": rid, "labels": [1, 0]}
        assert gw.post("/v1/feedback", json=body).status_code == 401
        wrong = gw.post("/v1/feedback", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        r = gw.post("/v1/feedback", json=body, headers=AUTH)
        assert r.status_code == 200 and r.json() == {"stored": 1}
        r = gw.post(
            "/v1/feedback",
            json={
                "feedback": [
                    {"request_id": rid, "labels": [1, 1]},
                    {"request_id": "zz", "label": 1},
                ]
            },
            headers=AUTH,
        )
        assert r.status_code == 422
        error = r.json()["error"]
        assert (error["code"], error["field"], error["row"]) == ("unknown_request", "request_id", 1)
        for bad in (
            {"request_id": rid},
            {"request_id": rid, "label": 1, "labels": [1]},
            {"request_id": rid, "labels": [{"a": 1}]},
            {"request_id": rid, "label": 1, "note": "x"},
            [1, 2],
        ):
            assert gw.post("/v1/feedback", json=bad, headers=AUTH).status_code in (400, 422)
    stored = read_all(LogFiles(log_url(config.artifacts_url())), "feedback").to_pylist()
    assert [(f["request_id"], json.loads(f["labels"]), f["actor"]) for f in stored] == [
        (rid, [1, 0], "api")
    ]


def test_admin_endpoints_are_refused_without_a_configured_token(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    with running(config, token=None) as gw:
        for method, path in (
            ("GET", "/v1/status"),
            ("POST", "/v1/admin/reload"),
            ("POST", "/v1/feedback"),
        ):
            r = gw.client.request(method, gw.url + path, headers=AUTH, json={})
            assert r.status_code == 403, (path, r.text)
            assert "CONVEYOR_TOKEN" in r.json()["error"]["message"]
    with running(config) as gw:
        status = gw.get("/v1/status", headers=AUTH).json()
        assert status["routes"]["num@staging"] == {"version": 2, "runtime": "onnx"}
        assert status["failed"] == {} and status["request_log"]["dropped"] == 0
        assert gw.post("/v1/admin/reload", headers=AUTH).json() == {"reloading": True}


def test_sampling_logs_a_share_of_requests(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p", serve="  log: {sample: 0.0, flush_seconds: 0.2}\n")
    with running(config) as gw:
        for _ in range(5):
            assert gw.predict("num", [[0.0] * 5]).status_code == 200
    assert logged(config) == []


def test_a_log_that_refuses_writes_keeps_the_rows_for_later(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    root = log_url(config.artifacts_url())
    with Store(config.store_url()) as store:
        log = RequestLog(store, gateway="t", flush_rows=10, max_buffer=25, log_url=root)
        for i in range(30):
            log.record(f"r{i}", "num", 1, "production", "serve", 200, 1.0, 1, "[]", "{}")
        assert (log.pending(), log.dropped) == (25, 5)  # past max_buffer: dropped, counted
        Path(root).parent.mkdir(parents=True, exist_ok=True)
        Path(root).write_text("a file where the log's folder goes: every write fails")
        with pytest.raises(OSError):
            log.flush()
        assert log.pending() == 25 and "Error" in log.last_error
        Path(root).unlink()
        assert log.flush() == 25 and log.pending() == 0 and log.last_error is None
    assert [r.request_id for r in logged(config)] == [f"r{i}" for i in range(25)]


def test_token_from_a_file_or_the_environment(tmp_path: Path, monkeypatch) -> None:
    config = gateway_project(tmp_path / "p")
    assert load_token(config) is None
    monkeypatch.setenv("CONVEYOR_TOKEN", "short")
    with pytest.raises(GatewayError, match="at least 16"):
        load_token(config)
    monkeypatch.setenv("CONVEYOR_TOKEN", TOKEN)
    assert load_token(config) == TOKEN
    path = tmp_path / "token"
    path.write_text("file-token-abcdefghijkl\n")
    assert load_token(config, path) == "file-token-abcdefghijkl"
    with pytest.raises(GatewayError, match="Cannot read the gateway token file"):
        load_token(config, tmp_path / "missing")
    (tmp_path / "p" / "conveyor.yaml").write_text(
        (tmp_path / "p" / "conveyor.yaml").read_text() + "  token_file: ../token\n"
    )
    assert load_token(load(tmp_path / "p")) == "file-token-abcdefghijkl"
