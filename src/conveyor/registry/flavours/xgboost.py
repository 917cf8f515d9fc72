"""XGBoost models, saved as XGBoost's own JSON model (no pickle) inside a small JSON envelope
that names the estimator class, and exported to ONNX with onnxmltools."""

from __future__ import annotations

import copy
import json
from typing import Any

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours.base import BoosterFlavour, class_name, require, unloadable
from conveyor.store.trusted import XGBOOST_TYPES

FORMAT = "xgboost-json"


class XGBoost(BoosterFlavour):
    name = "xgboost"
    format = FORMAT
    module = "xgboost"
    formats: tuple[str, ...] = (FORMAT,)
    extra: str | None = "xgboost"
    trusted_types = XGBOOST_TYPES

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The booster's JSON, with whether it is a classifier and its classes.

        Raises:
            RegistryError: not an XGBoost scikit-learn estimator.
        """
        if not hasattr(model, "get_booster"):
            raise RegistryError(
                f"The {class_name(model)} is not an XGBoost scikit-learn estimator "
                "(XGBClassifier, XGBRegressor); return one of those from the step, not a bare "
                "Booster."
            )
        raw = bytes(model.get_booster().save_raw(raw_format="json"))
        kind = "classifier" if getattr(model, "classes_", None) is not None else "regressor"
        return FORMAT, self.envelope(model, kind=kind, booster=raw.decode("utf-8"))

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        xgb = require("xgboost", "xgboost", what)
        try:
            envelope = json.loads(data)
            kind, booster = envelope["kind"], envelope["booster"]
            model = xgb.XGBClassifier() if kind == "classifier" else xgb.XGBRegressor()
            model.load_model(bytearray(booster.encode("utf-8")))
        except Exception as exc:
            raise unloadable(what, "xgboost", fmt, exc) from exc
        return model

    def convert(self, model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        from conveyor.registry.onnx import with_layout

        # onnxmltools reads features named f0, f1, ...: a copy of the booster without names.
        booster = model.get_booster().copy()
        booster.feature_names = None
        unnamed = copy.copy(model)
        unnamed._Booster = booster
        converted = convert_xgboost(
            unnamed, initial_types=[("X", FloatTensorType([None, len(columns)]))]
        )
        return with_layout(converted, columns, kinds, "matrix", task)
