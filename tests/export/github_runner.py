"""A small, real double of GitHub's runner: runs one job of a workflow file on this machine.

Each ``run:`` step is executed as the hosted runner executes it: its text, with ``${{ }}``
expressions substituted, written to a file and run by ``bash -e`` (``bash --noprofile --norc
-eo pipefail`` with ``shell: bash``) in the job's working directory, with the workflow's, the
job's and the step's ``env:`` and the runner's variables (``GITHUB_OUTPUT``,
``GITHUB_STEP_SUMMARY``, ``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_EVENT_NAME``, ``GITHUB_REF``,
``GITHUB_WORKSPACE``, ...). ``if:`` conditions, ``continue-on-error`` and
``steps.<id>.outputs/outcome`` follow GitHub's rules for the expressions the exported workflow
uses. ``uses:`` steps cannot run here, so each known action is
replaced by its effect: checkout clones the repository, setup-python puts a fresh virtual
environment first on PATH, upload-artifact copies the files and answers an artifact URL.

Why a double and not ``act``: act runs steps in Docker images pulled from a registry, which
this machine cannot reach.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# How GitHub's Linux runners start a run: step's script: `shell: bash`, and no shell at all.
SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
DEFAULT_SHELL = ["bash", "-e"]
SERVER = "https://github.com"
REPOSITORY = "acme/churn"
RUN_ID = "4242"


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure or skipped (before continue-on-error)
    conclusion: str  # what the job sees: success when continue-on-error hid a failure
    code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""


@dataclass
class JobResult:
    steps: list[StepResult]
    summary: str
    artifacts: Path

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.conclusion == "failure"), None)

    @property
    def exit_code(self) -> int:
        """The failing step's exit code (what the job's red cross stands for), else 0."""
        failed = self.failed_step
        return 0 if failed is None else int(failed.code or 1)

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)


@dataclass
class Event:
    """What triggered the run: the event's name, the ref and the commit checked out."""

    name: str  # pull_request or push
    ref: str  # refs/pull/7/merge or refs/heads/main
    branch: str  # the repository's branch to check out
    pull_request: int | None = None


ActionFn = Callable[["Runner", dict[str, str]], dict[str, str]]


