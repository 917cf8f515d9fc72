"""Model files that are only deserialised once their sha256 matches the registry's record.

Loading a model runs code: a pickle can run anything, and a skops file can build any type it
names. So a model file is loaded only from bytes whose sha256 was checked in the same read (no
window between the check and the load), skops files only once every name in the file's own node
tree is one of the exact names of ``store/trusted.py`` or ``model.trusted_types`` (never
``trusted=True``, never a module prefix, never the list stored in a record), and pickles only
where the policy ``registry.allow_pickle`` allows.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass
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
from conveyor.store.trusted import SKLEARN_TYPES, check_names, load_skops

__all__ = [
    "DEFAULT_TRUSTED_MODULES",
    "DEFAULT_TRUSTED_TYPES",
    "ModelFile",
    "check_trusted",
    "from_step_output",
    "load_model",
    "pickle_refused",
    "save_model",
    "verified_bytes",
]

ModelFormat = Literal[
    "skops", "pickle", "xgboost-json", "lightgbm-text", "torch-export", "python-model"
]
# skops and the frameworks' own model files load without running pickled code
# (registry/flavours/); pickle only where the policy allows.
FORMATS: tuple[str, ...] = (
    "skops",
    "pickle",
    "xgboost-json",
    "lightgbm-text",
    "torch-export",
    "python-model",
)
# What a pipeline step stores a model as, registered as it is (the same object, no copy).
STEP_FORMATS = ("skops", "torch-export", "python-model")

# The exact names a scikit-learn model file may use (store/trusted.py): no entry is a module
# prefix, so "numpy" no longer trusts numpy.testing._private.utils.runstring.
DEFAULT_TRUSTED_TYPES: frozenset[str] = SKLEARN_TYPES
DEFAULT_TRUSTED_MODULES = DEFAULT_TRUSTED_TYPES  # the old name; exact names now, not modules

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
    the file was written, shown to people, never used to decide what loads: that is checked on
    the file itself); ``cls`` is the model's ``module.QualName``.
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
    """The model file of a pipeline step's stored model output (skops, or a PyTorch or custom
    model in its flavour's format): the same object, no copy.

    Args:
        descriptor: the output descriptor that ``pipeline/outputs.py`` stored for the step.

    Raises:
        RegistryError: the output is not a model file.
    """
    fmt = descriptor.get("format")
    if fmt not in STEP_FORMATS:
        noun = _OUTPUT_NOUNS.get(str(fmt), "a value")
        raise RegistryError(
            f"The step output to register is stored as {fmt!r} ({noun}), not as a model. "
            "Return the fitted model itself from the step (a scikit-learn estimator, a PyTorch "
            "module, a custom model), or name the output that holds it."
        )
    return ModelFile.from_dict(descriptor)


def check_trusted(trusted: Iterable[str], extra: Iterable[str], *, what: str) -> None:
    """Refuse types outside the allow-list and what the user trusted, by exact name.

    Args:
        trusted: the types a file needs (``ModelFile.trusted``, or the names found in it).
        extra: what the user trusts on top (``model.trusted_types`` in conveyor.yaml); each
            entry is one type's or function's full name, never a module prefix.
        what: what the file is, for the message (``"model 'loans' version 3"``).

    Raises:
        UnsafeModelFile: naming every type nobody trusted, or an entry of ``extra`` that is a
            module rather than a full name.
    """
    check_names(trusted, extra, what=what, allowed=DEFAULT_TRUSTED_TYPES)


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
        trusted_extra: exact names the user trusts beyond the defaults; a skops file that
            needs anything else is refused now rather than when it is loaded.

    Raises:
        UnsafeModelFile: a pickle where pickles are forbidden, or a type nobody trusted.
        RegistryError: the format is unknown, or the model cannot be serialised.
    """
    from conveyor.registry.flavours import flavour_of

    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    flavour = flavour_of(model)
    if format == "skops" or (format in FORMATS and format != "pickle"):
        # a framework's own format wins over skops: no pickled booster inside a zip
        if flavour.name != "sklearn":
            fmt, data = flavour.save(model, trusted_extra=tuple(trusted_extra))
            artifact = store.put_bytes(data)
            return ModelFile(fmt, artifact.digest, artifact.size, (), cls)  # type: ignore[arg-type]
        return _save_skops(model, store, cls, tuple(trusted_extra))
    if format == "pickle":
        if not allow_pickle:
            raise pickle_refused(f"the {cls}")
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
        trusted_extra: exact names the user trusts beyond the defaults
            (``model.trusted_types``).

    Raises:
        ModelTampered: the bytes no longer match the recorded sha256.
        UnsafeModelFile: a pickle where pickles are forbidden, or a name in the file that
            nobody trusted (the record's ``trusted`` list is not believed).
        RegistryError: the file is missing from the store or cannot be deserialised.
    """
    if file.format == "pickle":
        if not allow_pickle:
            raise pickle_refused(what)
        data = verified_bytes(store, file, what)
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise _unloadable(what, file, exc) from exc
    from conveyor.registry.flavours.base import project_code

    project_code()  # a class from the project's own code imports as it does in a step
    if file.format not in ("skops", "pickle"):
        from conveyor.registry.flavours import for_format

        flavour = for_format(file.format)
        return flavour.load(
            file.format,
            verified_bytes(store, file, what),
            what=what,
            trusted_extra=tuple(trusted_extra),
        )
    data = verified_bytes(store, file, what)
    try:
        return load_skops(data, trusted_extra, what=what)
    except UnsafeModelFile:
        raise
    except Exception as exc:
        raise _unloadable(what, file, exc) from exc


def _save_skops(model: Any, store: ArtifactStore, cls: str, extra: tuple[str, ...]) -> ModelFile:
    from conveyor.store.trusted import skops_io

    sio = skops_io()

    from conveyor.registry.flavours.sklearn import ScikitLearn

    # The same check as loading, on the file just written: a model that needs a name outside
    # the allow-list is refused now, naming it, rather than stored and refused at load time.
    _, data = ScikitLearn().save(model, trusted_extra=extra)
    # What skops itself does not trust, kept in the record for people to read.
    trusted = tuple(sorted(sio.get_untrusted_types(data=data)))
    artifact = store.put_bytes(data)
    return ModelFile("skops", artifact.digest, artifact.size, trusted, cls)


def verified_bytes(store: ArtifactStore, file: ModelFile, what: str) -> bytes:
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


def pickle_refused(what: str) -> UnsafeModelFile:
    return UnsafeModelFile(
        f"Refusing to use a pickle for {what}: pickles can run any code when loaded and are "
        "forbidden by the policy `registry.allow_pickle`. Save the model as skops, or set "
        "registry.allow_pickle: true in conveyor.yaml if you trust every file in the store."
    )


def _unloadable(what: str, file: ModelFile, exc: Exception) -> RegistryError:
    if isinstance(exc, ModuleNotFoundError):
        from conveyor.registry.flavours.base import missing_module

        return missing_module(what, file.cls or "unknown class", exc.name)
    return RegistryError(
        f"Cannot load {what} ({file.cls or 'unknown class'}, {file.format}): "
        f"{type(exc).__name__}: {exc}. It may need the scikit-learn and skops versions it was "
        "saved with; install those, or retrain and register a new version."
    )
