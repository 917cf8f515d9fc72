"""The built-in classification evaluation on any labels: string binary targets with a chosen
positive class, and K-class targets with macro metrics, a per-class report and a K x K matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from conveyor.evaluate.compare import paired_bootstrap
from conveyor.evaluate.metrics import multiclass_metrics
from conveyor.evaluate.steps import classification, encode_labels, predict_scores


def _churn(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["churn"] = np.where(y, "Yes", "No")
    return frame


def _iris() -> tuple[pd.DataFrame, pd.DataFrame]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    frame = X.assign(species=np.array(["setosa", "versicolor", "virginica"])[y])
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame.iloc[:90], frame.iloc[90:]


def test_string_binary_labels_score_the_positive_class() -> None:
    train, test = _churn(600, 0), _churn(400, 1)
    model = LogisticRegression().fit(train[["a", "b", "c"]], train["churn"])
    yes = classification(model, test, target="churn")
    assert yes["settings"]["positive_class"] == "Yes"  # the second class by default
    assert yes["positives"] == int((test["churn"] == "Yes").sum())
    assert yes["roc_auc"] > 0.75
    no = classification(model, test, target="churn", positive_class="No")
    assert no["positives"] == int((test["churn"] == "No").sum())
    # the same ranking read from the other side: the AUC is unchanged, precision is not
    assert no["roc_auc"] == pytest.approx(yes["roc_auc"])
    assert no["precision"] != pytest.approx(yes["precision"])
    assert 0.0 < yes["selection_rate"] < 1.0


def test_positive_class_matches_as_written_and_refuses_unknown() -> None:
    frame = _churn(300, 2).assign(churn=lambda f: (f["churn"] == "Yes").astype(int))
    model = LogisticRegression().fit(frame[["a", "b", "c"]], frame["churn"])
    result = classification(model, frame, target="churn", positive_class="1")
    assert result["settings"]["positive_class"] == 1
    with pytest.raises(ValueError, match=r"model.positive_class 'Maybe' is not one of .*0, 1"):
        classification(model, frame, target="churn", positive_class="Maybe")


def test_unknown_holdout_label_is_named() -> None:
    train = _churn(300, 3)
    model = LogisticRegression().fit(train[["a", "b", "c"]], train["churn"])
    test = train.copy()
    test.loc[:4, "churn"] = "Perhaps"
    with pytest.raises(ValueError, match=r"label\(s\) 'Perhaps' \(5 rows\) that the model has no"):
        classification(model, test, target="churn")


def test_multiclass_evaluation_reports_macro_weighted_and_per_class() -> None:
    train, test = _iris()
    model = LogisticRegression(max_iter=500).fit(train.drop(columns="species"), train["species"])
    result = classification(
        model,
        test.assign(size=np.where(test["petal length (cm)"] > 4, "big", "small")),
        target="species",
        slices=["size"],
    )
    assert result["classes"] == 3
    assert set(result["per_class"]) == {"setosa", "versicolor", "virginica"}
    assert sum(v["support"] for v in result["per_class"].values()) == len(test)
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == len(test)
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / len(test))
    assert result["accuracy"] > 0.85 and result["roc_auc"] > 0.9
    for name in ("f1", "f1_weighted", "precision_weighted", "log_loss", "brier", "ece"):
        assert np.isfinite(result[name]), name
    assert set(result["slices"]["size"]) == {"big", "small"}


def test_multiclass_metrics_match_sklearn_macro() -> None:
    from sklearn.metrics import f1_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=500)
    p = rng.dirichlet(np.ones(4), size=500)
    p[np.arange(500), t] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    m = multiclass_metrics(t, p)
    assert m["f1"] == pytest.approx(f1_score(t, p.argmax(axis=1), average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(t, p))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(t, p, multi_class="ovr"))


def test_multiclass_paired_bootstrap_tells_better_from_equal() -> None:
    rng = np.random.default_rng(1)
    n = 1500
    t = rng.integers(0, 3, size=n)
    good = rng.dirichlet(np.ones(3), size=n)
    good[np.arange(n), t] += 1.0
    good /= good.sum(axis=1, keepdims=True)
    noisy = 0.5 * good + 0.5 * rng.dirichlet(np.ones(3), size=n)
    for metric in ("log_loss", "f1", "roc_auc", "brier"):
        same = paired_bootstrap(t, good, good, metric, n_boot=300)
        assert same.diff == 0 and same.ci_low == same.ci_high == 0, metric
        worse = paired_bootstrap(t, good, noisy, metric, n_boot=300)
        assert (worse.ci_high < 0) if worse.higher_is_better else (worse.ci_low > 0), metric


def test_encode_and_align_to_another_models_classes() -> None:
    assert encode_labels(["b", "c", "a"], ["a", "b", "c"]).tolist() == [1, 2, 0]
    assert encode_labels(["No", "Yes"], ["No", "Yes"], "No").tolist() == [1.0, 0.0]
    train, test = _iris()
    two = train[train["species"] != "setosa"]
    model = LogisticRegression().fit(two.drop(columns="species"), two["species"])
    proba = predict_scores(
        model,
        test.drop(columns="species"),
        "classification",
        classes=["setosa", "versicolor", "virginica"],
    )
    assert proba.shape == (len(test), 3) and (proba[:, 0] == 0).all()
