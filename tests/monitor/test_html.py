"""The HTML page: every feature with its plot, prediction drift, live quality, all escaped."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from conveyor.evaluate.values import format_number
from conveyor.monitor import observe, write_html
from tests.gateway.servers import gateway_project, trained
from tests.monitor.logs import NOW, entry, feedback, records, registry_of, write


def test_the_page_shows_each_feature_and_escapes_what_callers_sent(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    t = trained()
    reference, served = t["mixed_holdout"][:250], t["mixed_holdout"][250:].copy()
    served["grade"] = np.where(np.arange(len(served)) % 5 == 0, "<b>bold</b>", "A")
    predictions = t["mixed"].predict(served).tolist()
    sent = records(served)
    logged = [
        entry(f"m{i}", sent[i : i + 5], predictions[i : i + 5], model="mixed", ago=300 - i)
        for i in range(0, len(sent), 5)
    ]
    write(config, logged, [feedback(r["request_id"], [1, 0, 0, 0, 0]) for r in logged[:20]])
    with registry_of(config) as registry:
        seen = observe(config, registry, model="mixed", now=NOW, reference=reference)
    path = write_html(seen.report, seen.reference, seen.window, tmp_path / "out" / "monitor.html")
    html = path.read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["monitor.html"]  # no temp file left
    assert html.lower().startswith("<!doctype html>") and "<script" not in html
    for feature in ("grade", "years", "amount"):
        assert f"<td>{feature}</td>" in html
    assert html.count("<svg") == 4  # three features and the predictions
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert re.search(r'<td class="drifted">drifted</td>', html)
    assert "the data set has drifted" in html and "Prediction drift" in html
    assert "100 labelled rows" in html and "accuracy" in html
    # Metrics read as on the model card and in the terminal: the shared formatter, 4 decimals.
    accuracy = format_number(seen.report["quality"]["metrics"]["accuracy"])
    assert accuracy == "0.8000" and f'<td class="num">{accuracy}</td>' in html
    assert "mixed@production (version 1)" in html


def test_an_empty_window_still_makes_a_page(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")
    with registry_of(config) as registry:
        seen = observe(config, registry, model="num", now=NOW, reference=trained()["num_holdout"])
    html = write_html(seen.report, seen.reference, seen.window, tmp_path / "m.html").read_text()
    assert "No served rows in the window" in html and "No labels yet" in html
    assert "<svg" not in html
