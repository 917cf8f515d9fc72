"""How fast the read commands answer on a large store: 100,000 runs and 1,000,000 events.

A one-step project runs twice (so the fast path's witness exists, as after any successful
run); then its SQLite store is filled with synthetic runs, step runs and events in plain SQL,
and each read command is timed as a user starts it: the installed ``conveyor`` executable,
output to a pipe, median of ``--repeat`` runs. Model versions and releases are not generated:
no figures are reported for ``models`` or ``releases``.

    .venv/bin/python benchmarks/scale_bench.py [--quick] [--json]

``--quick`` uses 10,000 runs and 100,000 events (under 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXECUTABLE = Path(sys.executable).with_name("conveyor")
COMMANDS = [
    ["runs"],
    ["runs", "--json"],
    ["show", "latest"],
    ["show", "latest", "--json"],
    ["events"],
    ["events", "--json", "--limit", "500"],
    ["events", "--id", "20250101-000042", "--limit", "20"],
    ["status"],
]


def _conveyor(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(EXECUTABLE), *args, "-C", str(root)], capture_output=True, timeout=600
    )


def build(root: Path, runs: int, events: int) -> Path:
    """A project whose store holds ``runs`` runs (4 step runs each) and ``events`` events."""
    (root / "conveyor.yaml").write_text(
        'project: bench\npipeline:\n  a: {cmd: "echo hi > x.txt", outs: [x.txt]}\n'
    )
    past = time.time() - 60
    os.utime(root / "conveyor.yaml", (past, past))
    for _ in range(2):
        done = _conveyor(root, "run")
        if done.returncode:
            raise SystemExit(f"conveyor run failed in {root}: {done.stderr.decode()}")
    db = next((root / ".conveyor").rglob("*.db"), None)
    meta = [p for p in (root / ".conveyor").rglob("*.db") if p.name != "state.db"]
    db = meta[0] if meta else db
    assert db is not None, f"no metadata database under {root / '.conveyor'}"
    conn = sqlite3.connect(db)
    with conn:
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
        kinds = ["run.started", "step.started", "step.ran", "step.cached", "run.succeeded"]
        conn.executemany(
            "INSERT INTO events (at, kind, entity, entity_id, actor, payload) "
            "VALUES ('2025-01-01 00:00:00.000000', ?, 'run', ?, 'bench@h', '{}')",
            (
                (kinds[j % 5] if j % 997 else "run.failed", f"20250101-{j % runs:06d}")
                for j in range(events)
            ),
        )
    conn.close()
    # the real runs stay the newest, so `show latest` and `runs` read what a user would
    return root


def measure(root: Path, repeat: int) -> dict[str, float]:
    result = {}
    for args in COMMANDS:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            done = _conveyor(root, *args)
            times.append(time.perf_counter() - t0)
            if done.returncode:
                raise SystemExit(f"conveyor {' '.join(args)} failed: {done.stderr.decode()}")
        result[" ".join(args)] = round(statistics.median(times), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 100,000 events")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--repeat", type=int, default=7, help="timings per command")
    args = parser.parse_args()
    runs, events = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="conveyor-scale-") as tmp:
        t0 = time.perf_counter()
        root = build(Path(tmp), runs, events)
        built = time.perf_counter() - t0
        figures = {
            "runs": runs,
            "events": events,
            "build_seconds": round(built, 1),
            "load_average": os.getloadavg(),
            "repeat": args.repeat,
            "read_command_seconds": measure(root, args.repeat),
        }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{runs:,} runs, {events:,} events (built in {built:.0f} s); load {figures['load_average']}"
    )
    for command, seconds in figures["read_command_seconds"].items():
        print(f"  conveyor {command:<40} {seconds:.3f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
