"""The ``executor:`` and ``pipeline:`` sections: where steps run, and the steps themselves.

A step is a Python function (``run: module:function``) or a shell command (``cmd:``); its
``inputs`` name data sources and other steps' outputs, which is what makes the graph
(``config/graph.py``).
"""

from __future__ import annotations

import keyword
import math
import os
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from conveyor.config.base import ConfigModel, StrList, invalid
from conveyor.config.graph import REF_HELP

ENV_EXECUTOR = "CONVEYOR_EXECUTOR"
ENV_JOBS = "CONVEYOR_JOBS"


def executor_mapping(value: str) -> dict[str, Any]:
    """``local``, ``ray`` or ``ray://host:port`` as the mapping it stands for."""
    if value.startswith("ray://"):
        return {"kind": "ray", "address": value}
    if value in ("local", "ray"):
        return {"kind": value}
    raise invalid(
        f"expected 'local', 'ray' or a mapping such as {{kind: ray, jobs: 4}}, got {value!r}"
    )


class ExecutorConfig(ConfigModel):
    """Where steps run: local processes, or a Ray cluster; ``jobs`` None means one per CPU."""

    shape: ClassVar[str] = "'local', 'ray' or a mapping such as {kind: ray, jobs: 4}"
    shorthand_schema: ClassVar[dict[str, Any] | None] = {
        "anyOf": [{"enum": ["local", "ray"]}, {"type": "string", "pattern": "^ray://"}]
    }
    yaml_example: ClassVar[str] = """
executor: {kind: ray, jobs: 4, address: "ray://head:10001"}   # or: local, ray, ray://head:10001
"""

    kind: Literal["local", "ray"] = Field(
        default="local",
        description=f"local runs steps in worker processes here; ray sends them to a Ray "
        f"cluster. Overridden by {ENV_EXECUTOR} (local, ray or a ray:// address).",
    )
    jobs: int | None = Field(
        default=None,
        description=f"How many steps may run at once; null means one per CPU. Overridden by "
        f"{ENV_JOBS}.",
    )
    address: str | None = Field(
        default=None,
        description="The Ray cluster to connect to, such as ray://head:10001; kind ray only.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return executor_mapping(data) if isinstance(data, str) else data

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


_INPUTS_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "additionalProperties": {"type": "string"}},
    ]
}


class StepConfig(ConfigModel):
    """One pipeline step: a Python function (``run``) or a shell command (``cmd``)."""

    shape: ClassVar[str] = "a mapping with 'run' (a Python function) or 'cmd' (a shell command)"
    yaml_example: ClassVar[str] = """
pipeline:
  prepare: {run: loans.steps:prepare, inputs: [data.loans], params: {test_size: 0.2}}
  train: {run: loans.steps:train, inputs: {frame: prepare.train}, params: {max_depth: 6}}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
  report:
    cmd: python scripts/report.py out/metrics.json out/report.md
    deps: [scripts/report.py, out/metrics.json]
    outs: [out/report.md]
    description: a Markdown report for the team
"""

    run: str | None = Field(
        default=None,
        description="The Python function to call, as 'module:function' (such as "
        "loans.steps:train); its return value is the step's output, a dict of values its "
        "named outputs.",
    )
    cmd: str | None = Field(
        default=None,
        description="A shell command to run in the project folder instead of a function; its "
        "params arrive as JSON in CONVEYOR_PARAMS.",
    )
    inputs: Annotated[list[str] | dict[str, str], WithJsonSchema(_INPUTS_SCHEMA)] = Field(
        default_factory=list,
        description=f"What the step reads: a list of references ({REF_HELP}) passed in order, "
        "or a mapping keyword: reference passed by keyword.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the function (JSON values); changing one re-runs "
        "the step and everything after it.",
    )
    deps: StrList = Field(
        default_factory=list,
        description="cmd steps: files and folders the command reads; a path another step "
        "writes (in its outs) makes this step wait for that one.",
    )
    outs: StrList = Field(
        default_factory=list,
        description="cmd steps: files and folders the command writes, stored and restored "
        "from cache; another step names one as STEP.OUT when it is a plain name.",
    )
    metrics: str | None = Field(
        default=None,
        description="cmd steps: a JSON file the command writes whose numbers are recorded as "
        "the step's metrics.",
    )
    description: str | None = Field(
        default=None, description="One line shown in listings and reports."
    )

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
