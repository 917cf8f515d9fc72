"""The project's configuration: conveyor.yaml, validated into pydantic models.

Read once per command, with precedence defaults < file < ``CONVEYOR_*`` environment. Every
problem becomes a ConfigIssue naming the key and its line, all of them in one pass where possible,
so a user fixes the file once rather than once per error. Each section's model lives in its own
module (``store.py``, ``data.py``, ``pipeline.py``, ``model.py``, ``validate.py``, ``gates.py``,
``serve.py``, ``deploy.py``, ``monitor.py``); this one joins them and checks what spans them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.config import graph
from conveyor.config.base import SLUG, ConfigModel, invalid
from conveyor.config.data import SourceConfig
from conveyor.config.deploy import EnvironmentConfig
from conveyor.config.gates import Comparison, GateConfig
from conveyor.config.graph import graph_problems, upstream_map, upstream_of
from conveyor.config.model import BUILTIN_EVALUATORS, TASK_METRICS, ModelConfig, RegistryConfig
from conveyor.config.monitor import MonitorConfig
from conveyor.config.pipeline import ENV_EXECUTOR, ENV_JOBS, ExecutorConfig, StepConfig
from conveyor.config.reader import (
    YamlPath,
    format_location,
    read_yaml_file,
    validation_issues,
)
from conveyor.config.serve import ServeConfig
from conveyor.config.store import (
    ENV_ARTIFACTS,
    ENV_STORE_URL,
    URL,
    StoreConfig,
    resolve_sqlite_url,
)
from conveyor.config.validate import ValidateConfig
from conveyor.exceptions import ConfigError, ConfigIssue, StepNotFound
from conveyor.project import CONFIG_FILE, find_root

# Validation context key: the loader checks the DAG itself, to give each problem its own line.
_LOADER_CHECKS_GRAPH = "conveyor_loader_checks_graph"
_ENV_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class ProjectConfig(ConfigModel):
    """The whole of conveyor.yaml. ``root`` and ``file`` are set by :func:`load_config`."""

    yaml_example: ClassVar[str] = """
