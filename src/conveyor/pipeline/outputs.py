"""Turning a step's return value into stored artifacts, and stored artifacts back into values.

A descriptor is ``{"format": ..., "digest": sha256, "size": bytes}`` plus what loading needs
(the file name of a path). Formats: parquet (DataFrame, Series), skops (scikit-learn estimators),
npy (NumPy arrays), json (dicts, lists, scalars), file and dir (a ``pathlib.Path`` the step
returns), and a model flavour's own format for a model skops cannot store (a PyTorch module, a
custom Python model: ``registry/flavours/``, the one place that reads and writes model files).
A skops descriptor also lists the types skops reports as untrusted, for people to read: loading
never believes it, but checks the file's own node tree (``store/trusted.py``).

A descriptor handed to a downstream step may also carry ``origin``: ``{"step", "output", "run"}``
of the run that stored it (the engine adds it; records never hold it), so that an object found
missing or damaged at load time is named by the step to re-run, not only by its hash.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conveyor.evaluate.values import jsonable
from conveyor.exceptions import (
    ArtifactCorrupted,
    ArtifactNotFound,
    PipelineError,
    UnsupportedOutput,
)
from conveyor.store.artifacts import ArtifactStore

WHOLE = "return"  # the output name of a step that returns one value

SUPPORTED = (
    "a pandas DataFrame or Series, a scikit-learn estimator, a PyTorch module, a custom model "
    "(predict, save and load), a NumPy array, a dict or list (stored as JSON), a pathlib.Path "
    "to a file or folder, or None"
)
# The model flavours that store a step's model in their own format (registry/flavours/).
MODEL_FORMATS = ("torch-export", "python-model")


def store_return(step: str, value: Any, store: ArtifactStore) -> tuple[dict[str, dict], dict]:
    """Store a step's return value.

    Returns:
        (outputs, metrics): output name → descriptor, and the numeric entries of a returned
        dict, which count as the step's metrics.

    Raises:
        UnsupportedOutput: the value (or an entry of a returned dict) has no storage format.
    """
    if value is None:
        return {}, {}
    if isinstance(value, dict) and value and any(_is_rich(v) for v in value.values()):
        outputs = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise UnsupportedOutput(
                    f"Step '{step}' returned a dict of outputs with the key {name!r}; output "
                    "names must be identifiers so that other steps can name them "
                    f"('{step}.<name>')."
                )
            if item is not None:
                outputs[name] = _store_one(f"{step}.{name}", item, store)
        return outputs, {}
    metrics = _numeric_entries(value) if isinstance(value, dict) else {}
    return {WHOLE: _store_one(step, value, store)}, metrics


def load_output(
    descriptor: dict, store: ArtifactStore, *, trusted_extra: Iterable[str] = ()
) -> Any:
    """Load one stored output back into the value the step returned.

    Args:
        descriptor: what ``store_return`` stored for the output.
        store: the artifact store holding it.
        trusted_extra: exact names trusted beyond the allow-list (``model.trusted_types``),
            for a skops file that needs a user's own types.

    Raises:
        UnsafeModelFile: a skops file names something nobody trusted (whatever the
            descriptor lists), or cannot be checked.
        ArtifactNotFound, ArtifactCorrupted: the stored object is gone or damaged; with an
            ``origin`` in the descriptor, the message names the step, output and run.
    """
    try:
        return _load(descriptor, store, trusted_extra)
    except (ArtifactNotFound, ArtifactCorrupted) as exc:
        origin = descriptor.get("origin")
        if not isinstance(origin, dict):
            raise
        step = origin.get("step")
        what = "missing" if isinstance(exc, ArtifactNotFound) else "damaged"
        raise type(exc)(
            f"Output {origin.get('output')!r} of step {step!r}, stored by run "
            f"{origin.get('run')}, is {what}: " + str(exc).replace("--step STEP", f"--step {step}")
        ) from exc


def _load(descriptor: dict, store: ArtifactStore, trusted_extra: Iterable[str]) -> Any:
    fmt = descriptor["format"]
    digest = descriptor["digest"]
    if fmt == "parquet":
        import pandas as pd

        frame = pd.read_parquet(store.path(digest))
        if descriptor.get("series"):
            series = frame.iloc[:, 0]
            series.name = descriptor.get("series_name")
            return series
        return frame
    if fmt == "skops":
        from conveyor.store.trusted import load_skops

        # The bytes are hashed in the same read that loads them, and the check is on the file's
        # own node tree: the descriptor's "trusted" list comes from the store, not from us.
        cls = descriptor.get("class") or "model"
        what = f"the stored {cls} (artifact {digest[:12]})"
        data = store.read_bytes(digest)
        try:
            return load_skops(data, trusted_extra, what=what)
        except ModuleNotFoundError as exc:
            from conveyor.project import code_root

            root = code_root()  # the project's own code, for a class of its own in the model
            if root is None or exc.name in sys.modules:
                raise _missing_module(what, exc, root) from exc
            try:
                return load_skops(data, trusted_extra, what=what)
            except ModuleNotFoundError as again:
                raise _missing_module(what, again, root) from again
    if fmt in MODEL_FORMATS:
        from conveyor.project import code_root
        from conveyor.registry.flavours import for_format

        code_root()  # a custom model's class is the project's code

        what = f"the stored {descriptor.get('class') or 'model'} (artifact {digest[:12]})"
        data = store.read_bytes(digest)  # hashed in the same read
        return for_format(fmt).load(fmt, data, what=what, trusted_extra=tuple(trusted_extra))
    if fmt == "npy":
        import numpy as np

        return np.load(store.path(digest), allow_pickle=False)
    if fmt == "json":
        return json.loads(store.read_bytes(digest))
    if fmt == "file":
        return store.path(digest)
    if fmt == "dir":
        return _materialize_dir(descriptor, store)
    raise PipelineError(f"Unknown stored format {fmt!r} for artifact {digest[:12]}.")


def _missing_module(what: str, exc: ModuleNotFoundError, root: Path | None) -> PipelineError:
    where = f"the project folder {root}" if root else "this folder (no conveyor.yaml here)"
    return PipelineError(
        f"Cannot load {what}: it needs the module {exc.name!r}, which is not importable from "
        f"{where} or sys.path. Run Conveyor from the project folder (or with --project), or "
        "install the package that provides it."
    )


def _is_rich(value: Any) -> bool:
    """A value that is not plain JSON: its presence turns a dict into named outputs."""
    if isinstance(value, Path):
        return True
    module = type(value).__module__
    return (
        module.startswith(("pandas", "numpy", "sklearn", "torch"))
        or hasattr(value, "get_params")
        or callable(getattr(value, "predict", None))
    )


def _numeric_entries(value: dict) -> dict[str, float]:
    out = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        out[str(key)] = float(item)
    return out


def _store_one(where: str, value: Any, store: ArtifactStore) -> dict:
    module = type(value).__module__
    if module.startswith("pandas"):
        return _store_pandas(where, value, store)
    if _is_estimator(value):
        return _store_skops(where, value, store)
    if module.startswith("numpy"):
        return _store_numpy(where, value, store)
    if isinstance(value, Path):
        return _store_path(where, value, store)
    if isinstance(value, dict | list | tuple | str | int | float | bool):
        try:
            data = json.dumps(jsonable(value), sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise UnsupportedOutput(
                f"Step '{where}' returned a {type(value).__name__} that is not JSON: {exc}. "
                f"Return {SUPPORTED}."
            ) from None
        artifact = store.put_bytes(data)
        return {"format": "json", "digest": artifact.digest, "size": artifact.size}
    if callable(getattr(value, "predict", None)) or "torch" in sys.modules:
        stored = _store_model(value, store)
        if stored is not None:
            return stored
    raise UnsupportedOutput(
        f"Step '{where}' returned a {module}.{type(value).__qualname__}, which Conveyor cannot "
        f"store. Return {SUPPORTED}."
    )


def _store_model(value: Any, store: ArtifactStore) -> dict | None:
    """A model in its flavour's own format, or None when no flavour stores it so."""
    from conveyor.registry.flavours import class_name, own_format

    flavour = own_format(value)
    if flavour is None:
        return None
    fmt, data = flavour.save(value)
    artifact = store.put_bytes(data)
    return {
        "format": fmt,
        "digest": artifact.digest,
        "size": artifact.size,
        "class": class_name(value),
    }


