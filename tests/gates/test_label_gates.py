"""Model gates on string labels and K classes: paired comparisons that hold for any number of
classes, and demographic parity (selection_rate) with an interval for the gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from conveyor.config import GateConfig
from conveyor.gates.model_gates import Candidate, evaluate_gate, newcombe_gap

FEATURES = ["a", "b", "c"]


def _three(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logits = np.column_stack([2 * x[:, 0], 2 * x[:, 1], np.zeros(n)])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["grade"] = np.array(["A", "B", "C"])[y]
    frame["region"] = np.where(rng.random(n) < 0.5, "north", "south")
    return frame


def _candidate(model, holdout, target="grade", **kw) -> Candidate:
    return Candidate(
        model_name="m",
        task="classification",
        target=target,
        model=model,
        holdout=holdout,
        metrics={},
        file_size=1,
        evaluation_step="evaluate",
        **kw,
    )


@pytest.fixture(scope="module")
def three() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _three(3000, 0), _three(3000, 1)


def test_multiclass_comparisons_pass_for_equal_and_fail_for_worse(three) -> None:
    train, test = three
    good = LogisticRegression().fit(train[FEATURES], train["grade"])
    blind = LogisticRegression().fit(train[["c"]], train["grade"])  # sees only noise
    candidate = _candidate(good, test)
    for check in ("accuracy >= production.accuracy - 0.01", "log_loss <= production.log_loss"):
        gate = GateConfig.model_validate(check)
        same = evaluate_gate(gate, candidate, lambda env: (1, good))
        assert same.verdict == "pass", same.summary
        better = evaluate_gate(gate, candidate, lambda env: (1, blind))
        assert better.verdict == "pass", better.summary
        worse = evaluate_gate(gate, _candidate(blind, test), lambda env: (1, good))
        assert worse.verdict == "fail", worse.summary
    gate = GateConfig.model_validate("accuracy >= production.accuracy")
    assert "mcnemar" in evaluate_gate(gate, candidate, lambda env: (1, good)).evidence["method"]


def test_incumbent_with_other_class_order_is_aligned(three) -> None:
    train, test = three
    model = LogisticRegression().fit(train[FEATURES], train["grade"])
    # The same model with its classes in another order: fitted on swapped names A<->C, then
    # its classes renamed back, so its probability columns read C, B, A.
    swapped = train["grade"].map({"A": "C", "B": "B", "C": "A"})
    reordered = LogisticRegression().fit(train[FEATURES], swapped)
    reordered.classes_ = np.array(["C", "B", "A"])
    gate = GateConfig.model_validate("log_loss <= production.log_loss + 0.5")
    result = evaluate_gate(gate, _candidate(model, test), lambda env: (1, reordered))
    assert result.verdict == "pass", result.summary
    assert result.evidence["a"] == pytest.approx(result.evidence["b"], rel=1e-6)


def test_string_binary_comparison_and_positive_class(three) -> None:
    train, test = three
    train = train.assign(pass_=np.where(train["grade"] == "A", "Yes", "No"))
    test = test.assign(pass_=np.where(test["grade"] == "A", "Yes", "No"))
    model = LogisticRegression().fit(train[FEATURES], train["pass_"])
    gate = GateConfig.model_validate("roc_auc >= production.roc_auc")
    for positive in (None, "Yes", "No"):
        candidate = _candidate(model, test, target="pass_", positive_class=positive)
        result = evaluate_gate(gate, candidate, lambda env: (1, model))
        assert (result.verdict, result.evidence["method"]) == ("pass", "delong"), result.summary


def _parity_frame(n_per: int, rate_north: float, rate_south: float, seed: int) -> pd.DataFrame:
    """Rows whose first feature decides selection, with the given share selected per group."""
    rng = np.random.default_rng(seed)
    rows = []
    for region, rate in (("north", rate_north), ("south", rate_south)):
        chosen = rng.random(n_per) < rate
        rows.append(pd.DataFrame({"a": np.where(chosen, 3.0, -3.0), "region": region}))
    frame = pd.concat(rows, ignore_index=True)
    frame["y"] = (frame["a"] > 0).astype(int)
    return frame


def test_selection_rate_parity_pass_fail_and_inconclusive() -> None:
    fit = _parity_frame(500, 0.5, 0.5, 0)
    model = LogisticRegression().fit(fit[["a"]], fit["y"])
    gate = GateConfig.model_validate(
        {"fairness": {"group": "region", "metric": "selection_rate", "max_gap": 0.1}}
    )
    even = evaluate_gate(gate, _candidate(model, _parity_frame(3000, 0.40, 0.41, 1), "y"), None)
    assert even.verdict == "pass", even.summary
    uneven = evaluate_gate(gate, _candidate(model, _parity_frame(3000, 0.2, 0.6, 2), "y"), None)
    assert uneven.verdict == "fail", uneven.summary
    assert uneven.evidence["ci_low"] > 0.1
    small = evaluate_gate(gate, _candidate(model, _parity_frame(40, 0.4, 0.5, 3), "y"), None)
    assert small.verdict == "inconclusive" and small.blocks, small.summary
    assert "too small to tell" in small.summary


def test_selection_rate_of_k_classes_needs_positive_class(three) -> None:
    train, test = three
    model = LogisticRegression().fit(train[FEATURES], train["grade"])
    gate = GateConfig.model_validate(
        {"fairness": {"group": "region", "metric": "selection_rate", "max_gap": 0.2}}
    )
    missing = evaluate_gate(gate, _candidate(model, test), None)
    assert missing.verdict == "error" and "needs model.positive_class" in missing.summary
    chosen = evaluate_gate(gate, _candidate(model, test, positive_class="A"), None)
    assert chosen.verdict == "pass", chosen.summary
    recall = GateConfig.model_validate(
        {"fairness": {"group": "region", "metric": "recall", "max_gap": 0.2}}
    )
    assert evaluate_gate(recall, _candidate(model, test), None).verdict == "pass"


def test_newcombe_interval_covers_known_values() -> None:
    # Newcombe (1998), table II, example (a): 56/70 vs 48/80 -> 0.2000, [0.0524, 0.3339]
    d, low, high = newcombe_gap(56, 70, 48, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
