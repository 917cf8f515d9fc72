"""A fast-serving ONNX copy of a model, used only when it predicts like the native model.

A converter can be silently wrong (skl2onnx turns a HistGradientBoosting model's native
categorical splits into plain thresholds, for one), so an export is checked: ONNX Runtime and
the native model both predict the holdout sample, and a difference beyond the tolerance makes
the export unsupported rather than a faster way to be wrong. The column layout the ONNX graph
reads is written into its metadata, so ``OnnxModel`` needs nothing but the bytes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from conveyor.exceptions import RegistryError

__all__ = ["TOLERANCE", "Converter", "OnnxModel", "export_onnx", "with_layout"]

TOLERANCE = 1e-4  # absolute, on probabilities; relative to the largest value for regression
_TASKS = ("classification", "regression")
_META_COLUMNS = "conveyor.columns"
_META_KINDS = "conveyor.kinds"
_META_LAYOUT = "conveyor.layout"
_META_TASK = "conveyor.task"


# A converter: (model, columns, kinds, task) -> ONNX bytes with the layout in the metadata.
Converter = Callable[[Any, list[str], list[str], str], bytes]


def export_onnx(
    model: Any, sample: Any, *, task: str, convert: Converter | None = None, tool: str = "skl2onnx"
) -> tuple[bytes | None, dict[str, Any]]:
    """Convert a fitted model to ONNX and check that it predicts ``sample`` like the model.

    Numeric columns become float tensors and string or categorical columns string tensors,
    one ``[None, 1]`` input per column; a bare estimator over numeric columns gets a single
    ``[None, n]`` input instead, because skl2onnx gives estimators one input.

    Args:
        model: the fitted scikit-learn model (estimator or pipeline).
        sample: holdout features, as the model reads them.
        task: ``"classification"`` (compares ``predict_proba`` and labels) or
            ``"regression"`` (compares ``predict``).
        convert: the converter of the model's flavour (``registry/flavours/``); by default
            skl2onnx's.
        tool: the converter's name, for the reason when it fails.

    Returns:
        ``(bytes, report)``, or ``(None, report)`` when the model cannot be exported
        faithfully. The report: ``supported``, ``reason``, ``max_abs_diff``, ``rows_checked``,
        ``inputs`` (the columns the ONNX model reads) and ``tolerance``.

    Raises:
        RegistryError: an unknown task, or a sample that is not a non-empty DataFrame.
    """
    import pandas as pd

    if task not in _TASKS:
        raise RegistryError(f"Unknown task {task!r}; use 'classification' or 'regression'.")
    if not isinstance(sample, pd.DataFrame) or sample.shape[0] == 0 or sample.shape[1] == 0:
        shape = sample.shape if isinstance(sample, pd.DataFrame) else type(sample).__name__
        raise RegistryError(
            f"The sample to check an ONNX export against is empty ({shape}); pass the holdout "
            "features as a DataFrame with at least one row."
        )
    columns = list(sample.columns)
    report: dict[str, Any] = {
        "supported": False,
        "reason": None,
        "max_abs_diff": None,
        "rows_checked": 0,
        "inputs": [str(c) for c in columns],
        "tolerance": TOLERANCE,
    }
    kinds = _column_kinds(sample)
    if isinstance(kinds, str):
        return None, {**report, "reason": kinds}
    cls = type(model).__name__
    try:
        native = _native(model, sample, task)
    except Exception as exc:
        return None, {**report, "reason": f"the {cls} cannot predict the sample: {_first(exc)}"}
    try:
        data = (convert or _convert)(model, columns, kinds, task)
    except Exception as exc:
        return None, {**report, "reason": f"{tool} cannot convert the {cls}: {_first(exc)}"}
    try:
        onnx_model = OnnxModel(data)
        return _compare(native, onnx_model, sample, task, data, report)
    except Exception as exc:
        reason = f"ONNX Runtime cannot run the converted {cls}: {_first(exc)}"
        return None, {**report, "reason": reason}


class OnnxModel:
    """An ONNX Runtime session that reads the columns of a DataFrame, as ``export_onnx`` wrote.

    ``input_names`` are the frame columns it reads (in order). Per call it only takes those
    columns as NumPy arrays, so its overhead is a few microseconds per column.
    """

    def __init__(
        self,
        data: bytes,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        what: str | None = None,
    ) -> None:
        """Build the session (CPU only), refusing a model that reads files beside it.

        Args:
            data: the ONNX model's bytes, as ``export_onnx`` returned them.
            intra_op_threads: threads inside one operator; 1 suits a gateway that runs many
                requests at once, more suits large batches.
            inter_op_threads: threads across operators.
            what: the version the bytes belong to (``"model 'num' version 3"``), for errors.

        Raises:
            RegistryError: the bytes are not an ONNX model ONNX Runtime can run, or a tensor
                in them keeps its data in an external file.
        """
        import tempfile

        import onnxruntime as ort

        _refuse_external_data(data, what)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings go to stderr
        # A second guard: were a tensor with external data to slip past the check, ONNX Runtime
        # would look for its file in this empty folder, not in the process's working directory.
        with tempfile.TemporaryDirectory(prefix="conveyor-onnx-") as empty:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", empty
            )
            try:
                self._session = ort.InferenceSession(
                    data, options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise RegistryError(
                    f"Cannot load the ONNX model{_of(what)}: {_first(exc)}"
                ) from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        graph_inputs = self._session.get_inputs()
        if _META_COLUMNS in meta:
            columns = json.loads(meta[_META_COLUMNS])
            kinds = json.loads(meta[_META_KINDS])
            self.layout = meta.get(_META_LAYOUT, "columns")
        else:  # an ONNX file from elsewhere: one column per graph input, typed by the graph
            columns = [i.name for i in graph_inputs]
            kinds = ["string" if i.type == "tensor(string)" else "number" for i in graph_inputs]
            self.layout = "columns"
        self.task: str | None = meta.get(_META_TASK)
        self.input_names: list[str] = list(columns)
        self._kinds: list[str] = list(kinds)
        self._feed_names = [i.name for i in graph_inputs]
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        self._label = names[0]
        self._proba = "probabilities" if "probabilities" in names else names[-1]

    def predict_proba(self, frame: Any) -> Any:
        """Class probabilities, shape (rows, classes), in the order of the model's classes.

        Raises:
            RegistryError: the model is a regressor, or the frame lacks a column.
        """
        import numpy as np

        if self.task == "regression":
            raise RegistryError("This ONNX model is a regressor; it has no predict_proba.")
        out = self._session.run([self._proba], self._feed(frame))[0]
        return np.asarray(out, dtype=np.float64)

    def predict(self, frame: Any) -> Any:
        """Predicted labels (classification) or values (regression), shape (rows,).

        Raises:
            RegistryError: the frame lacks a column the model reads.
        """
        import numpy as np

        out = self._session.run([self._label], self._feed(frame))[0]
        out = np.asarray(out)
        if self.task == "regression" or out.dtype.kind == "f":
            return out.reshape(-1).astype(np.float64, copy=False)
        return out.reshape(-1)

    def run(self, feed: dict[str, Any]) -> tuple[Any, Any]:
        """Labels (or values) and, for a classifier, probabilities, in one session call."""
        import numpy as np

        if self.task == "regression":
            out = self._session.run([self._label], feed)[0]
            return np.asarray(out).reshape(-1).astype(np.float64, copy=False), None
        labels, proba = self._session.run([self._label, self._proba], feed)
        return np.asarray(labels).reshape(-1), np.asarray(proba, dtype=np.float64)

    def feed_matrix(self, block: Any) -> dict[str, Any]:
        """The feed for a float matrix whose columns are ``input_names`` (matrix layout)."""
        import numpy as np

        with np.errstate(over="ignore"):  # beyond float32 becomes inf, as the tree reads it
            return {self._feed_names[0]: np.asarray(block, dtype=np.float32)}

    def feed_columns(self, arrays: list[Any]) -> dict[str, Any]:
        """The feed for one array per ``input_names`` column, as the signature converts them."""
        import numpy as np

        feed = {}
        for name, values, kind in zip(self._feed_names, arrays, self._kinds, strict=True):
            if kind == "string":
                feed[name] = values.astype(str).reshape(-1, 1)
            else:
                feed[name] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
        return feed

    def _feed(self, frame: Any) -> dict[str, Any]:
        import numpy as np

        try:
            if self.layout == "matrix":
                cols = self.input_names
                block = frame if list(frame.columns) == cols else frame[cols]
                return {self._feed_names[0]: block.to_numpy(dtype=np.float32, na_value=np.nan)}
            return {
                name: _column_array(frame[col], kind)
                for name, col, kind in zip(
                    self._feed_names, self.input_names, self._kinds, strict=True
                )
            }
        except KeyError as exc:
            raise RegistryError(
                f"The frame lacks the column {exc} that the ONNX model reads; it reads "
                f"{', '.join(self.input_names)}."
            ) from None


def _of(what: str | None) -> str:
    return f" of {what}" if what else ""


def _refuse_external_data(data: bytes, what: str | None) -> None:
    """Refuse a model any of whose tensors keeps its data in a file outside the bytes.

    ONNX Runtime refuses an absolute location or one with ``..``, but reads a relative one
    from the process's working directory: a crafted artifact could pull a gateway's local file
    into a tensor (and from there into predictions). Our exports never use external data.

    Raises:
        RegistryError: the bytes do not parse as ONNX, or a tensor uses external data.
    """
    import onnx

    try:
        # Parsed from the bytes only: nothing here reads a file, external or not.
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:
        raise RegistryError(f"Cannot load the ONNX model{_of(what)}: {_first(exc)}") from exc
    for tensor in _all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            name = tensor.name or "(unnamed)"
            raise RegistryError(
                f"The ONNX model{_of(what)} is refused: its tensor {name!r} keeps its data in an "
                "external file, which would be read from the server's disk. Export the model "
                "with every tensor inside the file (conveyor's exports always are)."
            )


def _all_tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto of a model: onnx's own walk (private, so guarded) and ours.

    Ours adds what onnx's skips: sparse initializers and sparse tensor attributes (their
    values and indices are tensors that can be external too), and training graphs.
    """
    try:
        from onnx.external_data_helper import _get_all_tensors

        yield from _get_all_tensors(proto)
    except (ImportError, AttributeError, TypeError):
        pass  # a later onnx moved it: our walk below covers the same ground
    graphs = [proto.graph]
    for info in proto.training_info:
        graphs += [info.initialization, info.algorithm]
    for graph in graphs:
        yield from _graph_tensors(graph)
    for function in proto.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    """The tensors in nodes' attributes, down through If/Loop/Scan subgraphs."""
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in [attr.sparse_tensor, *attr.sparse_tensors]:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _column_array(col: Any, kind: str) -> Any:
    import numpy as np

    values = col.to_numpy()
    if kind == "string":
        # String tensors have no missing value; NaN becomes "nan", which is also how skl2onnx
        # writes a NaN category that an encoder learned.
        return values.astype(str).reshape(-1, 1)
    if values.dtype.kind not in "fiub":  # nullable extension dtypes hold pd.NA
        values = col.to_numpy(dtype=np.float32, na_value=np.nan)
    return values.astype(np.float32, copy=False).reshape(-1, 1)