project: loans
"""

    project: str = Field(
        description="The project's name, a slug such as loans; runs and the registry are "
        "recorded under it."
    )
    store: StoreConfig = Field(
        default_factory=StoreConfig,
        description="Where metadata and artifacts are kept.",
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="Where steps run: local processes or a Ray cluster.",
    )
    data: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="The data sources, by name; steps read one as data.NAME.",
    )
    pipeline: dict[str, StepConfig] = Field(
        default_factory=dict,
        description="The steps, by name; their inputs make the graph, which may have no cycle.",
    )
    model: ModelConfig | None = Field(
        default=None,
        description="Which step's output is the model to register, and what it is scored on.",
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig,
        description="The policy for loading model files.",
    )
    validate_: dict[str, ValidateConfig] = Field(
        default_factory=dict,
        alias="validate",
        description="Checks of data sources, by source name, run before any training.",
    )
    gates: list[GateConfig] = Field(
        default_factory=list,
        description="What a candidate model must pass to be registered; needs 'model:'.",
    )
    serve: ServeConfig = Field(
        default_factory=ServeConfig,
        description="The gateway that serves the models (conveyor serve).",
    )
    deploy: dict[str, EnvironmentConfig] = Field(
        default_factory=dict,
        description="The environments, by name (a slug), and how versions reach each.",
    )
    monitor: MonitorConfig | None = Field(
        default=None,
        description="Drift, alerts and automatic retraining for one environment's traffic.",
    )

    _root: Path | None = PrivateAttr(default=None)
    _file: Path | None = PrivateAttr(default=None)

    @field_validator("project")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.fullmatch(value):
            raise invalid(
                "expected a slug such as 'loans' (lowercase letters, digits, '_' and '-', "
                f"starting with a letter or digit), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> ProjectConfig:
        if info.context and info.context.get(_LOADER_CHECKS_GRAPH):
            return self
        problems = graph_problems(self.pipeline, list(self.pipeline), list(self.data))
        problems += model_problems(self)
        if problems:
            raise invalid("; ".join(f"{format_location(at)}: {msg}" for at, msg, _ in problems))
        return self

    @model_validator(mode="after")
    def _evaluator_defaults(self) -> ProjectConfig:
        # A built-in evaluator reads the target and slices from 'model:' unless its params say
        # otherwise; they become params, so changing them re-runs the evaluation.
        if self.model is not None:
            for step in self.pipeline.values():
                if step.run in BUILTIN_EVALUATORS:
                    step.params.setdefault("target", self.model.target)
                    if self.model.slices:
                        step.params.setdefault("slices", list(self.model.slices))
                    classifier = BUILTIN_EVALUATORS[step.run] == "classification"
                    if classifier and self.model.positive_class is not None:
                        step.params.setdefault("positive_class", self.model.positive_class)
        return self

    def evaluation_step(self) -> str | None:
        """The step whose metrics the gates read: ``model.evaluation``, else the one step that
        runs a built-in evaluator, else a step named ``evaluate``."""
        if self.model is not None and self.model.evaluation:
            return self.model.evaluation
        builtin = [n for n, s in self.pipeline.items() if s.run in BUILTIN_EVALUATORS]
        if len(builtin) == 1:
            return builtin[0]
        return "evaluate" if "evaluate" in self.pipeline else None

    def task(self) -> str | None:
        """classification or regression: ``model.task``, else the built-in evaluator's."""
        if self.model is not None and self.model.task:
            return self.model.task
        step = self.evaluation_step()
        run = self.pipeline[step].run if step in self.pipeline else None
        return BUILTIN_EVALUATORS.get(run or "")

    @property
    def root(self) -> Path:
        """The project folder; relative paths in the config are relative to it."""
        return self._root if self._root is not None else Path.cwd()

    @property
    def file(self) -> Path:
        """The conveyor.yaml this config was read from."""
        return self._file if self._file is not None else self.root / CONFIG_FILE

    def _step(self, step: str) -> StepConfig:
        if step not in self.pipeline:
            known = ", ".join(self.pipeline) or "none"
            raise StepNotFound(f"No step {step!r} in {self.file}; known steps: {known}.")
        return self.pipeline[step]

    def upstream(self, step: str) -> list[str]:
        """Steps that ``step`` depends on directly, in file order.

        An input ``STEP`` or ``STEP.OUTPUT`` makes an edge, and so does a ``cmd`` step's dep that
        is, lies inside, or holds another step's out.

        Raises:
            StepNotFound: ``step`` is not in the pipeline.
        """
        self._step(step)
        return upstream_of(self.pipeline, step)

    def sources_of(self, step: str) -> list[str]:
        """Data sources that ``step`` reads as ``data.NAME``, in the order of its inputs.

        Raises:
            StepNotFound: ``step`` is not in the pipeline.
        """
        names = [ref[5:] for _, ref in self._step(step).input_refs() if ref.startswith("data.")]
        return list(dict.fromkeys(names))

    def topological_order(self) -> list[str]:
        """Every step after all of its upstream steps; ties keep file order, so it is stable.

        Raises:
            ConfigError: the pipeline has a cycle (only possible if validation was bypassed).
        """
        try:
            return graph.order(upstream_map(self.pipeline))
        except graph.CycleFound as exc:
            raise ConfigError(self.file.name, [ConfigIssue("pipeline", str(exc))]) from None

    def downstream(self, step: str) -> set[str]:
        """Every step that depends on ``step``, directly or through others.

        Raises:
            StepNotFound: ``step`` is not in the pipeline.
        """
        self._step(step)
        return graph.downstream_closure(upstream_map(self.pipeline), [step])

    def upstream_closure(self, steps: list[str]) -> set[str]:
        """``steps`` and every step they need, directly or through others.

        Raises:
            StepNotFound: one of ``steps`` is not in the pipeline.
        """
        for step in steps:
            self._step(step)
        return graph.upstream_closure(upstream_map(self.pipeline), steps)

    def store_url(self) -> str:
        """The metadata URL, with a relative SQLite path made absolute against the root."""
        return resolve_sqlite_url(self.store.url, self.root)

    def artifacts_url(self) -> str:
        """The artifact store: an fsspec URL as written, or a local folder made absolute."""
        if URL.match(self.store.artifacts):
            return self.store.artifacts
        return os.path.normpath(self.root / Path(self.store.artifacts).expanduser())

    def to_json(self) -> str:
        """Canonical JSON of the validated config (sorted keys, no spaces), fit for hashing."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )


# ---------------------------------------------------------------------------------------------
# Loading


def load_project(start: Path | None = None, env: Mapping[str, str] | None = None) -> ProjectConfig:
    """Find the project around ``start`` (default: the working directory) and load its config.

    Raises:
        ProjectError: there is no conveyor.yaml here or above.
        ConfigError: the file cannot be used as written.
    """
    root = find_root(Path.cwd() if start is None else start)
    return load_config(root / CONFIG_FILE, env=env)


def load_config(path: Path, env: Mapping[str, str] | None = None) -> ProjectConfig:
    """Read, validate and cross-check a conveyor.yaml, reporting every problem at once.

    Top-level keys starting with ``x-`` are ignored, as in Compose files, so they can hold YAML
    anchors (``x-defaults: &defaults {...}``) for steps to merge with ``<<: *defaults``.

    Args:
        path: the file, or the folder holding it.
        env: where to read ``CONVEYOR_*`` overrides from; defaults to ``os.environ``.

    Raises:
        ProjectError: the file does not exist or cannot be read.
        ConfigError: the file is not valid YAML or does not fit the schema; ``issues`` lists
            every problem with its key and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    doc = read_yaml_file(path)
    name = path.name
    if doc.data is None:
        raise ConfigError(name, doc.issues)
    for key in [key for key in doc.data if key.startswith("x-")]:
        del doc.data[key]
    env_paths = _apply_env(doc.data, os.environ if env is None else env)
    issues = list(doc.issues)
    config: ProjectConfig | None = None
    try:
        config = ProjectConfig.model_validate(doc.data, context={_LOADER_CHECKS_GRAPH: True})
    except ValidationError as exc:
        issues += validation_issues(exc, doc, ProjectConfig, env_paths)
    steps = config.pipeline if config else _valid_steps(doc.data.get("pipeline"))
    step_names = list(doc.data["pipeline"]) if isinstance(doc.data.get("pipeline"), dict) else []
    sources = list(doc.data["data"]) if isinstance(doc.data.get("data"), dict) else []
    for at, message, line_at in graph_problems(steps, step_names, sources):
        issues.append(ConfigIssue(format_location(at), message, doc.line_of(line_at)))
    if config is not None:
        for at, message, line_at in model_problems(config):
            issues.append(ConfigIssue(format_location(at), message, doc.line_of(line_at)))
    if issues or config is None:
        issues.sort(key=lambda issue: (issue.line is not None, issue.line or 0))
        raise ConfigError(name, issues)
    config._root = path.parent.resolve()
    config._file = config._root / name
    return config


