"""A model file that blocks on read must fail its load in time and make the gateway not ready.

A FIFO in place of a version's artifact object blocks ``open()`` for ever, as a hung network
mount does. The gateway reads artifacts with ``serve.load_timeout_s``: the load fails after it,
is recorded like any failed load, and ``/readyz`` answers 503 naming it, while the version
already routed keeps answering.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.actions.models import open_registry, set_alias
from conveyor.store.metadata import Store
from tests.gateway.servers import NUM_FIELDS, TOKEN, gateway_project, running

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_blocking_model_file_times_out_and_the_gateway_says_not_ready(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p", serve="  load_timeout_s: 1\n")
    with open_registry(config) as registry:
        registry.remove_alias("num", "staging", reason="test: v2 must not be loaded at start")
        digest = registry.version("num", 2).file.digest
        obj = Path(registry.artifacts.location) / "objects" / digest[:2] / digest[2:]
    assert obj.is_file()
    obj.chmod(0o644)
    obj.unlink()
    os.mkfifo(obj)  # opening it for reading blocks until a writer comes: forever

    try:
        with running(config) as gw:
            assert gw.get("/readyz").status_code == 200
            set_alias(config, "num", 2, "production")
            started = time.monotonic()

            # Two clocks of 1 s race here: the routing loop's "load is stuck" (shown while the
            # read still runs) and the read's own timeout (the failed load). Either may answer
            # first; the failed load is what stays.
            answer = _wait_until(
                "/readyz to report the timed-out load",
                lambda: (
                    (r := gw.get("/readyz")).status_code == 503
                    and "timed out" in r.json()["error"]["message"]
                    and r
                ),
            )
            waited = time.monotonic() - started
            message = answer.json()["error"]["message"]
            assert "num@production" in message and "version 2" in message
            assert "timed out" in message and digest in message and "within 1 s" in message
            assert waited < 15, waited

            # The gateway stays up: num@production still answers from version 1, and the
            # routes that do not need a model answer as before.
            row = dict.fromkeys(NUM_FIELDS, 0.5)
            predicted = gw.predict("num", [row])
            assert predicted.status_code == 200, predicted.text
            assert predicted.json()["version"] == 1
            mixed = gw.predict("mixed", [{"grade": "A", "years": 3, "amount": 9000.0}])
            assert mixed.status_code == 200, mixed.text
            assert gw.get("/healthz").status_code == 200
            status = gw.get("/v1/status", headers=AUTH).json()
            assert status["routes"]["num@production"]["version"] == 1
            assert digest in status["failed"]["num:2"]
            # Still not ready on later polls: the failure is remembered, not forgotten.
            polls = gw.gateway.watcher.polls
            _wait_until("two more polls", lambda: gw.gateway.watcher.polls >= polls + 2)
            assert gw.get("/readyz").status_code == 503
            assert gw.get("/v2/health/ready").status_code == 400

        with Store(config.store_url()) as store:
            events = [e for e in store.events(limit=1000) if e.kind == "gateway.load_failed"]
        assert len(events) == 1
        payload = events[0].payload
        assert (payload["model"], payload["version"]) == ("num", 2)
        assert digest in payload["error"] and "within 1 s" in payload["error"]
    finally:
        try:  # let the abandoned read go
            os.close(os.open(obj, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
