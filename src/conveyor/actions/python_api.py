"""The public Python API: ``conveyor.open_project``, ``load_model``, ``register`` and
``start_run``, for notebooks and scripts outside a pipeline.

These are actions like the CLI's: they open the project's stores, go through the registry and
the gates the pipeline uses, and write the same rows (runs, versions, events), so what a
notebook does shows in ``conveyor runs``, ``conveyor models`` and the dashboard like the rest.
``conveyor/__init__.py`` resolves these names lazily, so ``import conveyor`` in a pipeline step
stays as light as before. Each function takes ``project=`` (an open :class:`Project`) or
``path=`` (a folder at or below the project's ``conveyor.yaml``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError, GateError, InvalidInput, RegistryError

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry, Version
    from conveyor.store.stores import Stores

__all__ = [
    "LoadedModel",
    "Project",
    "RegistrationRefused",
    "Run",
    "load_model",
    "open_project",
    "register",
    "start_run",
]

#: ``gates=`` of :func:`register`: the project's ``gates:`` list from conveyor.yaml.
PROJECT_GATES = "project"
_RUN_STEP_REASON = "started from Python"


class RegistrationRefused(GateError):
    """``conveyor.register`` judged the model and a blocking gate failed; ``gates`` holds every
    verdict (as ``conveyor models show`` prints them), and nothing was registered."""

    def __init__(self, message: str, gates: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.gates = gates


# -- the project ----------------------------------------------------------------------------


@dataclass
class Project:
    """A project found on disk: its validated ``conveyor.yaml`` and where its stores are.

    Opening one reads only the YAML; the stores are opened by each call and closed after it,
    so a project object can live as long as a notebook without holding a database connection.
    """

    config: ProjectConfig

    @property
    def root(self) -> Path:
        """The folder holding conveyor.yaml."""
        return Path(self.config.root)

    @property
    def name(self) -> str:
        """The project's name (``project:`` in conveyor.yaml)."""
        return self.config.project

    @contextmanager
    def stores(self) -> Iterator[Stores]:
        """The metadata store and the artifact store, open for the block."""
        from conveyor.store.stores import open_stores

        with open_stores(self.config) as stores:
            yield stores

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        """The registry over the project's stores, open for the block."""
        from conveyor.registry.registry import Registry

        with self.stores() as stores:
            yield Registry(stores.metadata, stores.artifacts)

    def code_on_path(self) -> None:
        """Make the project's own modules importable (its ``src/`` and its root), as a step
        and ``conveyor serve`` see them, so a model using a class of the project loads."""
        for folder in (self.root / "src", self.root):
            entry = str(folder)
            if folder.is_dir() and entry not in sys.path:
                sys.path.insert(0, entry)

    def trusted_types(self) -> tuple[str, ...]:
        """``model.trusted_types``: the exact names this project trusts in a model file."""
        return tuple(self.config.model.trusted_types) if self.config.model else ()

    def __repr__(self) -> str:
        return f"<conveyor.Project {self.name!r} at {str(self.root)!r}>"


def open_project(path: str | os.PathLike[str] = ".") -> Project:
    """The project whose ``conveyor.yaml`` is in ``path`` or a folder above it.

    Args:
        path: a folder inside the project (default: the working directory).

    Raises:
        ProjectError: no conveyor.yaml there or above.
        ConfigError: conveyor.yaml cannot be used as written (every problem with its line).
    """
    from conveyor.config import load_config
    from conveyor.project import CONFIG_FILE, find_root

    return Project(load_config(find_root(Path(path)) / CONFIG_FILE))


def _project(project: Project | None, path: str | os.PathLike[str]) -> Project:
    if project is None:
        return open_project(path)
    if not isinstance(project, Project):
        raise ConveyorError(
            f"project= takes what conveyor.open_project() returns, not a "
            f"{type(project).__name__}; or pass path= (a folder of the project)."
        )
    return project


