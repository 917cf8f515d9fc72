"""PyTorch models: a step returns a ``torch.nn.Module`` whose ``forward`` takes one float tensor
(rows × the columns in its ``feature_names_in_``) and returns one tensor per row: the value of
a regressor, or a classifier's logits (one per class of its ``classes_``, or one for the second
of two classes). ``output_ = "probabilities"`` says the module returns probabilities already.

The module is saved as a ``torch.export`` archive (TorchScript is deprecated since PyTorch
2.9), with what the archive lacks (features, classes, output) in its extra file
``conveyor.json``. ``torch.export.load`` unpickles a weight or constant the archive marks as
pickled, and old-format archives with ``weights_only=False``; so an archive is opened only after
a check that it holds nothing but the files ``torch.export.save`` writes for plain tensors, no
entry marked as pickled, and sample inputs that load with ``weights_only=True``. Loading then
runs no pickled code. ``TorchModel`` wraps the loaded program behind the scikit-learn methods
the gates and the gateway call. The ONNX copy goes through ``torch.onnx.export`` and is kept only
when ONNX Runtime answers like the program.
"""

from __future__ import annotations

import copy
import io
import json
import re
import sys
import warnings
import zipfile
from typing import Any

import numpy as np

from conveyor.exceptions import RegistryError, UnsafeModelFile
from conveyor.registry.flavours.base import class_name, infer, not_exported, plain, require

FORMAT = "torch-export"
META = "conveyor.json"  # the archive's extra file with what the program itself lacks
OUTPUTS = ("logits", "probabilities")

# Every file torch.export.save writes for a program over plain tensors, under the archive's
# top folder; anything else (a legacy pickled state dict, a custom or opaque object, AOTInductor
# code) is refused before torch reads the archive.
_ARCHIVE_FILES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt|extra/conveyor\.json"
    r"|data/weights/model_weights_config\.json|data/constants/model_constants_config\.json"
    r"|data/weights/weight_\d+|data/constants/tensor_\d+"
)


