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

from conveyor.exceptions import ConveyorError, InvalidInput, RegistryError

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry, Version
    from conveyor.store.stores import Stores


__all__ = [
    "LoadedModel",
    "Project",
    "Run",
    "load_model",
    "open_project",
    "register",
    "start_run",
]

_RUN_STEP_REASON = "started from Python"


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


def register(
    model: Any,
    *,
    name: str,
    data: Any,
    target: str | None = None,
    task: str | None = None,
    project: Project | None = None,
    path: str | os.PathLike[str] = ".",
    gates: Any = "project",
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
    from conveyor.actions.registration import Options, judge_and_register

    options = Options(target, task, gates, metrics, tuple(aliases), positive_class, slices, onnx)
    if run is not None:
        return judge_and_register(proj, run, model, name, data, options, source)
    with start_run(f"register {name}", project=proj) as own:
        return judge_and_register(proj, own, model, name, data, options, source)
