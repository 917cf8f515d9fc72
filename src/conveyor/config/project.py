"""The project's configuration: conveyor.yaml, validated into pydantic models.

Read once per command, with precedence defaults < file < ``CONVEYOR_*`` environment. Every
problem becomes a ConfigIssue naming the key and its line, all of them in one pass where possible,
so a user fixes the file once rather than once per error.
"""

from __future__ import annotations

import heapq
import json
import keyword
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.config.deploy import EnvironmentConfig
from conveyor.config.gates import Comparison, Threshold, parse_expression
from conveyor.config.graph import (
    REF_HELP,
    cycles,
    graph_problems,
    upstream_map,
    upstream_of,
)
from conveyor.config.monitor import MonitorConfig
from conveyor.config.reader import (
    YamlPath,
    format_location,
    invalid,
    read_yaml_file,
    validation_issues,
)
from conveyor.exceptions import ConfigError, ConfigIssue, StepNotFound
from conveyor.project import CONFIG_FILE, find_root

DEFAULT_STORE_URL = "sqlite:///.conveyor/conveyor.db"
DEFAULT_ARTIFACTS = ".conveyor/artifacts"
ENV_STORE_URL = "CONVEYOR_STORE_URL"
ENV_ARTIFACTS = "CONVEYOR_ARTIFACTS"
ENV_EXECUTOR = "CONVEYOR_EXECUTOR"
ENV_JOBS = "CONVEYOR_JOBS"

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = re.compile(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?")
# Validation context key: the loader checks the DAG itself, to give each problem its own line.
_LOADER_CHECKS_GRAPH = "conveyor_loader_checks_graph"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        # `params:` with nothing after it reads as null; it means "none", not a type error.
        if isinstance(data, dict):
            fields = cls.model_fields
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k in fields and not fields[k].is_required())
            }
        return data


class StoreConfig(_Model):
    """Where metadata (a SQLAlchemy URL) and artifacts (a path or fsspec URL) live."""

    url: str = DEFAULT_STORE_URL
    artifacts: str = DEFAULT_ARTIFACTS

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL.match(value):
            raise invalid(
                "expected a SQLAlchemy URL such as 'sqlite:///.conveyor/conveyor.db' or "
                f"'postgresql+psycopg://user@host/db', got {value!r}"
            )
        return value

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, value: str) -> str:
        if not value.strip():
            raise invalid("expected a folder or an fsspec URL such as 's3://bucket/conveyor'")
        return value


def _executor_mapping(value: str) -> dict[str, Any]:
    if value.startswith("ray://"):
        return {"kind": "ray", "address": value}
    if value in ("local", "ray"):
        return {"kind": value}
    raise invalid(
        f"expected 'local', 'ray' or a mapping such as {{kind: ray, jobs: 4}}, got {value!r}"
    )


class ExecutorConfig(_Model):
    """Where steps run: local processes, or a Ray cluster; ``jobs`` None means one per CPU."""

    kind: Literal["local", "ray"] = "local"
    jobs: int | None = None
    address: str | None = None

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
            value = int(value)  # from CONVEYOR_JOBS
        if value is None or (type(value) is int and value >= 1):
            return value
        raise invalid(f"expected an integer ≥ 1, got {value!r}")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("kind") == "local":
            raise invalid("'address' applies only to kind 'ray'; remove it or set 'kind: ray'")
        return value

    def workers(self) -> int:
        """How many steps may run at once."""
        return self.jobs or os.cpu_count() or 1