def _column_kinds(sample: Any) -> list[str] | str:
    """ "number" or "string" for each column, or the reason a column cannot be an ONNX input."""
    import pandas as pd
    from pandas.api import types as ptypes

    kinds = []
    for name, dtype in sample.dtypes.items():
        if not isinstance(name, str):
            return f"column {name!r} is not named by a string; ONNX inputs need string names"
        if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):
            kinds.append("string")
        elif ptypes.is_object_dtype(dtype):
            inferred = ptypes.infer_dtype(sample[name], skipna=True)
            if inferred not in ("string", "empty"):
                return f"column {name!r} holds {inferred} values; ONNX inputs are numbers or text"
            kinds.append("string")
        elif ptypes.is_bool_dtype(dtype) or ptypes.is_numeric_dtype(dtype):
            kinds.append("number")
        else:
            return f"column {name!r} has the dtype {dtype}; ONNX inputs are numbers or strings"
    return kinds


def _convert(model: Any, columns: list[str], kinds: list[str], task: str) -> bytes:
    """The ONNX bytes, with the column layout in the model's metadata."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    options = {id(model): {"zipmap": False}} if task == "classification" else None
    layouts: list[tuple[str, list[tuple[str, Any]]]] = []
    if all(k == "number" for k in kinds):
        layouts.append(("matrix", [("X", FloatTensorType([None, len(columns)]))]))
    per_column = [
        (c, StringTensorType([None, 1]) if k == "string" else FloatTensorType([None, 1]))
        for c, k in zip(columns, kinds, strict=True)
    ]
    layouts.append(("columns", per_column))
    first_error: Exception | None = None
    for layout, initial_types in layouts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # converter chatter is not a failure
                converted = convert_sklearn(
                    model,
                    initial_types=initial_types,
                    options=options,
                    custom_conversion_functions=_fixed_converters(),
                )
        except Exception as exc:
            first_error = first_error or exc
            continue
        return with_layout(converted, columns, kinds, layout, task)
    assert first_error is not None
    raise first_error


def with_layout(
    converted: Any, columns: list[str], kinds: list[str], layout: str, task: str
) -> bytes:
    """The bytes of a converted ONNX model with the column layout ``OnnxModel`` reads."""
    import onnx

    onnx.helper.set_model_props(
        converted,
        {
            _META_COLUMNS: json.dumps(columns),
            _META_KINDS: json.dumps(kinds),
            _META_LAYOUT: layout,
            _META_TASK: task,
        },
    )
    return bytes(converted.SerializeToString())


def _fixed_converters() -> dict[type, Any]:
    """skl2onnx's HistGradientBoosting converters, with a bug worked around.

    skl2onnx 1.20 writes Python ``False`` for the leaves in the integer attribute
    ``nodes_missing_value_tracks_true``, which onnx >= 1.19 refuses ("Expected an int, got a
    boolean"). Passing these per call (not registering them) leaves skl2onnx's global state be.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    try:  # a private module: if a later skl2onnx moves it, convert without the workaround
        from skl2onnx.common import _registration

        originals = {
            HistGradientBoostingClassifier: _registration.get_converter(
                "SklearnHistGradientBoostingClassifier"
            ),
            HistGradientBoostingRegressor: _registration.get_converter(
                "SklearnHistGradientBoostingRegressor"
            ),
        }
    except (ImportError, AttributeError, ValueError):
        return {}

    def fixed(original: Any) -> Any:
        def convert(scope: Any, operator: Any, container: Any) -> Any:
            return original(scope, operator, _IntAttributes(container))

        return convert

    return {cls: fixed(original) for cls, original in originals.items()}


class _IntAttributes:
    """A converter's container that writes booleans in list attributes as 0 and 1."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, bool) for v in value):
                attrs[key] = [int(v) if isinstance(v, bool) else v for v in value]
        return self._container.add_node(*args, **attrs)


def _native(model: Any, sample: Any, task: str) -> tuple[Any, Any]:
    """The model's own (scores, labels) on the sample: probabilities or values, and labels."""
    import numpy as np

    if getattr(model, "feature_names_in_", None) is None:
        sample = sample.to_numpy()  # fitted on arrays: names would only earn a warning
    if task == "classification":
        proba = np.asarray(model.predict_proba(sample), dtype=np.float64)
        return proba, np.asarray(model.predict(sample))
    return np.asarray(model.predict(sample), dtype=np.float64).reshape(-1), None


def _compare(
    native: tuple[Any, Any],
    onnx_model: OnnxModel,
    sample: Any,
    task: str,
    data: bytes,
    report: dict[str, Any],
) -> tuple[bytes | None, dict[str, Any]]:
    import numpy as np

    want, labels = native
    report = {**report, "rows_checked": int(len(sample)), "inputs": onnx_model.input_names}
    if task == "classification":
        got = onnx_model.predict_proba(sample)
        tolerance = TOLERANCE
    else:
        got = onnx_model.predict(sample)
        tolerance = TOLERANCE * max(1.0, float(np.max(np.abs(want))))
    report["tolerance"] = tolerance
    if got.shape != want.shape:
        report["reason"] = f"ONNX returns shape {got.shape}, the model {want.shape}"
        return None, report
    diff = float(np.max(np.abs(got - want)))
    report["max_abs_diff"] = diff
    if not diff <= tolerance:  # also catches NaN
        report["reason"] = (
            f"ONNX predictions differ from the model's by up to {diff:.3g} "
            f"(tolerance {tolerance:.3g})"
        )
        return None, report
    if labels is not None:
        disagree = int(np.sum(onnx_model.predict(sample) != labels))
        if disagree:
            report["reason"] = f"ONNX predicts another label for {disagree} of {len(sample)} rows"
            return None, report
    report["supported"] = True
    return data, report


def _first(exc: BaseException) -> str:
    """The first line of a foreign error, which for skl2onnx can run to pages."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= 300 else line[:297] + "..."
