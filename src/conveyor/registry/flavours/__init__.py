"""Model flavours: one small interface per framework, so the registry, the gates and the gateway
handle scikit-learn, XGBoost, LightGBM, PyTorch and custom Python models alike.

A flavour saves a fitted model as bytes in a format that loads without running pickled code
(skops for scikit-learn, the framework's own JSON or text model for XGBoost and LightGBM, a
checked ``torch.export`` archive for PyTorch, a manifest and files for a custom model whose class
conveyor.yaml names), loads it back, infers its signature, and exports it to ONNX when the export
predicts like the model. Frameworks are imported only when one of their models is met; a model
whose framework is not installed gets an error naming the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours.base import Flavour, class_name

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FLAVOURS",
    "Flavour",
    "class_name",
    "flavour_of",
    "for_class",
    "for_format",
    "own_format",
]


def _all() -> tuple[Flavour, ...]:
    from conveyor.registry.flavours.lightgbm import LightGBM
    from conveyor.registry.flavours.python import Python
    from conveyor.registry.flavours.sklearn import ScikitLearn
    from conveyor.registry.flavours.torch import Torch
    from conveyor.registry.flavours.xgboost import XGBoost

    # scikit-learn last: it takes every model no other flavour claims
    return (XGBoost(), LightGBM(), Torch(), Python(), ScikitLearn())


FLAVOURS: tuple[Flavour, ...] = _all()


def for_class(cls: str) -> Flavour:
    """The flavour of a model by its full class name (``xgboost.sklearn.XGBClassifier``);
    scikit-learn for anything no other flavour claims."""
    return next(f for f in FLAVOURS if f.owns(cls))


def flavour_of(model: Any) -> Flavour:
    """The flavour of a fitted model object."""
    return next(f for f in FLAVOURS if f.claims(model))


def own_format(model: Any) -> Flavour | None:
    """The flavour that stores ``model`` in its own format rather than as skops (a step's
    output of PyTorch or a custom class), or None for what skops stores."""
    flavour = flavour_of(model)
    return flavour if flavour.name in ("torch", "python") else None


def for_format(fmt: str) -> Flavour:
    """The flavour that writes model files of format ``fmt``.

    Raises:
        RegistryError: no flavour writes that format.
    """
    for flavour in FLAVOURS:
        if fmt in flavour.formats:
            return flavour
    known = ", ".join(f for flavour in FLAVOURS for f in flavour.formats)
    raise RegistryError(f"No model flavour reads the format {fmt!r}; Conveyor reads {known}.")