def model_problems(config: ProjectConfig) -> list[tuple[YamlPath, str, tuple[Any, ...]]]:
    """References from ``model:``, ``validate:`` and ``gates:`` to steps, sources and each
    other, checked when the file loads so no training time is spent on a broken gate."""
    problems: list[tuple[YamlPath, str, tuple[Any, ...]]] = []
    steps, sources = config.pipeline, config.data
    at: YamlPath

    def step_ref(ref: str, at: YamlPath) -> None:
        head = ref.partition(".")[0]
        if head not in steps:
            known = ", ".join(steps) or "none"
            problems.append((at, f"unknown step {head!r}; known steps: {known}", at))

    model = config.model
    if model is not None:
        step_ref(model.from_, ("model", "from"))
        step_ref(model.holdout, ("model", "holdout"))
        if model.evaluation is not None and model.evaluation not in steps:
            at = ("model", "evaluation")
            problems.append((at, f"unknown step {model.evaluation!r}", at))
    for env_name, env in config.deploy.items():
        if not SLUG.fullmatch(env_name):
            at = ("deploy", env_name)
            problems.append(
                (at, f"environment names are slugs such as 'staging', not {env_name!r}", at)
            )
        if env.after is not None and env.after not in config.deploy:
            at = ("deploy", env_name, "after")
            known = ", ".join(config.deploy) or "none"
            problems.append((at, f"unknown environment {env.after!r}; known: {known}", at))
    after = {name: [env.after] for name, env in config.deploy.items() if env.after in config.deploy}
    for cycle in graph.cycles({name: after.get(name, []) for name in config.deploy}):
        at = ("deploy", cycle[0], "after")
        message = (
            f"'after' makes a cycle {' -> '.join(cycle)}, so no version could ever reach "
            "these environments; remove one of these 'after' keys"
        )
        problems.append((at, message, at))
    for name in config.validate_:
        if name not in sources:
            known = ", ".join(sources) or "none"
            at = ("validate", name)
            problems.append((at, f"unknown data source {name!r}; known sources: {known}", at))
    task = config.task() if model is not None else None
    for index, gate in enumerate(config.gates):
        at = ("gates", index)
        if model is None:
            problems.append((at, "gates judge a model: add a 'model:' section naming it", at))
            break
        expression = gate.expression
        metric = expression.metric if expression is not None else None
        if gate.fairness is not None:
            metric = gate.fairness.metric
        if metric is not None and task is not None:
            known_metrics = TASK_METRICS[task]
            if metric not in known_metrics:
                problems.append((at, _unknown_metric(metric, task, known_metrics), at))
        if gate.on_inconclusive == "pass" and gate.kind != "compare":
            problems.append((at, "'on_inconclusive' applies only to comparison gates", at))
        if isinstance(expression, Comparison) and not _ENV_NAME.fullmatch(expression.env):
            problems.append((at, f"{expression.env!r} is not an environment name", at))
    return problems


