"""The 5-stage pipeline three ways: bare scripts, DVC stages, Conveyor cmd steps.

Every project gets the same scripts (``benchmarks/pipeline_src``), the same parameters and the
same input, hard-linked in. Only the runner differs, so the difference in wall time is the
runner's overhead.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from . import timing
from .data import link_into
from .environments import PIPELINE_SRC, conveyor_bin, dvc_env

PARAMS = {
    "prepare": {"sample_every": 20},
    "featurize": {"n_bins": 16},
    "train": {"lr": 0.1, "epochs": 20, "seed": 0},
}
STAGE_COUNT = 5
PARAM_STAGES = 3  # a change of train's epochs re-runs train, evaluate and report
SCRIPTS = ("stageparams.py", "prepare.py", "featurize.py", "train.py", "evaluate.py", "report.py")


@dataclass(frozen=True)
class Stage:
    """One stage: its command, the files it reads and writes, its params section."""

    name: str
    argv: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: str | None = None

    @property
    def cmd(self) -> str:
        return " ".join(self.argv)


def stages(input_path: str) -> list[Stage]:
    """The pipeline on ``input_path`` (a CSV file or a folder of them, relative to the root)."""
    common = "src/stageparams.py"
    return [
        Stage(
            "prepare",
            ("python", "src/prepare.py", input_path, "out/prepared.csv"),
            ("src/prepare.py", common, input_path),
            ("out/prepared.csv",),
        ),
        Stage(
            "featurize",
            ("python", "src/featurize.py", "out/prepared.csv", "out/features.npz"),
            ("src/featurize.py", common, "out/prepared.csv"),
            ("out/features.npz",),
        ),
        Stage(
            "train",
            ("python", "src/train.py", "out/features.npz", "out/model.pkl"),
            ("src/train.py", common, "out/features.npz"),
            ("out/model.pkl",),
        ),
        Stage(
            "evaluate",
            ("python", "src/evaluate.py", "out/features.npz", "out/model.pkl", "out/metrics.json"),
            ("src/evaluate.py", "out/features.npz", "out/model.pkl"),
            (),
            metrics="out/metrics.json",
        ),
        Stage(
            "report",
            ("python", "src/report.py", "out/metrics.json", "out/report.md"),
            ("src/report.py", "out/metrics.json"),
            ("out/report.md",),
        ),
    ]


@dataclass(frozen=True)
class Dataset:
    """Generated input and where it sits in a project."""

    name: str  # "small" or "large"
    source: Path  # the generated file or folder
    input_path: str  # relative path inside a project
    glob: str  # the Conveyor data source over it


def dataset(name: str, source: Path) -> Dataset:
    """Describe a generated file (``data/raw.csv``) or folder (``data/raw/*.csv``)."""
    if source.is_file():
        return Dataset(name, source, "data/raw.csv", "data/raw.csv")
    return Dataset(name, source, "data/raw", "data/raw/*.csv")


def _flow(items: Mapping[str, object] | list[str]) -> str:
    return json.dumps(items)  # JSON is YAML flow style, and quotes every path safely


def _scaffold(root: Path, data: Dataset) -> None:
    if root.exists():
        shutil.rmtree(root)
    (root / "src").mkdir(parents=True)
    for script in SCRIPTS:
        shutil.copy2(PIPELINE_SRC / script, root / "src" / script)
    link_into(data.source, root / data.input_path)


def _params_yaml(params: Mapping[str, Mapping[str, object]]) -> str:
    return "".join(f"{stage}: {_flow(values)}\n" for stage, values in params.items())


def new_bare(root: Path, data: Dataset) -> Path:
    """A folder with the scripts, params.yaml and the input: what a user runs by hand."""
    _scaffold(root, data)
    (root / "params.yaml").write_text(_params_yaml(PARAMS))
    (root / "out").mkdir()
    return root


def run_bare(root: Path, data: Dataset, env: Mapping[str, str]) -> list[float]:
    """Run the 5 scripts one after another, as processes; their wall seconds, in order."""
    return [timing.run(stage.argv, root, env).wall for stage in stages(data.input_path)]


def dvc_yaml(data: Dataset) -> str:
    """dvc.yaml with one stage per script; evaluate's metrics are not cached, as usual."""
    lines = ["stages:"]
    for stage in stages(data.input_path):
        lines += [
            f"  {stage.name}:",
            f"    cmd: {stage.cmd}",
            f"    deps: {_flow(list(stage.deps))}",
        ]
        if stage.name in PARAMS:
            lines.append(f"    params: [{stage.name}]")
        if stage.outs:
            lines.append(f"    outs: {_flow(list(stage.outs))}")
        if stage.metrics:
            lines += ["    metrics:", f"      - {stage.metrics}:", "          cache: false"]
    return "\n".join(lines) + "\n"


def new_dvc_repo(root: Path, data: Dataset, dvc: Path, env: Mapping[str, str]) -> dict:
    """A fresh git + DVC repository holding the pipeline; returns the env to run DVC with."""
    _scaffold(root, data)
    repo_env = dvc_env(dict(env), root)
    timing.run(["git", "init", "-q"], root, repo_env)
    timing.run([str(dvc), "init", "-q"], root, repo_env)
    timing.run([str(dvc), "config", "core.check_update", "false"], root, repo_env, check=False)
    (root / "params.yaml").write_text(_params_yaml(PARAMS))
    (root / "dvc.yaml").write_text(dvc_yaml(data))
    return repo_env


def conveyor_yaml(data: Dataset, params: Mapping[str, Mapping[str, object]] = PARAMS) -> str:
    """conveyor.yaml with the same stages as cmd steps and the input as a data source."""
    lines = ["project: bench", "data:", f"  raw: {_flow(data.glob)}", "pipeline:"]
    for stage in stages(data.input_path):
        step: dict[str, object] = {"cmd": stage.cmd, "deps": list(stage.deps)}
        outs = list(stage.outs) + ([stage.metrics] if stage.metrics else [])
        step["outs"] = outs
        if stage.metrics:
            step["metrics"] = stage.metrics
        if stage.name in params:
            step["params"] = dict(params[stage.name])
        lines.append(f"  {stage.name}: {_flow(step)}")
    return "\n".join(lines) + "\n"


def new_conveyor_project(root: Path, data: Dataset, env: Mapping[str, str]) -> Path:
    """A fresh Conveyor project (in its own git repository, as the DVC one is)."""
    _scaffold(root, data)
    timing.run(["git", "init", "-q"], root, env)
    (root / "conveyor.yaml").write_text(conveyor_yaml(data))
    return root


def set_epochs(root: Path, tool: str, data: Dataset, epochs: int) -> None:
    """Change train's ``epochs`` the way a user would: edit the tool's params file."""
    params = {**PARAMS, "train": {**PARAMS["train"], "epochs": epochs}}
    if tool == "dvc":
        (root / "params.yaml").write_text(_params_yaml(params))
    else:
        (root / "conveyor.yaml").write_text(conveyor_yaml(data, params))


def conveyor(*args: str) -> list[str]:
    """argv of the ``conveyor`` executable of this venv."""
    return [str(conveyor_bin() / "conveyor"), *args]


_NEWEST_RUN = "run_id = (SELECT id FROM runs ORDER BY rowid DESC LIMIT 1)"


def query_store(root: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows from a Conveyor project's metadata store, opened read-only with plain sqlite3."""
    db = root / ".conveyor" / "conveyor.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


def latest_conveyor_run(root: Path) -> dict[str, str]:
    """Step name -> status of the newest run recorded in the project's store.

    Read with sqlite3 so that checking a run costs nothing and is not itself timed.
    """
    return dict(query_store(root, f"SELECT step, status FROM step_runs WHERE {_NEWEST_RUN}"))


def conveyor_step_durations(root: Path) -> dict[str, float]:
    """Step name -> seconds the worker spent on it, for the newest run."""
    rows = query_store(root, f"SELECT step, duration_s FROM step_runs WHERE {_NEWEST_RUN}")
    return {step: seconds for step, seconds in rows if seconds is not None}


def newest_run_was_fast(root: Path) -> bool:
    """Whether the newest run was recorded by the fast path (no engine, no heavy imports)."""
    (args,) = query_store(root, "SELECT args FROM runs ORDER BY rowid DESC LIMIT 1")[0]
    return bool(json.loads(args or "{}").get("fast"))


def wait_for_profiles(root: Path, timeout: float = 300.0) -> None:
    """Wait for the background profiler a first run starts, so that it does not load the
    machine during the next measurement (its pids are claimed in the state DB until done)."""
    state = root / ".conveyor" / "state.db"
    deadline = time.monotonic() + timeout
    while state.exists() and time.monotonic() < deadline:
        with sqlite3.connect(state) as conn:
            busy = conn.execute("SELECT count(*) FROM kv WHERE key LIKE 'profiling:%'").fetchone()
        if not busy[0]:
            return
        time.sleep(0.1)


def snapshot_profiled(root: Path) -> bool:
    """Whether the project's store holds a profile (row count) for some data snapshot."""
    rows = query_store(root, "SELECT row_count FROM snapshots")
    return any(count is not None for (count,) in rows)


def expect_conveyor(root: Path, ran: int, cached: int) -> None:
    """Raise unless the newest run ran ``ran`` steps and restored ``cached`` from cache."""
    statuses = list(latest_conveyor_run(root).values())
    got = (statuses.count("ran"), statuses.count("cached"))
    if got != (ran, cached) or len(statuses) != ran + cached:
        raise AssertionError(
            f"Conveyor run in {root} was expected to run {ran} and restore {cached} steps, "
            f"but recorded {sorted(latest_conveyor_run(root).items())}."
        )


def dvc_stages_run(output: str) -> int:
    """How many stages a ``dvc repro`` actually executed, from its output."""
    return output.count("Running stage")
