"""`conveyor watch` killed with SIGKILL in the middle of a canary, then started again: the release
resumes at the step it was in, and the traffic always matches the last event that recorded it.
Killed in the middle of a retraining: its child process dies with it, its pipeline run is
recorded as interrupted, and the next controller runs the retraining again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conveyor.actions.models import open_registry
from conveyor.release.releases import Releases
from conveyor.store import models as m
from tests.gateway.servers import gateway_project, load, running, trained
from tests.release.test_releases import wait_for

CANARY = """
deploy:
  production:
    strategy: canary
    steps: [{weight: 30, for: 2s}, {weight: 60, for: 2s}]
    analysis: {min_requests: 20, max_p99_ratio: 50}
"""


def watch(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor.cli.main",
            "watch",
            "--interval",
            "0.2",
            "--monitor-every",
            "3600",
            "-C",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CONVEYOR_GATEWAY_URL": "http://127.0.0.1:9"},
    )


def traffic_state(registry, release_id: str) -> tuple[object, object]:
    """(the traffic row's weight, the weight the last traffic.changed event recorded)."""
    with registry.store.session() as s:
        row = s.get(m.Traffic, ("num", "production"))
        weight = row.weight if row is not None else None
    events = [
        e
        for e in registry.store.events(entity="release", entity_id=release_id)
        if e.kind == "traffic.changed"
    ]
    last = events[-1].payload["weight"] if events else None
    return weight, (None if last == 0 and weight is None else last)


@pytest.mark.slow
def test_a_killed_controller_resumes_the_canary_where_it_was(tmp_path: Path) -> None:
    root = tmp_path / "p"
    gateway_project(root)
    (root / "conveyor.yaml").write_text((root / "conveyor.yaml").read_text() + CANARY)
    config = load(root)
    rows = trained()["num_holdout"].values.tolist()
    stop = threading.Event()
    with running(config) as gw, open_registry(config) as registry:

        def load_traffic() -> None:
            i = 0
            while not stop.is_set():
                gw.predict("num", [rows[i % len(rows)]])
                i += 1

        sender = threading.Thread(target=load_traffic, daemon=True)
        sender.start()
        releases = Releases(config, registry)
        release = releases.start("num", 2, "production")
        controller = watch(root)
        try:
            wait_for(lambda: releases.get(release.id).step == 1, "the second step", 60)
            controller.send_signal(signal.SIGKILL)
            controller.wait(10)
            mid = releases.get(release.id)
            assert (mid.state, mid.step) == ("running", 1)
            weight, recorded = traffic_state(registry, release.id)
            assert weight == recorded == 60.0  # no traffic state that no event records
            time.sleep(0.5)
            assert releases.get(release.id).step == 1  # nothing moves it while it is dead
            controller = watch(root)
            wait_for(lambda: releases.get(release.id).state == "promoted", "the promotion", 60)
        finally:
            stop.set()
            sender.join(10)
            controller.send_signal(signal.SIGTERM)
            controller.wait(30)
        kinds = [e.kind for e in registry.store.events(entity="release", entity_id=release.id)]
        assert kinds.count("release.stepped") == 1 and kinds.count("release.promoted") == 1
        assert registry.alias("num", "production") == 2
        assert traffic_state(registry, release.id) == (None, None)


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_controller_kills_its_retraining_which_runs_again(project) -> None:
    from conveyor.actions.ci import run_ci
    from tests.churn_project import backdate, rows
    from tests.controller.test_retraining import DIRECT, PIPELINE, SLOW_STEPS

    project.write("shop.py", SLOW_STEPS)
    project.write("conveyor.yaml", PIPELINE + (DIRECT % "1s").replace(", drift", ""))
    data = project.root / "data"
    data.mkdir()
    rows().to_csv(data / "a.csv", index=False)
    backdate(data / "a.csv")
    config = project.config()
    with open_registry(config) as registry:
        run_ci(config)
        registry.set_alias("churn", "production", 1)
        # New data after version 1: the retraining has steps to run (the nap among them), so
        # its pipeline run is still running when the controller is killed. With both files in
        # the first run, the schedule's retraining found every step cached, ended in a second
        # and was never cut short: the test then failed on a loaded machine, by timing.
        rows(n=600, seed=7).to_csv(data / "b.csv", index=False)
        backdate(data / "b.csv")
        store = registry.store

        def events(kind: str) -> list:
            return [e for e in store.events(entity="project", limit=100) if e.kind == kind]

        os.environ["SHOP_NAP"] = "120"
        try:
            controller = watch(project.root)
        finally:
            del os.environ["SHOP_NAP"]
        try:
            wait_for(lambda: events("controller.retrain_started"), "the retraining", 60)
            job = wait_for(lambda: children(controller.pid), "the retraining process", 30)
            (pid,) = job
            try:
                wait_for(
                    lambda: [r for r in store.runs(project="shop") if r.status == "running"],
                    "the retraining's pipeline run",
                    120,
                )
            except AssertionError as exc:  # say what the child was doing
                started = events("controller.retrain_started")[-1].payload or {}
                log = Path(started.get("log") or "/nonexistent")
                text = log.read_text()[-4000:] if log.is_file() else "(no log)"
                raise AssertionError(f"{exc}; the retraining's log {log}:\n{text}") from None
            controller.send_signal(signal.SIGKILL)
            controller.wait(10)
            t0 = time.monotonic()
            wait_for(lambda: not alive(pid), "the retraining to die with the controller", 10)
            died_after = time.monotonic() - t0
            assert events("controller.retrain_finished") == []
            assert events("controller.retrain_failed") == []  # cut short, not failed
            # the next controller runs it again, to its end
            controller = watch(project.root)
            wait_for(lambda: events("controller.retrain_finished"), "the rerun's end", 120)
        finally:
            controller.send_signal(signal.SIGTERM)
            controller.wait(30)
        assert len(events("controller.retrain_started")) == 2
        assert died_after < 5, died_after
        runs = {r.status for r in store.runs(project="shop")}
        assert "interrupted" in runs and "succeeded" in runs
