"""The release judge on data built inline: which check fails, with which test and evidence,
and only on routed traffic read from a real SQLite request log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from conveyor.config.deploy import AnalysisConfig
from conveyor.gateway.requestlog import RequestLog
from conveyor.release.analysis import ROUTED_ROLES, Side, collect, judge
from conveyor.store.metadata import Store
from conveyor.store.predictionlog.layout import attach

ANALYSIS = AnalysisConfig(alpha=0.01, min_requests=100, min_labels=50)


def canary(
    n: int,
    *,
    seed: int = 0,
    candidate_wrong: float = 0.0,
    stable_wrong: float = 0.0,
    candidate_errors: float = 0.0,
    candidate_ms: float = 0.0,
    positive: float = 0.3,
    candidate_positive: float | None = None,
) -> tuple[Side, Side, Side]:
    """(stable serve, candidate serve, stable mirror): the candidate's n requests answered by
    both, each labelled, plus 4n requests the stable version answered alone."""
    rng = np.random.default_rng(seed)
    stable, candidate, mirror = Side(1, "serve"), Side(2, "serve"), Side(1, "shadow")
    for i in range(4 * n):
        y = int(rng.random() < positive)
        stable.add(f"s{i}", 200, 2.0 + rng.exponential(0.5), [y], classes=True)
    for i in range(n):
        rid = f"c{i}"
        y = int(rng.random() < positive)
        a = y if rng.random() >= stable_wrong else 1 - y
        b = y if rng.random() >= candidate_wrong else 1 - y
        if candidate_positive is not None:
            b = int(rng.random() < candidate_positive)
        status = 500 if rng.random() < candidate_errors else 200
        candidate.add(rid, status, 2.0 + candidate_ms + rng.exponential(0.5), [b], classes=True)
        mirror.add(rid, 200, 2.0 + rng.exponential(0.5), [a], classes=True)
        candidate.label(rid, [y])
        mirror.label(rid, [y])
    return stable, candidate, mirror


def by_name(verdict) -> dict:
    return {c["name"]: c for c in verdict.checks}


def test_a_good_candidate_is_promoted_with_every_check_named_and_its_alpha_shared() -> None:
    stable, candidate, mirror = canary(400, candidate_wrong=0.05, stable_wrong=0.05)

    verdict = judge(stable, candidate, ANALYSIS, mirror)

    assert verdict.decision == "promote", verdict.summary
    tested = [c for c in verdict.checks if "p_value" in c]
    assert {c["name"] for c in tested} == {
        "error rate",
        "latency vs stable",
        "p99 latency vs stable",
        "prediction shift",
        "agreement",
        "accuracy from labels",
    }
    for check in tested:
        assert check["test"] and check["n"] and check["alpha"] == pytest.approx(0.01 / 6, rel=1e-2)
    p99 = by_name(verdict)["p99 latency vs stable"]
    assert p99["stable"]["n"] == 1600 and p99["stable"]["low"] <= p99["stable"]["estimate"]


def test_a_p99_is_not_judged_on_fewer_than_100_requests() -> None:
    stable, candidate, mirror = canary(60)
    for i in range(3):  # slow requests that would be most of a p99 taken from 63 requests
        candidate.add(f"slow{i}", 200, 80.0, [0])
        mirror.add(f"slow{i}", 200, 2.0, [0])

    p99 = by_name(judge(stable, candidate, ANALYSIS, mirror))["p99 latency vs stable"]

    assert p99["result"] == "info" and p99["value"] is None and "fewer than 100" in p99["note"]


def test_worse_answers_on_the_same_requests_fail_the_paired_accuracy_test() -> None:
    stable, candidate, mirror = canary(300, candidate_wrong=0.15, stable_wrong=0.05, seed=1)

    verdict = judge(stable, candidate, ANALYSIS, mirror)

    accuracy = by_name(verdict)["accuracy from labels"]
    assert verdict.decision == "rollback" and accuracy["result"] == "fail"
    assert "McNemar" in accuracy["test"]
    n = accuracy["n"]
    assert n["labelled_rows"] == 300 and n["candidate_only_wrong"] > 3 * n["stable_only_wrong"]
    low, high = accuracy["interval"]
    assert low < accuracy["effect"] < high < 0
    assert accuracy["p_value"] <= accuracy["alpha"]
    assert "accuracy from labels" in verdict.summary and "McNemar" in verdict.summary


def test_a_small_accuracy_dip_on_few_labels_waits_instead_of_rolling_back() -> None:
    stable, candidate, mirror = canary(60, seed=3)  # both right on all 60 requests
    for i in range(8):  # then 8 requests where exactly one of them is right
        rid, y = f"d{i}", 1
        b, a = (0, 1) if i < 6 else (1, 0)  # the candidate alone wrong on 6, stable on 2
        candidate.add(rid, 200, 2.0, [b], classes=True)
        mirror.add(rid, 200, 2.0, [a], classes=True)
        candidate.label(rid, [y])

    verdict = judge(stable, candidate, ANALYSIS, mirror)

    accuracy = by_name(verdict)["accuracy from labels"]
    assert accuracy["n"]["candidate_only_wrong"] == 6 and accuracy["n"]["stable_only_wrong"] == 2
    assert accuracy["effect"] == pytest.approx(-4 / 68, abs=1e-4)  # over the 0.02 bound
    assert accuracy["p_value"] > accuracy["alpha"]  # 6 against 2 shows nothing yet
    assert accuracy["result"] == "wait" and verdict.decision == "wait"


def test_errors_on_the_same_requests_are_compared_pairwise_and_exactly() -> None:
    stable, candidate, mirror = canary(1000, candidate_errors=0.03, seed=4)

    verdict = judge(stable, candidate, ANALYSIS, mirror)

    errors = by_name(verdict)["error rate"]
    assert errors["result"] == "fail" and "sign test on discordant pairs" in errors["test"]
    assert errors["n"]["pairs"] == 1000 and errors["n"]["stable_only_errors"] == 0

    few = canary(150, candidate_errors=0.0, seed=5)
    for i in range(3):  # three errors in 150 requests: over the 1% bound, not yet shown
        few[1].add(f"late{i}", 500, 0.0)
        few[2].add(f"late{i}", 200, 2.0, [0])
    check = by_name(judge(*few[:2], ANALYSIS, few[2]))["error rate"]
    assert check["result"] == "wait" and check["p_value"] > check["alpha"]


def test_five_milliseconds_slower_fails_the_rank_test_and_one_outlier_does_not() -> None:
    stable, candidate, mirror = canary(150, candidate_ms=5.0, seed=6)

    latency = by_name(judge(stable, candidate, ANALYSIS, mirror))["latency vs stable"]

    assert latency["result"] == "fail" and "Mann-Whitney" in latency["test"]
    assert latency["value"] == pytest.approx(5.0, abs=0.5)  # the medians' difference, ms
    assert latency["n"] == {"candidate": 150, "stable": 600}

    stable, candidate, mirror = canary(100, seed=7)
    candidate.add("stall", 200, 400.0, [0])  # one request stalled by the scheduler
    mirror.add("stall", 200, 2.0, [0])
    verdict = judge(stable, candidate, ANALYSIS, mirror)
    assert verdict.decision == "promote", verdict.summary


def test_a_rare_class_predicted_far_more_often_is_a_shift() -> None:
    stable, candidate, mirror = canary(300, positive=0.02, candidate_positive=0.4, seed=8)

    shift = by_name(judge(stable, candidate, ANALYSIS, mirror))["prediction shift"]

    assert shift["result"] == "fail" and shift["value"] > 0.2
    assert shift["n"]["paired"] is True and "McNemar" in shift["test"]


def test_stages_share_alpha() -> None:
    stable, candidate, mirror = canary(200, seed=9)

    one = judge(stable, candidate, ANALYSIS, mirror)
    three = judge(stable, candidate, ANALYSIS, mirror, stages=3)

    assert by_name(three)["error rate"]["alpha"] == pytest.approx(
        by_name(one)["error rate"]["alpha"] / 3, rel=1e-2
    )


def test_repeated_looks_at_an_equal_candidate_rarely_roll_back() -> None:
    # 100 canaries looked at after every 25 requests up to 500: a per-look test at 1% would
    # roll back several; the always-valid tests, sharing 1%, roll back none or one.
    rollbacks = 0
    for seed in range(100):
        stable, candidate, mirror = canary(500, candidate_wrong=0.08, stable_wrong=0.08, seed=seed)
        looked = (Side(1, "serve"), Side(2, "serve"), Side(1, "shadow"))
        ids = list(candidate.status)
        for upto in range(25, 501, 25):
            for rid in ids[upto - 25 : upto]:
                looked[1].add(rid, candidate.status[rid], 2.0, candidate.by_request[rid])
                looked[2].add(rid, 200, 2.0, mirror.by_request[rid])
                looked[1].label(rid, candidate.truth[rid])
                looked[2].label(rid, candidate.truth[rid])
                looked[0].add("s" + rid, 200, 2.0, mirror.by_request[rid])
            if judge(looked[0], looked[1], ANALYSIS, looked[2]).decision == "rollback":
                rollbacks += 1
                break
    assert rollbacks <= 1


def test_collect_reads_only_routed_roles(tmp_path: Path) -> None:
    store = Store("sqlite:///" + str(tmp_path / "meta.db")).open()
    attach(store, str(tmp_path / "prediction-log"))  # what open_stores does for a project
    since = datetime.now(UTC) - timedelta(seconds=5)
    log = RequestLog(store, gateway="test")
    for i in range(120):
        log.record(
            f"r{i}", "m", 1 + i % 2, "prod", "serve", 200, 2.0, 1, "[]", '{"predictions": [1]}'
        )
    for i in range(1, 120, 2):  # the stable version's mirror of the candidate's requests
        log.record(f"r{i}", "m", 1, "prod", "shadow", 200, 2.0, 1, "", '{"predictions": [1]}')
    for role in ("pinned", "smoke", "test", "admin"):
        for i in range(50):  # failures the judge must never see
            log.record(f"{role}{i}", "m", 2, "prod", role, 500, 900.0, 1, "", "boom")
    log.flush()
    log.add_feedback([("r1", "[1]"), ("r3", "[0]")], actor="t")
    try:
        sides = collect(store, "m", "prod", since, [(1, "serve"), (2, "serve"), (1, "shadow")])
        with pytest.raises(ValueError, match="Role 'pinned' is not routed traffic"):
            collect(store, "m", "prod", since, [(2, "pinned")])
    finally:
        store.close()

    candidate = sides[2, "serve"]
    assert candidate.requests == 60 and candidate.errors == 0
    assert max(candidate.latencies) == 2.0
    assert sides[1, "shadow"].requests == 60 and sides[1, "serve"].requests == 60
    assert candidate.truth == {"r1": [1], "r3": [0]} and sides[1, "shadow"].truth["r3"] == [0]
    assert ROUTED_ROLES == ("serve", "shadow")