def _is_estimator(value: Any) -> bool:
    if "sklearn" not in sys.modules:  # an estimator's class would have imported it already
        return False
    from sklearn.base import BaseEstimator

    return isinstance(value, BaseEstimator)


def _tmp(store: ArtifactStore, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=store.tmp_dir())
    os.close(fd)
    return Path(name)


def _store_pandas(where: str, value: Any, store: ArtifactStore) -> dict:
    import pandas as pd

    extra: dict[str, Any] = {}
    if isinstance(value, pd.Series):
        extra = {"series": True, "series_name": value.name}
        value = value.to_frame(name=str(value.name) if value.name is not None else "value")
    if not isinstance(value, pd.DataFrame):
        raise UnsupportedOutput(
            f"Step '{where}' returned a {type(value).__name__}; return {SUPPORTED}."
        )
    path = _tmp(store, ".parquet")
    try:
        value.to_parquet(path)
    except (ValueError, TypeError, ImportError) as exc:
        path.unlink(missing_ok=True)
        raise UnsupportedOutput(
            f"Step '{where}' returned a DataFrame that cannot be written as Parquet: {exc}"
        ) from exc
    artifact = store.put_file(path, move=True)
    return {"format": "parquet", "digest": artifact.digest, "size": artifact.size, **extra}


