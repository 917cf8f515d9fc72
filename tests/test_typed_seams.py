"""The typed dicts that cross modules stay true to what their producers build: each test builds
the real thing and compares its keys with the TypedDict that every consumer is checked against
(mypy checks the consumers; only a run checks the producer's dict literal)."""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

import numpy as np
import pandas as pd

from conveyor.cli.monitor import describe_act
from conveyor.controller.loop import Act
from conveyor.data.drift import ColumnDrift, DriftReport, MethodStats, column_drift, drift_report
from conveyor.registry.story import Artifacts, StoryData, VersionStory, assemble
from conveyor.release.strategies import Action, Outcome


def _keys(typed: Any) -> tuple[frozenset[str], frozenset[str]]:
    """(required, all) keys. Read from the annotations' text: under ``from __future__ import
    annotations`` Python 3.11's ``__required_keys__`` counts ``NotRequired`` keys as required."""
    notes = typed.__annotations__
    text = {k: getattr(v, "__forward_arg__", str(v)) for k, v in notes.items()}
    optional = {k for k, v in text.items() if v.startswith("NotRequired[")}
    return frozenset(set(notes) - optional), frozenset(notes)


def _fits(value: dict[str, Any], typed: Any) -> None:
    required, allowed = _keys(typed)
    assert required <= set(value) <= allowed, (typed.__name__, sorted(set(value) ^ required))


def test_a_drift_report_has_the_keys_of_its_types() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {"x": rng.normal(0, 1, 400), "c": rng.choice(["a", "b"], 400), "gone": [None] * 400}
    )
    current = pd.DataFrame(
        {"x": rng.normal(1, 1, 300), "c": rng.choice(["a", "z"], 300), "gone": [1.0] * 300}
    )
    methods = {"numeric": ["ks", "wasserstein", "psi"], "categorical": ["chi2", "psi"]}
    report = drift_report(reference, current, methods=methods)
    _fits(dict(report), DriftReport)
    for entry in report["columns"].values():
        _fits(dict(entry), ColumnDrift)
        for stats in entry["stats"].values():
            _fits(dict(stats), MethodStats)
    assert "categories" in report["columns"]["c"]  # the one NotRequired key, when it applies
    _fits(dict(column_drift(reference["x"], ["text"] * 10)), ColumnDrift)  # a mismatch


def test_a_version_story_has_every_key_of_its_type() -> None:
    story = assemble(
        project="p", model="m", status="rejected", gates=[], task="regression", target="y"
    )
    assert set(story) == _keys(VersionStory)[1]
    _fits(dict(story["artifacts"]), Artifacts)
    _fits(dict(story["data"]), StoryData)


def test_watch_describes_every_kind_of_act_in_words() -> None:
    """A kind added to ``Act`` without a line in ``describe_act`` would print a raw dict."""
    kinds = get_args(get_type_hints(Act, localns={"Action": Action})["act"])
    every: dict[str, Any] = {
        "id": "r1",
        "action": "promoted",
        "why": "the canary held",
        "environment": "production",
        "version": 3,
        "strategy": "canary",
        "causes": ["drift: 40% of features (x)"],
        "pid": 42,
        "log": "retrain.log",
        "failed_gates": [],
        "error": "boom",
        "alert": "errors",
        "state": "firing",
        "summary": "error rate 0.5 > 0.05",
    }
    for kind in kinds:
        line = describe_act({"act": kind, **every})  # type: ignore[typeddict-item]
        assert not line.startswith("{"), (kind, line)


def test_a_release_outcome_names_only_declared_actions() -> None:
    assert set(get_args(get_type_hints(Outcome)["action"])) == set(get_args(Action))
    assert {"wait", "paused", "promoted", "rolled_back"} <= set(get_args(Action))
