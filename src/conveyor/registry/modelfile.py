"""Model files that are only deserialised once their sha256 matches the registry's record.

Loading a model runs code: a pickle can run anything, and a skops file can build any type it
names. So a model file is loaded only from bytes whose sha256 was checked in the same read (no
window between the check and the load), skops files only with an explicit list of trusted types
(never ``trusted=True``), and pickles only where the policy ``registry.allow_pickle`` allows.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conveyor.exceptions import (
    ArtifactCorrupted,
    ArtifactError,
    ArtifactNotFound,
    ModelTampered,
    RegistryError,
    UnsafeModelFile,
)
from conveyor.store.artifacts import ArtifactStore

__all__ = [
    "DEFAULT_TRUSTED_MODULES",
    "ModelFile",
    "check_trusted",
    "from_step_output",
    "load_model",
    "save_model",
]

ModelFormat = Literal["skops", "pickle"]
FORMATS: tuple[str, ...] = ("skops", "pickle")

# An entry trusts the type of that exact name and everything under it as a module prefix
# ("sklearn" trusts "sklearn.tree._tree.Tree"). The builtins are the few that skops reports
# as untrusted for ordinary estimators; "builtins" as a whole is not here (builtins.eval).
# functools.partial is safe to trust because skops checks the function it wraps on its own.
DEFAULT_TRUSTED_MODULES: tuple[str, ...] = (
    "sklearn",
    "numpy",
    "scipy",
    "builtins.bool",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.complex",
    "builtins.dict",
    "builtins.float",
    "builtins.int",
    "builtins.list",
    "builtins.set",
    "builtins.slice",
    "builtins.str",
    "builtins.tuple",
    "collections.OrderedDict",
    "collections.defaultdict",
    "functools.partial",
)

_OUTPUT_NOUNS = {
    "parquet": "a DataFrame or Series",
    "json": "a dict, list or number",
    "npy": "a NumPy array",
    "file": "a path to a file",
    "dir": "a path to a folder",
}


@dataclass(frozen=True)
class ModelFile:
    """A model file in the artifact store, as the registry records it.

    ``trusted`` lists the types the skops file needs beyond skops' own defaults (recorded when
    the file was written); ``cls`` is the model's ``module.QualName``.
    """

    format: ModelFormat
    digest: str
    size: int
    trusted: tuple[str, ...] = ()
    cls: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON: the same keys as a pipeline step's skops descriptor."""
        return {
            "format": self.format,
            "digest": self.digest,
            "size": self.size,
            "trusted": list(self.trusted),
            "class": self.cls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFile:
        """Read back what ``to_dict`` wrote.

        Raises:
            RegistryError: a key is missing or the format is unknown.
        """
        try:
            fmt = data["format"]
            digest = data["digest"]
            size = int(data["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"The model file record {data!r} lacks a valid {exc}; it needs 'format', "
                "'digest' and 'size'. Register the model again."
            ) from None
        if fmt not in FORMATS:
            raise RegistryError(
                f"The model file record names the format {fmt!r}; Conveyor loads "
                f"{' or '.join(FORMATS)}. Register the model again."
            )
        return cls(
            format=fmt,
            digest=str(digest),
            size=size,
            trusted=tuple(str(t) for t in data.get("trusted") or ()),
            cls=str(data.get("class") or data.get("cls") or ""),
        )


def from_step_output(descriptor: dict[str, Any]) -> ModelFile:
    """The model file of a pipeline step's stored skops output: the same object, no copy.

    Args:
        descriptor: the output descriptor that ``pipeline/outputs.py`` stored for the step.

    Raises:
        RegistryError: the output is not a skops model file.
    """
    fmt = descriptor.get("format")
    if fmt != "skops":
        noun = _OUTPUT_NOUNS.get(str(fmt), "a value")
        raise RegistryError(
            f"The step output to register is stored as {fmt!r} ({noun}), not as a model. "
            "Return the fitted scikit-learn estimator itself from the step (Conveyor stores it "
            "as skops), or name the output that holds it."
        )
    return ModelFile.from_dict(descriptor)


def is_trusted(name: str, entries: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``entries`` or lies under one of them as a module prefix."""
    return any(name == e or name.startswith(e + ".") for e in entries)


def check_trusted(trusted: Iterable[str], extra: Iterable[str], *, what: str) -> None:
    """Refuse a file that needs types outside the defaults and what the user trusted.

    Args:
        trusted: the types the file needs (``ModelFile.trusted``).
        extra: what the user trusts on top (``model.trusted_types`` in conveyor.yaml); each
            entry is a type's full name or a module prefix.
        what: what the file is, for the message (``"model 'loans' version 3"``).

    Raises:
        UnsafeModelFile: naming every type nobody trusted.
    """
    allowed = (*DEFAULT_TRUSTED_MODULES, *extra)
    untrusted = sorted({t for t in trusted if not is_trusted(t, allowed)})
    if untrusted:
        names = ", ".join(repr(t) for t in untrusted)
        raise UnsafeModelFile(
            f"The file of {what} needs types that are not trusted: {names}. Loading it would "
            "run code from them; if you trust that code, add them to model.trusted_types in "
            "conveyor.yaml."
        )


def save_model(
    model: Any,
    store: ArtifactStore,
    *,
    format: ModelFormat = "skops",
    allow_pickle: bool = False,
    trusted_extra: Iterable[str] = (),
) -> ModelFile:
    """Write a fitted model into the artifact store.

    Args:
        model: the fitted estimator.
        store: an open artifact store.
        format: ``"skops"`` (safe to load) or ``"pickle"`` (only where the policy allows).
        allow_pickle: the policy ``registry.allow_pickle``.
        trusted_extra: types the user trusts beyond the defaults; a skops file that needs
            anything else is refused now rather than when it is loaded.

    Raises:
        UnsafeModelFile: a pickle where pickles are forbidden, or a type nobody trusted.
        RegistryError: the format is unknown, or the model cannot be serialised.
    """
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if format == "skops":
        return _save_skops(model, store, cls, tuple(trusted_extra))
    if format == "pickle":
        if not allow_pickle:
            raise _pickle_refused(f"the {cls}")
        try:
            data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise RegistryError(f"The {cls} cannot be pickled: {exc}. Save it as skops.") from exc
        artifact = store.put_bytes(data)
        return ModelFile("pickle", artifact.digest, artifact.size, (), cls)
    raise RegistryError(
        f"Unknown model file format {format!r}; use {' or '.join(repr(f) for f in FORMATS)}."
    )


def load_model(
    store: ArtifactStore,
    file: ModelFile,
    *,
    what: str,
    allow_pickle: bool,
    trusted_extra: Iterable[str] = (),
) -> Any:
    """Load a registered model, from bytes whose sha256 matches the record.

    Args:
        store: an open artifact store.
        file: the registry's record of the file.
        what: what the file is, for messages (``"model 'loans' version 3"``).
        allow_pickle: the policy ``registry.allow_pickle``.
        trusted_extra: types the user trusts beyond the defaults (``model.trusted_types``).

    Raises:
        ModelTampered: the bytes no longer match the recorded sha256.
        UnsafeModelFile: a pickle where pickles are forbidden, or a type nobody trusted.
        RegistryError: the file is missing from the store or cannot be deserialised.
    """
    if file.format == "pickle":
        if not allow_pickle:
            raise _pickle_refused(what)
        data = _verified_bytes(store, file, what)
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise _unloadable(what, file, exc) from exc
    if file.format != "skops":
        raise RegistryError(f"The file of {what} has the unknown format {file.format!r}.")
    check_trusted(file.trusted, trusted_extra, what=what)
    data = _verified_bytes(store, file, what)
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return sio.loads(data, trusted=list(file.trusted))
    except UntrustedTypesFoundException as exc:
        raise UnsafeModelFile(
            f"The file of {what} needs types its registry record does not list: {exc}. "
            "Register the model again so that the record is rebuilt from the file."
        ) from exc
    except Exception as exc:
        raise _unloadable(what, file, exc) from exc


def _save_skops(model: Any, store: ArtifactStore, cls: str, extra: tuple[str, ...]) -> ModelFile:
    import skops.io as sio

    fd, name = tempfile.mkstemp(suffix=".skops", dir=store.tmp_dir())
    os.close(fd)
    path = Path(name)
    try:
        try:
            sio.dump(model, path)
            # We wrote this file, so the types it needs are the ones to trust when loading it.
            trusted = tuple(sorted(sio.get_untrusted_types(file=path)))
        except Exception as exc:
            raise RegistryError(
                f"skops cannot save the {cls}: {exc}. Use scikit-learn compatible types, or "
                "set registry.allow_pickle and save it as a pickle."
            ) from exc
        check_trusted(trusted, extra, what=f"the {cls}")
        artifact = store.put_file(path, move=True)
    finally:
        path.unlink(missing_ok=True)  # already gone once moved into the store
    return ModelFile("skops", artifact.digest, artifact.size, trusted, cls)


def _verified_bytes(store: ArtifactStore, file: ModelFile, what: str) -> bytes:
    """The file's bytes, hashed in the same read that returns them."""
    try:
        return store.read_bytes(file.digest)
    except ArtifactCorrupted as exc:
        raise ModelTampered(
            f"The file of {what} no longer matches the sha256 recorded when it was registered "
            f"({file.digest}): it was changed in the artifact store, so it will not be loaded. "
            "Restore the original file, or register a new version from a fresh `conveyor run`."
        ) from exc
    except ArtifactNotFound as exc:
        raise RegistryError(
            f"The file of {what} (artifact {file.digest}) is missing from the artifact store at "
            f"{store.location}. Check that conveyor.yaml points at the store it was registered "
            "with, or register a new version from a fresh `conveyor run`."
        ) from exc
    except ArtifactError as exc:
        raise RegistryError(f"Cannot read the file of {what}: {exc}") from exc


def _pickle_refused(what: str) -> UnsafeModelFile:
    return UnsafeModelFile(
        f"Refusing to use a pickle for {what}: pickles can run any code when loaded and are "
        "forbidden by the policy `registry.allow_pickle`. Save the model as skops, or set "
        "registry.allow_pickle: true in conveyor.yaml if you trust every file in the store."
    )


def _unloadable(what: str, file: ModelFile, exc: Exception) -> RegistryError:
    return RegistryError(
        f"Cannot load {what} ({file.cls or 'unknown class'}, {file.format}): "
        f"{type(exc).__name__}: {exc}. It may need the scikit-learn and skops versions it was "
        "saved with; install those, or retrain and register a new version."
    )
