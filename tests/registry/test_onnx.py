from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from threadpoolctl import threadpool_limits

from conveyor.exceptions import RegistryError
from conveyor.registry.onnx import TOLERANCE, OnnxModel, export_onnx
from conveyor.registry.signature import frame_from_rows, infer_signature

STRINGS = ["grade", "home"]
NUMBERS = ["amount", "rate", "term"]


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread() -> Iterator[None]:
    # HistGradientBoosting's OpenMP threads spin against other processes on a busy CI box
    # (a 0.2 s fit took 14 s on two loaded cores); one thread keeps the file fast everywhere.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def loans() -> tuple[pd.DataFrame, np.ndarray]:
    """A small mixed frame: NaN in numeric columns (and one string column), strings elsewhere."""
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(9, 1, n),
            "rate": rng.uniform(5, 25, n).round(2),
            "term": rng.choice([36.0, 60.0], n),
            "grade": rng.choice(list("ABCDEFG"), n),
            "home": rng.choice(["RENT", "OWN", "MORTGAGE"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "amount"] = np.nan
    frame.loc[rng.random(n) < 0.05, "rate"] = np.nan
    frame.loc[rng.random(n) < 0.05, "home"] = np.nan
    y = (frame["grade"].isin(list("ABC")) ^ (frame["rate"].fillna(15) > 18)).to_numpy(int)
    return frame, y


def _one_hot_hgb() -> Pipeline:
    encode = ColumnTransformer(
        [("strings", OneHotEncoder(handle_unknown="ignore"), STRINGS)], remainder="passthrough"
    )
    return Pipeline([("encode", encode), ("model", HistGradientBoostingClassifier(max_iter=30))])


def _ordinal_hgb() -> Pipeline:
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    encode = ColumnTransformer([("strings", ordinal, STRINGS), ("numbers", "passthrough", NUMBERS)])
    return Pipeline([("encode", encode), ("model", HistGradientBoostingClassifier(max_iter=30))])


def test_hist_gradient_boosting_on_numeric_frame() -> None:
    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
    model = HistGradientBoostingClassifier(random_state=0).fit(frame, y)

    data, report = export_onnx(model, frame, task="classification")

    assert data is not None
    assert report["supported"] is True and report["reason"] is None
    assert report["max_abs_diff"] < 1e-4
    assert report["rows_checked"] == 2000
    assert report["inputs"] == list(frame.columns)
    assert report["tolerance"] == TOLERANCE
    onnx_model = OnnxModel(data)
    assert onnx_model.input_names == list(frame.columns)
    np.testing.assert_array_equal(onnx_model.predict(frame), model.predict(frame))
    np.testing.assert_allclose(
        onnx_model.predict_proba(frame), model.predict_proba(frame), atol=1e-4
    )
    one = frame.iloc[[7]]
    np.testing.assert_allclose(onnx_model.predict_proba(one), model.predict_proba(one), atol=1e-4)


@pytest.mark.parametrize("make", [_one_hot_hgb, _ordinal_hgb], ids=["one-hot", "ordinal"])
def test_encoded_pipeline_over_mixed_columns_exports_faithfully(loans, make) -> None:
    frame, y = loans
    model = make().fit(frame, y)

    data, report = export_onnx(model, frame, task="classification")

    assert report["supported"] is True, report["reason"]
    assert report["max_abs_diff"] < 1e-4
    assert report["inputs"] == list(frame.columns)
    # The gateway's path: JSON rows through the signature, with an unseen category and nulls.
    signature = infer_signature(frame, task="classification", classes=list(model.classes_))
    rows = [
        {"amount": None, "rate": 12.5, "term": 36, "grade": "Z", "home": "OWN"},
        {"amount": 5000, "rate": None, "term": 60, "grade": "B", "home": None},
    ]
    request = frame_from_rows(signature, rows)
    onnx_proba = OnnxModel(data).predict_proba(request)
    np.testing.assert_allclose(onnx_proba, model.predict_proba(request), atol=1e-4)


def test_native_categorical_splits_are_caught_as_unfaithful(loans) -> None:
    # skl2onnx converts HistGradientBoosting's categorical splits as thresholds: silently
    # wrong, which is what the comparison is for.
    frame, y = loans
    encode = ColumnTransformer(
        [("strings", OrdinalEncoder(), STRINGS), ("numbers", "passthrough", NUMBERS)]
    )
    model = Pipeline(
        [
            ("encode", encode),
            ("model", HistGradientBoostingClassifier(max_iter=30, categorical_features=[0, 1])),
        ]
    ).fit(frame, y)

    data, report = export_onnx(model, frame, task="classification")

    assert data is None
    assert report["supported"] is False
    assert report["max_abs_diff"] > 1e-4
    assert "differ from the model's" in report["reason"]


def test_categorical_dtype_model_is_matching_or_cleanly_unsupported(loans) -> None:
    frame, y = loans
    frame = frame.astype({c: "category" for c in STRINGS})
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features="from_dtype")
    model.fit(frame, y)

    data, report = export_onnx(model, frame, task="classification")

    if report["supported"]:
        assert data is not None and report["max_abs_diff"] < 1e-4
    else:
        assert data is None and report["reason"]