class Torch:
    """The PyTorch flavour: ``torch.export`` archives behind ``TorchModel``."""

    name = "torch"
    formats: tuple[str, ...] = (FORMAT,)
    extra: str | None = "torch"
    trusted_types: frozenset[str] = frozenset()

    def owns(self, cls: str) -> bool:
        return cls.startswith("torch.") or cls == f"{__name__}.TorchModel"

    def claims(self, model: Any) -> bool:
        """Whether a fitted object is a PyTorch model (a user's ``nn.Module`` subclass lives in
        the user's module, so its class name alone does not tell)."""
        if isinstance(model, TorchModel):
            return True
        torch = sys.modules.get("torch")  # a module's class would have imported torch already
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The module as a ``torch.export`` archive with ``conveyor.json`` beside the program.

        Raises:
            RegistryError: the module lacks ``feature_names_in_``, has a malformed
                ``classes_`` or ``output_``, or cannot be exported for a float matrix input.
        """
        if isinstance(model, TorchModel):
            return FORMAT, model.data  # the archive it was loaded from: the same bytes
        torch = require("torch", "torch", f"the {class_name(model)}")
        meta = _describe(model)
        n = len(meta["features"])
        try:
            # A copy on the CPU in float32, as the gateway feeds it, in eval mode (dropout and
            # batch norm as they predict): the step's own module is left as it was.
            module = copy.deepcopy(model).to("cpu").float().eval()
        except Exception as exc:
            raise RegistryError(
                f"The {class_name(model)} cannot be copied to the CPU for saving: {_first(exc)}. "
                "Return the module alone, without references to data loaders or devices."
            ) from exc
        try:
            rows = torch.export.Dim("rows")
            program = torch.export.export(
                module, (torch.zeros(2, n),), dynamic_shapes=({0: rows},), strict=False
            )
        except Exception as exc:
            raise RegistryError(
                f"torch.export cannot export the {class_name(model)}: {_first(exc)}. Its forward "
                f"must take one float tensor of rows × {n} features and return one tensor, "
                "without Python control flow on the values."
            ) from exc
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={META: json.dumps(meta)})
        return FORMAT, buffer.getvalue()

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        """A ``TorchModel`` from an archive ``save`` wrote, checked before torch reads it.

        Raises:
            UnsafeModelFile: the archive holds a file or entry that torch would unpickle.
            RegistryError: PyTorch is not installed, or the archive cannot be loaded.
        """
        torch = require("torch", "torch", what)
        check_archive(data, what=what)
        extra = {META: ""}
        try:
            program = torch.export.load(io.BytesIO(data), extra_files=extra)
            meta = json.loads(extra[META])
            return TorchModel(program.module(), meta, data)
        except Exception as exc:
            raise RegistryError(
                f"Cannot load {what} (PyTorch, {fmt}): {type(exc).__name__}: {_first(exc)}. It "
                "may need the PyTorch version it was saved with; install that, or retrain and "
                "register a new version."
            ) from exc

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        return infer(model, features, task)

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        from conveyor.registry.onnx import export_onnx

        if not isinstance(model, TorchModel):
            return not_exported(sample, "only a saved PyTorch program is exported to ONNX")
        return export_onnx(model, sample, task=task, convert=_convert, tool="torch.onnx")


class TorchModel:
    """A ``torch.export`` program behind ``predict``/``predict_proba``/``classes_``.

    Rows go in as one float32 tensor of the ``feature_names_in_`` columns; a classifier's
    logits become probabilities by softmax (one column per class) or sigmoid (one column for
    the second of two classes), its labels are the classes of the largest probability.
    """

    def __init__(self, program: Any, meta: dict[str, Any], data: bytes) -> None:
        self.program = program
        self.data = data
        self.output = str(meta.get("output") or "logits")
        self.cls = str(meta.get("class") or "torch.nn.Module")
        self.feature_names_in_ = np.asarray(meta["features"], dtype=object)
        if meta.get("classes") is not None:
            self.classes_ = np.asarray(meta["classes"])

    def forward(self, X: Any) -> Any:
        """The program's output for rows of the feature columns, as float64 (rows, outputs)."""
        import torch

        if hasattr(X, "columns"):
            names = list(self.feature_names_in_)
            X = X if list(X.columns) == names else X[names]
            try:
                X = X.to_numpy(dtype=np.float32, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"the PyTorch model reads numbers only, and a column of "
                    f"{', '.join(names)} is not numeric: {exc}"
                ) from exc
        tensor = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        with torch.no_grad():
            out = self.program(tensor)
        out = np.asarray(out.detach().numpy(), dtype=np.float64)
        return out.reshape(len(out), -1)

    def predict_proba(self, X: Any) -> Any:
        if not hasattr(self, "classes_"):
            raise AttributeError(f"a {self.cls} regressor has no predict_proba")
        return _probabilities(self.forward(X), len(self.classes_), self.output)

    def predict(self, X: Any) -> Any:
        if hasattr(self, "classes_"):
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        return self.forward(X)[:, 0]


def check_archive(data: bytes, *, what: str) -> None:
    """Refuse an archive that ``torch.export.load`` would unpickle anything from.

    Raises:
        UnsafeModelFile: a file outside what ``torch.export.save`` writes for plain tensors, an
            entry marked ``use_pickle``, or sample inputs ``weights_only`` cannot load.
    """
    import torch

    def refuse(why: str) -> UnsafeModelFile:
        return UnsafeModelFile(
            f"Refusing to load {what}: its PyTorch archive {why}, which torch.export.load would "
            "unpickle (running code). Only archives Conveyor wrote are loaded; register the "
            "model again from a fresh run."
        )

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise RegistryError(f"Cannot load {what}: it is not a PyTorch archive ({exc}).") from exc
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or any("/" not in name for name in names):
        raise refuse(f"has {len(tops)} top folders")
    top = tops.pop() + "/"
    for name in names:
        if not _ARCHIVE_FILES.fullmatch(name[len(top) :]):
            raise refuse(f"holds {name!r}")
    if f"{top}models/model.json" not in names:
        raise refuse("has no program (models/model.json), so it is of an older format")
    for config in (
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
    ):
        if top + config in names:
            entries = json.loads(archive.read(top + config)).get("config") or {}
            pickled = [key for key, entry in entries.items() if entry.get("use_pickle")]
            if pickled:
                raise refuse(f"marks {pickled[0]!r} as pickled")
    sample = f"{top}data/sample_inputs/model.pt"
    if sample in names:
        try:
            torch.load(io.BytesIO(archive.read(sample)), weights_only=True)
        except Exception as exc:
            raise refuse(f"has sample inputs that are not plain tensors ({_first(exc)})") from exc