class Runner:
    """Runs one job of a workflow against a repository folder (the "remote").

    Args:
        workflow: the workflow file's text.
        origin: a git repository to check out (``actions/checkout`` clones it).
        home: a folder for the runner's own files (workspace, temp files, artifacts).
        secrets: the repository's secrets, by name; vars: its variables.
        python_env: makes the environment setup-python provides; returns its ``bin`` folder.
        base_env: the runner machine's environment (PATH, HOME, ...).
    """

    def __init__(
        self,
        workflow: str,
        *,
        origin: Path,
        home: Path,
        secrets: Mapping[str, str],
        vars: Mapping[str, str] | None = None,
        python_env: Callable[[Path], Path],
        base_env: Mapping[str, str],
    ) -> None:
        self.workflow = yaml.safe_load(workflow)
        self.origin = origin
        self.home = home
        self.secrets = dict(secrets)
        self.vars = dict(vars or {})
        self.python_env = python_env
        self.base_env = dict(base_env)
        self.actions: dict[str, ActionFn] = {
            "actions/checkout": _checkout,
            "actions/setup-python": _setup_python,
            "actions/upload-artifact": _upload_artifact,
        }
        self.event: Event | None = None
        self.workspace = home / "work"
        self.artifacts = home / "artifacts"
        self.path_prefix: list[str] = []
        self.job_env_extra: dict[str, str] = {}

    def run(self, job_id: str, event: Event) -> JobResult:
        """Run the job's steps in order for ``event``; returns every step's result."""
        self.event = event
        for folder in (self.workspace, self.artifacts):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.path_prefix, self.job_env_extra = [], {}
        job = self.workflow["jobs"][job_id]
        summary = self.home / "step_summary.md"
        summary.write_text("")
        results: list[StepResult] = []
        steps_ctx: dict[str, Any] = {}
        for index, step in enumerate(job["steps"]):
            ctx = self._context(steps_ctx, results)
            name = step.get("name") or step.get("uses") or f"step {index}"
            condition = str(step.get("if", "success()"))
            if not _truthy(evaluate(_strip_braces(condition), ctx)):
                result = StepResult(name, "skipped", "skipped")
            elif "uses" in step:
                result = self._action(name, step, ctx)
            else:
                result = self._shell(name, step, job, ctx, summary)
            if result.outcome == "failure" and _truthy(
                evaluate(_strip_braces(str(step.get("continue-on-error", "false"))), ctx)
            ):
                result.conclusion = "success"
            results.append(result)
            if "id" in step:
                steps_ctx[step["id"]] = {
                    "outputs": result.outputs,
                    "outcome": result.outcome,
                    "conclusion": result.conclusion,
                }
        return JobResult(results, summary.read_text(), self.artifacts)

    # -- contexts and expressions ------------------------------------------------------------

    def _context(self, steps: dict[str, Any], results: list[StepResult]) -> dict[str, Any]:
        assert self.event is not None
        event: dict[str, Any] = {}
        if self.event.pull_request is not None:
            event["pull_request"] = {"number": self.event.pull_request}
        return {
            "github": {
                "event_name": self.event.name,
                "ref": self.event.ref,
                "repository": REPOSITORY,
                "token": "ghs_not_a_real_token",
                "server_url": SERVER,
                "run_id": RUN_ID,
                "workspace": str(self.workspace),
                "event": event,
            },
            "secrets": self.secrets,
            "vars": self.vars,
            "steps": steps,
            "env": {},
            "runner": {"os": "Linux", "temp": str(self.home / "tmp")},
            "_failed": any(r.conclusion == "failure" for r in results),
        }

    def _substitute(self, text: str, ctx: dict[str, Any]) -> str:
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _to_str(evaluate(m[1], ctx)), text)

    def _env_of(self, mapping: Mapping[str, Any] | None, ctx: dict[str, Any]) -> dict[str, str]:
        return {k: self._substitute(str(v), ctx) for k, v in (mapping or {}).items()}

    # -- steps ---------------------------------------------------------------------------------

    def _runner_env(self, ctx: dict[str, Any]) -> dict[str, str]:
        assert self.event is not None
        env = dict(self.base_env)
        env.update(
            CI="true",
            GITHUB_ACTIONS="true",
            GITHUB_EVENT_NAME=self.event.name,
            GITHUB_REF=self.event.ref,
            GITHUB_REF_NAME=self.event.ref.removeprefix("refs/heads/"),
            GITHUB_REPOSITORY=REPOSITORY,
            GITHUB_SERVER_URL=SERVER,
            GITHUB_RUN_ID=RUN_ID,
            GITHUB_WORKSPACE=str(self.workspace),
            RUNNER_TEMP=str(self.home / "tmp"),
        )
        env.update(self.job_env_extra)
        env["PATH"] = os.pathsep.join([*self.path_prefix, env.get("PATH", "")])
        return env

    def _shell(
        self,
        name: str,
        step: dict[str, Any],
        job: dict[str, Any],
        ctx: dict[str, Any],
        summary: Path,
    ) -> StepResult:
        defaults = (job.get("defaults") or self.workflow.get("defaults") or {}).get("run", {})
        shell = step.get("shell", defaults.get("shell"))
        if shell not in (None, "bash"):
            raise KeyError(f"Step {name!r} asks for shell {shell!r}; only bash runs here.")
        env = self._runner_env(ctx)
        env.update(self._env_of(self.workflow.get("env"), ctx))
        env.update(self._env_of(job.get("env"), ctx))
        env.update(self._env_of(step.get("env"), ctx))
        tmp = self.home / "tmp"
        tmp.mkdir(exist_ok=True)
        files = {
            key: tmp / f"{key.lower()}_{len(list(tmp.iterdir()))}"
            for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
        }
        for key, path in files.items():
            path.write_text("")
            env[key] = str(path)
        env["GITHUB_STEP_SUMMARY"] = str(summary)
        script = tmp / f"step_{len(list(tmp.iterdir()))}.sh"
        script.write_text(self._substitute(str(step["run"]), ctx))
        folder = self.workspace / step.get(
            "working-directory", defaults.get("working-directory", ".")
        )
        done = subprocess.run(
            [*(SHELL if shell == "bash" else DEFAULT_SHELL), str(script)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        outcome = "success" if done.returncode == 0 else "failure"
        self.job_env_extra.update(_read_key_values(files["GITHUB_ENV"]))
        self.path_prefix[:0] = reversed(files["GITHUB_PATH"].read_text().split())
        return StepResult(
            name,
            outcome,
            outcome,
            done.returncode,
            _read_key_values(files["GITHUB_OUTPUT"]),
            done.stdout + done.stderr,
        )

    def _action(self, name: str, step: dict[str, Any], ctx: dict[str, Any]) -> StepResult:
        action = str(step["uses"]).split("@")[0]
        if action not in self.actions:
            raise KeyError(f"The runner double cannot stand in for {action!r}; add its effect.")
        inputs = self._env_of(step.get("with"), ctx)
        try:
            outputs = self.actions[action](self, inputs)
        except (OSError, subprocess.CalledProcessError) as exc:
            return StepResult(name, "failure", "failure", 1, {}, str(exc))
        return StepResult(name, "success", "success", 0, outputs)


# -- the actions' effects --------------------------------------------------------------------


def _checkout(runner: Runner, inputs: dict[str, str]) -> dict[str, str]:
    assert runner.event is not None
    shutil.rmtree(runner.workspace)
    subprocess.run(
        ["git", "clone", "--quiet", "--branch", runner.event.branch, str(runner.origin),
         str(runner.workspace)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return {}


def _setup_python(runner: Runner, inputs: dict[str, str]) -> dict[str, str]:
    if not inputs.get("python-version"):
        raise OSError("setup-python needs python-version")
    runner.path_prefix.insert(0, str(runner.python_env(runner.home / "python")))
    return {"python-version": inputs["python-version"]}


def _upload_artifact(runner: Runner, inputs: dict[str, str]) -> dict[str, str]:
    target = runner.artifacts / inputs["name"]
    found = False
    for line in inputs["path"].split("\n"):
        if not line.strip():
            continue
        source = runner.workspace / line.strip()
        if source.is_dir():
            shutil.copytree(source, target / line.strip(), dirs_exist_ok=True)
            found = True
        elif source.is_file():
            (target / line.strip()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / line.strip())
            found = True
    if not found and inputs.get("if-no-files-found", "warn") == "error":
        raise OSError(f"No files found for {inputs['path']!r}")
    url = f"{SERVER}/{REPOSITORY}/actions/runs/{RUN_ID}/artifacts/77"
    return {"artifact-id": "77", "artifact-url": url} if found else {}


def _read_key_values(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` blocks, as GitHub reads GITHUB_OUTPUT/ENV."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            for body in lines:
                if body == delimiter:
                    break
                block.append(body)
            values[key] = "\n".join(block)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


# -- GitHub's expression language, the part workflows use --------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!().,])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _strip_braces(text: str) -> str:
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}"):
        return text[3:-2]
    return text


def evaluate(expression: str, ctx: dict[str, Any]) -> Any:
    """The value of a GitHub Actions expression (without ``${{ }}``) in ``ctx``.

    Supported: literals, context properties (``github.event_name``,
    ``steps.upload.outputs.artifact-url``), ``== != && || !``, parentheses, and the status
    functions ``always() success() failure() cancelled()``. Anything else raises ValueError,
    so an expression the double does not understand fails loudly instead of guessing.
    """
    tokens: list[tuple[str, str]] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"Cannot parse {expression!r} at {text[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match[kind]))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    value, rest = _or(tokens, ctx)
    if rest:
        raise ValueError(f"Unexpected {rest[0][1]!r} in {expression!r}")
    return value


Tokens = list[tuple[str, str]]


def _or(tokens: Tokens, ctx: dict[str, Any]) -> tuple[Any, Tokens]:
    left, tokens = _and(tokens, ctx)
    while tokens and tokens[0] == ("op", "||"):
        right, tokens = _and(tokens[1:], ctx)
        left = left if _truthy(left) else right
    return left, tokens


def _and(tokens: Tokens, ctx: dict[str, Any]) -> tuple[Any, Tokens]:
    left, tokens = _compare(tokens, ctx)
    while tokens and tokens[0] == ("op", "&&"):
        right, tokens = _compare(tokens[1:], ctx)
        left = right if _truthy(left) else left
    return left, tokens


def _compare(tokens: Tokens, ctx: dict[str, Any]) -> tuple[Any, Tokens]:
    left, tokens = _unary(tokens, ctx)
    while tokens and tokens[0] in (("op", "=="), ("op", "!=")):
        op = tokens[0][1]
        right, tokens = _unary(tokens[1:], ctx)
        equal = _loose_equal(left, right)
        left = equal if op == "==" else not equal
    return left, tokens


def _unary(tokens: Tokens, ctx: dict[str, Any]) -> tuple[Any, Tokens]:
    if tokens and tokens[0] == ("op", "!"):
        value, rest = _unary(tokens[1:], ctx)
        return not _truthy(value), rest
    return _primary(tokens, ctx)


def _primary(tokens: Tokens, ctx: dict[str, Any]) -> tuple[Any, Tokens]:
    if not tokens:
        raise ValueError("Expression ends early")
    kind, text = tokens[0]
    rest = tokens[1:]
    if (kind, text) == ("op", "("):
        value, rest = _or(rest, ctx)
        if not rest or rest[0] != ("op", ")"):
            raise ValueError("Unclosed parenthesis")
        return value, rest[1:]
    if kind == "str":
        return text[1:-1].replace("''", "'"), rest
    if kind == "num":
        return float(text), rest
    if kind != "name":
        raise ValueError(f"Unexpected {text!r}")
    if rest and rest[0] == ("op", "("):
        if len(rest) < 2 or rest[1] != ("op", ")"):
            raise ValueError(f"{text}() takes no arguments here")
        failed = bool(ctx.get("_failed"))
        status = {
            "always": True,
            "success": not failed,
            "failure": failed,
            "cancelled": False,
        }
        if text not in status:
            raise ValueError(f"Unknown function {text}()")
        return status[text], rest[2:]
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text], rest
    value: Any = ctx.get(text)
    while rest and rest[0] == ("op", "."):
        if len(rest) < 2 or rest[1][0] != "name":
            raise ValueError(f"Expected a property after {text!r}.")
        key = rest[1][1]
        value = value.get(key) if isinstance(value, dict) else None
        rest = rest[2:]
    return value, rest


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "")


def _loose_equal(left: Any, right: Any) -> bool:
    """GitHub compares strings ignoring case, and null equals only null."""
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if isinstance(left, bool) or isinstance(right, bool):
        return _truthy(left) == _truthy(right) if left is not None and right is not None else False
    return bool(left == right)


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
