"""The controller on a real project: releases it starts, retraining it triggers and holds back,
its lease, and that a restart repeats nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.actions.models import open_registry
from conveyor.controller import Controller, ControllerBusy, Lease
from conveyor.release.releases import Releases
from conveyor.store.records import utcnow
from tests.churn_project import STEPS, backdate, rows
from tests.controller.turning import turn_until

CONFIG = """
project: shop
data:
  rows: data/*.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model: {name: churn, from: train, holdout: prepare.test, target: churned}
gates:
  - roc_auc >= 0.55
deploy:
  staging: {strategy: direct}
  production: {strategy: direct, after: staging}
monitor:
  environment: production
  retrain: {triggers: [new_data], cooldown: 1h, min_new_rows: 100, max_runs_per_day: 3}
"""


@pytest.fixture
def shop(project):
    project.write("shop.py", STEPS)
    project.write("conveyor.yaml", CONFIG)
    (project.root / "data").mkdir()
    path = project.root / "data" / "a.csv"
    rows().to_csv(path, index=False)
    backdate(path)
    return project


def kinds(store, prefix: str) -> list[str]:
    return [e.kind for e in store.events(limit=1000) if e.kind.startswith(prefix)]


def test_the_controller_releases_new_versions_through_the_environments(shop) -> None:
    from conveyor.actions.ci import run_ci

    config = shop.config()
    assert run_ci(config).version == 1
    with open_registry(config) as registry:
        controller = Controller(config, registry, monitor_every=3600)
        acts = controller.turn()
        controller.close()
        # staging is released directly (no checks configured), so it is promoted at once and
        # production, which comes after it, starts in the same turn
        assert [(a["act"], a.get("environment")) for a in acts] == [
            ("release_started", "staging"),
            ("release_started", "production"),
        ]
        assert registry.alias("churn", "staging") == 1
        assert registry.alias("churn", "production") == 1
        # a restarted controller finds nothing left to do: every release has its row
        with Controller(config, registry, monitor_every=3600) as again:
            assert [a for a in again.turn() if a["act"] == "release_started"] == []
        assert len(Releases(config, registry).list()) == 2


def test_new_data_triggers_one_retraining_then_the_guardrails_hold(shop) -> None:
    from conveyor.actions.ci import run_ci

    config = shop.config()
    run_ci(config)
    with open_registry(config) as registry:
        controller = Controller(config, registry, monitor_every=3600)
        controller.turn()  # v1 in staging, then production
        assert controller.turn() == []  # nothing changed: nothing to do
        path = shop.root / "data" / "b.csv"
        rows(n=600, seed=7).to_csv(path, index=False)
        backdate(path)
        acts = controller.turn()
        started = [a for a in acts if a["act"] == "retrain_started"]
        assert len(started) == 1 and started[0]["causes"] == ["new_data: rows"]
        # the turn did not wait for it: it ends on a later turn, which reports it
        acts = turn_until(controller, "retrained")
        retrained = [a for a in acts if a["act"] == "retrained"]
        assert len(retrained) == 1 and retrained[0]["causes"] == ["new_data: rows"]
        assert retrained[0]["passed"] and retrained[0]["version"] == 2
        started = [a["environment"] for a in acts if a["act"] == "release_started"]
        assert started == ["staging", "production"]
        # more new data within the cooldown: held back, recorded once
        path = shop.root / "data" / "c.csv"
        rows(n=600, seed=8).to_csv(path, index=False)
        backdate(path)
        held = [a for a in controller.turn() if a["act"] == "retrain_skipped"]
        assert len(held) == 1 and held[0]["why"].startswith("cooldown")
        assert [a for a in controller.turn() if a["act"] == "retrain_skipped"] == []
        kinds_seen = kinds(registry.store, "controller.")
        assert kinds_seen.count("controller.retrain_started") == 1
        assert kinds_seen.count("controller.retrain_skipped") == 1
        # after the cooldown, a small batch is still held back by min_new_rows
        later = utcnow() + timedelta(hours=2)
        path.unlink()
        small = shop.root / "data" / "d.csv"
        rows(n=50, seed=9).to_csv(small, index=False)
        backdate(small)
        held = [a for a in controller.turn(now=later) if a["act"] == "retrain_skipped"]
        assert held and held[0]["why"].startswith("min_new_rows")
        controller.close()


def test_one_controller_per_project(shop) -> None:
    config = shop.config()
    with open_registry(config) as registry:
        first = Lease(registry.store, "controller:shop", ttl=30, holder="a")
        second = Lease(registry.store, "controller:shop", ttl=30, holder="b")
        first.acquire()
        first.acquire()  # renewing is fine
        with pytest.raises(ControllerBusy, match=r"Another controller \(a\)"):
            second.acquire()
        first.release()
        second.acquire()
        expired = Lease(registry.store, "controller:shop", ttl=-1, holder="b")
        expired.acquire()  # b's lease now ends in the past
        first.acquire()  # so a may take it over


def test_a_retraining_cut_short_by_a_kill_runs_again(shop) -> None:
    from conveyor.actions.ci import run_ci

    config = shop.config()
    run_ci(config)
    with open_registry(config) as registry:
        controller = Controller(config, registry, monitor_every=3600)
        controller.turn()
        path = shop.root / "data" / "b.csv"
        rows(n=600, seed=7).to_csv(path, index=False)
        backdate(path)
        # a controller was killed right after it began retraining on this data: the event is
        # there, its end is not
        with registry.store.session() as s:
            registry.store.add_event(
                s,
                "controller.retrain_started",
                "project",
                "shop",
                {"causes": ["new_data: rows"], "sources": controller.retrainer.source_hashes()},
            )
        with Controller(config, registry, monitor_every=3600) as restarted:
            acts = turn_until(restarted, "retrained")
        controller.close()
        assert [a["act"] for a in acts if a["act"].startswith("retrain")] == [
            "retrain_started",
            "retrained",
        ]
        assert [a["version"] for a in acts if a["act"] == "retrained"] == [2]


def test_the_controller_serves_its_monitoring_figures_for_prometheus(shop) -> None:
    import threading
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from conveyor.actions.ci import run_ci
    from conveyor.controller import run_controller
    from tests.gateway.servers import free_port

    config = shop.config()
    run_ci(config)
    port = free_port()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_controller,
        args=(config,),
        kwargs={
            "interval": 0.1,
            "monitor_every": 0.1,
            "stop": stop,
            "metrics": ("127.0.0.1", port),
        },
        daemon=True,
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and "conveyor_monitor_rows" not in text:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert "conveyor_monitor_rows" in names
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=2).status_code == 404
    finally:
        stop.set()
        worker.join(30)
    assert (shop.root / ".conveyor" / "monitor.prom").read_text() == text
