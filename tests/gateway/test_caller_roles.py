"""Requests that are not an environment's traffic, and bodies that must never reach routing.

On a real gateway serving a sticky canary (num v1 stable, v2 at 50% by the field ``f0``):
a request pinned with ``?version=`` or marked ``X-Conveyor-Role`` needs the admin token, is
logged under its own role, and is absent from what the canary analysis reads; a malformed
body is a 4xx before the sticky key is read from it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
import pytest

from conveyor.actions.models import open_registry
from conveyor.release.analysis import collect
from conveyor.release.releases import Releases
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import log_url
from conveyor.store.predictionlog.query import read_all
from conveyor.store.records import utcnow
from tests.gateway.servers import TOKEN, Running, gateway_project, load, running, trained

AUTH = {"Authorization": f"Bearer {TOKEN}"}
STICKY = """
deploy:
  sticky:
    strategy: canary
    steps: [{weight: 50, for: 1h}]
    sticky: f0
"""
ERROR_KEYS = {"status", "code", "message", "field", "row", "request_id"}


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("roles") / "p"
    gateway_project(root)
    (root / "conveyor.yaml").write_text((root / "conveyor.yaml").read_text() + STICKY)
    config = load(root)
    with open_registry(config) as registry:
        registry.set_alias("num", "sticky", 1)
    with running(config) as gw, open_registry(config) as registry:
        Releases(config, registry).start("num", 2, "sticky")
        deadline = time.monotonic() + 20
        while gw.get("/v1/models/num/versions").json()["environments"]["sticky"]["canary"] != 2:
            assert time.monotonic() < deadline, "the canary did not start"
            time.sleep(0.05)
        yield config, gw


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    return body["error"]


def flushed(gw: Running) -> None:
    log = gw.gateway.request_log
    deadline = time.monotonic() + 10
    while log.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a flush in progress finishes


def roles(config: Any, request_ids: list[str]) -> dict[str, set[str]]:
    """Request id -> the roles it was logged under, read from the prediction log."""
    table = read_all(LogFiles(log_url(config.artifacts_url())))
    wanted = set(request_ids)
    out: dict[str, set[str]] = {}
    for rid, role in zip(
        table.column("request_id").to_pylist(), table.column("role").to_pylist(), strict=True
    ):
        if rid in wanted:
            out.setdefault(rid, set()).add(role)
    return out


def test_pinned_and_marked_requests_need_the_token(canary) -> None:
    _config, gw = canary
    row = trained()["num_holdout"].head(1).values.tolist()
    sticky = {"env": "sticky"}
    error = error_of(gw.predict("num", row, params={**sticky, "version": "2"}), 401)
    assert error["code"] == "unauthorized"
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    error_of(gw.predict("num", row, params={**sticky, "version": "1"}, headers=wrong), 401)
    error_of(gw.predict("num", row, params=sticky, headers={"x-conveyor-role": "smoke"}), 401)
    error = error_of(
        gw.predict("num", row, params=sticky, headers={**AUTH, "x-conveyor-role": "canary"}), 400
    )
    assert error["field"] == "x-conveyor-role" and "smoke, test" in error["message"]
    # without a token configured, pinning is refused as the admin endpoints are
    with running(_config, token=None) as bare:
        error = error_of(bare.predict("num", row, params={**sticky, "version": "2"}), 403)
        assert error["code"] == "admin_disabled"


def test_pinned_requests_are_logged_apart_and_never_reach_the_analysis(canary) -> None:
    config, gw = canary
    rows = trained()["num_holdout"].head(30).values.tolist()
    since = utcnow() - timedelta(seconds=1)
    sticky = {"env": "sticky"}
    pinned = [
        gw.predict("num", [row], params={**sticky, "version": "2"}, headers=AUTH)
        for row in rows[:10]
    ]
    smoke = gw.predict(
        "num",
        rows[:1],
        params={**sticky, "version": "2"},
        headers={**AUTH, "x-conveyor-role": "smoke"},
    )
    test = gw.predict("num", rows[:1], params=sticky, headers={**AUTH, "x-conveyor-role": "test"})
    ordinary = [gw.predict("num", [row], params=sticky) for row in rows[10:]]
    everything = [*pinned, smoke, test, *ordinary]
    assert all(r.status_code == 200 for r in everything), [r.text for r in everything]
    assert {r.json()["version"] for r in pinned} == {2}
    flushed(gw)
    ids = [r.headers["x-request-id"] for r in everything]
    logged = roles(config, ids)
    assert [logged[r.headers["x-request-id"]] for r in pinned] == [{"pinned"}] * 10
    assert logged[smoke.headers["x-request-id"]] == {"smoke"}
    assert logged[test.headers["x-request-id"]] == {"test"}  # and never mirrored as a shadow
    for r in ordinary:
        assert "serve" in logged[r.headers["x-request-id"]]
    with open_registry(config) as registry:
        sides = collect(
            registry.store, "num", "sticky", since, [(1, "serve"), (2, "serve"), (1, "shadow")]
        )
    analysed = set().union(*(side.by_request for side in sides.values()))
    assert sides[1, "serve"].requests + sides[2, "serve"].requests == len(ordinary)
    assert analysed.isdisjoint(ids[: len(pinned) + 2])
    assert {r.headers["x-request-id"] for r in ordinary} <= analysed


MALFORMED = [
    b'{"instances": {"f0": 1.0}}',
    b'{"instances": {}}',
    b'{"instances": 5}',
    b'{"instances": true}',
    b'{"instances": false}',
    b'{"instances": null}',
    b'{"instances": "f0"}',
    b'{"instances": []}',
    b'{"instances": [5]}',
    b'{"instances": [null]}',
    b'{"instances": [true]}',
    b'{"instances": ["f0"]}',
    b'{"instances": [[]]}',
    b'{"instances": [{}]}',
    b'{"instances": [{"f0": 1.0}]}',
    b'{"instances": [{"f0": {"a": 1}, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}',
    b'{"instances": [{"f0": [1, 2], "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}',
    b'{"instances": [{"f0": null, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}',
    b'{"instances": [{"f0": 1, "f1": 0, "f2": 0, "f3": 0, "f4": 0}, [1, 2, 3, 4, 5]]}',
    b'{"instances": [[1, 2, 3, 4, 5], {"f0": 1}]}',
    b'{"instances": [[1, 2, 3, 4]]}',
    b'{"instances": [["x", 2, 3, 4, 5]]}',
    b'{"instances": [[1, 2, 3, 4, 5]], "extra": 1}',
    b'{"instances": [[[[[[[[1]]]]]]]]}',
    b'{"rows": [[1, 2, 3, 4, 5]]}',
    b"{}",
    b"[]",
    b"5",
    b'"instances"',
    b"null",
    b"not json",
    b"",
    b'{"instances": [{"f0": 1e999, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=[b.decode()[:40] for b in MALFORMED])
@pytest.mark.parametrize("key", [None, "customer-7"])
def test_a_malformed_body_during_a_sticky_canary_is_a_4xx(canary, body: bytes, key) -> None:
    _config, gw = canary
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-conveyor-key"] = key
    r = gw.post("/v1/models/num/predict", params={"env": "sticky"}, content=body, headers=headers)
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    error_of(r, r.status_code)


def test_a_valid_record_still_follows_its_sticky_field(canary) -> None:
    _config, gw = canary
    records = trained()["num_holdout"].head(3).to_dict(orient="records")
    for record in records:
        body = orjson.dumps({"instances": [record]})
        seen = {
            gw.post("/v1/models/num/predict", params={"env": "sticky"}, content=body).json()[
                "version"
            ]
            for _ in range(6)
        }
        assert len(seen) == 1