def _describe(model: Any) -> dict[str, Any]:
    """What the archive keeps besides the program, checked now rather than when served."""
    cls = class_name(model)
    features = getattr(model, "feature_names_in_", None)
    if features is None or len(features) == 0:
        raise RegistryError(
            f"The {cls} has no feature_names_in_: set it to the columns its forward reads, in "
            "order (model.feature_names_in_ = ['x1', 'x2', ...]), before returning it."
        )
    output = getattr(model, "output_", "logits")
    if output not in OUTPUTS:
        raise RegistryError(
            f"The {cls} has output_ = {output!r}; use 'logits' (the default: softmax or "
            "sigmoid makes the probabilities) or 'probabilities'."
        )
    classes = getattr(model, "classes_", None)
    if classes is not None:
        classes = [plain(c) for c in classes]
        if len(classes) < 2 or len(set(map(str, classes))) != len(classes):
            raise RegistryError(
                f"The {cls} has classes_ = {classes!r}; a classifier needs two or more "
                "distinct classes, in the order of its outputs."
            )
    return {
        "class": cls,
        "features": [str(f) for f in features],
        "classes": classes,
        "output": output,
    }


def _probabilities(out: Any, k: int, output: str) -> Any:
    if out.shape[1] == 1 and k == 2:
        p = out[:, 0] if output == "probabilities" else 1.0 / (1.0 + np.exp(-out[:, 0]))
        return np.column_stack([1.0 - p, p])
    if out.shape[1] != k:
        raise ValueError(
            f"the PyTorch model returns {out.shape[1]} values per row for {k} classes; return "
            "one logit per class (or one for the second of two classes)"
        )
    if output == "probabilities":
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _convert(model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
    """The program with its probabilities (softmax or sigmoid) and labels, through the
    TorchScript-based ``torch.onnx.export`` (the torch.export one needs onnxscript)."""
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from conveyor.registry.onnx import with_layout

    classes = list(getattr(model, "classes_", [])) if task == "classification" else []
    head = _Head(model.program, len(classes), model.output)
    names = ["label", "probabilities"] if classes else ["variable"]
    buffer = io.BytesIO()
    target: Any = buffer  # torch's annotation says a path; the exporter writes to files too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            head,
            (torch.zeros(2, len(columns)),),
            target,
            input_names=["X"],
            output_names=["index", "probabilities"] if classes else ["variable"],
            dynamic_axes={name: {0: "rows"} for name in ["X", *names, "index"]},
            training=torch.onnx.TrainingMode.PRESERVE,  # an exported program cannot train()
            dynamo=False,
        )
    converted = onnx.load_from_string(buffer.getvalue())
    if classes:
        # labels as the classes themselves, gathered by the index of the largest probability
        values = np.asarray(classes)
        if values.dtype.kind in "US":
            values = values.astype(object)
        elif values.dtype.kind in "iub":
            values = values.astype(np.int64)
        graph = converted.graph
        graph.initializer.append(numpy_helper.from_array(values, "classes"))
        graph.node.append(helper.make_node("Gather", ["classes", "index"], ["label"], axis=0))
        kind = (
            onnx.TensorProto.STRING
            if values.dtype == object
            else (onnx.TensorProto.INT64 if values.dtype == np.int64 else onnx.TensorProto.DOUBLE)
        )
        label = helper.make_tensor_value_info("label", kind, ["rows"])
        probabilities = next(o for o in graph.output if o.name == "probabilities")
        del graph.output[:]
        graph.output.extend([label, probabilities])
    return with_layout(converted, columns, kinds, "matrix", task)


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _head_class() -> Any:
    import torch

    class Head(torch.nn.Module):
        """The program with the probabilities and labels ``TorchModel`` computes, for ONNX."""

        def __init__(self, program: Any, k: int, output: str) -> None:
            super().__init__()
            self.program = program
            self.k = k
            self.output = output

        def forward(self, x: Any) -> Any:
            out = self.program(x)
            out = out.reshape(out.shape[0], -1)
            if self.k == 0:
                return out[:, 0]
            if out.shape[1] == 1:
                p = out[:, 0] if self.output == "probabilities" else torch.sigmoid(out[:, 0])
                proba = torch.stack([1 - p, p], dim=1)
            else:
                proba = out if self.output == "probabilities" else torch.softmax(out, dim=1)
            return torch.argmax(proba, dim=1), proba

    return Head


def _Head(program: Any, k: int, output: str) -> Any:  # noqa: N802  (a class made on demand)
    return _head_class()(program, k, output)