def _unknown_metric(metric: str, task: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(metric, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"metric {metric!r} is not produced by the {task} evaluation (it reports "
        f"{', '.join(known)}){hint}"
    )


def _valid_steps(pipeline: Any) -> dict[str, StepConfig]:
    """Every step whose links (inputs, deps, outs) are well formed, so that references and
    cycles are checked even in steps with other problems, already reported."""
    steps: dict[str, StepConfig] = {}
    for name, raw in pipeline.items() if isinstance(pipeline, dict) else ():
        if not isinstance(raw, dict):
            continue
        links = {key: raw[key] for key in ("inputs", "deps", "outs") if raw.get(key) is not None}
        try:
            # 'cmd' stands in for whatever the step really runs, which may be the broken part.
            step = StepConfig.model_validate({**links, "cmd": "-"})
        except ValidationError:
            continue
        # Only a real cmd step has its outs as its outputs (checked in references to them).
        steps[name] = (
            step if isinstance(raw.get("cmd"), str) else step.model_copy(update={"cmd": None})
        )
    return steps


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[YamlPath, str]:
    """Overlay CONVEYOR_* variables on the file's values; returns which paths each one set."""
    set_by: dict[YamlPath, str] = {}
    store = data.get("store")
    for var, key in ((ENV_STORE_URL, "url"), (ENV_ARTIFACTS, "artifacts")):
        if env.get(var) and (store is None or isinstance(store, dict)):
            store = data["store"] = {**(store or {}), key: env[var]}
            set_by[("store", key)] = var
    executor = data.get("executor")
    kind, jobs = env.get(ENV_EXECUTOR), env.get(ENV_JOBS)
    if not (kind or jobs):
        return set_by
    if isinstance(executor, str):
        ray_url = executor.startswith("ray://")
        executor = {"kind": "ray", "address": executor} if ray_url else {"kind": executor}
    if executor is None or isinstance(executor, dict):
        executor = dict(executor or {})
        if kind:
            # The variable replaces the file's choice whole: a file's Ray address means nothing
            # once the executor is switched to local.
            executor.pop("address", None)
            ray_url = kind.startswith("ray://")
            executor.update({"kind": "ray", "address": kind} if ray_url else {"kind": kind})
            set_by[("executor", "kind")] = set_by[("executor", "address")] = ENV_EXECUTOR
        if jobs:
            executor["jobs"] = jobs
            set_by[("executor", "jobs")] = ENV_JOBS
        data["executor"] = executor
    return set_by
