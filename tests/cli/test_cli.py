"""The `conveyor` command line, driven for real on the example project that `conveyor init` writes.

Commands run in-process through Typer's CliRunner on ``conveyor.cli.app``. Error paths go through
``conveyor.cli.main.run``, the function behind the installed executable: only it turns an error
into ``Error: ...`` and an exit code. A few slow tests start the executable itself, where the
process matters (the fast no-op path, exit codes).

One example project is initialised and run once per module; each test works on a copy of it,
``.conveyor/`` included, so no test pays for a full run it does not need.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import main as entry
from conveyor.cli.app import app

RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"
STEPS = ["prepare", "train", "evaluate", "report"]
# Wide enough that Rich never wraps a table row or a path: assertions see whole lines.
ENV = {"COLUMNS": "500", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "NO_COLOR": None}
CONVEYOR_VARS = (
    "CONVEYOR_STORE_URL",
    "CONVEYOR_ARTIFACTS",
    "CONVEYOR_EXECUTOR",
    "CONVEYOR_JOBS",
    "CONVEYOR_NO_FASTPATH",
)
EXECUTABLE = Path(sys.executable).with_name("conveyor")

# What the built-in classification evaluation records as the evaluate step's metrics.
EVALUATION_METRICS = {
    "roc_auc",
    "accuracy",
    "selection_rate",
    "precision",
    "recall",
    "f1",
    "log_loss",
    "brier",
    "ece",
    "n",
    "positives",
}
ENGINE_RUN_KEYS = {"run_id", "status", "duration_s", "restored_from_cache", "steps"}
ENGINE_STEP_KEYS = {"step", "status", "reason", "duration_s", "error", "log", "metrics"}


# -- helpers --------------------------------------------------------------------------------


def cli(*args: str | Path):  # -> typer.testing.Result
    """Invoke the Typer app in-process; an unexpected exception fails the test as itself."""
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args], catch_exceptions=False)


@dataclass
class Exit:
    code: int
    stdout: str
    stderr: str


def conveyor(*args: str | Path) -> Exit:
    """Run ``conveyor.cli.main.run`` (the executable's function) in-process with this argv."""
    runner = CliRunner(env=ENV)
    with runner.isolation() as (out, err, _mixed):
        try:
            code = entry.run([str(a) for a in args])
        finally:
            sys.stdout.flush()  # the captured streams buffer text until flushed
            sys.stderr.flush()
        return Exit(code, out.getvalue().decode(), err.getvalue().decode())


def executable(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Start the installed `conveyor` script, as a user's shell would."""
    assert EXECUTABLE.is_file(), f"{EXECUTABLE} is missing: install the project into this venv"
    return subprocess.run(
        [str(EXECUTABLE), *(str(a) for a in args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "500", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def edit(path: Path, old: str, new: str) -> None:
    """Replace text in a file, and move its mtime on so that no stat check can miss the edit."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def backdate(root: Path, seconds: float = 60.0) -> None:
    """Age a project's own files: the fast path distrusts files changed within 2 s of its
    witness (a change within one mtime granule could go unseen), as a user's rarely are."""
    when = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file() and ".conveyor" not in path.relative_to(root).parts:
            os.utime(path, (when, when))


def add_step(root: Path, name: str, module: str, source: str, inputs: str) -> None:
    """Add a step in a new module of the example package: the four original steps stay cached."""
    (root / "loans" / f"{module}.py").write_text(source)
    with (root / "conveyor.yaml").open("a") as f:
        f.write(f"  {name}:\n    run: loans.{module}:{name}\n    inputs: [{inputs}]\n")


def run_id_of(output: str) -> str:
    found = re.findall(rf"^Run ({RUN_ID})", output, flags=re.M)
    assert len(found) == 1, output
    return found[0]


def json_of(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the example project ---------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    root: Path
    init_output: str
    run_output: str
    run_id: str


@pytest.fixture(scope="module")
def loans_base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """`conveyor init` into an empty folder, then one full `conveyor run`."""
    root = tmp_path_factory.mktemp("cli") / "loans"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for var in CONVEYOR_VARS:
            mp.delenv(var, raising=False)
        init = cli("init", root)
        assert init.exit_code == 0, init.output
        # 20 boosting rounds instead of 200: the same code path, a fraction of the time on a
        # busy two-core machine.
        edit(root / "conveyor.yaml", "max_iter: 200", "max_iter: 20")
        first = cli("run", "-C", root)
        assert first.exit_code == 0, first.output
    backdate(root)
    return Base(root, init.stdout, first.stdout, run_id_of(first.stdout))


@pytest.fixture
def loans(loans_base: Base, tmp_path: Path) -> Path:
    """A private copy of the initialised, once-run project (its store and artifacts too)."""
    root = tmp_path / "loans"
    shutil.copytree(loans_base.root, root, symlinks=True)
    return root


# -- init ------------------------------------------------------------------------------------


def test_init_writes_the_example_into_an_empty_folder_and_lists_its_files(loans_base):
    root = loans_base.root
    assert loans_base.init_output == (
        f"Created a Conveyor project in {root}:\n"
        "  conveyor.yaml\n"
        "  loans/__init__.py\n"
        "  loans/steps.py\n"
        "  data/loans.parquet\n"
        "  schemas/loans.yaml\n"
        "  smoke/loans.jsonl\n"
        "  requirements.txt\n"
        "  .gitignore\n"
        f"Next: cd {root} && conveyor run\n"
    )
    for rel in ("conveyor.yaml", "loans/__init__.py", "loans/steps.py", "data/loans.parquet"):
        assert (root / rel).is_file()
    assert (root / ".gitignore").read_text() == (
        ".conveyor/\n__pycache__/\nreport.md\nconveyor-report*\nconveyor-junit.xml\n"
    )


def test_init_refuses_an_existing_project_and_force_rewrites_only_the_example(loans):
    config = loans / "conveyor.yaml"
    before = config.read_text()

    refused = conveyor("init", loans)

    assert refused.code == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"Error: {config} already exists. Use 'conveyor init --force' to overwrite the example "
        "files, or pick an empty folder.\n"
    )
    assert config.read_text() == before

    forced = cli("init", "--force", loans)

    assert forced.exit_code == 0
    # .gitignore exists already, so it is neither rewritten nor listed.
    assert forced.stdout.splitlines()[1:] == [
        "  conveyor.yaml",
        "  loans/__init__.py",
        "  loans/steps.py",
        "  data/loans.parquet",
        "  schemas/loans.yaml",
        "  smoke/loans.jsonl",
        f"Next: cd {loans} && conveyor run",
    ]
    assert "max_iter: 200" in config.read_text()
    assert (loans / ".conveyor" / "conveyor.db").is_file()  # the history is kept


# -- run -------------------------------------------------------------------------------------


def test_first_run_runs_every_step_and_says_why(loans_base):
    lines = loans_base.run_output.splitlines()
    for step in STEPS:
        assert any(re.fullmatch(rf"\s*✓ {step}\s+ran\s+[\d.]+ s\s*", line) for line in lines)
        assert any(re.match(rf"✓\s+{step}\s+ran\s+[\d.]+ s\s+never ran", line) for line in lines)
    assert re.fullmatch(
        rf"Run {RUN_ID} succeeded: 4 ran, 0 restored from cache in [\d.]+ s\.", lines[-1]
    )


def test_second_run_restores_every_step_from_cache_and_the_third_takes_the_fast_path(loans):
    second = cli("run", "-C", loans)

    assert second.exit_code == 0, second.output
    # The copy has a new path, so the engine decides (and then leaves a witness for this path).
    assert re.search(
        rf"^Run {RUN_ID} succeeded: nothing changed; all 4 steps restored from cache in "
        r"[\d.]+ s\.$",
        second.stdout,
        flags=re.M,
    )
    for step in STEPS:
        assert re.search(rf"^✓\s+{step}\s+cached\s+restored from cache", second.stdout, re.M)

    third = cli("run", "-C", loans)

    assert third.exit_code == 0
    lines = third.stdout.splitlines()
    assert lines[:4] == [f"  ✓ {step}  cached" for step in STEPS]
    assert re.fullmatch(
        rf"Run {RUN_ID}: nothing changed; all 4 steps restored from cache in \d\.\d{{3}} s\.",
        lines[4],
    )
    assert len(lines) == 5
    assert run_id_of(third.stdout) != run_id_of(second.stdout)


def test_run_json_reports_each_step_with_its_metrics(loans):
    summary = json_of(cli("run", "--json", "-C", loans))

    assert set(summary) == ENGINE_RUN_KEYS
    assert re.fullmatch(RUN_ID, summary["run_id"])
    assert summary["status"] == "succeeded"
    assert summary["restored_from_cache"] is True
    assert [s["step"] for s in summary["steps"]] == STEPS
    for step in summary["steps"]:
        assert set(step) == ENGINE_STEP_KEYS
        assert (step["status"], step["reason"], step["error"], step["log"]) == (
            "cached",
            "unchanged",
            None,
            None,
        )
    metrics = {s["step"]: s["metrics"] for s in summary["steps"]}
    assert metrics["prepare"] == {"rows_train": 8000.0, "rows_test": 2000.0}
    assert set(metrics["evaluate"]) == EVALUATION_METRICS
    assert 0.5 < metrics["evaluate"]["roc_auc"] < 1.0


def test_run_of_an_unknown_step_names_the_steps_there_are(loans):
    result = conveyor("run", "--step", "trian", "-C", loans)

    assert result.code == 1
    assert result.stderr == (
        "Error: Unknown step 'trian'; steps in conveyor.yaml: prepare, train, evaluate, report.\n"
    )


def test_a_second_run_at_once_is_refused_and_names_the_holder(loans):
    from conveyor.pipeline.lock import RunLock

    with RunLock(loans / ".conveyor" / "run.lock"):
        run = conveyor("run", "-C", loans)
        gc = conveyor("gc", "-C", loans)

    assert (run.code, gc.code) == (1, 1)
    assert run.stderr == gc.stderr
    assert re.fullmatch(
        rf"Error: Another 'conveyor run' is running in this project \(pid {os.getpid()} on "
        r"\S+, started \d\d:\d\d:\d\d\)\. Wait for it to finish, or pass --wait to queue "
        r"behind it\.\n",
        run.stderr,
    )


def _release_later(lock, seconds: float) -> threading.Thread:
    """Release ``lock`` from another thread after ``seconds``, as a finishing run would."""
    thread = threading.Thread(target=lambda: (time.sleep(seconds), lock.release()))
    thread.start()
    return thread


def test_gc_wait_queues_behind_a_run_as_the_lock_message_says(loans):
    from conveyor.pipeline.lock import RunLock

    lock = RunLock(loans / ".conveyor" / "run.lock").acquire()
    releaser = _release_later(lock, 0.5)
    started = time.monotonic()
    try:
        done = conveyor("gc", "--wait", "-C", loans)
    finally:
        releaser.join()
        lock.release()

    assert done.code == 0, done.stderr
    assert done.stdout.startswith("Removed 0 artifacts ")
    assert time.monotonic() - started >= 0.5


def test_forced_step_reruns_alone_and_an_identical_downstream_result_stops_the_wave(loans):
    forced = json_of(cli("run", "--step", "train", "--force", "--json", "-C", loans))

    assert [(s["step"], s["status"], s["reason"]) for s in forced["steps"]] == [
        ("prepare", "cached", "unchanged"),
        ("train", "ran", "forced"),
    ]
    shown = json_of(cli("show", forced["run_id"], "--json", "-C", loans))
    assert json_of(cli("show", "latest", "--json", "-C", loans)) == shown
    # A re-run does not orphan the outputs it replaced: the older run still refers to them.
    assert json_of(cli("gc", "--dry-run", "--json", "-C", loans))["removed"] == []

    runs = json_of(cli("runs", "--json", "-C", loans))
    original = json_of(cli("show", runs[-1]["run_id"], "--json", "-C", loans))
    model_now = shown["steps"][1]["outputs"]["return"]["digest"]
    model_before = original["steps"][1]["outputs"]["return"]["digest"]
    status = json_of(cli("status", "--json", "-C", loans))
    if model_now == model_before:  # the model file came out byte for byte the same
        assert {row["state"] for row in status} == {"up-to-date"}
    else:
        assert status[2] == {"step": "evaluate", "state": "stale", "reason": "input train changed"}

    after = json_of(cli("run", "--json", "-C", loans))

    statuses = {s["step"]: s["status"] for s in after["steps"]}
    assert statuses["evaluate"] == ("cached" if model_now == model_before else "ran")
    # The new model scores exactly as the old one, so evaluate's JSON is the same bytes and
    # report, downstream of it, is not run again.
    assert statuses["report"] == "cached"


# -- status ----------------------------------------------------------------------------------


def test_status_names_the_changed_param_with_its_old_and_new_value(loans):
    assert cli("status", "-C", loans).stdout.splitlines()[-1] == "Everything is up to date."

    edit(loans / "conveyor.yaml", "max_depth: 6", "max_depth: 3")

    rows = json_of(cli("status", "--json", "-C", loans))
    assert rows == [
        {"step": "prepare", "state": "up-to-date", "reason": "cached"},
        {"step": "train", "state": "stale", "reason": "param max_depth changed: 6 → 3"},
        {"step": "evaluate", "state": "stale", "reason": "upstream step 'train' will re-run first"},
        {
            "step": "report",
            "state": "stale",
            "reason": "upstream step 'evaluate' will re-run first",
        },
    ]
    text = cli("status", "-C", loans).stdout
    assert re.search(r"^●\s+train\s+stale\s+param max_depth changed: 6 → 3\s*$", text, re.M)
    assert text.splitlines()[-1] == "3 of 4 steps would run. Run 'conveyor run'."

    edit(loans / "conveyor.yaml", "max_depth: 3", "max_depth: 6")  # back as it was: cached

    assert cli("status", "-C", loans).stdout.splitlines()[-1] == "Everything is up to date."


# -- runs, show, events ----------------------------------------------------------------------


def test_runs_lists_runs_newest_first(loans, loans_base):
    second = run_id_of(cli("run", "-C", loans).stdout)
    third = run_id_of(cli("run", "-C", loans).stdout)

    rows = json_of(cli("runs", "--json", "-C", loans))

    assert [r["run_id"] for r in rows] == [third, second, loans_base.run_id]
    for row in rows:
        assert set(row) == {
            "run_id",
            "status",
            "started_at",
            "duration_s",
            "steps",
            "git_commit",
            "git_dirty",
        }
        assert row["status"] == "succeeded"
    assert [r["steps"] for r in rows] == [{"cached": 4}, {"cached": 4}, {"ran": 4}]
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    assert [r["run_id"] for r in json_of(cli("runs", "--limit", "1", "--json", "-C", loans))] == [
        third
    ]
    text = cli("runs", "-C", loans).stdout.splitlines()
    assert text[0].split() == ["run", "status", "time", "commit", "steps"]
    assert [line.split()[0] for line in text[1:]] == [third, second, loans_base.run_id]


def test_runs_of_a_project_that_never_ran(tmp_path):
    (tmp_path / "conveyor.yaml").write_text("project: empty\n")

    assert cli("runs", "-C", tmp_path).stdout == "No runs yet. Run 'conveyor run'.\n"
    assert json_of(cli("runs", "--json", "-C", tmp_path)) == []


def test_show_json_has_steps_metrics_params_and_snapshots(loans, loans_base):
    info = json_of(cli("show", "latest", "--json", "-C", loans))

    assert info == json_of(cli("show", loans_base.run_id[:17], "--json", "-C", loans))
    assert set(info) == {
        "run_id",
        "project",
        "status",
        "started_at",
        "finished_at",
        "host",
        "workspace",
        "git_commit",
        "git_dirty",
        "env_hash",
        "error",
        "steps",
        "metrics",
        "params",
        "artifacts",
        "snapshots",
    }
    assert (info["run_id"], info["project"], info["status"], info["error"]) == (
        loans_base.run_id,
        "loans",
        "succeeded",
        None,
    )
    assert info["workspace"] == str(loans_base.root)
    assert [(s["step"], s["status"], s["reason"]) for s in info["steps"]] == [
        (step, "ran", "never ran") for step in STEPS
    ]
    for step in info["steps"]:
        assert set(step) == {
            "step",
            "status",
            "reason",
            "duration_s",
            "cache_key",
            "outputs",
            "error",
            "traceback",
            "log_digest",
        }
        assert re.fullmatch("[0-9a-f]{64}", step["cache_key"])
        assert re.fullmatch("[0-9a-f]{64}", step["log_digest"])
    formats = {s["step"]: {n: o["format"] for n, o in s["outputs"].items()} for s in info["steps"]}
    assert formats == {
        "prepare": {"train": "parquet", "test": "parquet"},
        "train": {"return": "skops"},
        "evaluate": {"return": "json"},
        "report": {"return": "file"},
    }
    assert info["metrics"]["prepare"] == {"rows_train": 8000.0, "rows_test": 2000.0}
    assert set(info["metrics"]["evaluate"]) == EVALUATION_METRICS
    assert info["params"] == {"train": {"n_features": 22}}
    assert info["artifacts"] == []
    [snapshot] = info["snapshots"]
    assert re.fullmatch("[0-9a-f]{32}", snapshot.pop("content_hash"))
    assert snapshot == {"source": "loans", "files": 1, "row_count": 10000, "columns": 55}


def test_show_prints_the_run_in_words(loans, loans_base):
    info = json_of(cli("show", "latest", "--json", "-C", loans))

    lines = cli("show", "latest", "-C", loans).stdout.splitlines()

    assert lines[0] == f"Run {loans_base.run_id}  succeeded  project loans"
    assert lines[2] == f"  commit no git, env {info['env_hash'][:12]}"
    prepare = next(line for line in lines if re.match(r"✓\s+prepare\s", line))
    digest = info["steps"][0]["outputs"]["train"]["digest"]
    assert f"train (parquet, {digest[:10]})" in prepare
    assert "  metrics prepare: rows_train=8000, rows_test=2000" in lines
    assert "  params train: {'n_features': 22}" in lines
    content_hash = info["snapshots"][0]["content_hash"]
    assert f"  data loans: 1 files, 10000 rows, 55 columns, hash {content_hash[:12]}" in lines


def test_show_log_prints_what_the_step_printed(loans):
    add_step(
        loans,
        "shout",
        "extra",
        "import subprocess\nimport sys\n\n\n"
        "def shout(metrics):\n"
        "    print('metrics:', sorted(metrics), flush=True)\n"
        "    print('a warning on stderr', file=sys.stderr, flush=True)\n"
        "    subprocess.run(['echo', 'from a child process'], check=True)\n"
        "    return {'shouted': 1}\n",
        inputs="evaluate",
    )
    run_id = json_of(cli("run", "--json", "-C", loans))["run_id"]

    log = cli("show", run_id, "--log", "shout", "-C", loans)

    assert log.exit_code == 0
    assert log.stdout == (
        "metrics: ['accuracy', 'brier', 'confusion_matrix', 'ece', 'f1', 'log_loss', 'n', "
        "'plots', 'positives', 'precision', 'recall', 'roc_auc', 'selection_rate', 'settings', "
        "'slices', 'target', 'task']\n"
        "a warning on stderr\n"
        "from a child process\n"
    )
    assert cli("show", run_id, "--log", "train", "-C", loans).stdout == (
        f"(step 'train' of run {run_id} has no log: it was cached)\n"
    )
    missing = conveyor("show", run_id, "--log", "nope", "-C", loans)
    assert missing.code == 1
    assert missing.stderr == (
        f"Error: Run {run_id} has no step 'nope'; its steps: prepare, train, evaluate, report, "
        "shout.\n"
    )


def test_show_of_an_unknown_run_is_an_error(loans):
    result = conveyor("show", "nosuchrun", "-C", loans)

    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr == "Error: No run matches 'nosuchrun'. Run 'conveyor runs' to list them.\n"


def test_events_list_every_state_change_oldest_first(loans, loans_base):
    every = json_of(cli("events", "--json", "-C", loans))
    # The profile of the new snapshot lands whenever its background process finishes.
    assert [r["kind"] for r in every].count("snapshot.profiled") <= 1
    rows = [r for r in every if r["kind"] != "snapshot.profiled"]

    assert [r["kind"] for r in rows] == [
        "run.started",
        "snapshot.created",
        *["step.started", "step.ran"] * 4,
        "run.succeeded",
    ]
    for row in rows:
        assert set(row) == {"id", "at", "kind", "entity", "entity_id", "actor", "payload"}
    assert rows[0]["payload"] == {"steps": STEPS}
    ran = [r for r in rows if r["kind"] == "step.ran"]
    assert [r["payload"]["step"] for r in ran] == STEPS
    assert {r["entity_id"] for r in rows if r["entity"] == "run"} == {loans_base.run_id}
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)

    last = json_of(cli("events", "--limit", "3", "--json", "-C", loans))
    assert last == every[-3:]

    lines = cli("events", "-C", loans).stdout.splitlines()
    assert len(lines) == len(every)
    assert lines[0].startswith(f"{rows[0]['at']}  {'run.started':<18} {loans_base.run_id}  {{")
    assert f"{rows[-1]['at']}  {'run.succeeded':<18} {loans_base.run_id}  " in lines


# -- gc --------------------------------------------------------------------------------------


def test_gc_removes_only_what_no_record_refers_to(loans):
    # A step that stores its first output, then fails on the second: the first is an orphan.
    add_step(
        loans,
        "leak",
        "leaky",
        "def leak(test):\n    return {'sample': test.head(7), 'handle': object()}\n",
        inputs="prepare.test",
    )
    failed = conveyor("run", "-C", loans)
    assert failed.code == 1
    assert "Step 'leak' failed: UnsupportedOutput" in failed.stderr
    tmp = loans / ".conveyor" / "artifacts" / "tmp"
    crashed, writing = tmp / "put-crashed.tmp", tmp / "put-writing.tmp"
    crashed.write_bytes(b"half")
    writing.write_bytes(b"in progress")
    two_hours_ago = time.time() - 7200
    os.utime(crashed, (two_hours_ago, two_hours_ago))

    young = cli("gc", "--dry-run", "-C", loans)
    dry = json_of(cli("gc", "--dry-run", "--grace-hours", "0", "--json", "-C", loans))

    # Younger than the grace period (24 h), the orphan could be a run's in another workspace.
    assert young.stdout.startswith("Would remove 0 artifacts (0.0 MB) and 1 leftover temp ")
    assert young.stdout.endswith(", and 1 unreferenced younger than 24 h.\n")
    assert len(dry["removed"]) == 1
    assert (dry["tmp_removed"], dry["dry_run"]) == (1, True)
    orphan = loans / ".conveyor" / "artifacts" / "objects" / dry["removed"][0][:2]
    orphan = orphan / dry["removed"][0][2:]
    assert dry["freed_bytes"] == orphan.stat().st_size
    import pandas as pd

    assert len(pd.read_parquet(orphan)) == 7  # it is the leaked sample
    assert crashed.exists()

    done = cli("gc", "--grace-hours", "0", "-C", loans)

    assert done.stdout == (
        f"Removed 1 artifacts ({dry['freed_bytes'] / 1e6:.1f} MB) and 1 leftover temp files; "
        f"kept {dry['kept']}.\n"
    )
    assert not orphan.exists() and not crashed.exists()
    assert writing.exists()  # young: it may belong to a write in progress
    assert json_of(cli("gc", "--json", "-C", loans)) == {
        "runs_removed": [],
        "removed": [],
        "freed_bytes": 0,
        "kept": dry["kept"],
        "kept_young": 0,
        "tmp_removed": 0,
        "dry_run": False,
    }
    rows = json_of(cli("status", "--json", "-C", loans))
    assert [(r["step"], r["state"]) for r in rows] == [
        *[(step, "up-to-date") for step in STEPS],
        ("leak", "never-ran"),
    ]


# -- errors ----------------------------------------------------------------------------------


def test_a_failing_step_exits_1_with_its_traceback_and_log_path(loans):
    add_step(
        loans,
        "explode",
        "broken",
        "def explode(metrics):\n"
        "    print('checking', len(metrics), 'metrics', flush=True)\n"
        "    raise ValueError(\"the holdout has no column 'income'\")\n",
        inputs="evaluate",
    )

    result = conveyor("run", "-C", loans)

    assert result.code == 1
    assert re.search(r"^✗\s+explode\s+failed\s+ValueError: the holdout", result.stdout, re.M)
    run_id = re.search(rf"^Run ({RUN_ID}) failed after [\d.]+ s\.$", result.stderr, re.M)
    assert run_id, result.stderr
    run_id = run_id.group(1)
    log = loans / ".conveyor" / "logs" / run_id / "explode.log"
    assert result.stderr.startswith(
        "\nStep 'explode' failed: ValueError: the holdout has no column 'income'\n"
        "Traceback (most recent call last):\n"
        f'  File "{loans / "loans" / "broken.py"}", line 3, in explode\n'
    )
    assert "ValueError: the holdout has no column 'income'\n" in result.stderr
    assert "conveyor/pipeline/worker.py" not in result.stderr  # only the step's own frames
    assert f"Log: {log}  (conveyor show {run_id} --log explode)\n" in result.stderr
    assert log.read_text() == "checking 17 metrics\n"
    assert cli("show", run_id, "--log", "explode", "-C", loans).stdout == "checking 17 metrics\n"
    assert json_of(cli("runs", "--limit", "1", "--json", "-C", loans))[0]["status"] == "failed"


def test_malformed_yaml_exits_2_naming_line_and_column(tmp_path):
    (tmp_path / "conveyor.yaml").write_text('project: loans\npipeline:\n  a: {run: "x:y"\n')

    for command in (["run"], ["status"], ["runs"], ["show", "latest"], ["gc"]):
        result = conveyor(*command, "-C", tmp_path)

        assert result.code == 2, command
        assert result.stdout == ""
        assert result.stderr == (
            "Error: conveyor.yaml: line 4, column 1: did not find expected ',' or '}' "
            "(while parsing a flow mapping on line 3)\n"
        )


def test_an_unknown_key_is_named_with_its_line_and_the_likely_fix(tmp_path):
    (tmp_path / "conveyor.yaml").write_text(
        'project: loans\npipeline:\n  a: {run: "x:y", paramz: {}}\n'
    )

    result = conveyor("status", "-C", tmp_path)

    assert result.code == 2
    assert result.stderr == (
        "Error: conveyor.yaml: pipeline.a: unknown key 'paramz'; did you mean 'params'? (line 3)\n"
    )


def test_outside_a_project_every_command_says_how_to_start_one(tmp_path, monkeypatch):
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    monkeypatch.chdir(nowhere)
    expected = (
        f"Error: No conveyor.yaml in {nowhere.resolve()} or any parent directory. "
        "Run 'conveyor init' to create a project.\n"
    )
    commands = (["run"], ["run", "--json"], ["status"], ["runs"], ["show", "latest"], ["events"])
    for command in (*commands, ["gc"]):
        result = conveyor(*command)

        assert (result.code, result.stdout, result.stderr) == (1, "", expected), command


# -- known defects (each passes once its fix lands; then drop the marker) --------------------


def test_config_is_a_group_of_the_main_command(tmp_path):
    (tmp_path / "conveyor.yaml").write_text("project: p\nserve:\n  thread: 2\n")

    checked = conveyor("config", "check", "-C", tmp_path)
    schema = conveyor("config", "schema")

    assert checked.code == 2
    assert checked.stdout == (
        f"{tmp_path / 'conveyor.yaml'}:3: serve: unknown key 'thread'; did you mean 'threads'?\n"
    )
    assert schema.code == 0 and '"$schema"' in schema.stdout


def test_usage_errors_print_usage_and_exit_2():
    result = conveyor("bogus")

    assert result.code == 2
    assert "Error: No such command 'bogus'." in result.stderr
    assert "Traceback" not in result.stderr


def test_the_fast_path_prints_the_same_json_as_the_engine(loans):
    engine = json_of(cli("run", "--json", "-C", loans))
    fast = json_of(cli("run", "--json", "-C", loans))

    assert set(fast) == set(engine) == ENGINE_RUN_KEYS
    assert [set(s) for s in fast["steps"]] == [set(s) for s in engine["steps"]]


def test_a_fast_path_run_records_the_data_snapshots_it_used(loans):
    cli("run", "-C", loans)  # the engine: leaves a witness for this path
    fast = json_of(cli("run", "--json", "-C", loans))

    shown = json_of(cli("show", fast["run_id"], "--json", "-C", loans))

    assert [s["source"] for s in shown["snapshots"]] == ["loans"]


@pytest.mark.slow
def test_after_a_forced_rerun_with_new_bytes_status_says_what_is_stale(tmp_path):
    # Each command in a fresh process, as a user types them: in this one, another test's
    # `import ray` may have changed the environment lock (see test_executors.py).
    (tmp_path / "conveyor.yaml").write_text(
        "project: tiny\npipeline:\n"
        '  make: {run: "steps:make"}\n'
        '  use: {run: "steps:use", inputs: [make]}\n'
    )
    (tmp_path / "steps.py").write_text(
        "import os\n\n\ndef make():\n    return {'token': os.urandom(4).hex()}\n\n\n"
        "def use(made):\n    return {'seen': made['token']}\n"
    )
    backdate(tmp_path)
    assert executable("run", cwd=tmp_path).returncode == 0
    assert executable("run", "--step", "make", "--force", cwd=tmp_path).returncode == 0

    rows = json.loads(executable("status", "--json", cwd=tmp_path).stdout)

    assert rows[1] == {"step": "use", "state": "stale", "reason": "input make changed"}
    after = json.loads(executable("run", "--json", cwd=tmp_path).stdout)
    assert [s["status"] for s in after["steps"]] == ["cached", "ran"]


# -- the executable --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_no_op_run_of_the_executable_loads_neither_typer_nor_sqlalchemy(loans, tmp_path):
    # The engine leaves a witness for this path; run in its own process, so that its
    # environment lock is the one the next process computes.
    assert executable("run", cwd=loans).returncode == 0

    result = executable("run", cwd=loans, PYTHONPROFILEIMPORTTIME="1")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [f"  ✓ {step}  cached" for step in STEPS]
    assert re.fullmatch(
        rf"Run {RUN_ID}: nothing changed; all 4 steps restored from cache in \d\.\d{{3}} s\.",
        lines[4],
    )
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "conveyor" in imported  # the profile really was taken
    assert imported.isdisjoint({"typer", "click", "sqlalchemy", "pydantic", "pandas", "rich"})

    elsewhere = executable("run", "--json", "-C", loans, cwd=tmp_path)

    assert elsewhere.returncode == 0, elsewhere.stderr
    summary = json.loads(elsewhere.stdout)
    assert summary["restored_from_cache"] is True
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [(s, "cached") for s in STEPS]


def test_version_is_answered_before_the_cli_loads():
    from conveyor import __version__

    result = conveyor("--version")

    assert (result.code, result.stdout, result.stderr) == (0, f"conveyor {__version__}\n", "")
    code = (
        "import sys\n"
        "from conveyor.cli.main import run\n"
        "assert run(['--version']) == 0\n"
        "print(sorted({'typer', 'click', 'rich'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout == f"conveyor {__version__}\n[]\n"


@pytest.mark.slow
def test_exit_codes_of_the_executable(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "conveyor.yaml").write_text("project: p\n")

    helped = executable("--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: conveyor [OPTIONS] COMMAND [ARGS]...")

    version = executable("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, "conveyor 0.1.0\n")

    missing = executable("show", "nosuchrun", cwd=project)
    assert (missing.returncode, missing.stderr) == (
        1,
        "Error: No run matches 'nosuchrun'. Run 'conveyor runs' to list them.\n",
    )

    outside = executable("run", cwd=tmp_path)
    assert outside.returncode == 1
    assert outside.stderr.startswith(f"Error: No conveyor.yaml in {tmp_path.resolve()} ")

    (project / "conveyor.yaml").write_text("project: p\npipeline: [\n")
    malformed = executable("run", cwd=project)
    assert malformed.returncode == 2
    assert re.fullmatch(r"Error: conveyor\.yaml: line \d+, column \d+: .+\n", malformed.stderr)


def test_gc_runs_older_than_deletes_old_runs_but_never_the_newest(loans):
    edit(loans / "conveyor.yaml", "max_depth: 6", "max_depth: 4")
    newest = json_of(cli("run", "--json", "-C", loans))["run_id"]

    result = cli("gc", "--runs-older-than", "0", "-C", loans)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Removed 1 runs, ")
    runs = json_of(cli("runs", "--json", "-C", loans))
    assert [r["run_id"] for r in runs] == [newest]
    kinds = [e["kind"] for e in json_of(cli("events", "--json", "-C", loans))]
    assert kinds.count("run.deleted") == 1