def _store_skops(where: str, value: Any, store: ArtifactStore) -> dict:
    from conveyor.store.trusted import skops_io

    sio = skops_io()

    path = _tmp(store, ".skops")
    try:
        sio.dump(value, path)
        # Kept with the descriptor for people to read; loading checks the file itself.
        trusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise UnsupportedOutput(
            f"Step '{where}' returned a {type(value).__name__} that skops cannot save: {exc}. "
            "For a model skops cannot store, return the torch.nn.Module itself, or a class of "
            "your own with predict, save(folder) and a classmethod load(folder)."
        ) from exc
    artifact = store.put_file(path, move=True)
    return {
        "format": "skops",
        "digest": artifact.digest,
        "size": artifact.size,
        "trusted": sorted(trusted),
        "class": f"{type(value).__module__}.{type(value).__qualname__}",
    }


def _store_numpy(where: str, value: Any, store: ArtifactStore) -> dict:
    import numpy as np

    if not isinstance(value, np.ndarray) or value.dtype == object:
        if isinstance(value, np.generic):
            return _store_one(where, value.item(), store)
        raise UnsupportedOutput(
            f"Step '{where}' returned a NumPy {type(value).__name__} of dtype object; "
            f"return {SUPPORTED}."
        )
    path = _tmp(store, ".npy")
    np.save(path, value, allow_pickle=False)
    artifact = store.put_file(path, move=True)
    return {"format": "npy", "digest": artifact.digest, "size": artifact.size}


def _store_path(where: str, value: Path, store: ArtifactStore, link: bool = False) -> dict:
    if value.is_file():
        artifact = store.put_file(value, link=link)
        return {
            "format": "file",
            "digest": artifact.digest,
            "size": artifact.size,
            "name": value.name,
        }
    if value.is_dir():
        files = {}
        for path in sorted(p for p in value.rglob("*") if p.is_file()):
            files[path.relative_to(value).as_posix()] = store.put_file(path, link=link).digest
        manifest = store.put_bytes(json.dumps(files, sort_keys=True).encode())
        return {
            "format": "dir",
            "digest": manifest.digest,
            "size": manifest.size,
            "name": value.name,
            "files": files,
        }
    raise UnsupportedOutput(
        f"Step '{where}' returned the path {str(value)!r}, which does not exist. "
        "Return the path of a file or folder the step wrote."
    )


def _materialize_dir(descriptor: dict, store: ArtifactStore) -> Path:
    files = json.loads(store.read_bytes(descriptor["digest"]))
    target = Path(tempfile.mkdtemp(prefix="conveyor-dir-", dir=store.tmp_dir())) / descriptor.get(
        "name", "dir"
    )
    for rel, digest in files.items():
        store.materialize(digest, target / rel)
    return target
