"""Model gates on real fitted models and generated data: thresholds, paired comparisons,
fairness, latency and size, each with a verdict and evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from conveyor.config import GateConfig
from conveyor.evaluate.compare import Comparison
from conveyor.gates.model_gates import Candidate, evaluate_gate, judge


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logit = 1.5 * x[:, 0] + 1.0 * x[:, 1] - 0.5 * x[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["group"] = np.where(rng.random(n) < 0.5, "north", "south")
    frame["y"] = y
    return frame


def _fit(frame: pd.DataFrame, columns: list[str]) -> LogisticRegression:
    return LogisticRegression().fit(frame[columns], frame["y"])


class OnlyColumns(LogisticRegression):
    """A model that names the columns it needs, as a fitted sklearn model does."""


def _candidate(model, holdout: pd.DataFrame, metrics: dict | None = None) -> Candidate:
    return Candidate(
        model_name="m",
        task="classification",
        target="y",
        model=model,
        holdout=holdout,
        metrics=metrics if metrics is not None else {"roc_auc": 0.8},
        file_size=12_345,
        evaluation_step="evaluate",
    )


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _data(4000, 0), _data(4000, 1)


def _gate(spec) -> GateConfig:
    return GateConfig.model_validate(spec)


def _cmp(low: float, high: float) -> Comparison:
    return Comparison("roc_auc", 0.8, 0.8, (low + high) / 2, low, high, 0.5, "delong", 100)


def test_judge_reads_only_the_interval() -> None:
    assert judge(_cmp(-0.004, 0.01), ">=", -0.005) == "pass"
    assert judge(_cmp(-0.02, -0.01), ">=", -0.005) == "fail"
    assert judge(_cmp(-0.01, 0.01), ">=", -0.005) == "inconclusive"
    assert judge(_cmp(0.0, 0.0), ">=", 0.0) == "pass"  # identical models are not worse
    assert judge(_cmp(0.0, 0.0), ">", 0.0) == "fail"  # ...and not better
    assert judge(_cmp(0.001, 0.02), ">", 0.0) == "pass"
    assert judge(_cmp(-0.001, 0.02), ">", 0.0) == "inconclusive"
    # a loss: lower is better, the bound mirrors
    assert judge(_cmp(-0.02, 0.004), "<=", 0.005) == "pass"
    assert judge(_cmp(0.01, 0.02), "<=", 0.005) == "fail"
    assert judge(_cmp(-0.02, -0.01), "<", 0.0) == "pass"


def test_threshold_pass_fail_and_missing_metric(data) -> None:
    train, test = data
    candidate = _candidate(_fit(train, ["a", "b", "c", "d"]), test, {"roc_auc": 0.81, "f1": 0.7})
    passed = evaluate_gate(_gate("roc_auc >= 0.8"), candidate, lambda env: None)
    assert (passed.verdict, passed.blocks) == ("pass", False)
    assert passed.evidence == {"metric": "roc_auc", "value": 0.81, "op": ">=", "bound": 0.8}
    failed = evaluate_gate(_gate("f1 > 0.75"), candidate, lambda env: None)
    assert (failed.verdict, failed.blocks) == ("fail", True)
    assert failed.summary == "f1 = 0.7000; > 0.75 does not hold"
    missing = evaluate_gate(_gate("recall >= 0.5"), candidate, lambda env: None)
    assert missing.verdict == "error" and missing.blocks
    assert "no metric 'recall': step 'evaluate' produced f1, roc_auc" in missing.summary
    nan = evaluate_gate(
        _gate("roc_auc >= 0.5"), _candidate(None, test, {"roc_auc": float("nan")}), lambda e: None
    )
    assert nan.verdict == "fail" and "undefined" in nan.summary


def test_a_worse_challenger_is_refused_with_evidence(data) -> None:
    train, test = data
    production = _fit(train, ["a", "b", "c", "d"])
    worse = _fit(train, ["c", "d"])  # drops the two informative features
    result = evaluate_gate(
        _gate({"name": "not worse", "check": "roc_auc >= production.roc_auc - 0.005"}),
        _candidate(worse, test),
        lambda env: (3, production) if env == "production" else None,
    )
    assert (result.name, result.kind, result.verdict, result.blocks) == (
        "not worse",
        "compare",
        "fail",
        True,
    )
    ev = result.evidence
    assert ev["method"] == "delong" and ev["incumbent_version"] == 3 and ev["n"] == 4000
    assert ev["ci_high"] < -0.005 and ev["diff"] < -0.1
    assert "vs production v3" in result.summary and "shown NOT" in result.summary


def test_an_equal_challenger_passes_not_worse_and_is_refused_better(data) -> None:
    train, test = data
    production = _fit(train, ["a", "b", "c", "d"])
    retrained = _fit(pd.concat([train.iloc[:3900], test.iloc[:100]]), ["a", "b", "c", "d"])
    lookup = lambda env: (1, production)  # noqa: E731
    not_worse = evaluate_gate(
        _gate("roc_auc >= production.roc_auc - 0.01"), _candidate(retrained, test), lookup
    )
    assert not_worse.verdict == "pass"
    better = evaluate_gate(
        _gate("roc_auc > production.roc_auc"), _candidate(retrained, test), lookup
    )
    assert better.verdict in ("fail", "inconclusive") and better.blocks


def test_inconclusive_blocks_unless_the_gate_allows_it(data) -> None:
    train, test = data
    production = _fit(train, ["a", "b", "c", "d"])
    other = _fit(train.sample(300, random_state=3), ["a", "b", "c", "d"])
    small = test.iloc[:150]
    lookup = lambda env: (1, production)  # noqa: E731
    strict = evaluate_gate(_gate("roc_auc >= production.roc_auc"), _candidate(other, small), lookup)
    assert strict.verdict == "inconclusive" and strict.blocks
    lenient = evaluate_gate(
        _gate({"check": "roc_auc >= production.roc_auc", "on_inconclusive": "pass"}),
        _candidate(other, small),
        lookup,
    )
    assert lenient.verdict == "inconclusive" and not lenient.blocks


def test_no_incumbent_skips_without_blocking(data) -> None:
    train, test = data
    result = evaluate_gate(
        _gate("roc_auc >= production.roc_auc - 0.01"),
        _candidate(_fit(train, ["a", "b", "c", "d"]), test),
        lambda env: None,
    )
    assert (result.verdict, result.blocks) == ("skipped", False)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss"])
def test_other_metrics_use_mcnemar_or_the_paired_bootstrap(data, metric: str) -> None:
    train, test = data
    production = _fit(train, ["a", "b", "c", "d"])
    worse = _fit(train, ["c", "d"])
    op, sign = ("<=", "+") if metric == "log_loss" else (">=", "-")
    result = evaluate_gate(
        _gate(f"{metric} {op} production.{metric} {sign} 0.005"),
        _candidate(worse, test),
        lambda env: (1, production),
    )
    assert result.verdict == "fail"
    expected = "mcnemar" if metric == "accuracy" else "paired-bootstrap"
    assert result.evidence["method"].startswith(expected)


def test_fairness_gap_between_groups(data) -> None:
    train, test = data
    model = _fit(train, ["a", "b", "c", "d"])
    ok = evaluate_gate(
        _gate({"fairness": {"group": "group", "metric": "recall", "max_gap": 0.2}}),
        _candidate(model, test),
        lambda env: None,
    )
    assert ok.verdict == "pass"
    assert set(ok.evidence["groups"]) == {"north", "south"}
    assert ok.evidence["gap"] == pytest.approx(
        abs(ok.evidence["groups"]["north"]["value"] - ok.evidence["groups"]["south"]["value"])
    )
    # make the model blind for one group: flip its scores there
    skewed = test.copy()
    skewed.loc[skewed["group"] == "south", ["a", "b", "c"]] *= -1
    bad = evaluate_gate(
        _gate({"fairness": {"group": "group", "metric": "recall", "max_gap": 0.2}}),
        _candidate(model, skewed),
        lambda env: None,
    )
    assert bad.verdict == "fail" and bad.evidence["gap"] > 0.2
    missing = evaluate_gate(
        _gate({"fairness": {"group": "state", "metric": "recall", "max_gap": 0.2}}),
        _candidate(model, test),
        lambda env: None,
    )
    assert (
        missing.verdict == "error"
        and "group column 'state' is not in the holdout" in missing.summary
    )


def test_fairness_with_one_large_group_is_inconclusive(data) -> None:
    train, test = data
    one = test.assign(group=np.where(np.arange(len(test)) < 10, "tiny", "big"))
    result = evaluate_gate(
        _gate({"fairness": {"group": "group", "metric": "recall", "max_gap": 0.1}}),
        _candidate(_fit(train, ["a", "b", "c", "d"]), one),
        lambda env: None,
    )
    assert result.verdict == "inconclusive" and result.blocks
    assert result.evidence["left_out"] == {"tiny": "10 rows"}


def test_latency_and_size_budgets(data) -> None:
    train, test = data
    candidate = _candidate(_fit(train, ["a", "b", "c", "d"]), test)
    latency = evaluate_gate(_gate({"latency": {"p99_ms": 10_000, "rows": 50}}), candidate, None)
    assert latency.verdict == "pass"
    assert latency.evidence["rows"] == 50 and latency.evidence["runtime"] == "native"
    assert 0 < latency.evidence["p50_ms"] <= latency.evidence["p99_ms"]
    too_tight = evaluate_gate(_gate({"latency": {"p99_ms": 0.0, "rows": 20}}), candidate, None)
    assert too_tight.verdict == "fail"
    size = evaluate_gate(_gate({"size": {"max_mb": 0.01}}), candidate, None)
    assert size.verdict == "fail" and size.evidence["bytes"] == 12_345
    assert evaluate_gate(_gate({"size": {"max_mb": 1}}), candidate, None).verdict == "pass"
