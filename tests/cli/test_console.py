"""The console's own wording: a version without an ONNX copy says why, a metric that could not
be compared says so in its own words, and step metrics read in the one number format."""

from __future__ import annotations

import pytest

from conveyor.cli.console import _step_metric, print_comparison, print_version
from conveyor.registry.story import assemble


def test_models_show_says_why_there_is_no_onnx_copy(capsys: pytest.CaptureFixture[str]) -> None:
    story = assemble(
        project="p",
        model="churn",
        status="registered",
        gates=[],
        task="classification",
        target="churned",
        version=4,
        created_at="2026-01-01T00:00:00+00:00",
        model_file={"format": "skops", "digest": "ab" * 32, "size": 1234},
        onnx={"supported": False, "digest": None, "reason": "onnxmltools cannot convert it"},
    )
    print_version(story)
    out = capsys.readouterr().out
    assert f"  file skops sha256 {'ab' * 32} (1234 bytes)\n" in out
    assert "  no ONNX copy: onnxmltools cannot convert it\n" in out

    story["artifacts"]["onnx"] = {"digest": "cd" * 32, "size": 10, "max_abs_diff": 0.0}
    story["artifacts"]["onnx_not_exported"] = None
    print_version(story)
    out = capsys.readouterr().out
    assert f"; ONNX {'cd' * 6}\n" in out and "no ONNX copy" not in out


def test_models_compare_prints_a_metric_it_could_not_compare_in_its_own_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = {
        "model": "iris",
        "a": {"version": 1},
        "b": {"version": 2},
        "holdout": "version 2's holdout (30 rows)",
        "comparisons": [
            {
                "metric": "accuracy",
                "a": 0.9,
                "b": 0.95,
                "diff": 0.05,
                "ci_low": -0.02,
                "ci_high": 0.12,
                "p_value": 0.25,
                "method": "mcnemar",
            }
        ],
        "not_compared": {"roc_auc": "the holdout has too few rows of one class for a bootstrap."},
    }
    print_comparison(result)
    out = capsys.readouterr().out
    assert "  roc_auc: – not compared: the holdout has too few rows of one class for a " in out
    assert "fail" not in out and "error" not in out


def test_step_metrics_read_in_the_one_number_format() -> None:
    assert _step_metric(8000.0) == "8000"  # a count, stored as a float
    assert _step_metric(0.812345) == "0.8123"
    assert _step_metric(0.00001234) == "1.234e-05"
    assert _step_metric(float("nan")) == "NaN"
    assert _step_metric(3) == "3"