class SourceConfig(_Model):
    """A data source: files (a path or glob of CSV/Parquet) or a SQL query against a URL."""

    source: str | None = None
    format: Literal["csv", "parquet"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    sql: str | None = None
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"source": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if self.source is not None and self.sql is not None:
            raise invalid("give either 'source' (a file or glob) or 'sql' with 'url', not both")
        if self.source is None and self.sql is None:
            raise invalid("give either 'source' (a file or glob) or 'sql' with 'url'")
        if self.sql is not None and self.url is None:
            raise invalid("'sql' needs 'url', the SQLAlchemy URL of the database to query")
        if self.source is not None and self.url is not None:
            raise invalid("'url' goes with 'sql'; for files use 'source' alone")
        if self.sql is not None and self.format is not None:
            raise invalid("'format' applies to 'source' files only; remove it")
        return self


def _check_json(value: Any, path: tuple[str | int, ...]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise invalid(f"key {key!r} must be a string to be stored as JSON", *path)
            _check_json(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"{value!r} cannot be stored as JSON; use null or a string", *path)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise invalid(
            f"expected a string, number, boolean, null, list or mapping, got {value!r} "
            f"({type(value).__name__}); put it in quotes to keep it as text",
            *path,
        )


class StepConfig(_Model):
    """One pipeline step: a Python function (``run``) or a shell command (``cmd``)."""

    run: str | None = None
    cmd: str | None = None
    inputs: list[str] | dict[str, str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    deps: list[str] = Field(default_factory=list)
    outs: list[str] = Field(default_factory=list)
    metrics: str | None = None
    description: str | None = None

    @field_validator("run")
    @classmethod
    def _run(cls, value: str) -> str:
        module, colon, function = value.partition(":")
        parts = [*module.split("."), function]
        if not colon or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            raise invalid(f"expected 'module:function' such as 'loans.steps:train', got {value!r}")
        return value

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, value: str) -> str:
        if not value.strip():
            raise invalid("the command is empty; write the shell command to run")
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            for index, ref in enumerate(value):
                if not isinstance(ref, str):
                    raise invalid(f"expected a reference ({REF_HELP}), got {ref!r}", index)
            return value
        if isinstance(value, dict):
            for name, ref in value.items():
                if not isinstance(ref, str):
                    raise invalid(f"expected a reference ({REF_HELP}), got {ref!r}", name)
            return value
        raise invalid(
            f"expected a list of references or a mapping keyword: reference, got {value!r}"
        )

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            _check_json(item, (key,))
        return value

    @field_validator("deps", "outs", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("deps", "outs", "metrics")
    @classmethod
    def _only_for_cmd(cls, value: Any, info: ValidationInfo) -> Any:
        if value and info.data.get("run") is not None and info.data.get("cmd") is None:
            raise invalid(
                f"'{info.field_name}' applies only to 'cmd' steps; a 'run' step gets its "
                "inputs from 'inputs' and returns its outputs"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StepConfig:
        if (self.run is None) == (self.cmd is None):
            not_both = ", not both" if self.run is not None else ""
            raise invalid(
                "give either 'run' (a Python function 'module:function') or 'cmd' "
                f"(a shell command){not_both}"
            )
        return self

    def input_refs(self) -> list[tuple[str | None, str]]:
        """(keyword, reference) pairs; the keyword is None for a positional input."""
        if isinstance(self.inputs, dict):
            return list(self.inputs.items())
        return [(None, ref) for ref in self.inputs]


BUILTIN_EVALUATORS = {
    "conveyor.evaluate:classification": "classification",
    "conveyor.evaluate:regression": "regression",
}
_ENV_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class ModelConfig(_Model):
    """What the pipeline produces for the registry: which step's return value is the model,
    which frame both models are scored on, and what the model card says about its use."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    from_: str = Field(alias="from")
    holdout: str
    target: str
    task: Literal["classification", "regression"] | None = None
    evaluation: str | None = None
    slices: list[str] = Field(default_factory=list)
    intended_use: str | None = None
    limitations: str | None = None
    format: Literal["skops", "pickle"] = "skops"
    trusted_types: list[str] = Field(default_factory=list)
    onnx: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise invalid(
                "expected a slug such as 'loans-default' (lowercase letters, digits, '_' and '-'), "
                f"got {value!r}"
            )
        return value

    @field_validator("slices", mode="before")
    @classmethod
    def _one_slice(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RegistryConfig(_Model):
    """Policy for model files: a pickle is loaded only when its sha256 matches the record, and
    ``allow_pickle: false`` refuses pickles altogether."""

    allow_pickle: bool = True


class BatchConfig(_Model):
    """Micro-batching: concurrent requests for one model share one predict call.

    ``max_delay_ms: 0`` (the default) waits for nothing: requests that arrived while the last
    call ran form the next batch, so batches grow with load and a lone request never waits.
    """

    max_rows: int = Field(default=256, ge=1, le=100_000)
    max_delay_ms: float = Field(default=0.0, ge=0.0, le=100.0)


class RequestLogConfig(_Model):
    """The sampled request/prediction log, written off the hot path in batches."""

    sample: float = Field(default=1.0, ge=0.0, le=1.0)
    flush_rows: int = Field(default=100, ge=1)
    flush_seconds: float = Field(default=0.05, gt=0.0, le=60.0)
    max_buffer: int = Field(default=200_000, ge=1)  # rows kept in memory if the store lags


class ServeConfig(_Model):
    """The gateway (``conveyor serve``): limits, batching, the request log, the admin token."""

    default_env: str = "production"
    max_rows: int = Field(default=10_000, ge=1)
    max_body_mb: float = Field(default=8.0, gt=0.0, le=1024.0)
    max_queue: int = Field(default=512, ge=1)  # requests waiting per worker before a 503
    batch: BatchConfig = Field(default_factory=BatchConfig)
    log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    poll_seconds: float = Field(default=0.25, gt=0.0, le=60.0)
    threads: int = Field(default=1, ge=1, le=256)
    token_env: str = "CONVEYOR_TOKEN"
    token_file: str | None = None

    @field_validator("default_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise invalid(f"expected an environment name such as 'production', got {value!r}")
        return value


class DriftCheckConfig(_Model):
    """Drift of a new snapshot against the data that trained the production model."""

    psi: float = 0.2
    alpha: float = 0.05
    max_share: float = 0.0  # the share of drifting columns above which the gate fails

    @field_validator("psi", "alpha", "max_share")
    @classmethod
    def _unit(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 <= value <= 1.0 or (info.field_name == "alpha" and value in (0.0, 1.0)):
            raise invalid(f"expected a number between 0 and 1, got {value!r}")
        return value


class ValidateConfig(_Model):
    """A data source's schema file (from ``conveyor data infer``) and its drift check."""

    schema_: str = Field(alias="schema")
    drift: DriftCheckConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"schema": data} if isinstance(data, str) else data


class FairnessConfig(_Model):
    group: str
    metric: str
    max_gap: float
    min_rows: int = 30


class LatencyConfig(_Model):
    p99_ms: float
    rows: int = 200


class SizeConfig(_Model):
    max_mb: float


class GateConfig(_Model):
    """One gate: an expression (``check``), or a fairness, latency or size budget."""

    name: str | None = None
    check: str | None = None
    fairness: FairnessConfig | None = None
    latency: LatencyConfig | None = None
    size: SizeConfig | None = None
    alpha: float = 0.05
    on_inconclusive: Literal["fail", "pass"] = "fail"

    _parsed: Threshold | Comparison | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"check": data} if isinstance(data, str) else data

    @field_validator("check")
    @classmethod
    def _check(cls, value: str) -> str:
        try:
            parse_expression(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 < value < 0.5:
            raise invalid(f"expected a significance level in (0, 0.5) such as 0.05, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> GateConfig:
        given = [k for k in ("check", "fairness", "latency", "size") if getattr(self, k)]
        if len(given) != 1:
            raise invalid(
                "a gate is one expression (such as 'roc_auc >= 0.80') or a mapping with exactly "
                f"one of check, fairness, latency, size; got {', '.join(given) or 'none'}"
            )
        if self.check is not None:
            self._parsed = parse_expression(self.check)
        return self

    @property
    def kind(self) -> str:
        """threshold, compare, fairness, latency or size."""
        if isinstance(self._parsed, Comparison):
            return "compare"
        if isinstance(self._parsed, Threshold):
            return "threshold"
        return next(k for k in ("fairness", "latency", "size") if getattr(self, k))

    @property
    def expression(self) -> Threshold | Comparison | None:
        """The parsed ``check``, or None for the other kinds."""
        return self._parsed

    @property
    def label(self) -> str:
        """The name shown in reports: ``name`` if given, else the gate written out."""
        if self.name:
            return self.name
        if self.check:
            return self.check
        if self.fairness:
            f = self.fairness
            return f"fairness: {f.metric} gap across {f.group} <= {f.max_gap:g}"
        if self.latency:
            return f"latency: p99 <= {self.latency.p99_ms:g} ms"
        assert self.size is not None
        return f"size <= {self.size.max_mb:g} MB"


def resolve_sqlite_url(url: str, root: Path) -> str:
    """A relative SQLite path means relative to the project, not to the working directory."""
    match = _SQLITE.fullmatch(url)
    if not match:
        return url
    prefix, db, query = match.group(1), match.group(2), match.group(3) or ""
    if not db or db == ":memory:" or db.startswith("file:") or Path(db).is_absolute():
        return url
    return prefix + os.path.normpath(root / Path(db).expanduser()) + query


class ProjectConfig(_Model):
    """The whole of conveyor.yaml. ``root`` and ``file`` are set by :func:`load_config`."""

    project: str
    store: StoreConfig = Field(default_factory=StoreConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    data: dict[str, SourceConfig] = Field(default_factory=dict)
    pipeline: dict[str, StepConfig] = Field(default_factory=dict)
    model: ModelConfig | None = None
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    validate_: dict[str, ValidateConfig] = Field(default_factory=dict, alias="validate")
    gates: list[GateConfig] = Field(default_factory=list)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    deploy: dict[str, EnvironmentConfig] = Field(default_factory=dict)
    monitor: MonitorConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _root: Path | None = PrivateAttr(default=None)
    _file: Path | None = PrivateAttr(default=None)

    @field_validator("project")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise invalid(
                "expected a slug such as 'loans' (lowercase letters, digits, '_' and '-', "
                f"starting with a letter or digit), got {value!r}"
            )
        return value

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, value: Any) -> Any:
        return _executor_mapping(value) if isinstance(value, str) else value

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
        ups = upstream_map(self.pipeline)
        index = {name: i for i, name in enumerate(self.pipeline)}
        children: dict[str, list[str]] = {name: [] for name in ups}
        for name, parents in ups.items():
            for parent in parents:
                children[parent].append(name)
        waiting = {name: len(parents) for name, parents in ups.items()}
        # A heap on file position: of all steps ready to run, the earliest in the file goes first.
        ready = [(index[name], name) for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for child in children[name]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (index[child], child))
        if len(order) < len(ups):
            cycle = " -> ".join(cycles(ups)[0])
            raise ConfigError(self.file.name, [ConfigIssue("pipeline", f"cycle {cycle}")])
        return order

    def downstream(self, step: str) -> set[str]:
        """Every step that depends on ``step``, directly or through others.

        Raises:
            StepNotFound: ``step`` is not in the pipeline.
        """
        self._step(step)
        ups = upstream_map(self.pipeline)
        found: set[str] = set()
        todo = [step]
        while todo:
            current = todo.pop()
            for name, parents in ups.items():
                if current in parents and name not in found:
                    found.add(name)
                    todo.append(name)
        return found

    def store_url(self) -> str:
        """The metadata URL, with a relative SQLite path made absolute against the root."""
        return resolve_sqlite_url(self.store.url, self.root)

    def artifacts_url(self) -> str:
        """The artifact store: an fsspec URL as written, or a local folder made absolute."""
        if _URL.match(self.store.artifacts):
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
        issues += validation_issues(exc, doc, _keys_at, _SHAPES, env_paths)
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


def model_problems(config: ProjectConfig) -> list[tuple[tuple, str, tuple]]:
    """References from ``model:``, ``validate:`` and ``gates:`` to steps, sources and each
    other, checked when the file loads so no training time is spent on a broken gate."""
    problems: list[tuple[tuple, str, tuple]] = []
    steps, sources = config.pipeline, config.data

    def step_ref(ref: str, at: tuple) -> None:
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
        if not _SLUG.fullmatch(env_name):
            at = ("deploy", env_name)
            problems.append(
                (at, f"environment names are slugs such as 'staging', not {env_name!r}", at)
            )
        if env.after is not None and env.after not in config.deploy:
            at = ("deploy", env_name, "after")
            known = ", ".join(config.deploy) or "none"
            problems.append((at, f"unknown environment {env.after!r}; known: {known}", at))
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


# What the built-in evaluators report; a gate naming anything else is refused at load.
TASK_METRICS = {
    "classification": (
        "roc_auc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "log_loss",
        "brier",
        "ece",
    ),
    "regression": ("mae", "rmse", "r2", "mape"),
}


def _unknown_metric(metric: str, task: str, known: tuple[str, ...]) -> str:
    import difflib

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
            steps[name] = StepConfig.model_validate({**links, "cmd": "-"})
        except ValidationError:
            continue
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


# What each model looks like, for "expected ..., got ..." when a mapping is missing.
_SHAPES = {
    "ProjectConfig": "a mapping",
    "StoreConfig": "a mapping with 'url' and/or 'artifacts'",
    "ExecutorConfig": "'local', 'ray' or a mapping such as {kind: ray, jobs: 4}",
    "SourceConfig": "a path or glob such as 'data/loans/*.parquet', or a mapping with 'source' "
    "or 'sql'",
    "StepConfig": "a mapping with 'run' (a Python function) or 'cmd' (a shell command)",
    "ModelConfig": "a mapping with 'name', 'from', 'holdout' and 'target'",
    "GateConfig": "an expression such as 'roc_auc >= 0.80' or a mapping",
    "ValidateConfig": "a schema file such as 'schemas/loans.yaml' or a mapping with 'schema'",
}


def _keys_at(path: YamlPath) -> list[str]:
    """The keys allowed in the mapping at ``path``, for did-you-mean suggestions."""
    model: type[BaseModel] | None = None
    if path == ():
        model = ProjectConfig
    elif path in (("store",), ("executor",)):
        model = StoreConfig if path == ("store",) else ExecutorConfig
    elif len(path) == 2 and path[0] in ("data", "pipeline"):
        model = SourceConfig if path[0] == "data" else StepConfig
    elif path in (("model",), ("registry",)):
        model = ModelConfig if path == ("model",) else RegistryConfig
    elif len(path) == 2 and path[0] in ("gates", "validate"):
        model = GateConfig if path[0] == "gates" else ValidateConfig
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]
