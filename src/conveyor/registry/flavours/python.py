"""Custom Python models, as MLflow's pyfunc: a class of the project's own code with
``predict(frame)`` (and, for a classifier, ``predict_proba(frame)`` with ``classes_``) and
``feature_names_in_``, that writes the files it needs in ``save(folder)`` and is rebuilt from them
by its classmethod ``load(folder)``.

It is saved as a zip of ``MANIFEST.json`` (the class by its import path, each file with its
sha256, the features and classes) and the files; nothing is pickled. The manifest never decides
what is imported: a model's class is imported only when conveyor.yaml names it
(``model: {trusted_types: [churn.model.Churn]}``), from the project's folder
(``base.project_code``). No ONNX copy: the code is the user's, so there is nothing a
converter could read.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import shutil
import tempfile
import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.exceptions import ModelTampered, RegistryError, UnsafeModelFile
from conveyor.registry.flavours.base import (
    class_name,
    infer,
    missing_module,
    not_exported,
    plain,
    project_code,
)

FORMAT = "python-model"
MANIFEST = "MANIFEST.json"
NO_ONNX = "a custom Python model runs the project's own code, which no converter reads"


class Python:
    """The custom Python model flavour: a manifest and files behind ``PythonModel``."""

    name = "python"
    formats: tuple[str, ...] = (FORMAT,)
    extra: str | None = None
    trusted_types: frozenset[str] = frozenset()

    def owns(self, cls: str) -> bool:
        return cls == f"{__name__}.PythonModel"

    def claims(self, model: Any) -> bool:
        """A ``PythonModel``, or an object with ``predict``, ``save`` and a class ``load`` that is
        not a scikit-learn estimator (those have ``get_params`` and go to skops)."""
        if isinstance(model, PythonModel):
            return True
        kind = type(model)
        return (
            callable(getattr(model, "predict", None))
            and callable(getattr(model, "save", None))
            and callable(getattr(kind, "load", None))
            and not hasattr(model, "get_params")
            and not kind.__module__.startswith(("torch", "conveyor."))
        )

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The manifest and the files the model's ``save(folder)`` wrote, as one zip.

        Raises:
            RegistryError: no ``feature_names_in_``, or ``save`` failed or wrote no file.
        """
        if isinstance(model, PythonModel):
            return FORMAT, model.data  # the archive it was loaded from: the same bytes
        cls = class_name(model)
        features = getattr(model, "feature_names_in_", None)
        if features is None or len(features) == 0:
            raise RegistryError(
                f"The custom model {cls} has no feature_names_in_: set it to the columns its "
                "predict reads (self.feature_names_in_ = ['x1', 'x2', ...])."
            )
        classes = getattr(model, "classes_", None)
        with tempfile.TemporaryDirectory(prefix="conveyor-python-model-") as tmp:
            folder = Path(tmp)
            try:
                model.save(folder)
            except Exception as exc:
                raise RegistryError(
                    f"The custom model {cls} failed in save({str(folder)!r}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            files = {
                path.relative_to(folder).as_posix(): path.read_bytes()
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            }
        manifest = {
            "flavour": self.name,
            "class": cls,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "features": [str(f) for f in features],
            "classes": None if classes is None else [plain(c) for c in classes],
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            for name, data in files.items():
                archive.writestr(f"files/{name}", data)
        return FORMAT, buffer.getvalue()

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        """The model rebuilt by its class's ``load(folder)``, once conveyor.yaml names the class.

        Raises:
            UnsafeModelFile: conveyor.yaml does not name the class in ``model.trusted_types``.
            ModelTampered: a file does not match the sha256 in the manifest.
            RegistryError: the class cannot be imported from the project, or its load failed.
        """
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            manifest = json.loads(archive.read(MANIFEST))
            cls = str(manifest["class"])
            files = dict(manifest["files"])
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise RegistryError(
                f"Cannot load {what}: it is not a custom model archive with a {MANIFEST} "
                f"({type(exc).__name__}: {exc}). Register the model again."
            ) from exc
        if cls not in trusted_extra:
            raise UnsafeModelFile(
                f"{what} is a custom Python model of class {cls}, and Conveyor imports a "
                "model's class only when conveyor.yaml names it. If it is yours, add it: "
                f"model: {{trusted_types: [{cls}]}}."
            )
        model_class = import_class(cls, what=what)
        folder = Path(tempfile.mkdtemp(prefix="conveyor-python-model-"))
        try:
            for name, digest in files.items():
                target = (folder / name).resolve()
                if folder.resolve() not in target.parents:
                    raise UnsafeModelFile(f"{what} names the file {name!r} outside its folder.")
                content = archive.read(f"files/{name}")
                if hashlib.sha256(content).hexdigest() != digest:
                    raise ModelTampered(
                        f"The file {name!r} of {what} does not match the sha256 in its "
                        "manifest; it will not be loaded. Register the model again."
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            try:
                model = model_class.load(folder)
            except Exception as exc:
                raise RegistryError(
                    f"Cannot load {what}: {cls}.load(folder) raised {type(exc).__name__}: {exc}"
                ) from exc
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return PythonModel(model, manifest, data, folder)

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        return infer(model, features, task)

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        return not_exported(sample, NO_ONNX)


class PythonModel:
    """A custom model behind the methods the gates and the gateway call: ``predict`` (and
    ``predict_proba`` when the class has it) always get a DataFrame of ``feature_names_in_``,
    even from the gateway's float matrix. The files it was loaded from are removed with it."""

    def __init__(self, model: Any, manifest: dict[str, Any], data: bytes, folder: Path) -> None:
        self.model = model
        self.data = data
        self.cls = str(manifest["class"])
        features = getattr(model, "feature_names_in_", None)
        if features is None:
            features = manifest.get("features") or []
        self.feature_names_in_ = np.asarray([str(f) for f in features], dtype=object)
        classes = getattr(model, "classes_", None)
        if classes is None:
            classes = manifest.get("classes")
        if classes is not None:
            self.classes_ = np.asarray(classes)
        if callable(getattr(model, "predict_proba", None)):
            self.predict_proba = self._predict_proba
        weakref.finalize(self, shutil.rmtree, folder, True)

    def _frame(self, X: Any) -> Any:
        if hasattr(X, "columns"):
            return X
        import pandas as pd

        return pd.DataFrame(np.asarray(X), columns=list(self.feature_names_in_))

    def predict(self, X: Any) -> Any:
        return np.asarray(self.model.predict(self._frame(X)))

    def _predict_proba(self, X: Any) -> Any:
        return np.asarray(self.model.predict_proba(self._frame(X)), dtype=np.float64)


def import_class(spec: str, *, what: str) -> Any:
    """The class ``module.QualName`` (or ``module:QualName``), imported with the project's code
    on ``sys.path``.

    Raises:
        RegistryError: the module is not importable from the project, or has no such class.
    """
    project_code()
    module_name, sep, qualname = spec.partition(":")
    candidates = [(module_name, qualname)] if sep else _splits(spec)
    last: ModuleNotFoundError | None = None
    for module_name, qualname in candidates:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise RegistryError(
                    f"The model class {spec} of {what}: its module {module_name!r} imports "
                    f"{exc.name!r}, which is not installed here. Install it (the project's "
                    "requirements), then load the model again."
                ) from exc
            last = exc
            continue
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if isinstance(target, type):
            return target
        raise RegistryError(
            f"The model class {spec} of {what} is not in module {module_name!r} any more. "
            "Restore it, or retrain and register a new version."
        )
    raise missing_module(what, spec, last.name if last is not None else spec) from last


def _splits(spec: str) -> list[tuple[str, str]]:
    """``a.b.C.D`` as (module, qualname) pairs, the longest module first."""
    parts = spec.split(".")
    return [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