# -- loading a version ----------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@ALIAS``, ``NAME:VERSION`` or ``NAME`` (the latest version) → ``(name, ref)``.

    Raises:
        RegistryError: the string is not one of those forms.
    """
    text = ref.strip() if isinstance(ref, str) else ""
    for sep in ("@", ":"):
        name, found, rest = text.partition(sep)
        if found:
            if not name or not rest or "@" in rest or ":" in rest:
                break
            if sep == ":" and not (rest == "latest" or (rest.isascii() and rest.isdigit())):
                raise RegistryError(
                    f"{ref!r}: after ':' comes a version number or 'latest' (such as "
                    f"'{name}:3'); for an alias write '{name}@{rest}'."
                )
            return name, rest
    else:
        if text:
            return text, "latest"
    raise RegistryError(
        f"{ref!r} does not name a model version; write 'NAME@ALIAS' (such as "
        "'loans-risk@production'), 'NAME:VERSION' ('loans-risk:3') or 'NAME' (its latest)."
    )


class LoadedModel:
    """A registered version loaded in this process: ``predict`` and ``predict_proba`` on a
    DataFrame, its columns picked and ordered by the version's signature as the gateway does.

    Attributes:
        name, version, aliases, task: which version this is.
        signature: the input and output schema recorded at registration.
        classes: a classifier's classes, in the order of ``predict_proba``'s columns.
        digest: the sha256 of the model file, checked when it was read.
        native: the fitted model object itself.
    """

    def __init__(self, record: Version, native: Any) -> None:
        self.name = record.model
        self.version = record.version
        self.aliases = list(record.aliases)
        self.task = record.task
        self.signature = record.signature
        self.digest = record.file.digest
        self.classes = list((record.signature.get("output") or {}).get("classes") or [])
        self.native = native
        self.columns = [f["name"] for f in record.signature.get("inputs", [])]

    def _features(self, frame: Any) -> Any:
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            try:
                frame = pd.DataFrame(frame)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"{self} predicts on a DataFrame (or what pandas.DataFrame() takes), not a "
                    f"{type(frame).__name__}: {exc}"
                ) from None
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InvalidInput(
                f"The frame lacks column(s) {', '.join(map(repr, missing))} that {self} takes; "
                f"it takes {', '.join(self.columns)}."
            )
        return frame[self.columns]

    def predict(self, frame: Any) -> Any:
        """Labels (a classifier) or values (a regressor), one per row, as a NumPy array.

        Raises:
            InvalidInput: the frame lacks a column of the signature.
        """
        return self.native.predict(self._features(frame))

    def predict_proba(self, frame: Any) -> Any:
        """The (rows × classes) probabilities, columns in the order of ``classes``.

        Raises:
            InvalidInput: the frame lacks a column of the signature.
            RegistryError: the version is a regressor.
        """
        if self.task != "classification" or not hasattr(self.native, "predict_proba"):
            raise RegistryError(f"{self} is a {self.task} model; it has no predict_proba.")
        import numpy as np

        proba = np.asarray(self.native.predict_proba(self._features(frame)), dtype=float)
        return np.column_stack([1.0 - proba, proba]) if proba.ndim == 1 else proba

    def __str__(self) -> str:
        return f"model {self.name!r} version {self.version}"

    def __repr__(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"<conveyor.LoadedModel {self.name}:{self.version}{aliases} {self.task}>"


def load_model(
    ref: str, *, project: Project | None = None, path: str | os.PathLike[str] = "."
) -> LoadedModel:
    """A registered version, ready to predict: ``"loans-risk@production"``,
    ``"loans-risk:3"``, ``"loans-risk@staging"`` or ``"loans-risk"`` (the latest).

    The model file is read from the artifact store and loaded only if its bytes match the
    sha256 recorded at registration, with the gateway's rules: skops files only when every
    type they name is allowed (``model.trusted_types`` adds exact names), pickles only under
    ``registry.allow_pickle``. The project's code (its root and ``src/``) is put on
    ``sys.path`` first, so a model using the project's own classes loads.

    Args:
        ref: which version, as above.
        project: an open project (``conveyor.open_project()``); else ``path`` is opened.
        path: a folder inside the project (default: the working directory).

    Raises:
        ModelNotFound: no such model, version or alias (the message lists what exists).
        ModelTampered: the file no longer matches its recorded sha256.
        UnsafeModelFile: the file needs a type nobody trusted, or is a forbidden pickle.
    """
    proj = _project(project, path)
    name, which = parse_ref(ref)
    proj.code_on_path()
    with proj.registry() as registry:
        record = registry.version(name, which)
        native = registry.load(
            record,
            allow_pickle=proj.config.registry.allow_pickle,
            trusted_extra=proj.trusted_types(),
        )
    return LoadedModel(record, native)


# -- ad-hoc runs ----------------------------------------------------------------------------


_current: list[Run] = []  # the open runs, innermost last


@dataclass
class Run:
    """An ad-hoc run opened by :func:`start_run`: what it logs is written when the block ends,
    in one transaction, also when the block raises (then the run is ``failed``)."""

    id: str
    name: str
    project: Project
    tracker: Any = field(repr=False)
    status: str = "running"

    @contextmanager
    def _active(self) -> Iterator[None]:
        from conveyor.pipeline import tracking

        before = tracking._active
        tracking._active = self.tracker
        try:
            yield
        finally:
            tracking._active = before

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Record a metric; repeated calls for one key form a series (``conveyor.log_metric``)."""
        from conveyor.pipeline import tracking

        self._check_open()
        with self._active():
            tracking.log_metric(key, value, step)

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Record several metrics at once."""
        for key, value in values.items():
            self.log_metric(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        """Record a parameter (JSON-serialisable; anything else is kept as its repr)."""
        from conveyor.pipeline import tracking

        self._check_open()
        with self._active():
            tracking.log_param(key, value)

    def log_params(self, values: Mapping[str, Any]) -> None:
        """Record several parameters at once."""
        for key, value in values.items():
            self.log_param(key, value)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Copy a file into the artifact store now and attach it to the run; returns its sha256."""
        from conveyor.pipeline import tracking

        self._check_open()
        with self._active():
            return tracking.log_artifact(path, name)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters logged so far."""
        return dict(self.tracker.params)

    def _check_open(self) -> None:
        if self.status != "running":
            raise ConveyorError(
                f"Run {self.id} ({self.name!r}) has ended ({self.status}); log inside its "
                "'with conveyor.start_run(...)' block, or start another run."
            )


@contextmanager
def start_run(
    name: str = "notebook",
    *,
    project: Project | None = None,
    path: str | os.PathLike[str] = ".",
    params: Mapping[str, Any] | None = None,
) -> Iterator[Run]:
    """Track work outside a pipeline: ``with conveyor.start_run("tuning") as run:``.

    The run is recorded like a pipeline run with one step called ``name``: it is listed by
    ``conveyor runs``, shown by ``conveyor show`` and the dashboard, and ends ``succeeded``
    when the block completes, ``failed`` when it raises (the error and traceback are kept) and
    ``interrupted`` on Ctrl-C. Inside the block, ``run.log_*`` and the module-level
    ``conveyor.log_*`` both record into this run; ``conveyor.register()`` called inside it
    records this run as the version's lineage.

    Args:
        name: the name of the run's one step, shown where a pipeline shows its steps.
        project: an open project; else ``path`` is opened.
        path: a folder inside the project (default: the working directory).
        params: parameters to record at once (as ``run.log_param`` would).

    Raises:
        ConveyorError: ``name`` is empty.
        StoreError: the metadata store cannot be written.
    """
    from conveyor.pipeline import keys, tracking
    from conveyor.project import git_state
    from conveyor.store.metadata import StepRecord
    from conveyor.store.records import utcnow

    if not isinstance(name, str) or not name.strip():
        raise ConveyorError(f"start_run: the name must be a non-empty string, got {name!r}.")
    proj = _project(project, path)
    proj.code_on_path()
    env = keys.env_lock()
    commit, dirty = git_state(proj.root)
    started, t0 = utcnow(), time.perf_counter()
    with proj.stores() as stores:
        store = stores.metadata
        store.save_env_lock(env.hash, env.python, list(env.packages))
        run_id = store.start_run(
            project=proj.name,
            # Not the pipeline's workspace: `conveyor run` marks runs left 'running' in its
            # workspace as interrupted, and this one is alive while it does.
            workspace=f"python:{proj.root}",
            env_hash=env.hash,
            config_hash=keys.digest_of(proj.config.to_json()),
            args={"python": name, "pid": os.getpid()},
            git_commit=commit,
            git_dirty=dirty,
            steps={name: ""},
        )
        store.step_started(run_id, name, _RUN_STEP_REASON)
    tracker = tracking.Tracker(step=name, artifacts_url=proj.config.artifacts_url())
    run = Run(id=run_id, name=name, project=proj, tracker=tracker)
    if params:
        run.log_params(params)
    before = tracking._active
    tracking._active = tracker
    _current.append(run)
    status, error, trace = "succeeded", None, None
    try:
        yield run
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
        status = "interrupted" if interrupted else "failed"
        error = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc()
        raise
    finally:
        _current.remove(run)
        tracking._active = before
        run.status = status
        with proj.stores() as stores:
            stores.metadata.record_step(
                StepRecord(
                    run_id=run_id,
                    step=name,
                    status="ran" if status == "succeeded" else "failed",
                    cache_key="",
                    reason=_RUN_STEP_REASON,
                    started_at=started,
                    finished_at=utcnow(),
                    duration_s=time.perf_counter() - t0,
                    error=error,
                    traceback=trace,
                    metrics=list(tracker.metrics),
                    params=dict(tracker.params),
                    artifacts=list(tracker.artifacts),
                )
            )
            stores.metadata.finish_run(run_id, status, error)


def current_run() -> Run | None:
    """The innermost run open in this process, if any."""
    return _current[-1] if _current else None


# -- registering a fitted model -------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """How :func:`register` was asked to judge the model (its keyword arguments)."""

    target: str | None
    task: str | None
    gates: Any
    metrics: Mapping[str, float] | None
    aliases: tuple[str, ...]
    positive_class: Any
    slices: Sequence[str] | None
    onnx: bool | None


@dataclass
class _Data:
    """The rows a model is judged on: the holdout (features and, when known, the target)."""

    holdout: Any
    target: str | None


def _data(data: Any, target: str | None) -> _Data:
    import pandas as pd

    if isinstance(data, tuple):
        if len(data) != 2:
            raise GateError(
                f"data= takes (X, y) or a holdout DataFrame; got a tuple of {len(data)} items."
            )
        X, y = data
        if not isinstance(X, pd.DataFrame):
            raise GateError(
                f"data=(X, y): X must be a DataFrame with named columns, not a "
                f"{type(X).__name__}; the signature requests are checked against comes from it."
            )
        if y is None:
            return _Data(X.reset_index(drop=True), None)
        name = target or (getattr(y, "name", None) if isinstance(y, pd.Series) else None)
        name = str(name) if name is not None else "target"
        if name in X.columns:
            raise GateError(
                f"data=(X, y): X already has a column {name!r}, the name taken for y; pass "
                "target='...' to name y otherwise."
            )
        values = y.to_numpy() if hasattr(y, "to_numpy") else list(y)
        if len(values) != len(X):
            raise GateError(f"data=(X, y): X has {len(X)} rows and y has {len(values)}.")
        return _Data(X.reset_index(drop=True).assign(**{name: values}), name)
    if isinstance(data, pd.DataFrame):
        if target is None:
            raise GateError(
                "data= is a holdout frame; name its target column with target='...' (or "
                "pass data=(X, y))."
            )
        if target not in data.columns:
            raise GateError(
                f"target {target!r} is not a column of the holdout; it has "
                f"{', '.join(map(str, data.columns))}."
            )
        return _Data(data.reset_index(drop=True), target)
    raise GateError(
        f"data= takes (X, y) or a holdout DataFrame with the target column, not a "
        f"{type(data).__name__}."
    )


def _task_of(model: Any) -> str:
    return "classification" if hasattr(model, "classes_") else "regression"


def _gates(gates: Any, config: ProjectConfig) -> list[Any]:
    from conveyor.config import GateConfig

    if gates == PROJECT_GATES:
        return list(config.gates)
    if gates is None:
        return []
    if isinstance(gates, str | Mapping):
        gates = [gates]
    parsed = []
    for index, gate in enumerate(gates):
        if isinstance(gate, GateConfig):
            parsed.append(gate)
            continue
        try:
            parsed.append(GateConfig.model_validate(gate))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            detail = str(exc).splitlines()
            reason = detail[-1].strip() if detail else str(exc)
            raise GateError(
                f"gates[{index}] ({gate!r}) is not a gate: {reason}. Write it as in "
                "conveyor.yaml, such as 'roc_auc >= 0.8' or {'size': {'max_mb': 20}}."
            ) from None
    return parsed


def register(
    model: Any,
    *,
    name: str,
    data: Any,
    target: str | None = None,
    task: str | None = None,
    project: Project | None = None,
    path: str | os.PathLike[str] = ".",
    gates: Any = PROJECT_GATES,
    metrics: Mapping[str, float] | None = None,
    aliases: Sequence[str] = (),
    positive_class: Any = None,
    slices: Sequence[str] | None = None,
    onnx: bool | None = None,
    source: Mapping[str, Any] | None = None,
) -> Version:
    """Judge a model fitted in a notebook and register it, as ``conveyor ci`` would.

    The model is evaluated on ``data`` with the built-in evaluation (classification or
    regression metrics, per slice, plots), saved through its flavour (skops for scikit-learn,
    the framework's own format for XGBoost and LightGBM: never a pickle), exported to ONNX
    when the export predicts like the model, judged by the gates and, last, by the
    servability gate (loaded as the gateway loads it, in a clean process, and sent the
    holdout as JSON). Only then is it registered, with lineage "registered from Python": the
    run (the enclosing ``start_run``, else one made for this call), git commit, environment.

    Args:
        model: the fitted estimator.
        name: the model's name in the registry.
        data: ``(X, y)`` or a holdout DataFrame holding ``target``; ``(X, None)`` registers
            without evaluation (no metrics are computed, so only gates that need none run).
        target: the target column of a holdout frame (or the name to give ``y``).
        task: ``"classification"`` or ``"regression"``; by default ``model.task`` when
            ``name`` is the project's model, else classification when the model has
            ``classes_``.
        project: an open project; else ``path`` is opened.
        path: a folder inside the project (default: the working directory).
        gates: ``"project"`` (default: the ``gates:`` of conveyor.yaml), ``None`` or ``[]``
            (no gates but the servability gate, which always runs), or a list written as
            in conveyor.yaml (``["roc_auc >= 0.8", {"size": {"max_mb": 5}}]``).
        metrics: more numbers to record (such as cross-validation scores); a name the
            evaluation computes is refused.
        aliases: environments to point at the new version, such as ``("staging",)``.
        positive_class, slices: as ``model.positive_class`` and ``model.slices``; by
            default those of conveyor.yaml when ``name`` is the project's model.
        onnx: try an ONNX export (kept only when faithful); default ``model.onnx``, else on.
        source: extra lineage (the MLflow bridge records the MLflow run here).

    Returns:
        The registered version (``.version`` is its number).

    Raises:
        RegistrationRefused: a blocking gate failed; ``.gates`` has every verdict.
        GateError: the data or a gate cannot be used as given.
        UnsafeModelFile: the model needs a type nobody trusted (``model.trusted_types``).
    """
    proj = _project(project, path)
    proj.code_on_path()
    run = current_run()
    if run is not None and run.project.root != proj.root:
        run = None  # a run of another project: this registration gets its own
    options = _Options(target, task, gates, metrics, tuple(aliases), positive_class, slices, onnx)
    if run is not None:
        return _register(proj, run, model, name, data, options, source)
    with start_run(f"register {name}", project=proj) as own:
        return _register(proj, own, model, name, data, options, source)


def _register(
    proj: Project,
    run: Run,
    model: Any,
    name: str,
    data: Any,
    options: _Options,
    source: Mapping[str, Any] | None,
) -> Version:
    from conveyor.actions.models import _store_frame
    from conveyor.evaluate.steps import features_of
    from conveyor.evaluate.values import jsonable
    from conveyor.gates.model_gates import Candidate, evaluate_gate
    from conveyor.registry.flavours import flavour_of
    from conveyor.registry.modelfile import save_model
    from conveyor.registry.onnx import OnnxModel
    from conveyor.registry.registry import NewVersion

    config = proj.config
    own = config.model if config.model is not None and config.model.name == name else None
    rows = _data(data, options.target or (own.target if own else None))
    task = options.task or (config.task() if own else None) or _task_of(model)
    positive_class = options.positive_class
    if positive_class is None and own is not None:
        positive_class = own.positive_class
    slices = list(options.slices if options.slices is not None else (own.slices if own else []))
    metrics, aliases, onnx = options.metrics, options.aliases, options.onnx
    judged = _gates(options.gates, config)
    evaluation = _evaluate(model, rows, task, slices, positive_class, name)
    computed = {
        k: v
        for k, v in evaluation.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for key, value in (metrics or {}).items():
        if key in computed:
            raise GateError(
                f"metrics[{key!r}] is computed from data= ({computed[key]:.4g}); record your "
                f"own number under another name, such as 'cv_{key}'."
            )
        computed[key] = float(value)
    run.log_metrics(computed)
    target_col = rows.target or ""
    features = features_of(model, rows.holdout, target_col)
    flavour = flavour_of(model)
    signature = flavour.signature(model, features, task)
    trusted = proj.trusted_types()
    with proj.registry() as registry:
        artifacts = registry.artifacts
        file = save_model(model, artifacts, trusted_extra=trusted)
        holdout_desc = _store_frame(artifacts, rows.holdout)
        onnx_record, serving = None, None
        if onnx if onnx is not None else (own.onnx if own else True):
            data_bytes, report = flavour.export_onnx(model, features.head(500), task)
            if data_bytes is None:
                onnx_record = {"digest": None, "size": None, **report}
            else:
                stored = artifacts.put_bytes(data_bytes)
                onnx_record = {"digest": stored.digest, "size": stored.size, **report}
                serving = OnnxModel(data_bytes)
        candidate = Candidate(
            model_name=name,
            task=task,
            target=target_col,
            model=model,
            holdout=rows.holdout,
            metrics=computed,
            file_size=file.size,
            evaluation_step="conveyor.register",
            threshold=float((evaluation.get("settings") or {}).get("threshold", 0.5)),
            serving=serving,
            positive_class=positive_class,
        )
        incumbents: dict[str, Any] = {}

        def incumbent(env: str) -> tuple[int, Any] | None:
            from conveyor.exceptions import ModelNotFound

            if env not in incumbents:
                try:
                    served = registry.version(name, env)
                except ModelNotFound:
                    incumbents[env] = None
                else:
                    native = registry.load(
                        served, allow_pickle=config.registry.allow_pickle, trusted_extra=trusted
                    )
                    incumbents[env] = (served.version, native)
            return incumbents[env]

        results = [evaluate_gate(gate, candidate, incumbent) for gate in judged]
        if not any(r.blocks for r in results):
            spec = {
                "artifacts": config.artifacts_url(),
                "model": name,
                "task": task,
                "signature": signature,
                "file": file.to_dict(),
                "onnx": onnx_record,
                "holdout": holdout_desc,
                "allow_pickle": config.registry.allow_pickle,
                "trusted_extra": list(trusted),
            }
            results.append(_servable(proj, spec, model, features, signature, task))
        verdicts = [r.to_dict() for r in results]
        if any(r.blocks for r in results):
            _refused(registry, name, run.id, verdicts)
        plots = {
            key: artifacts.put_bytes(svg.encode()).digest
            for key, svg in (evaluation.get("plots") or {}).items()
            if isinstance(svg, str)
        }
        lineage = _lineage(proj, run, source)
        new = NewVersion(
            project=config.project,
            model=name,
            run_id=run.id,
            task=task,
            file=file,
            signature=signature,
            metrics=jsonable(computed),
            lineage=lineage,
            holdout=holdout_desc,
            onnx=onnx_record,
            slices=jsonable(_slice_numbers(evaluation.get("slices") or {})),
            gates=verdicts,
            plots=plots,
            card={
                "target": rows.target,
                "intended_use": own.intended_use if own else None,
                "limitations": own.limitations if own else None,
                "confusion_matrix": evaluation.get("confusion_matrix"),
                "per_class": evaluation.get("per_class"),
                "positive_class": (evaluation.get("settings") or {}).get("positive_class"),
                "holdout_rows": len(rows.holdout),
                "evaluation_step": "conveyor.register" if evaluation else None,
                "registered_from": "python",
            },
        )
        version = registry.register(new)
        for alias in aliases:
            registry.set_alias(name, alias, version.version, reason="python-api")
        return registry.version(name, version.version)


def _evaluate(
    model: Any,
    rows: _Data,
    task: str,
    slices: list[str],
    positive_class: Any,
    name: str,
) -> dict[str, Any]:
    """The built-in evaluation's dict (as an evaluation step returns it), or {} without a
    target."""
    from conveyor.evaluate.steps import classification, regression

    if rows.target is None:
        return {}
    try:
        if task == "classification":
            return classification(
                model,
                rows.holdout,
                target=rows.target,
                slices=slices,
                positive_class=positive_class,
            )
        if task == "regression":
            return regression(model, rows.holdout, target=rows.target, slices=slices)
    except ValueError as exc:
        raise GateError(f"Cannot evaluate {name!r} on data=: {exc}") from exc
    raise GateError(f"task={task!r}: use 'classification' or 'regression'.")


def _slice_numbers(slices: dict[str, Any]) -> dict[str, Any]:
    from conveyor.actions.ci import _slice_numbers as numbers

    return numbers(slices)


def _servable(
    proj: Project,
    spec: dict[str, Any],
    model: Any,
    features: Any,
    signature: dict[str, Any],
    task: str,
) -> Any:
    """The servability gate of ``conveyor ci``, run on this candidate: the same subprocess
    (``python -m conveyor.actions.ci --servable``) and the same verdict."""
    import json
    import subprocess
    import tempfile

    from conveyor.actions.ci import SERVABLE_ROWS, SERVABLE_TIMEOUT_S, _servable_result
    from conveyor.evaluate.steps import class_probabilities
    from conveyor.evaluate.values import jsonable

    start = time.perf_counter()
    names = [f["name"] for f in signature["inputs"]]
    rows = features[names].head(SERVABLE_ROWS)
    if task == "classification":
        expected = jsonable([[float(v) for v in r] for r in class_probabilities(model, rows)[1]])
    else:
        expected = jsonable([float(v) for v in model.predict(rows)])
    spec = {**spec, "columns": names, "rows": len(rows), "expected": expected}
    fd, tmp = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor.actions.ci", "--servable", tmp],
            capture_output=True,
            text=True,
            timeout=SERVABLE_TIMEOUT_S,
            cwd=str(proj.root),
            stdin=subprocess.DEVNULL,
        )
        lines = done.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines else None
        if not isinstance(answer, dict):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            answer = {"ok": False, "error": f"the check exited {done.returncode}: {tail}"}
    except subprocess.TimeoutExpired:
        answer = {"ok": False, "error": f"loading and predicting took over {SERVABLE_TIMEOUT_S} s"}
    finally:
        os.unlink(tmp)
    result = _servable_result(answer, len(rows))
    result.duration_s = time.perf_counter() - start
    return result


def _refused(registry: Registry, name: str, run_id: str, verdicts: list[dict[str, Any]]) -> None:
    """Record the refusal (a ``candidate.rejected`` event, as ``conveyor ci`` writes) and raise."""
    from conveyor.store import events as ev

    failed = [g for g in verdicts if g["blocks"]]
    with registry.store.session() as s:
        registry.store.add_event(
            s,
            ev.CANDIDATE_REJECTED,
            "model",
            name,
            {
                "run_id": run_id,
                "failed": [g["name"] for g in failed],
                "gates": [
                    {k: g[k] for k in ("name", "kind", "verdict", "summary")} for g in verdicts
                ],
            },
        )
    reasons = "; ".join(f"{g['name']}: {g['verdict']} ({g['summary']})" for g in failed)
    raise RegistrationRefused(
        f"{name!r} was not registered: {reasons}. The verdicts are in .gates; fix the model or "
        "the data, or pass gates= to judge it otherwise.",
        verdicts,
    )


def _lineage(proj: Project, run: Run, source: Mapping[str, Any] | None) -> dict[str, Any]:
    """Where the version came from: the Python run, the code's commit, the environment."""
    from conveyor.pipeline import keys
    from conveyor.project import git_state

    commit, dirty = git_state(proj.root)
    env = keys.env_lock()
    lineage: dict[str, Any] = {
        "source": "registered from Python",
        "registered_by": "python-api",
        "run_id": run.id,
        "run_name": run.name,
        "git_commit": commit,
        "git_dirty": dirty,
        "params": {run.name: run.params} if run.params else {},
        "snapshots": [],
        "env_hash": env.hash,
        "python": env.python,
        "packages": len(env.packages),
        "config_hash": keys.digest_of(proj.config.to_json()),
    }
    if source:
        lineage.update(source)
    return lineage
