"""One table of metric names (``config/metrics.py``): the gates' validation, the paired
comparisons and the reports agree on which metrics exist and which way each is better."""

from __future__ import annotations

from conveyor.config.metrics import COMPARABLE, HIGHER_IS_BETTER, LOWER_IS_BETTER, METRICS
from conveyor.config.model import TASK_METRICS
from conveyor.evaluate import compare
from conveyor.reports.format import direction, format_diff, ordered_metrics


def test_every_metric_the_evaluators_report_is_in_the_table() -> None:
    reported = {name for names in TASK_METRICS.values() for name in names}
    assert reported <= set(METRICS), sorted(reported - set(METRICS))


def test_the_comparisons_and_the_reports_read_the_same_directions() -> None:
    assert list(compare.HIGHER_IS_BETTER) == list(COMPARABLE)
    for name, higher in compare.HIGHER_IS_BETTER.items():
        assert METRICS[name] is higher
    for name, higher in METRICS.items():
        assert direction(name) is higher
    assert not HIGHER_IS_BETTER & LOWER_IS_BETTER
    assert direction("selection_rate") is None  # a rate compared between groups, not a score


def test_metrics_the_reports_once_did_not_know_now_read_as_better_or_worse() -> None:
    assert format_diff("balanced_accuracy", 0.02) == "+0.0200 ↑ better"
    assert format_diff("f1_weighted", -0.01) == "-0.0100 ↓ worse"
    assert ordered_metrics({"n": 3, "zeta": 1, "f1_weighted": 1, "roc_auc": 1, "mae": 1}) == [
        "roc_auc",
        "mae",
        "f1_weighted",
        "zeta",
        "n",
    ]
