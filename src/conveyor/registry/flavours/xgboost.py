"""XGBoost models, saved as XGBoost's own JSON model (no pickle) inside a small JSON envelope
that names the estimator class, and exported to ONNX with onnxmltools."""

from __future__ import annotations

import copy
import json
from typing import Any

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours.base import class_name, infer, numeric_only, require, unloadable
from conveyor.store.trusted import XGBOOST_TYPES

FORMAT = "xgboost-json"


class XGBoost:
    name = "xgboost"
    formats: tuple[str, ...] = (FORMAT,)
    extra: str | None = "xgboost"
    trusted_types = XGBOOST_TYPES

    def owns(self, cls: str) -> bool:
        return cls.startswith("xgboost.")

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The booster's JSON, with whether it is a classifier and its classes.

        Raises:
            RegistryError: not an XGBoost scikit-learn estimator.
        """
        cls = class_name(model)
        if not hasattr(model, "get_booster"):
            raise RegistryError(
                f"The {cls} is not an XGBoost scikit-learn estimator (XGBClassifier, "
                "XGBRegressor); return one of those from the step, not a bare Booster."
            )
        raw = bytes(model.get_booster().save_raw(raw_format="json"))
        classes = getattr(model, "classes_", None)
        envelope = {
            "flavour": self.name,
            "class": cls,
            "kind": "classifier" if classes is not None else "regressor",
            "classes": None if classes is None else [_plain(c) for c in classes],
            "booster": raw.decode("utf-8"),
        }
        return FORMAT, json.dumps(envelope).encode("utf-8")

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

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        return infer(model, features, task)

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        from conveyor.registry.onnx import export_onnx

        reason = numeric_only(sample, "onnxmltools")
        if reason is None:
            return export_onnx(model, sample, task=task, convert=_convert, tool="onnxmltools")
        report = {"supported": False, "reason": reason, "max_abs_diff": None, "rows_checked": 0}
        return None, {**report, "inputs": [str(c) for c in sample.columns], "tolerance": None}


def _convert(model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
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


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
