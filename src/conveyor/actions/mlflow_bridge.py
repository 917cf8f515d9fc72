"""`conveyor models import` and `conveyor models export --format mlflow`: models in from MLflow,
and versions out to a directory that ``mlflow models serve`` runs.

Import reads an MLflow model (a ``runs:/`` or ``models:/`` URI against a tracking store, or a
local directory with an ``MLmodel`` file), turns its flavour into Conveyor's (scikit-learn and
LightGBM from skops, XGBoost from its own model file; never a pickle the user did not name with
``trust_pickle``), and registers it through :func:`conveyor.register`: the servability gate
always, the project's gates when labelled data is given, the MLflow run's params and metrics
carried into the run and the version's lineage.

Export writes the version's own model file (its sha256 checked on the way out) with an
``MLmodel`` whose ``python_function`` flavour names this module as its loader
(``_load_pyfunc``): MLflow's scoring server then loads it as Conveyor would, with the project's
trusted types, and answers ``predict`` (and ``predict_proba`` through the ``predict_method``
param). MLflow is imported only inside these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ExportError, RegistryError, UnsafeModelFile

if TYPE_CHECKING:
    from conveyor.actions.python_api import Project
    from conveyor.registry.registry import Version

__all__ = ["ImportedModel", "export_mlflow", "import_mlflow", "read_mlflow_model"]

#: The MLflow flavours import converts, in the order they are looked for.
FLAVOURS = ("sklearn", "xgboost", "lightgbm")
_XGBOOST_CLASSES = ("xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor")
_PICKLES = ("pickle", "cloudpickle")
#: The file names an export gives each Conveyor model file format.
_FILE_NAMES = {
    "skops": "model.skops",
    "xgboost-json": "model.xgboost.json",
    "lightgbm-text": "model.lightgbm.json",
}
_MLFLOW_TYPES = {
    "number": "double",
    "integer": "long",
    "boolean": "boolean",
    "string": "string",
    "datetime": "datetime",
}
META = "conveyor.json"


@dataclass
class ImportedModel:
    """An MLflow model read into memory: the fitted object and what MLflow recorded about it."""

    model: Any
    flavour: str
    source: str
    directory: Path
    run_id: str | None
    serialization: str
    input_example: Any
    params: dict[str, Any]
    metrics: dict[str, float]
    tracking_uri: str | None
    note: str | None = None

    def lineage(self) -> dict[str, Any]:
        """The version's lineage entry for its MLflow origin."""
        return {
            "source": "imported from MLflow",
            "mlflow": {
                "source": self.source,
                "tracking_uri": self.tracking_uri,
                "run_id": self.run_id,
                "flavour": self.flavour,
                "serialization": self.serialization,
                "params": self.params,
                "metrics": self.metrics,
                **({"note": self.note} if self.note else {}),
            },
        }


# -- import ---------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's warnings (its SQL store's deprecations, type-hint advice) are about using MLflow
    itself; importing or exporting, a user acts on Conveyor's errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextmanager
