"""A window read from what a real gateway logged, and labels sent through its feedback endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn import metrics as skm

from conveyor.monitor import monitor_report, read_window
from tests.gateway.servers import NUM_FIELDS, TOKEN, gateway_project, running, trained
from tests.monitor.logs import records, registry_of, served_rows

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.slow
def test_a_window_of_what_the_gateway_served_and_the_labels_it_got(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    t = trained()
    num_rows = served_rows(t["num_holdout"][:60])
    mixed_rows = records(t["mixed_holdout"][:30])  # with nulls in 'amount'
    answers, ids = [], []
    with running(config) as gw:
        for i in range(0, 60, 6):
            r = gw.predict("num", num_rows[i : i + 6])
            assert r.status_code == 200
            answers.extend(r.json()["predictions"])
            ids.append(r.headers["x-request-id"])
        assert gw.predict("num", [[1, 2]]).status_code == 422
        for i in range(0, 30, 10):
            assert gw.predict("mixed", mixed_rows[i : i + 10]).status_code == 200
        labels = [1 - a if k % 5 == 0 else a for k, a in enumerate(answers)]  # 80% right
        for n, rid in enumerate(ids[:5]):
            body = {"request_id": rid, "labels": labels[n * 6 : n * 6 + 6]}
            assert gw.post("/v1/feedback", json=body, headers=AUTH).status_code == 200
    # stopping the gateway flushed its log
    with registry_of(config) as registry:
        window = read_window(registry.store, "num", "production", seconds=600)
        mixed = read_window(registry.store, "mixed", "production", last=100)
        report = monitor_report(config, registry, model="num", reference=t["num_holdout"][500:])
    assert (window.requests, window.rows, window.skipped) == (11, 60, 0)
    assert window.predictions == answers and window.request_ids[::6] == ids
    assert window.inputs[NUM_FIELDS].to_numpy().tolist() == num_rows
    assert sorted(window.statuses.tolist()) == [200] * 10 + [422]
    assert mixed.rows == 30 and mixed.inputs["amount"].isna().sum() == sum(
        r["amount"] is None for r in mixed_rows
    )
    quality = report["quality"]
    assert quality["labelled"] == 30 and quality["labelled_share"] == pytest.approx(0.5)
    assert quality["metrics"]["accuracy"] == pytest.approx(
        skm.accuracy_score(labels[:30], answers[:30])
    )
    assert quality["label_delay_s_p50"] >= 0
    assert report["error_rate"] == 0.0 and report["requests"] == 11
