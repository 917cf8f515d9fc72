"""A version rolled back on labels that were later corrected is re-judged, and the controller
retries it as often as ``retry_inconclusive`` allows: on a real SQLite store and request log."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conveyor.actions.models import open_registry
from conveyor.config.model import ModelConfig
from conveyor.controller import Controller
from conveyor.gateway.requestlog import RequestLog
from conveyor.release.releases import Releases
from conveyor.store import events as ev
from conveyor.store.records import utcnow
from tests.gateway.servers import gateway_project, load

DEPLOY = """
deploy:
  production:
    strategy: canary
    steps: [{weight: 50, for: 1m}]
    retry_inconclusive: 1
    analysis:
      min_requests: 30
      min_labels: 30
      max_p99_ratio: null
      max_latency_shift_ms: null
      max_prediction_psi: null
      min_agreement: null
"""


def project(tmp_path: Path):
    root = tmp_path / "p"
    gateway_project(root)
    (root / "conveyor.yaml").write_text((root / "conveyor.yaml").read_text() + DEPLOY)
    config = load(root)
    model = ModelConfig.model_validate(
        {"name": "num", "from": "train", "holdout": "train.holdout", "target": "y"}
    )
    return config.model_copy(update={"model": model})


def canary_traffic(log: RequestLog, n: int = 200) -> None:
    """The candidate (v2) answers n requests, each mirrored to v1; they disagree on half."""
    for i in range(n):
        candidate = 0 if i % 2 else 1
        log.record(f"c{i}", "num", 2, "production", "serve", 200, 2.0, 1, "[]",
                   f'{{"predictions": [{candidate}]}}')  # fmt: skip
        log.record(f"c{i}", "num", 1, "production", "shadow", 200, 2.0, 1, "[]",
                   '{"predictions": [1]}')  # fmt: skip
        log.record(f"s{i}", "num", 1, "production", "serve", 200, 2.0, 1, "[]",
                   '{"predictions": [1]}')  # fmt: skip
    log.flush()


def label(log: RequestLog, n: int = 200, *, corrected: bool) -> None:
    """First every label is 1 (the candidate looks wrong wherever it disagrees); corrected,
    the disagreements split evenly, so neither version is shown better."""
    rows = [(f"c{i}", "[0]" if corrected and i % 4 == 1 else "[1]") for i in range(n)]
    log.add_feedback(rows, actor="test")


def started_reason(store, release_id: str) -> str:
    events = store.events(entity="release", entity_id=release_id)
    return next(e.payload["reason"] for e in events if e.kind == ev.RELEASE_STARTED)


def test_a_rollback_on_corrected_labels_is_retried_once(tmp_path: Path) -> None:
    config = project(tmp_path)
    with open_registry(config) as registry:
        releases = Releases(config, registry)
        log = RequestLog(registry.store, gateway="test")
        first = releases.start("num", 2, "production")
        canary_traffic(log)
        label(log, corrected=False)

        outcome = releases.step(first.id, now=utcnow() + timedelta(minutes=2))[0]
        assert outcome["action"] == "rolled_back", outcome
        assert "accuracy from labels" in outcome["why"]
        assert releases.rejudge(first.id) == (False, "re-judged, accuracy from labels still fails")
        never = config.model_copy(
            update={
                "deploy": {
                    "production": config.deploy["production"].model_copy(
                        update={"retry_inconclusive": 0}
                    )
                }
            }
        )
        with Controller(never, registry) as controller:
            assert controller.turn() == []  # the evidence stands: nothing to retry

        label(log, corrected=True)  # the latest feedback for a request wins
        allowed, why = releases.rejudge(first.id)
        assert allowed and releases.retry_allowed(first.id)
        assert why.startswith(f"release {first.id} was rolled back on accuracy from labels")
        with Controller(never, registry) as controller:
            assert controller.turn() == []  # retry_inconclusive: 0 never retries
        with Controller(config, registry) as controller:
            acts = controller.turn()
            assert [(a["act"], a["version"]) for a in acts] == [("release_started", 2)]
            retry = releases.get(acts[0]["id"])
            assert retry.state == "running" and retry.reason is not None
            assert retry.reason.startswith("controller: retry 1 of 1: release " + first.id)
            assert started_reason(registry.store, retry.id) == retry.reason

            releases.rollback("num", "production", reason="pager")  # by hand, not by evidence
            assert releases.rejudge(retry.id) == (
                False,
                f"release {retry.id} was not rolled back by a live verdict",
            )
            assert controller.turn() == []  # one retry was allowed and made
        assert len(releases.list(model="num")) == 2
