"""The reference a window of live traffic is compared with: the version's own held-out rows.

A version that ``conveyor ci`` registered keeps its holdout frame in the artifact store; its
columns named by the signature are the features, and the model's answers on them are the
reference predictions. A version registered outside a pipeline (``register_fitted``) kept no
holdout: give its reference frame explicitly. Scoring a holdout costs a model load and a
predict, so references are cached per model version and frame (the key holds content hashes,
so two projects' "version 1" never share an entry). The answers on a stored holdout are also
kept on disk beside the artifact store (``references/v1/``, one ``.npz`` per version and frame),
so that `conveyor monitor` in a new process does not import the model's framework and predict
again: loading a scikit-learn model through skops took 17 of the 26 CPU seconds of the demo's
`conveyor monitor`, predicting 3 more.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError, MonitorError

if TYPE_CHECKING:
    import numpy
    import pandas

    from conveyor.registry.registry import Registry, Version

__all__ = ["Reference", "clear_references", "reference_for"]

CACHE_SIZE = 8
_CACHE: OrderedDict[tuple[Any, ...], Reference] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Reference:
    """A version's reference rows and its answers on them. Shared from a cache: do not modify."""

    model: str
    version: int
    task: str
    features: pandas.DataFrame  # the signature's inputs, in its order
    predictions: numpy.ndarray  # labels (classification) or values (regression), one per row
    classes: list[Any] | None
    source: str  # where the rows came from, for people
    target: numpy.ndarray | None = None  # the true labels, when the frame holds them

    @property
    def rows(self) -> int:
        return len(self.features)


def reference_for(
    registry: Registry,
    version: Version,
    *,
    features: pandas.DataFrame | None = None,
    allow_pickle: bool = False,
    trusted_extra: tuple[str, ...] = (),
) -> Reference:
    """The reference of a registered version: its holdout, or the frame given, and its answers.

    Args:
        registry: the registry the version is in (its artifact store holds the files).
        version: the version being monitored.
        features: the reference rows (default: the holdout stored at registration, else a
            stored source sample holding every input); extra columns are ignored.
        allow_pickle: passed to ``registry.load`` (the project's ``registry.allow_pickle``).
        trusted_extra: types to trust beyond the version's own list (``model.trusted_types``).

    Raises:
        MonitorError: no reference rows stored and none given, the rows lack an input column,
            or the model cannot predict them.
        ModelTampered, UnsafeModelFile: the model file cannot be loaded safely.
    """
    import pandas as pd

    names = [str(f["name"]) for f in version.signature.get("inputs", [])]
    if not names:
        raise MonitorError(f"{_label(version)} has no inputs in its signature; nothing to compare.")
    stored: tuple[str, ...] | None = None
    if features is not None:
        if not isinstance(features, pd.DataFrame):
            raise MonitorError(
                f"The reference of {_label(version)} must be a DataFrame, not a "
                f"{type(features).__name__}."
            )
        fingerprint = _fingerprint(features)
        key = ("frame", *fingerprint) if fingerprint is not None else None
        source = f"a frame of {len(features)} rows"
    else:
        stored, source = _stored(version)
        key = stored
    cache_key = None if key is None else (version.model, version.version, version.file.digest, key)
    if cache_key is not None:
        with _LOCK:
            hit = _CACHE.get(cache_key)
            if hit is not None:
                _CACHE.move_to_end(cache_key)
                return hit
    frame = features if stored is None else _load(registry, version, stored, names)
    disk = _disk_path(registry, cache_key) if stored is not None else None
    kept = _read_kept(disk) if disk is not None else None
    if kept is not None:
        features = _features(version, frame, names, source)
        reference = _reference(version, features, source, kept, _target(version, frame))
    else:
        reference = _score(registry, version, frame, names, source, allow_pickle, trusted_extra)
        if disk is not None:
            _keep(disk, reference)
    if cache_key is not None:
        with _LOCK:
            _CACHE[cache_key] = reference
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return reference


def clear_references() -> None:
    """Forget every cached reference (they are rebuilt on the next call)."""
    with _LOCK:
        _CACHE.clear()


def _label(version: Version) -> str:
    return f"model {version.model!r} version {version.version}"


def _stored(version: Version) -> tuple[tuple[str, ...], str]:
    """Which stored frame is the reference: the holdout, else a source sample."""
    holdout = version.holdout or {}
    if holdout.get("digest") and holdout.get("format") == "parquet":
        return ("holdout", holdout["digest"]), "the holdout stored at registration"
    for source, digest in sorted((version.references or {}).items()):
        return ("source", source, str(digest)), f"the stored sample of source {source!r}"
    raise MonitorError(
        f"{_label(version)} has no stored holdout to compare live traffic with (it was "
        "registered outside a pipeline). Pass its reference rows (reference=frame), or "
        "register it through 'conveyor ci', which keeps the holdout."
    )


