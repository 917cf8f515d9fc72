"""One model version ready to serve: validated inputs in, predictions out, in batches.

A ``Served`` is built off the event loop (loading and warming take time) and then only read.
It picks the fastest faithful runtime: ONNX Runtime when the registry stored an export that was
checked against the native model, the native model otherwise. Inputs of an all-numeric
signature travel as one float matrix (no DataFrame per request); other signatures as one array
per field, concatenated column by column when requests are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ArtifactError, RegistryError
from conveyor.registry.onnx import OnnxModel
from conveyor.registry.signature import (
    columns_from_rows,
    frame_from_columns,
    is_numeric,
    matrix_from_rows,
)

if TYPE_CHECKING:
    from conveyor.registry.registry import Registry

__all__ = ["Prediction", "Served", "load_served", "warm_rows"]


@dataclass(frozen=True)
class Prediction:
    """What one request gets back: labels or values, and class probabilities when there are."""

    values: Any
    probabilities: Any | None


class Served:
    """A loaded version: ``prepare`` checks one request's rows, ``predict`` runs a batch."""

    def __init__(
        self,
        *,
        model: str,
        version: int,
        signature: dict[str, Any],
        task: str,
        digest: str,
        native: Any,
        onnx: OnnxModel | None,
    ) -> None:
        self.model = model
        self.version = version
        self.signature = signature
        self.task = task
        self.digest = digest
        self.classes = list(signature.get("output", {}).get("classes") or [])
        self.names = [f["name"] for f in signature["inputs"]]
        self._native = native
        self._onnx = onnx
        self.matrix = is_numeric(signature) and (onnx is None or onnx.layout == "matrix")
        if onnx is not None and list(onnx.input_names) != self.names:
            self._onnx = None  # an export over other columns than the signature: do not guess
        self.runtime = "onnx" if self._onnx is not None else "native"
        self._named = getattr(native, "feature_names_in_", None) is not None

    # -- one request -----------------------------------------------------------------------

    def prepare(self, rows: Any, max_rows: int) -> tuple[Any, int]:
        """Check rows against the signature; returns the block and its row count.

        Raises:
            InvalidInput: naming the row and field.
        """
        if self.matrix:
            block = matrix_from_rows(self.signature, rows, max_rows=max_rows)
            return block, block.shape[0]
        arrays = columns_from_rows(self.signature, rows, max_rows=max_rows)
        return arrays, len(arrays[0])

    # -- a batch ---------------------------------------------------------------------------

    def predict(self, blocks: list[Any]) -> list[Prediction]:
        """Predict several requests' blocks in one call; one ``Prediction`` per block."""
        import numpy as np

        if len(blocks) == 1:
            merged = blocks[0]
        elif self.matrix:
            merged = np.concatenate(blocks)
        else:
            merged = [np.concatenate(col) for col in zip(*blocks, strict=True)]
        values, proba = self._run(merged)
        if len(blocks) == 1:
            return [Prediction(values, proba)]
        out = []
        start = 0
        for block in blocks:
            n = block.shape[0] if self.matrix else len(block[0])
            stop = start + n
            out.append(Prediction(values[start:stop], None if proba is None else proba[start:stop]))
            start = stop
        return out

    def _run(self, merged: Any) -> tuple[Any, Any]:
        import numpy as np

        if self._onnx is not None:
            feed = (
                self._onnx.feed_matrix(merged) if self.matrix else self._onnx.feed_columns(merged)
            )
            return self._onnx.run(feed)
        X = self._native_input(merged)
        if self.task == "regression":
            return np.asarray(self._native.predict(X), dtype=np.float64).reshape(-1), None
        proba = np.asarray(self._native.predict_proba(X), dtype=np.float64)
        labels = np.asarray(self._native.classes_)[proba.argmax(axis=1)]
        return labels, proba

    def _native_input(self, merged: Any) -> Any:
        if self.matrix:
            if not self._named:
                return merged
            import pandas as pd

            return pd.DataFrame(merged, columns=self.names)
        return frame_from_columns(self.signature, merged)


def warm_rows(signature: dict[str, Any], n: int = 8) -> list[list[Any]]:
    """Plausible rows for a first predict: the first category, zero, false, an epoch date."""
    row: list[Any] = []
    for field in signature["inputs"]:
        kind = field["type"]
        if kind in ("number", "integer"):
            row.append(0)
        elif kind == "boolean":
            row.append(False)
        elif kind == "datetime":
            row.append("2020-01-01T00:00:00Z")
        else:
            cats = field.get("categories") or [""]
            row.append(cats[0])
    return [list(row) for _ in range(n)]


def load_served(
    registry: Registry,
    model: str,
    version: int,
    *,
    allow_pickle: bool,
    trusted_extra: tuple[str, ...] = (),
    threads: int = 1,
) -> Served:
    """Load a version (its hash verified by the registry), build its runtime and warm it.

    A version with an ONNX copy that was checked against it at registration is served by ONNX
    Runtime alone: its native model file is verified (the same sha256 check, the same refusal
    when it changed) but not deserialised, since nothing would call it. Loading it would
    import its framework (scikit-learn pulls in SciPy, pandas, PyArrow and more), about
    three quarters of such a worker's memory.

    Raises:
        ModelTampered, UnsafeModelFile, RegistryError: the version cannot be served.
    """
    record = registry.version(model, version)
    onnx = None
    if record.onnx and record.onnx.get("supported") and record.onnx.get("digest"):
        try:
            data = registry.artifacts.read_bytes(record.onnx["digest"])  # checks the sha256
        except ArtifactError as exc:
            raise RegistryError(f"The ONNX copy of {record.label} cannot be read: {exc}") from exc
        onnx = OnnxModel(data, intra_op_threads=threads, what=record.label)
    if onnx is None:
        native = registry.load(record, allow_pickle=allow_pickle, trusted_extra=trusted_extra)
    else:
        registry.verify(record, allow_pickle=allow_pickle)
        native = None
    served = Served(
        model=model,
        version=version,
        signature=record.signature,
        task=record.task,
        digest=record.file.digest,
        native=native,
        onnx=onnx,
    )
    rows = warm_rows(record.signature)
    try:
        for _ in range(3):
            block, _n = served.prepare(rows, max_rows=len(rows))
            served.predict([block, block])
    except Exception as exc:
        raise RegistryError(f"{record.label} failed its warm-up predict: {exc}") from exc
    return served
