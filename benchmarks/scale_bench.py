"""How fast the read commands answer on a large store, and the prediction log's figures.

A one-step project runs twice (so the fast path's witness exists, as after any successful
run); then its SQLite store is filled in plain SQL with 100,000 runs (4 step runs each), 1,000
model versions (10 models, aliases staging and production), 1,000 releases and 1,000,000
events (5 per release on the releases, the rest on runs), and each read command is timed as a
user starts it: the installed ``conveyor`` executable, output to a pipe, median of
``--repeat`` runs. ``--demo DIR`` times the same commands on a project that `make demo`
left (read-only, but for `conveyor monitor`'s kept report in ``.conveyor/monitor/``): there
`conveyor monitor` answers from the report its warm-up call kept, as a user's second look at an
unchanged log does, and `conveyor monitor --fresh` computes the report every time.

The prediction log's figures (bytes per logged request, the monitoring report over 1,000,000
logged requests) come from ``benchmarks/prediction_log_bench.py`` when it is there; otherwise
they are reported as null with the reason.

    .venv/bin/python benchmarks/scale_bench.py [--quick] [--json] [--demo DIR]

``--quick`` uses 10,000 runs, 100 versions, 100 releases and 100,000 events (under 2
minutes). The table goes to ``benchmarks/results/scale.md`` (``scale-quick.md``) and every
figure to the ``.json`` beside it; ``--json`` prints that object instead of the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXECUTABLE = Path(sys.executable).with_name("conveyor")
RESULTS = HERE / "results"
BUDGET_S = {"store": 0.3, "demo": 0.2}

#: The read commands timed on the large store; RELEASE and MODEL are filled in by ``build``.
COMMANDS = [
    ["runs"],
    ["runs", "--json"],
    ["show", "latest"],
    ["show", "latest", "--json"],
    ["events"],
    ["events", "--json", "--limit", "500"],
    ["events", "--id", "20250101-000042", "--limit", "20"],
    ["events", "--id", "RELEASE"],
    ["status"],
    ["models", "list"],
    ["models", "list", "MODEL"],
    ["models", "show", "MODEL", "production"],
    ["models", "show", "MODEL", "1", "--json"],
    ["releases"],
    ["releases", "--json", "--limit", "100"],
    ["releases", "-m", "MODEL"],
    ["release", "show", "RELEASE"],
    ["release", "show", "RELEASE", "--json"],
]

DEMO_COMMANDS = [
    ["runs"],
    ["show", "latest"],
    ["events"],
    ["events", "--limit", "12"],
    ["status"],
    ["models", "list"],
    ["models", "show", "loans-risk", "production"],
    ["releases"],
    ["release", "show", "RELEASE"],
    ["monitor"],
    ["monitor", "--fresh"],
]


def _conveyor(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(EXECUTABLE), *args, "-C", str(root)], capture_output=True, timeout=600
    )


def _stamp(at: datetime) -> str:
    """A time as SQLAlchemy writes it to SQLite (naive UTC text)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def build(root: Path, runs: int, versions: int, releases: int, events: int) -> dict[str, str]:
    """Fill a fresh project's store; returns the names the commands refer to."""
    (root / "conveyor.yaml").write_text(
        'project: bench\npipeline:\n  a: {cmd: "echo hi > x.txt", outs: [x.txt]}\n'
    )
    past = time.time() - 60
    os.utime(root / "conveyor.yaml", (past, past))
    for attempt in range(2):
        if attempt:
            # The witness of a run is not trusted for files written within 2 s of it (the
            # step's x.txt): a second run once they are older leaves one `status` can trust.
            time.sleep(2.5)
        done = _conveyor(root, "run")
        if done.returncode:
            raise SystemExit(f"conveyor run failed in {root}: {done.stderr.decode()}")
    meta = [p for p in (root / ".conveyor").rglob("*.db") if p.name != "state.db"]
    if not meta:
        raise SystemExit(f"no metadata database under {root / '.conveyor'}")
    conn = sqlite3.connect(meta[0])
    rng = random.Random(0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with conn:
        _runs(conn, root, runs)
        names = _versions(conn, versions, start, rng)
        release_ids = _releases(conn, names, releases, start)
        _events(conn, runs, release_ids, events)
    conn.close()
    # the real runs stay the newest, so `show latest` and `runs` read what a user would
    return {"MODEL": names[len(names) // 2][0], "RELEASE": release_ids[len(release_ids) // 2]}


def _runs(conn: sqlite3.Connection, root: Path, runs: int) -> None:
    rows = []
    steps = []
    for i in range(runs):
        run_id = f"20250101-{i:06d}-{i % 4096:06x}"
        start = f"2025-01-01 00:00:00.{i:06d}" if i < 1_000_000 else "2025-01-01 00:00:01"
        status = "failed" if i % 50 == 0 else "succeeded"
        rows.append((run_id, "bench", status, start, start, "h", 1, str(root), None, None))
        for s in ("prepare", "train", "evaluate", "report"):
            steps.append((run_id, s, "cached" if i % 3 else "ran", f"k{i}{s}", "{}"))
    conn.executemany(
        "INSERT INTO runs (id, project, status, started_at, finished_at, host, pid, "
        "workspace, git_commit, git_dirty, env_hash, config_hash, args, error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'e', 'c', '{}', NULL)",
        rows,
    )
    conn.executemany(
        "INSERT INTO step_runs (run_id, step, status, cache_key, key_parts, outputs) "
        "VALUES (?, ?, ?, ?, '{}', ?)",
        steps,
    )


def _versions(
    conn: sqlite3.Connection, versions: int, start: datetime, rng: random.Random
) -> list[tuple[str, int]]:
    """``versions`` versions over 10 models, each with a 20-feature signature and metrics."""
    signature = json.dumps(
        {
            "inputs": [{"name": f"f{i}", "type": "number", "nullable": False} for i in range(20)],
            "output": {"type": "integer", "classes": [0, 1]},
        }
    )
    per_model = max(1, versions // 10)
    rows, made = [], []
    for n in range(versions):
        model, number = f"model-{n // per_model:02d}", n % per_model + 1
        made.append((model, number))
        file = {"format": "skops", "digest": f"{n:064x}", "size": 1_000_000 + n, "trusted": []}
        metrics = {"roc_auc": round(0.8 + rng.random() / 10, 4), "accuracy": 0.9}
        rows.append(
            (
                "bench", model, number, "registered", _stamp(start + timedelta(minutes=n)),
                f"20250101-{n:06d}", "classification", json.dumps(file), "null", signature,
                json.dumps(metrics), "{}", "[]", "{}", json.dumps({"run_id": f"r{n}"}), "{}",
                "{}", json.dumps({"target": "y", "holdout_rows": 1000}),
            )
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO model_versions (project, model, version, status, created_at, run_id, task, "
        'file, onnx, signature, metrics, slices, gates, plots, lineage, holdout, "references", '
        "card) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    latest: dict[str, int] = {}
    for model, number in made:
        latest[model] = max(latest.get(model, 0), number)
    conn.executemany(
        "INSERT INTO aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)",
        [
            (model, alias, max(1, top - back), _stamp(start))
            for model, top in latest.items()
            for alias, back in (("production", 1), ("staging", 0))
        ],
    )
    return made


def _releases(
    conn: sqlite3.Connection, versions: list[tuple[str, int]], releases: int, start: datetime
) -> list[str]:
    plan = json.dumps(
        {
            "strategy": "canary",
            "steps": [{"weight": 10, "duration": 300}, {"weight": 50, "duration": 300}],
            "analysis": {"min_requests": 100, "max_error_rate": 0.01},
        }
    )
    verdict = json.dumps([{"decision": "promote", "summary": "every check passed", "checks": []}])
    rows, ids = [], []
    for n in range(releases):
        model, number = versions[n % len(versions)]
        at = start + timedelta(minutes=n)
        release_id = f"r{at:%Y%m%d%H%M%S}-{n:06x}"
        ids.append(release_id)
        state = ("promoted", "rolled_back", "completed")[n % 3]
        rows.append(
            (
                release_id, model, "production", max(1, number - 1), number, "canary", state,
                1, _stamp(at), plan, verdict, None, None, _stamp(at), _stamp(at),
                _stamp(at + timedelta(minutes=10)),
            )
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO releases (id, model, environment, from_version, to_version, strategy, "
        "state, step, step_started_at, plan, verdicts, reason, active, created_at, updated_at, "
        "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return ids


def _events(conn: sqlite3.Connection, runs: int, releases: list[str], events: int) -> None:
    kinds = ["run.started", "step.started", "step.ran", "step.cached", "run.succeeded"]
    release_kinds = [
        "release.started",
        "release.step",
        "release.analysis",
        "release.step",
        "release.promoted",
    ]
    on_releases = min(events, 5 * len(releases))

    def rows():  # type: ignore[no-untyped-def]
        for j in range(events):
            if j < on_releases:
                release_id = releases[j // 5]
                yield (release_kinds[j % 5], "release", release_id, '{"step": 1}')
            else:
                kind = kinds[j % 5] if j % 997 else "run.failed"
                yield (kind, "run", f"20250101-{j % runs:06d}", "{}")

    conn.executemany(
        "INSERT INTO events (at, kind, entity, entity_id, actor, payload) "
        "VALUES ('2025-01-01 00:00:00.000000', ?, ?, ?, 'bench@h', ?)",
        rows(),
    )


def measure(
    root: Path, commands: list[list[str]], names: dict[str, str], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The median wall time and the median CPU time (user + system) of each command, after one
    untimed call that warms the caches. On a busy machine the wall time also counts the wait
    for a core; the CPU time does not, and shows what the command itself costs."""
    walls, cpus = {}, {}
    for template in commands:
        args = [names.get(a, a) for a in template]
        label = " ".join(template)
        _conveyor(root, *args)
        times, used = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), os.times()
            done = _conveyor(root, *args)
            c1 = os.times()
            times.append(time.perf_counter() - t0)
            used.append(
                c1.children_user - c0.children_user + c1.children_system - c0.children_system
            )
            if done.returncode:
                raise SystemExit(f"conveyor {' '.join(args)} failed: {done.stderr.decode()}")
        walls[label] = round(statistics.median(times), 4)
        cpus[label] = round(statistics.median(used), 4)
    return walls, cpus


def demo_names(root: Path) -> dict[str, str]:
    """The newest release of a demo project, read from its store."""
    db = root / ".conveyor" / "conveyor.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT id FROM releases ORDER BY created_at DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise SystemExit(f"{root} has no releases: run `make demo` first.")
    return {"RELEASE": row[0]}


def log_figures(quick: bool) -> dict[str, Any]:
    """``log_bytes_per_request`` and ``monitor_seconds_1m`` from the prediction log benchmark.

    ``benchmarks/prediction_log_bench.py`` (the columnar log's own benchmark) provides
    ``run(quick) -> dict`` (with ``--quick``, its monitoring window holds 200,000 requests, not
    1,000,000); without it, both figures are null with the reason.
    """
    path = HERE / "prediction_log_bench.py"
    missing = {"log_bytes_per_request": None, "monitor_seconds_1m": None}
    if not path.exists():
        return {**missing, "log_figures_note": f"{path.name} is not in benchmarks/ yet"}
    spec = importlib.util.spec_from_file_location("prediction_log_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if run is None:
        return {**missing, "log_figures_note": f"{path.name} has no run(quick) function"}
    found = run(quick)
    note = f"window of {found.get('rows', 0):,} requests" if quick else None
    return {
        "log_bytes_per_request": found.get("log_bytes_per_request"),
        "monitor_seconds_1m": found.get("monitor_seconds_1m"),
        "log_figures": found,
        **({"log_figures_note": note} if note else {}),
    }


def machine() -> str:
    return (
        f"{os.cpu_count()} CPU {platform.processor() or platform.machine()}, "
        f"{platform.system()} {platform.release()}, python {platform.python_version()}"
    )


def table(figures: dict[str, Any]) -> str:
    """The Markdown table of benchmarks/results/scale.md."""
    size = figures["store"]
    lines = [
        "# Read commands at scale",
        "",
        f"{figures['date']}; {figures['machine']}; load average "
        f"{' '.join(f'{x:.2f}' for x in figures['load_before'])} before, "
        f"{' '.join(f'{x:.2f}' for x in figures['load_after'])} after.",
        "",
        f"Store: {size['runs']:,} runs, {size['versions']:,} model versions, "
        f"{size['releases']:,} releases, {size['events']:,} events (built in "
        f"{figures['build_seconds']} s). Each command: the installed `conveyor` executable, "
        f"output to a pipe, median of {figures['repeat']} runs after one warm-up. "
        "Reproduce: `.venv/bin/python benchmarks/scale_bench.py"
        f"{' --quick' if figures['quick'] else ''}"
        f"{' --demo DIR' if figures.get('demo_seconds') else ''}`.",
        "",
        "Wall: the median time a user waits (on a busy machine, including the wait for a core);"
        " CPU: the median user + system time of the process, what the command itself costs.",
        "",
        "| command | large store: wall (CPU) s | goal ≤ 0.3 s |"
        + (" demo project: wall (CPU) s | goal ≤ 0.2 s |" if figures.get("demo_seconds") else ""),
        "|---|---:|---|" + ("---:|---|" if figures.get("demo_seconds") else ""),
    ]
    demo = figures.get("demo_seconds") or {}
    for command in dict.fromkeys([*figures["read_command_seconds"], *demo]):
        cells = [f"`conveyor {command}`"]
        cells += _cells(figures, "read_command", command, BUDGET_S["store"])
        if demo:
            cells += _cells(figures, "demo", command, BUDGET_S["demo"])
        lines.append("| " + " | ".join(cells) + " |")
    if "monitor" in demo:
        lines += [
            "",
            "`conveyor monitor` answers from the report kept by its warm-up call (each "
            "computation keeps its report with a fingerprint of the routing, conveyor.yaml and "
            "the log's files; a look while they are unchanged prints it, as a user polling an "
            "unchanged log sees); `conveyor monitor --fresh` computes the report every time, "
            "importing pandas, SciPy, SQLAlchemy and DuckDB.",
        ]
    lines += [
        "",
        f"Prediction log: {figures['log_bytes_per_request']} bytes per logged request; "
        f"monitoring report over 1,000,000 logged requests: {figures['monitor_seconds_1m']} s"
        + (f" ({figures['log_figures_note']})." if figures.get("log_figures_note") else "."),
        "",
    ]
    return "\n".join(lines)


def _cells(figures: dict[str, Any], key: str, command: str, budget: float) -> list[str]:
    wall = figures[f"{key}_seconds"].get(command)
    if wall is None:
        return ["", ""]
    cpu = figures[f"{key}_cpu_seconds"][command]
    return [f"{wall:.3f} ({cpu:.3f})", _met(wall, budget)]


def _met(seconds: float, budget: float) -> str:
    return "met" if seconds <= budget else f"**missed** (+{seconds - budget:.3f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10,000 runs, 100 versions, 100,000 events"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--repeat", type=int, default=7, help="timings per command")
    parser.add_argument("--demo", type=Path, help="also time the commands on this demo project")
    parser.add_argument("--no-log", action="store_true", help="skip the prediction log figures")
    args = parser.parse_args()
    runs, versions, releases, events = (
        (10_000, 100, 100, 100_000) if args.quick else (100_000, 1_000, 1_000, 1_000_000)
    )
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="conveyor-scale-") as tmp:
        t0 = time.perf_counter()
        names = build(Path(tmp), runs, versions, releases, events)
        built = time.perf_counter() - t0
        seconds, cpu = measure(Path(tmp), COMMANDS, names, args.repeat)
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": args.quick,
        "store": {"runs": runs, "versions": versions, "releases": releases, "events": events},
        "build_seconds": round(built, 1),
        "repeat": args.repeat,
        "read_command_seconds": seconds,
        "read_command_cpu_seconds": cpu,
    }
    if args.demo is not None:
        root = args.demo.resolve()
        walls, cpus = measure(root, DEMO_COMMANDS, demo_names(root), args.repeat)
        figures["demo_seconds"], figures["demo_cpu_seconds"] = walls, cpus
    if args.no_log:
        figures.update(
            log_bytes_per_request=None, monitor_seconds_1m=None, log_figures_note="--no-log"
        )
    else:
        figures.update(log_figures(args.quick))
    figures["load_before"], figures["load_after"] = load_before, os.getloadavg()
    text = table(figures)
    RESULTS.mkdir(exist_ok=True)
    name = "scale-quick" if args.quick else "scale"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