def _load(
    registry: Registry, version: Version, key: tuple[str, ...], names: list[str]
) -> pandas.DataFrame:
    import pandas as pd

    from conveyor.pipeline.outputs import load_output

    try:
        if key[0] == "holdout":
            frame = load_output(version.holdout, registry.artifacts)
        else:
            frame = pd.read_parquet(registry.artifacts.path(key[2]))
    except ConveyorError:
        raise
    except (OSError, ValueError) as exc:
        raise MonitorError(f"Cannot read the reference rows of {_label(version)}: {exc}") from exc
    if key[0] == "source" and not set(names) <= set(map(str, frame.columns)):
        raise MonitorError(
            f"{_label(version)} has no stored holdout, and its stored sample of source "
            f"{key[1]!r} lacks inputs of the signature. Pass its reference rows "
            "(reference=frame)."
        )
    return frame


def _score(
    registry: Registry,
    version: Version,
    frame: pandas.DataFrame,
    names: list[str],
    source: str,
    allow_pickle: bool,
    trusted_extra: tuple[str, ...],
) -> Reference:
    features = _features(version, frame, names, source)
    model = registry.load(version, allow_pickle=allow_pickle, trusted_extra=trusted_extra)
    try:
        predictions = _predict(model, features, version.task)
    except Exception as exc:  # a foreign model's error, at the boundary
        raise MonitorError(
            f"{_label(version)} cannot predict its reference rows ({source}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return _reference(version, features, source, predictions, _target(version, frame))


def _target(version: Version, frame: pandas.DataFrame) -> numpy.ndarray | None:
    """The true labels, when the reference rows hold the target column."""
    target_name = (version.card or {}).get("target")
    if target_name and target_name in frame.columns:
        return frame[target_name].to_numpy()
    return None


def _features(
    version: Version, frame: pandas.DataFrame, names: list[str], source: str
) -> pandas.DataFrame:
    """The signature's inputs of the reference rows, in its order.

    Raises:
        MonitorError: an input column is missing, or there are no rows.
    """
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise MonitorError(
            f"The reference rows of {_label(version)} ({source}) lack the input column(s) "
            f"{', '.join(map(repr, missing))}; they have {', '.join(map(str, frame.columns))}."
        )
    if len(frame) == 0:
        raise MonitorError(f"The reference rows of {_label(version)} ({source}) are empty.")
    return frame[names].reset_index(drop=True)


def _reference(
    version: Version,
    features: pandas.DataFrame,
    source: str,
    predictions: Any,
    target: numpy.ndarray | None,
) -> Reference:
    import numpy as np

    classes = (version.signature.get("output") or {}).get("classes")
    return Reference(
        model=version.model,
        version=version.version,
        task=version.task,
        features=features,
        predictions=np.asarray(predictions),
        classes=list(classes) if classes is not None else None,
        source=source,
        target=target,
    )


def _disk_path(registry: Registry, key: tuple[Any, ...] | None) -> Path | None:
    """Where the answers on a stored frame are kept: under a local artifact store's folder, or
    a remote one's local cache; None when neither is known."""
    if key is None:
        return None
    artifacts = registry.artifacts
    base = getattr(artifacts, "cache_dir" if artifacts.remote else "root", None)
    if base is None:
        return None
    name = hashlib.sha256(json.dumps([str(part) for part in key]).encode()).hexdigest()
    return Path(base) / "references" / "v1" / f"{name}.npz"


def _read_kept(path: Path) -> numpy.ndarray | None:
    """The predictions kept at ``path``, or None: score again."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as kept:
            return kept["predictions"]
    except (OSError, ValueError, KeyError):
        return None  # not kept yet, unreadable or of another form: scored afresh


def _keep(path: Path, reference: Reference) -> None:
    """Keep the answers for the next process, atomically; best effort (a read-only store or a
    full disk only means the next process scores again). Object arrays (labels of mixed
    types) would need pickle to read back, and are not kept."""
    import contextlib

    import numpy as np

    if reference.predictions.dtype.hasobject:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            np.savez(out, predictions=reference.predictions)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _predict(model: Any, features: pandas.DataFrame, task: str) -> numpy.ndarray:
    """Labels as the gateway computes them (the class of the highest probability), or values."""
    import numpy as np

    if task == "regression":
        return np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        proba = np.asarray(model.predict_proba(features))
        return np.asarray(model.classes_)[proba.argmax(axis=1)]
    return np.asarray(model.predict(features)).reshape(-1)


def _fingerprint(frame: pandas.DataFrame) -> tuple[Any, ...] | None:
    """A content hash of a frame (same rows and columns, same key); None if cells are not
    hashable, and then the reference is not cached."""
    import hashlib

    import pandas as pd

    try:
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError:
        return None
    digest = hashlib.sha256(rows.tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return (len(frame), digest.hexdigest())
