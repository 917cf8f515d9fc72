"""Profiles of new data snapshots, computed in a detached, low-priority process.

Profiling 1 GB of CSV costs seconds of CPU; the run's steps must not wait for it, nor the
`conveyor run` that started it. So the engine hands new snapshots to a separate process (nice
10, its own session) that writes each profile into the store when done, with an event. A
process still at work for a snapshot is not started twice: its pid is kept in the state DB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.pipeline.worker import pid_alive

if TYPE_CHECKING:
    from conveyor.pipeline.plan import Context

CLAIM = "profiling:"


def start(ctx: Context, run_id: str, todo: list[tuple[str, str, Any]]) -> int | None:
    """Profile (snapshot id, source name, Snapshot) items in the background.

    Returns:
        The profiler's pid, or None when there was nothing left to profile.
    """
    items = []
    for snap_id, name, snap in todo:
        claimed = ctx.state.get(CLAIM + snap_id)
        if claimed and pid_alive(int(claimed)):
            continue  # another run's profiler is on it
        items.append(
            {
                "snap_id": snap_id,
                "snapshot": snap.to_dict(),
                "format": ctx.config.data[name].format,
            }
        )
    if not items:
        return None
    jobs = ctx.paths.state_dir / "profiling"
    jobs.mkdir(parents=True, exist_ok=True)
    job = jobs / f"{run_id}.json"
    job.write_text(
        json.dumps({"store": ctx.config.store_url(), "root": str(ctx.root), "items": items})
    )
    # Started through a shell that backgrounds it and exits at once: the profiler becomes a
    # child of init, so no process of ours must reap it (no zombies, no Popen left running).
    launcher = subprocess.run(
        [
            "/bin/sh",
            "-c",
            'nice -n 10 "$@" < /dev/null >> "$LOG" 2>&1 & echo $!',
            "sh",
            sys.executable,
            "-m",
            "conveyor.pipeline.profiling",
            str(job),
        ],
        cwd=ctx.root,
        env={**os.environ, "LOG": str(jobs / f"{run_id}.log")},
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # Ctrl-C in the terminal does not reach it
    )
    pid = int(launcher.stdout.strip())
    for item in items:
        ctx.state.put(CLAIM + item["snap_id"], str(pid))
    return pid


def wait(pid: int, timeout: float = 600.0) -> None:
    """Wait until a profiler started by start() has finished."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_job(job: Path) -> int:
    """Profile every snapshot of a job file and record the outcome of each; 0 if all worked."""
    import pyarrow

    from conveyor.data.snapshot import Snapshot, profile
    from conveyor.data.state import StateDB
    from conveyor.project import Paths
    from conveyor.store import events as ev
    from conveyor.store.metadata import Store

    # Half the cores at most: the run's own steps are what the user waits for.
    threads = max(1, (os.cpu_count() or 2) // 2)
    pyarrow.set_cpu_count(threads)
    pyarrow.set_io_thread_count(threads)
    spec = json.loads(job.read_text())
    root = Path(spec["root"])
    failures = 0
    with Store(spec["store"]) as store, StateDB(Paths(root).state_db) as state:
        for item in spec["items"]:
            snap_id = item["snap_id"]
            try:
                done = profile(Snapshot.from_dict(item["snapshot"]), root, fmt=item["format"])
            except Exception as exc:  # a profile is a nicety: record why, never crash loudly
                failures += 1
                with store.session() as session:
                    store.add_event(
                        session,
                        ev.SNAPSHOT_PROFILE_FAILED,
                        "snapshot",
                        snap_id,
                        {"error": f"{type(exc).__name__}: {exc}"},
                    )
            else:
                store.update_profile(
                    snap_id, done.schema or {}, done.row_count or 0, done.profile or {}
                )
            finally:
                state.delete(CLAIM + snap_id)
    job.unlink(missing_ok=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
