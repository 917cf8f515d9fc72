"""Hot swap: the gateway follows the store's aliases without dropping or misrouting a request.

A moved alias must reach traffic within a couple of polls; under load no request may fail while
versions come and go; a version whose file was tampered with must never answer (the old one
keeps serving, and the failure is visible in the status, the events and the metrics); and a
request queued on a version must still be answered after the routing table dropped it.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.actions.models import open_registry, register_fitted, set_alias
from conveyor.gateway.batching import Batcher
from conveyor.gateway.routing import Router
from conveyor.gateway.runtime import load_served
from conveyor.store.metadata import Store
from tests.gateway.servers import TOKEN, Running, gateway_project, running, trained

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 30.0  # seconds before a wait gives up; a healthy run needs a fraction of a second


def _row(i: int = 0) -> list[float]:
    return [float(v) for v in trained()["num_holdout"].iloc[i]]


def _version(gw: Running, env: str | None = None) -> int:
    params = {"env": env} if env else None
    r = gw.predict("num", [_row()], params=params)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def _wait_until(what: str, check: Callable[[], Any]) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` past the deadline."""
    deadline = time.monotonic() + DEADLINE
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what} after {DEADLINE:.0f} s (last: {last!r})")


def _register_tampered_v3(config: Any) -> None:
    """Register num version 3 (no alias) and overwrite its model file in the artifact store."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    t = trained()
    holdout = t["num_holdout"]
    y = t["num_v1"].predict(holdout)  # any labels: this version is never meant to serve
    model = HistGradientBoostingClassifier(random_state=1, max_iter=7).fit(holdout, y)
    version = register_fitted(config, model, holdout, name="num", task="classification")
    assert version.version == 3
    with open_registry(config) as registry:
        record = registry.version("num", 3)
        path = registry.artifacts.path(record.file.digest, verify=False)
    assert str(path).startswith(str(Path(config.root) / ".conveyor"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)  # objects are stored read-only
    path.write_bytes(bytes(data))


def test_moving_production_alias_switches_within_two_polls(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    with running(config) as gw:
        assert _version(gw) == 1
        router = gw.gateway.router
        watcher = gw.gateway.watcher
        switches: list[tuple[str, str, int, int | None, int]] = []
        original = router.on_switch

        def observed(model: str, env: str, version: int, before: int | None) -> None:
            # Runs inside Router.apply while the watcher waits for it: its poll count is exact.
            switches.append((model, env, version, before, watcher.polls))
            if original is not None:
                original(model, env, version, before)

        router.on_switch = observed
        set_alias(config, "num", 2, "production")
        committed_at = watcher.polls  # read after the commit: poll committed_at + 2 sees it
        _wait_until("num@production to answer with version 2", lambda: _version(gw) == 2)

        [(model, env, version, before, poll)] = switches
        assert (model, env, version, before) == ("num", "production", 2, 1)
        assert poll <= committed_at + 2, (poll, committed_at)
        assert _version(gw, "staging") == 2
        ready = gw.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["routes"] == {
            "num@production": 2,
            "num@staging": 2,
            "mixed@production": 1,
        }


def test_no_request_fails_while_the_alias_moves_back_and_forth(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    results: list[tuple[int, int | None]] = []  # (status, version) of every request
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    with running(config) as gw:

        def hammer(seed: int) -> None:
            body = {"instances": [_row(seed)]}
            mine: list[tuple[int, int | None]] = []
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        r = client.post(f"{gw.url}/v1/models/num/predict", json=body)
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    version = r.json().get("version") if r.status_code == 200 else None
                    mine.append((r.status_code, version))
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        try:
            with open_registry(config) as registry:
                for target in (2, 1) * 5:
                    registry.set_alias("num", "production", target, reason="test")
                    _wait_until(f"version {target}", lambda t=target: _version(gw) == t)
                    time.sleep(0.2)  # traffic on this version before the next move (~3 s in all)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

    assert errors == []
    assert len(results) >= 8
    bad = [status for status, _version in results if status != 200]
    assert bad == [], f"{len(bad)} of {len(results)} requests failed: {sorted(set(bad))}"
    assert {version for _status, version in results} == {1, 2}


def test_tampered_version_never_receives_traffic(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    _register_tampered_v3(config)
    with running(config) as gw:
        set_alias(config, "num", 3, "production")

        def failure() -> str | None:
            status = gw.get("/v1/status", headers=AUTH).json()
            return status["failed"].get("num:3")

        reason = _wait_until("the gateway to report num:3 as failed", failure)
        assert "ModelTampered" in reason
        status = gw.get("/v1/status", headers=AUTH).json()
        assert status["desired"]["num@production"] == 3
        assert status["routes"]["num@production"]["version"] == 1

        assert {_version(gw) for _ in range(20)} == {1}
        ready = gw.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["routes"]["num@production"] == 1

        metrics = gw.get("/metrics").text
        counted = re.search(
            r'^conveyor_model_load_failures_total\{model="num",version="3"\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
        assert counted is not None, metrics
        assert float(counted.group(1)) == 1.0

        # Later polls neither retry within the back-off nor report the failure again.
        polls = gw.gateway.watcher.polls
        _wait_until("three more polls", lambda: gw.gateway.watcher.polls >= polls + 3)
        assert _version(gw) == 1
        assert re.search(r'version="3"\} 1\.0$', gw.get("/metrics").text, re.MULTILINE)


def test_tampered_version_records_a_load_failed_event(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    _register_tampered_v3(config)
    with running(config) as gw:
        set_alias(config, "num", 3, "production")
        _wait_until(
            "the gateway to report num:3 as failed",
            lambda: "num:3" in gw.get("/v1/status", headers=AUTH).json()["failed"],
        )
        with Store(config.store_url()) as store:
            events = [e for e in store.events(limit=1000) if e.kind == "gateway.load_failed"]
    assert len(events) == 1
    assert events[0].payload["model"] == "num"
    assert events[0].payload["version"] == 3
    assert "ModelTampered" in events[0].payload["error"]


def test_ready_only_once_an_alias_routes_a_version(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    with open_registry(config) as registry:
        for model, alias in (("num", "production"), ("num", "staging"), ("mixed", "production")):
            registry.remove_alias(model, alias, reason="test")
    with running(config, ready=False) as gw:
        not_routed = _wait_until(
            "/readyz to say that nothing is routed",
            lambda: (r := gw.get("/readyz")).status_code == 503 and "no model is routed" in r.text,
        )
        assert not_routed
        error = gw.get("/readyz").json()["error"]
        assert (error["status"], error["code"]) == (503, "not_ready")
        assert "conveyor models alias" in error["message"]
        assert gw.predict("num", [_row()]).status_code == 404

        set_alias(config, "num", 2, "production")
        _wait_until("/readyz to answer 200", lambda: gw.get("/readyz").status_code == 200)
        assert gw.get("/readyz").json()["routes"] == {"num@production": 2}
        assert _version(gw) == 2


def test_queued_request_finishes_on_the_version_the_router_dropped(tmp_path: Path) -> None:
    import numpy as np

    config = gateway_project(tmp_path / "p")
    with open_registry(config) as registry:
        v1 = load_served(registry, "num", 1, allow_pickle=False)
        v2 = load_served(registry, "num", 2, allow_pickle=False)
    block, n = v1.prepare([_row(0), _row(1)], max_rows=10)
    expected_v1 = v1.predict([block])[0]
    expected_v2 = v2.predict([block])[0]
    assert not np.allclose(expected_v1.probabilities, expected_v2.probabilities)

    async def scenario() -> tuple[Any, Router, Batcher]:
        router = Router(make_batcher=lambda served: Batcher(served, max_rows=64, max_delay_ms=0))
        router.apply({("num", "production"): 1}, {("num", 1): v1}, {})
        route = router.route("num", "production")
        assert route is not None
        pending = route.batcher.submit(block, n)  # queued: flushed at the end of this turn
        # Switch before the flush: v1 is routed nowhere, so the router lets go of its batcher.
        router.apply({("num", "production"): 2}, {("num", 2): v2}, {})
        assert not pending.done()
        return await pending, router, route.batcher

    prediction, router, old = asyncio.run(scenario())
    assert old.served is v1
    assert set(router.batchers) == {("num", 2)}
    assert router.loaded_keys == frozenset({("num", 2)})
    new = router.route("num", "production")
    assert new is not None and new.served is v2
    np.testing.assert_array_equal(prediction.values, expected_v1.values)
    np.testing.assert_allclose(prediction.probabilities, expected_v1.probabilities)
