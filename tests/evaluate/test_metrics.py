from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conveyor.evaluate.metrics import (
    by_slice,
    classification_metrics,
    expected_calibration_error,
    regression_metrics,
)


def test_classification_metrics_known_values() -> None:
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.6, 0.4, 0.8, 0.9]
    m = classification_metrics(y, s)
    assert m["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # Pairs (pos, neg) ranked right: 0.4>0.1, 0.8>both, 0.9>both -> 5 of 6.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.04 + 0.01) / 5)
    expected_ll = -np.mean(np.log([0.9, 0.4, 0.4, 0.8, 0.9]))
    assert m["log_loss"] == pytest.approx(expected_ll)
    assert m["n"] == 5 and m["positives"] == 3 and "note" not in m


def test_threshold_moves_the_confusion_matrix() -> None:
    m = classification_metrics([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.8, 0.9], threshold=0.3)
    assert m["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 0, "tp": 3}


def test_ece_by_hand() -> None:
    # Bin [0.2, 0.3): scores 0.2, 0.2, labels 0, 1 -> |0.5 - 0.2| = 0.3, weight 2/4.
    # Bin [0.9, 1.0]: scores 0.9, 1.0 (1.0 goes into the last bin), labels 1, 1 -> 0.05, 2/4.
    ece = expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 1.0])
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)


def test_perfectly_calibrated_scores_have_small_ece() -> None:
    rng = np.random.default_rng(0)
    s = rng.random(50_000)
    y = (rng.random(50_000) < s).astype(int)
    assert classification_metrics(y, s)["ece"] < 0.01
    assert classification_metrics(y, s**3)["ece"] > 0.1


def test_single_class_gives_nan_auc_and_a_note() -> None:
    m = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["roc_auc"])
    assert "single class" in m["note"]
    assert m["recall"] == pytest.approx(2 / 3)


def test_bad_classification_inputs() -> None:
    with pytest.raises(ValueError, match="y_true has 3 rows but y_score has 2"):
        classification_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_true has 2 NaN"):
        classification_metrics([0, np.nan, 1, np.nan], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="0/1 labels.*2.0"):
        classification_metrics([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"range \[-1, 0.3\]"):
        classification_metrics([0, 1, 1], [-1.0, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [])


def test_regression_metrics_and_mape_skips_zeros() -> None:
    m = regression_metrics([0.0, 2.0, 4.0, 10.0], [1.0, 1.0, 5.0, 10.0])
    assert m["mae"] == pytest.approx(3 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(3 / 4))
    assert m["mape"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert m["mape_skipped"] == 1
    sst = np.sum((np.array([0, 2, 4, 10]) - 4) ** 2)
    assert m["r2"] == pytest.approx(1 - 3 / sst)


def test_regression_degenerate_inputs() -> None:
    m = regression_metrics([0.0], [1.0])
    assert math.isnan(m["r2"]) and math.isnan(m["mape"])
    assert "r2 needs" in m["note"] and "every y_true is 0" in m["note"]
    with pytest.raises(ValueError, match="y_true has 1 rows but y_pred has 2"):
        regression_metrics([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y_pred has 1 NaN"):
        regression_metrics([1.0, 2.0], [np.nan, 2.0])


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 400
    s = rng.random(n)
    y = (rng.random(n) < s).astype(int)
    home = np.where(np.arange(n) < 390, np.where(np.arange(n) % 2 == 0, "rent", "own"), "other")
    state = np.array(["CA", "NY", None, "TX"], dtype=object)[np.arange(n) % 4]
    y[home == "other"] = 1  # a small group with a single class
    return pd.DataFrame({"y_true": y, "y_score": s, "home": home, "state": state})


def test_by_slice_matches_metrics_per_group() -> None:
    frame = _frame()
    out = by_slice(frame, ["home", "state"], classification_metrics, threshold=0.5)
    assert set(out) == {"home", "state"}
    assert set(out["home"]) == {"own", "other", "rent"}
    assert set(out["state"]) == {"CA", "NY", "TX", "null"}
    rent = frame[frame.home == "rent"]
    assert out["home"]["rent"]["n"] == len(rent) == 195
    assert out["home"]["rent"]["roc_auc"] == pytest.approx(roc_auc_score(rent.y_true, rent.y_score))
    other = out["home"]["other"]
    assert other["n"] == 10 and math.isnan(other["roc_auc"])
    assert "single class" in other["note"] and "only 10 rows" in other["note"]
    assert out["state"]["null"]["n"] == 100


def test_by_slice_regression_and_missing_column() -> None:
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "p": [1.0, 2.5, 3.0, 3.0], "g": list("aabb")})
    out = by_slice(frame, ["g"], regression_metrics, y_true="y", y_score="p", min_rows=2)
    assert out["g"]["a"]["mae"] == pytest.approx(0.25)
    assert out["g"]["b"]["mae"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="slice column 'state' is not in the evaluation frame"):
        by_slice(frame, ["state"], regression_metrics, y_true="y", y_score="p")
