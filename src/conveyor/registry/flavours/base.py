"""The interface every model flavour implements, and what flavours share."""

from __future__ import annotations

import importlib
import json
import os
import sys
from abc import ABC, abstractmethod
from typing import Any, Protocol

from conveyor.exceptions import RegistryError


class Flavour(Protocol):
    """What the registry needs of a framework.

    ``formats`` are the model file formats it writes and reads; ``trusted_types`` the exact
    names a skops file of one of its models may use (``store/trusted.py``).
    """

    name: str
    formats: tuple[str, ...]
    extra: str | None  # the pip extra that installs the framework; None when always installed
    trusted_types: frozenset[str]

    def owns(self, cls: str) -> bool:
        """Whether a model of this full class name is this flavour's (without importing it)."""
        ...

    def claims(self, model: Any) -> bool:
        """Whether a fitted object is this flavour's (``owns`` its class, or is of a kind only
        the object tells, such as a user's ``torch.nn.Module`` subclass)."""
        ...

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The model as ``(format, bytes)`` in a format ``load`` reads without running code;
        ``trusted_extra`` are the exact names the user trusts (``model.trusted_types``)."""
        ...

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        """A model object with ``predict`` (and ``predict_proba``, ``classes_`` for a
        classifier) and ``feature_names_in_``, from bytes ``save`` wrote."""
        ...

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        """The input and output schema requests are checked against."""
        ...

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        """ONNX bytes checked against the model on ``sample``, or None and the reason."""
        ...


# The variable conveyor.project.use_code() sets to the project's folder (the registry does not
# import conveyor.project; tests/flavours checks the two names agree).
PROJECT_ROOT_ENV = "CONVEYOR_PROJECT_ROOT"


def project_code() -> str | None:
    """The project folder whose code models import here (``CONVEYOR_PROJECT_ROOT``, set where
    Conveyor loads the project and inherited by its child processes), put on ``sys.path`` with
    its ``src/`` as for a pipeline step; None when no project was named."""
    root = os.environ.get(PROJECT_ROOT_ENV)
    if not root:
        return None
    for path in (root, os.path.join(root, "src")):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    return root


def missing_module(what: str, cls: str, name: str | None) -> RegistryError:
    """The error of a model whose class's module cannot be imported here."""
    root = project_code()
    where = f"the project folder {root}" if root else "the current folder (no project named)"
    return RegistryError(
        f"Cannot load {what} ({cls}): it needs the module {name!r}, which is not importable "
        f"from {where} or sys.path. Run Conveyor from the project folder (or with --project), "
        "or install the package that provides it."
    )


def class_name(model: Any) -> str:
    """``module.QualName`` of a model's type."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def require(module: str, extra: str, what: str) -> Any:
    """Import a framework, or say which extra installs it.

    Raises:
        RegistryError: the framework is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RegistryError(
            f"{what} is a {module} model, and {module} is not installed here. Install it with "
            f"pip install 'conveyor-ml[{extra}]' (or uv sync --extra {extra})."
        ) from exc


def infer(model: Any, features: Any, task: str) -> dict[str, Any]:
    """The signature from the feature columns and the model's classes."""
    from conveyor.evaluate.steps import model_classes
    from conveyor.registry.signature import infer_signature

    classes = model_classes(model) if task == "classification" else None
    return infer_signature(features, task=task, classes=classes)


def numeric_only(sample: Any, tool: str) -> str | None:
    """Why ``tool`` cannot export a model over these columns, or None when all are numeric."""
    import pandas.api.types as ptypes

    for name in sample.columns:
        dtype = sample[name].dtype
        if not (ptypes.is_numeric_dtype(dtype) or ptypes.is_bool_dtype(dtype)):
            return (
                f"column {name!r} has the dtype {dtype}; {tool} exports models over numeric "
                "columns only"
            )
    return None


def unloadable(what: str, cls: str, fmt: str, exc: Exception) -> RegistryError:
    return RegistryError(
        f"Cannot load {what} ({cls or 'unknown class'}, {fmt}): {type(exc).__name__}: {exc}. "
        "It may need the framework version it was saved with; install that, or retrain and "
        "register a new version."
    )


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON writes."""
    return value.item() if hasattr(value, "item") else value


def classes_of(model: Any) -> list[Any] | None:
    """``classes_`` as plain values, or None for a regressor."""
    classes = getattr(model, "classes_", None)
    return None if classes is None else [plain(c) for c in classes]


def not_exported(sample: Any, reason: str) -> tuple[None, dict[str, Any]]:
    """The ONNX report of a model that is not exported, keeping why (for the card)."""
    columns = [str(c) for c in getattr(sample, "columns", ())]
    report = {"supported": False, "reason": reason, "max_abs_diff": None, "rows_checked": 0}
    return None, {**report, "inputs": columns, "tolerance": None}


class BoosterFlavour(ABC):
    """What the XGBoost and LightGBM flavours share: a framework's own model text inside a JSON
    envelope that keeps the estimator's class and classes, a signature from the feature columns,
    and an ONNX copy through onnxmltools over numeric columns."""

    name: str
    format: str
    module: str  # the framework's package, whose classes this flavour owns
    formats: tuple[str, ...]
    extra: str | None
    trusted_types: frozenset[str]

    def owns(self, cls: str) -> bool:
        return cls.startswith(self.module + ".")

    def claims(self, model: Any) -> bool:
        return self.owns(class_name(model))

    def envelope(self, estimator: Any, **parts: Any) -> bytes:
        """The JSON envelope around the framework's own model text (``parts``)."""
        fields = {
            "flavour": self.name,
            "class": class_name(estimator),
            "classes": classes_of(estimator),
        }
        return json.dumps({**fields, **parts}).encode("utf-8")

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        return infer(model, features, task)

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        from conveyor.registry.onnx import export_onnx

        reason = numeric_only(sample, "onnxmltools")
        if reason is not None:
            return not_exported(sample, reason)
        return export_onnx(model, sample, task=task, convert=self.convert, tool="onnxmltools")

    @abstractmethod
    def convert(self, model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
        """ONNX bytes of the model through onnxmltools, with the column layout."""