def _tracking(uri: str | None) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` for the block: resolving a ``runs:/``
    URI to the model logged in that run looks the model up in the process-wide store, not in
    the ``tracking_uri`` passed to ``download_artifacts`` (MLflow 3.17)."""
    if uri is None:
        yield
        return
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if before is not None:  # restoring an unset URI also unset the variable
            os.environ["MLFLOW_TRACKING_URI"] = before


def _download(source: str, tracking_uri: str | None, into: str) -> Path:
    """The MLflow model directory named by ``source``, downloaded into ``into`` if remote."""
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "MLmodel").is_file():
            raise RegistryError(
                f"{source!r} is a directory without an MLmodel file; point at the folder that "
                "holds MLmodel (as mlflow.sklearn.save_model writes it)."
            )
        return local
    if not source.startswith(("runs:/", "models:/")):
        raise RegistryError(
            f"{source!r} is neither a runs:/<run_id>/<path> or models:/<name>/<version|alias> URI "
            "nor a directory with an MLmodel file."
        )
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    where = tracking_uri or "the default tracking store (MLFLOW_TRACKING_URI unset)"
    try:
        with _quiet(), _tracking(tracking_uri):
            path = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=into, tracking_uri=tracking_uri
                )
            )
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RegistryError(
            f"Cannot fetch {source!r} from {where}: {first}. Check the URI and --tracking-uri."
        ) from exc
    if not (path / "MLmodel").is_file():
        raise RegistryError(
            f"{source!r} names {path.name!r}, which has no MLmodel file; name the model's folder "
            "(runs:/<run_id>/<artifact path of the model>)."
        )
    return path


def _load_flavour(
    directory: Path,
    flavours: Mapping[str, Any],
    *,
    trust_pickle: bool,
    trusted: Sequence[str],
    source: str,
) -> tuple[str, str, Any]:
    """``(flavour, serialization, model)`` from the first flavour Conveyor converts."""
    what = f"the MLflow model {source!r}"
    found = [f for f in FLAVOURS if f in flavours]
    if not found:
        raise RegistryError(
            f"{what} has the flavours {', '.join(sorted(flavours)) or 'none'}; Conveyor imports "
            f"{', '.join(FLAVOURS)} models (log the model with one of those flavours)."
        )
    flavour = found[0]
    conf = flavours[flavour]
    if flavour == "sklearn":
        fmt = str(conf.get("serialization_format") or "cloudpickle")
        data = (directory / str(conf["pickled_model"])).read_bytes()
        if fmt == "skops":
            from conveyor.store.trusted import load_skops

            # Conveyor's allow-list and model.trusted_types decide, never the list MLmodel
            # carries (skops_trusted_types): a file must not vouch for itself.
            return flavour, fmt, load_skops(data, trusted, what=what)
        return flavour, fmt, _unpickle(data, fmt, what, trust_pickle)
    if flavour == "xgboost":
        cls = str(conf.get("model_class") or "")
        if cls not in _XGBOOST_CLASSES:
            raise RegistryError(
                f"{what} is an XGBoost {cls or 'Booster'}; Conveyor imports "
                f"{' and '.join(_XGBOOST_CLASSES)} (log the scikit-learn estimator)."
            )
        from conveyor.registry.flavours.base import require

        xgb = require("xgboost", "xgboost", what)
        model = xgb.XGBClassifier() if cls.endswith("Classifier") else xgb.XGBRegressor()
        model.load_model(str(directory / str(conf["data"])))
        return flavour, str(conf.get("model_format") or "xgb"), model
    cls = str(conf.get("model_class") or "")
    if not cls.startswith("lightgbm.sklearn."):
        raise RegistryError(
            f"{what} is a LightGBM {cls or 'Booster'}; Conveyor imports the scikit-learn "
            "estimators (LGBMClassifier, LGBMRegressor)."
        )
    # MLflow keeps a LightGBM scikit-learn estimator as skops (its default since 3.x) or, from
    # older versions and on Databricks, as a cloudpickle
    fmt = str(conf.get("serialization_format") or "cloudpickle")
    data = (directory / str(conf["data"])).read_bytes()
    if fmt == "skops":
        from conveyor.store.trusted import load_skops

        return flavour, fmt, load_skops(data, trusted, what=what)
    return flavour, fmt, _unpickle(data, fmt, what, trust_pickle)


def _unpickle(data: bytes, fmt: str, what: str, trust_pickle: bool) -> Any:
    if fmt not in _PICKLES:
        raise RegistryError(f"{what} is serialised as {fmt!r}, a format Conveyor does not read.")
    if not trust_pickle:
        raise UnsafeModelFile(
            f"{what} is a {fmt} file, and loading a {fmt} runs whatever code it holds. Pass "
            "--trust-pickle (trust_pickle=True) if you trust where it came from, or log it again "
            "with serialization_format='skops' (mlflow.sklearn or mlflow.lightgbm log_model)."
        )
    try:
        if fmt == "cloudpickle":
            import cloudpickle  # type: ignore[import-untyped]

            return cloudpickle.loads(data)
        return pickle.loads(data)
    except Exception as exc:
        raise RegistryError(f"Cannot unpickle {what}: {type(exc).__name__}: {exc}") from exc


def _run_facts(
    run_id: str | None, tracking_uri: str | None
) -> tuple[dict[str, Any], dict[str, float], str | None]:
    """The MLflow run's params and metrics, or why they could not be read."""
    if not run_id:
        return {}, {}, "the MLmodel names no run"
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        with _quiet():
            run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {}, {}, f"run {run_id} was not read from the tracking store: {first}"
    return dict(run.data.params), {k: float(v) for k, v in run.data.metrics.items()}, None


def read_mlflow_model(
    source: str,
    *,
    into: str,
    tracking_uri: str | None = None,
    trust_pickle: bool = False,
    trusted: Sequence[str] = (),
) -> ImportedModel:
    """Fetch and load an MLflow model, with its run's params and metrics.

    Args:
        source: ``runs:/<run_id>/<path>``, ``models:/<name>/<version>``,
            ``models:/<name>@<alias>``, or a directory holding ``MLmodel``.
        into: a folder to download into (the caller removes it).
        tracking_uri: the tracking store; default ``MLFLOW_TRACKING_URI``.
        trust_pickle: load a pickle or cloudpickle file (it runs code when loaded).
        trusted: exact type names trusted in a skops file beyond the allow-list.

    Raises:
        RegistryError: the source cannot be fetched, or has no flavour Conveyor converts.
        UnsafeModelFile: a pickle without ``trust_pickle``, or a skops type nobody trusted.
    """
    from mlflow.models import Model

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    directory = _download(source, tracking_uri, into)
    with _quiet():
        mlmodel = Model.load(str(directory))
    flavour, serialization, model = _load_flavour(
        directory, mlmodel.flavors, trust_pickle=trust_pickle, trusted=trusted, source=source
    )
    try:
        with _quiet():
            example = mlmodel.load_input_example(str(directory))
    except Exception:  # an example MLflow itself cannot read back is no example
        example = None
    local = Path(source).expanduser().is_dir()
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    note: str | None
    if not mlmodel.run_id:
        note = "the MLmodel names no run"
    elif local and tracking_uri is None:
        note = "a local directory, read without a tracking store"
    else:
        params, metrics, note = _run_facts(mlmodel.run_id, tracking_uri)
    return ImportedModel(
        model=model,
        flavour=flavour,
        source=source,
        directory=directory,
        run_id=mlmodel.run_id,
        serialization=serialization,
        input_example=example,
        params=params,
        metrics=metrics,
        tracking_uri=tracking_uri,
        note=note,
    )


def import_mlflow(
    source: str,
    *,
    name: str,
    project: Project | None = None,
    path: str | os.PathLike[str] = ".",
    tracking_uri: str | None = None,
    trust_pickle: bool = False,
    data: Any = None,
    target: str | None = None,
    aliases: Sequence[str] = (),
) -> Version:
    """Register an MLflow model as a version of ``name``.

    Without ``data`` the model is judged on its logged input example by the servability gate
    only (nothing labelled to evaluate on); with ``data`` (a holdout frame holding ``target``,
    or a CSV/Parquet file of one) it is evaluated and judged by the project's gates as
    :func:`conveyor.register` does. The MLflow run's params are logged to the Conveyor run that
    registers it, its metrics kept with the version (``mlflow_``-prefixed where the evaluation
    computes the same name), and the lineage names the MLflow source and run.

    Raises:
        RegistryError: the source cannot be fetched or converted, or no rows to judge it on.
        UnsafeModelFile: a pickle without ``trust_pickle``, or a skops type nobody trusted.
        RegistrationRefused: a gate refused it (nothing is registered).
    """
    from conveyor.actions.python_api import _project, register, start_run

    proj = _project(project, path)
    proj.code_on_path()
    with tempfile.TemporaryDirectory(prefix="conveyor-mlflow-") as tmp:
        imported = read_mlflow_model(
            source,
            into=tmp,
            tracking_uri=tracking_uri,
            trust_pickle=trust_pickle,
            trusted=proj.trusted_types(),
        )
    rows: Any
    if data is None:  # unlabelled: judged on its input example, by the servability gate only
        if imported.input_example is None:
            raise RegistryError(
                f"{source!r} was logged without an input example, so there are no rows to check "
                "it is servable on; give --data FILE (a holdout with the --target column)."
            )
        rows, gates, metrics = (_as_frame(imported.input_example, source), None), None, None
    else:
        if target is None:
            raise RegistryError("--data needs --target: the column of the holdout to evaluate on.")
        rows, gates = _frame(data), "project"
        metrics = {f"mlflow_{k}": v for k, v in imported.metrics.items()}  # computed names win
    if metrics is None:
        metrics = dict(imported.metrics)
    with start_run(f"import {name}", project=proj, params=imported.params):
        return register(
            imported.model,
            name=name,
            data=rows,
            target=target if data is not None else None,
            project=proj,
            gates=gates,
            metrics=metrics,
            aliases=aliases,
            source=imported.lineage(),
        )


def _frame(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    file = Path(data)
    if not file.is_file():
        raise RegistryError(f"--data {str(data)!r} is not a file; give a CSV or Parquet holdout.")
    if file.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(file)
    if file.suffix.lower() == ".csv":
        return pd.read_csv(file)
    raise RegistryError(f"--data {str(data)!r}: read .csv or .parquet files, not {file.suffix!r}.")


def _as_frame(example: Any, source: str) -> Any:
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        return example.reset_index(drop=True)
    if isinstance(example, dict):
        return pd.DataFrame(example)
    raise RegistryError(
        f"The input example of {source!r} is a {type(example).__name__}, not a frame with named "
        "columns; give --data FILE (a holdout with the --target column)."
    )


# -- export ---------------------------------------------------------------------------------


def export_mlflow(
    ref: str,
    out: str | os.PathLike[str],
    *,
    project: Project | None = None,
    path: str | os.PathLike[str] = ".",
) -> Path:
    """Write version ``ref`` (``NAME:VERSION``, ``NAME@ALIAS``) as an MLflow model directory.

    ``out`` gets ``MLmodel`` (a ``python_function`` flavour whose loader is this module, the
    signature with a ``predict_method`` param), ``model/`` (the model file, byte for byte the
    registered one, and ``conveyor.json``: its format, sha256, signature and the project's
    trusted types), ``code/`` (the project's modules those types live in, if any),
    ``requirements.txt`` and ``python_env.yaml``.

    Raises:
        ModelNotFound: no such version.
        ModelTampered: the file no longer matches its sha256.
        ExportError: ``out`` exists and is not empty, or the version is a pickle.
    """
    from conveyor.actions.python_api import _project, parse_ref

    proj = _project(project, path)
    name, which = parse_ref(ref)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"{str(target)!r} exists and is not an empty folder; name a new one.")
    with proj.registry() as registry:
        record = registry.version(name, which)
        if record.file.format == "pickle":
            raise ExportError(
                f"{record.label} is a pickle; export writes the formats that load without "
                f"running code ({', '.join(_FILE_NAMES)}). Register it as skops first."
            )
        from conveyor.registry.modelfile import verified_bytes

        data = verified_bytes(registry.artifacts, record.file, record.label)
    file_name = _FILE_NAMES.get(record.file.format, f"model.{record.file.format}")
    meta = {
        "model": record.model,
        "version": record.version,
        "task": record.task,
        "format": record.file.format,
        "class": record.file.cls,
        "file": file_name,
        "sha256": record.file.digest,
        "signature": record.signature,
        "trusted_types": list(proj.trusted_types()),
    }
    from conveyor.store.atomic import write_text

    model_dir = target / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / file_name).write_bytes(data)
    code = _copy_project_code(proj, target / "code")
    meta["code"] = code
    write_text(model_dir / META, json.dumps(meta, indent=2) + "\n")
    with _quiet():
        _write_mlmodel(target, record, _requirements(record.file.format), bool(code))
    return target


def _copy_project_code(proj: Project, into: Path) -> list[str]:
    """The project's own modules the model's trusted types live in (``features`` for
    ``features.Clip``), copied beside the model so MLflow puts them on the path when it loads
    it (the MLmodel's ``code``); returns the modules copied."""
    import shutil

    copied = []
    for module in sorted({name.split(".")[0] for name in proj.trusted_types()}):
        for base in (proj.root / "src", proj.root):
            package, file = base / module, base / f"{module}.py"
            if (package / "__init__.py").is_file():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(package, into / module, ignore=ignore)
            elif file.is_file():
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, into / file.name)
            else:
                continue  # not the project's: a library the environment installs
            copied.append(module)
            break
    return copied


def _requirements(fmt: str) -> list[str]:
    from importlib import metadata

    names = ["conveyor-ml", "pandas", "numpy"]
    names += {
        "skops": ["scikit-learn", "skops"],
        "xgboost-json": ["xgboost"],
        "lightgbm-text": ["lightgbm"],
    }.get(fmt, [])
    pins = []
    for dist in names:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _write_mlmodel(target: Path, record: Version, requirements: list[str], with_code: bool) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from conveyor.store.atomic import write_text

    inputs = Schema(
        [
            ColSpec(
                _MLFLOW_TYPES.get(f["type"], "string"),
                f["name"],
                required=not f.get("nullable", False),
            )
            for f in record.signature["inputs"]
        ]
    )
    methods = ["predict", "predict_proba"] if record.task == "classification" else ["predict"]
    params = ParamSchema([ParamSpec("predict_method", "string", "predict")])
    python = ".".join(map(str, sys.version_info[:3]))
    mlmodel = Model(
        signature=ModelSignature(inputs=inputs, params=params),
        metadata={
            "conveyor": {
                "model": record.model,
                "version": record.version,
                "sha256": record.file.digest,
                "predict_methods": methods,
            }
        },
    )
    mlflow.pyfunc.add_to_model(
        mlmodel,
        loader_module=__name__,
        data="model",
        code="code" if with_code else None,
        python_env="python_env.yaml",
        python_version=python,
    )
    mlmodel.save(str(target / "MLmodel"))
    write_text(target / "requirements.txt", "\n".join(requirements) + "\n")
    write_text(
        target / "python_env.yaml",
        f"python: {python}\nbuild_dependencies:\n  - pip\ndependencies:\n  - -r requirements.txt\n",
    )


# -- the loader MLflow calls ----------------------------------------------------------------


class _PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` returns for an exported version."""

    def __init__(self, native: Any, meta: dict[str, Any]) -> None:
        self.native = native
        self.task = meta["task"]
        self.columns = [f["name"] for f in meta["signature"]["inputs"]]
        self.classes = list((meta["signature"].get("output") or {}).get("classes") or [])

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        X = frame[self.columns]
        method = (params or {}).get("predict_method") or "predict"
        if method == "predict":
            return self.native.predict(X)
        if method == "predict_proba" and self.task == "classification":
            proba = np.asarray(self.native.predict_proba(X), dtype=float)
            if proba.ndim == 1:
                proba = np.column_stack([1.0 - proba, proba])
            return pd.DataFrame(proba, columns=[str(c) for c in self.classes])
        raise ValueError(
            f"predict_method {method!r} is not offered by this {self.task} model; use "
            f"{'predict or predict_proba' if self.task == 'classification' else 'predict'}."
        )


def _load_pyfunc(data_path: str) -> _PyfuncModel:
    """MLflow's entry point (``loader_module``): load an exported version from its folder.

    The sha256 guards against a damaged copy; what the folder may load is what it was exported
    with. An MLflow model directory is code (its MLmodel names the loader and may ship more),
    so trust the folder as you trust whoever wrote it.
    """
    folder = Path(data_path)
    meta = json.loads((folder / META).read_text())
    data = (folder / meta["file"]).read_bytes()
    what = f"model {meta['model']!r} version {meta['version']} (exported to {folder.parent})"
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        from conveyor.exceptions import ModelTampered

        raise ModelTampered(
            f"The file of {what} no longer matches the sha256 it was exported with; export it "
            "again with 'conveyor models export'."
        )
    trusted = tuple(meta.get("trusted_types") or ())
    if meta["format"] == "skops":
        from conveyor.store.trusted import load_skops

        native = load_skops(data, trusted, what=what)
    else:
        from conveyor.registry.flavours import for_format

        native = for_format(meta["format"]).load(
            meta["format"], data, what=what, trusted_extra=trusted
        )
    return _PyfuncModel(native, meta)
