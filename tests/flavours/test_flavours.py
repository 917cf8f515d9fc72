"""Each flavour on its own: save and load round trips in the framework's own format, ONNX
exports that match (or say why not), a clear error when the framework is not installed, and
files that do not parse refused without running anything."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours import flavour_of, for_class, for_format
from conveyor.registry.modelfile import ModelFile, load_model, save_model
from conveyor.store.artifacts import ArtifactStore

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")


def _data(n: int = 400) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    grade = np.digitize(X["a"] + 0.3 * rng.normal(size=n), [-0.5, 0.5])
    return X, grade, X["a"].to_numpy() * 2 + X["b"].to_numpy()


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts")).open()


def _models():
    X, grade, value = _data()
    labels = np.array(["low", "mid", "high"])[grade]
    return X, [
        ("xgboost-json", xgb.XGBClassifier(n_estimators=10).fit(X, grade)),
        ("xgboost-json", xgb.XGBClassifier(n_estimators=10).fit(X, grade > 0)),
        ("xgboost-json", xgb.XGBRegressor(n_estimators=10).fit(X, value)),
        ("lightgbm-text", lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, labels)),
        ("lightgbm-text", lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, 1 * (grade > 0))),
        ("lightgbm-text", lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(X, value)),
    ]


def test_round_trip_in_the_frameworks_own_format(store) -> None:
    X, models = _models()
    for fmt, model in models:
        file = save_model(model, store)
        assert file.format == fmt
        assert b"pickle" not in store.read_bytes(file.digest)[:200]
        loaded = load_model(store, file, what="m", allow_pickle=False)
        assert list(loaded.feature_names_in_) == ["a", "b", "c"]
        if hasattr(model, "classes_"):
            assert list(loaded.classes_) == list(model.classes_)
            np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-7)
            assert list(loaded.predict(X)) == list(model.predict(X))
        else:
            np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)


def test_onnx_exports_match_or_give_the_reason() -> None:
    X, models = _models()
    for _fmt, model in models:
        task = "classification" if hasattr(model, "classes_") else "regression"
        data, report = flavour_of(model).export_onnx(model, X.head(100), task)
        assert data is not None and report["supported"], report
        assert report["max_abs_diff"] <= report["tolerance"]
    # a converter's failure is kept as the reason, not thrown away
    flags = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, X["a"] > 0)
    data, report = flavour_of(flags).export_onnx(flags, X.head(50), "classification")
    assert data is None and report["reason"].startswith("onnxmltools cannot convert")
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(
        X.assign(k=pd.Categorical(np.where(X["a"] > 0, "p", "q"))), X["b"] > 0
    )
    data, report = flavour_of(model).export_onnx(
        model, X.assign(k=pd.Categorical(np.where(X["a"] > 0, "p", "q"))).head(50), "classification"
    )
    assert data is None and "column 'k' has the dtype category" in report["reason"]


def test_flavours_are_chosen_by_class_and_format() -> None:
    assert for_class("xgboost.sklearn.XGBClassifier").name == "xgboost"
    assert for_class("lightgbm.sklearn.LGBMRegressor").name == "lightgbm"
    assert for_class("sklearn.pipeline.Pipeline").name == "sklearn"
    assert for_format("lightgbm-text").name == "lightgbm"
    with pytest.raises(RegistryError, match="No model flavour reads the format 'onnx'"):
        for_format("onnx")


def test_missing_framework_names_the_extra(store, monkeypatch) -> None:
    X, models = _models()
    file = save_model(models[0][1], store)
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if it were not installed
    with pytest.raises(RegistryError, match=r"pip install 'conveyor-ml\[xgboost\]'"):
        load_model(store, file, what="model 'm' version 1", allow_pickle=False)


def test_a_file_that_does_not_parse_is_refused(store) -> None:
    bad = store.put_bytes(json.dumps({"flavour": "lightgbm", "model": "not a model"}).encode())
    file = ModelFile("lightgbm-text", bad.digest, bad.size, (), "lightgbm.sklearn.LGBMClassifier")
    with pytest.raises(RegistryError, match=r"Cannot load model 'm' version 2 \(lightgbm"):
        load_model(store, file, what="model 'm' version 2", allow_pickle=False)


def test_the_story_keeps_why_there_is_no_onnx_copy() -> None:
    from conveyor.registry.story import assemble

    def story(onnx):
        return assemble(
            project="p", model="m", status="registered", gates=[], task="t", target="y", onnx=onnx
        )["artifacts"]

    failed = story({"supported": False, "digest": None, "reason": "onnxmltools cannot convert"})
    assert failed == {
        "model": None,
        "onnx": None,
        "onnx_not_exported": "onnxmltools cannot convert",
    }
    exported = story({"supported": True, "digest": "ab" * 32, "size": 10, "max_abs_diff": 0.0})
    assert exported["onnx"]["digest"] == "ab" * 32 and exported["onnx_not_exported"] is None