def test_random_forest_with_missing_values_is_caught(loans) -> None:
    # skl2onnx's tree converter drops the learned NaN routing (missing_go_to_left).
    frame, y = loans
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    encode = ColumnTransformer([("strings", ordinal, STRINGS)], remainder="passthrough")
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    model = Pipeline([("encode", encode), ("model", forest)]).fit(frame, y)

    data, report = export_onnx(model, frame, task="classification")

    assert (data, report["supported"]) == (None, False)
    assert report["max_abs_diff"] > 1e-4


def test_regression_model() -> None:
    X, y = make_regression(n_samples=500, n_features=6, noise=5.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    model = HistGradientBoostingRegressor(max_iter=50).fit(frame, y * 100)

    data, report = export_onnx(model, frame, task="regression")

    assert report["supported"] is True, report["reason"]
    assert report["max_abs_diff"] <= report["tolerance"]
    onnx_model = OnnxModel(data)
    predictions = onnx_model.predict(frame)
    assert predictions.shape == (500,) and predictions.dtype == np.float64
    np.testing.assert_allclose(predictions, model.predict(frame), atol=report["tolerance"])
    with pytest.raises(RegistryError, match="regressor"):
        onnx_model.predict_proba(frame)


class Majority(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx has no converter for."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.tile([1.0, 0.0], (len(X), 1))

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_unconvertible_model_is_unsupported_not_an_error(loans) -> None:
    frame, y = loans
    data, report = export_onnx(Majority().fit(frame, y), frame, task="classification")
    assert data is None
    assert report["supported"] is False
    assert report["reason"].startswith("skl2onnx cannot convert the Majority:")
    assert report["max_abs_diff"] is None


def test_model_that_cannot_predict_the_sample_is_unsupported(loans) -> None:
    frame, y = loans
    model = _one_hot_hgb().fit(frame, y)
    data, report = export_onnx(model, frame.drop(columns=["rate"]), task="classification")
    assert data is None
    assert report["reason"].startswith("the Pipeline cannot predict the sample:")


def test_datetime_columns_are_unsupported(loans) -> None:
    frame, y = loans
    frame = frame.assign(issued=pd.Timestamp("2024-01-01"))
    data, report = export_onnx(Majority().fit(frame, y), frame, task="classification")
    assert data is None
    assert "'issued' has the dtype datetime64" in report["reason"]


def test_empty_sample_and_unknown_task_raise(loans) -> None:
    frame, y = loans
    model = Majority().fit(frame, y)
    with pytest.raises(RegistryError, match=r"empty \(\(0, 5\)\)"):
        export_onnx(model, frame.iloc[:0], task="classification")
    with pytest.raises(RegistryError, match="Unknown task 'ranking'"):
        export_onnx(model, frame, task="ranking")


def test_onnx_model_errors_and_threads(loans) -> None:
    frame, y = loans
    data, _ = export_onnx(_one_hot_hgb().fit(frame, y), frame, task="classification")
    assert data is not None
    onnx_model = OnnxModel(data, intra_op_threads=2)
    assert onnx_model.predict(frame.iloc[:3]).shape == (3,)
    with pytest.raises(RegistryError, match="lacks the column 'grade'"):
        onnx_model.predict(frame.drop(columns=["grade"]))
    with pytest.raises(RegistryError, match="Cannot load the ONNX model"):
        OnnxModel(b"not an onnx model")
