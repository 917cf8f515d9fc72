"""conveyor.log_* inside and outside a step."""

from __future__ import annotations

import math

import pytest

import conveyor
from conveyor.exceptions import ConveyorError
from conveyor.pipeline import tracking


@pytest.fixture
def tracker(tmp_path):
    active = tracking.Tracker(step="s", artifacts_url=str(tmp_path / "artifacts"))
    tracking._active = active
    yield active
    tracking._active = None


def test_outside_a_step_the_error_says_where_to_call_it() -> None:
    with pytest.raises(ConveyorError, match=r"^conveyor\.log_metric\(\) was called outside"):
        conveyor.log_metric("auc", 0.5)


def test_metric_series_get_consecutive_indices(tracker) -> None:
    for value in (3, 2, 1):
        conveyor.log_metric("loss", value)
    conveyor.log_metric("auc", 0.8, step=10)
    conveyor.log_metrics({"f1": 0.5, "nan": math.nan})
    keys = [(k, v, i) for k, v, i, _ in tracker.metrics]
    assert keys[:4] == [("loss", 3.0, 0), ("loss", 2.0, 1), ("loss", 1.0, 2), ("auc", 0.8, 10)]
    assert keys[4] == ("f1", 0.5, 0) and math.isnan(keys[5][1])


def test_bad_metric_values_are_named(tracker) -> None:
    with pytest.raises(ConveyorError, match=r"^log_metric\('auc', 'high'\): the value must be"):
        conveyor.log_metric("auc", "high")
    with pytest.raises(ConveyorError, match="key must be a non-empty string"):
        conveyor.log_metric("", 1)


def test_params_are_kept_as_json(tracker) -> None:
    conveyor.log_param("lr", 0.1)
    conveyor.log_param("layers", [1, 2])
    conveyor.log_param("odd", object)
    assert tracker.params["lr"] == 0.1 and tracker.params["layers"] == [1, 2]
    assert tracker.params["odd"] == "<class 'object'>"


def test_log_artifact_stores_the_file_at_once(tracker, tmp_path) -> None:
    path = tmp_path / "plot.svg"
    path.write_text("<svg/>")
    digest = conveyor.log_artifact(path)
    path.unlink()  # the step may delete it: the store already has it
    from conveyor.store.artifacts import ArtifactStore

    with ArtifactStore(tracker.artifacts_url) as store:
        assert store.read_bytes(digest) == b"<svg/>"
    assert tracker.artifacts == [("plot.svg", digest, 6)]
    with pytest.raises(ConveyorError, match="is not a file"):
        conveyor.log_artifact(tmp_path / "missing.txt")
