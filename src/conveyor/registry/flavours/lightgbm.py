"""LightGBM models, saved as LightGBM's own text model (no pickle) inside a small JSON envelope
that keeps what the text lacks (the estimator's classes), loaded as a ``Booster`` behind the
scikit-learn methods the gates and the gateway call, and exported to ONNX with onnxmltools."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours.base import BoosterFlavour, class_name, require, unloadable
from conveyor.store.trusted import LIGHTGBM_TYPES

FORMAT = "lightgbm-text"


class LightGBM(BoosterFlavour):
    name = "lightgbm"
    format = FORMAT
    module = "lightgbm"
    formats: tuple[str, ...] = (FORMAT,)
    extra: str | None = "lightgbm"
    trusted_types = LIGHTGBM_TYPES

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The booster's text model with the estimator's class and classes.

        Raises:
            RegistryError: not a fitted LightGBM scikit-learn estimator.
        """
        booster = getattr(model, "booster_", None)
        if booster is None:
            raise RegistryError(
                f"The {class_name(model)} is not a fitted LightGBM scikit-learn estimator "
                "(LGBMClassifier, LGBMRegressor); return one of those from the step, not a bare "
                "Booster."
            )
        return FORMAT, self.envelope(model, model=booster.model_to_string())

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        lgb = require("lightgbm", "lightgbm", what)
        try:
            envelope = json.loads(data)
            booster = lgb.Booster(model_str=envelope["model"])
            return LightGBMModel(booster, envelope.get("classes"), str(envelope.get("class")))
        except Exception as exc:
            raise unloadable(what, "lightgbm", fmt, exc) from exc

    def convert(self, model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        from conveyor.registry.onnx import with_layout

        converted = convert_lightgbm(
            model, initial_types=[("X", FloatTensorType([None, len(columns)]))], zipmap=False
        )
        return with_layout(converted, columns, kinds, "matrix", task)


class LightGBMModel:
    """A LightGBM booster behind ``predict``/``predict_proba``/``classes_``, as registered.

    The booster reads a DataFrame as LightGBM itself does (its ``pandas_categorical`` decides
    how category columns are coded), so a frame the gateway builds differently from the
    training frame fails here exactly as it would when served.
    """

    def __init__(self, booster: Any, classes: list[Any] | None, cls: str) -> None:
        self.booster = booster
        self.cls = cls
        self.feature_names_in_ = np.asarray(booster.feature_name(), dtype=object)
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def predict_proba(self, X: Any) -> Any:
        if not hasattr(self, "classes_"):
            raise AttributeError(f"a {self.cls} regressor has no predict_proba")
        out = np.asarray(self.booster.predict(X), dtype=np.float64)
        return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out

    def predict(self, X: Any) -> Any:
        if hasattr(self, "classes_"):
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        return np.asarray(self.booster.predict(X), dtype=np.float64)
