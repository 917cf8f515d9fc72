"""The no-op run in milliseconds: prove nothing changed with stat calls alone, and record it.

After a full run succeeds, the engine writes a *witness* into the local state DB: the stat
stamps (size, mtime_ns, inode) of conveyor.yaml, of every code file, data file, dependency and
declared out, the expansion of every glob, the environment lock and every output digest. When
all of these still match, every cache key is unchanged by construction, so the run can be
recorded as fully cached without importing pydantic, SQLAlchemy or pandas (≈0.7 s of imports on
this machine). Anything that does not match, or any doubt (SQL sources, a remote store, a stale
'running' run), falls back to the full engine, which decides step by step.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.store import events as ev
from conveyor.store import records

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.pipeline.plan import Context

KEY = "fastpath"
VERSION = 4
#: A file modified this close to the witness may have changed again within one mtime granule
#: without its stamp changing (git's "racy" case): the engine re-hashes it instead.
RACY_NS = 2_000_000_000
ENV_VARS = ("CONVEYOR_STORE_URL", "CONVEYOR_ARTIFACTS", "CONVEYOR_EXECUTOR", "CONVEYOR_JOBS")


def _stamp(path: Path | str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return path if path and path != ":memory:" else None


def _local_root(url: str) -> str | None:
    if "://" not in url:
        return url
    if url.startswith("file://"):
        return url[len("file://") :]
    return None


def remember(ctx: Context, planner: Any, order: list[str], snapshots: dict, summary: Any) -> None:
    """Write the witness of a successful full run (or clear it when one cannot be written)."""
    config = ctx.config
    db = _sqlite_path(config.store_url())
    artifacts = _local_root(config.artifacts_url())
    if db is None or artifacts is None or any(s.sql is not None for s in config.data.values()):
        ctx.state.delete(KEY)
        return
    files: dict[str, list[int] | None] = {str(ctx.paths.config): _stamp(ctx.paths.config)}
    for step in order:
        cfg = config.pipeline[step]
        if cfg.cmd is not None:
            for path in planner.dep_files(cfg.deps):
                files[str(path)] = _stamp(path)
            for desc in planner.outputs.get(step, {}).values():
                out = ctx.root / desc["path"]
                if desc["format"] == "dir":
                    for rel in desc["files"]:
                        files[str(out / rel)] = _stamp(out / rel)
                else:
                    files[str(out)] = _stamp(out)
        else:
            for path in ctx.code.files((cfg.run or "").split(":", 1)[0]):
                files[str(path)] = _stamp(path)
    globs = []
    for name, snap in snapshots.items():
        src = config.data[name]
        listed = [str(ctx.root / f["path"]) for f in snap["files"]]
        for path in listed:
            files[path] = _stamp(path)
        globs.append([name, src.source, listed])
    if any(stamp is None for stamp in files.values()):
        ctx.state.delete(KEY)
        return
    by_name = {o.name: o for o in summary.steps}
    witness = {
        "version": VERSION,
        "written_ns": time.time_ns(),
        "root": str(ctx.root),
        "env_vars": {k: os.environ.get(k) for k in ENV_VARS},
        "files": files,
        "globs": globs,
        "env_hash": ctx.env.hash,
        "db": db,
        "artifacts": artifacts,
        "project": config.project,
        # the read commands' default model (`conveyor models list|show` without a name)
        "model": config.model.name if config.model is not None else None,
        "snapshots": sorted(f"{name}:{snap['content_hash']}" for name, snap in snapshots.items()),
        "config_hash": _config_hash(config),
        "digests": sorted(
            {d["digest"] for outs in planner.outputs.values() for d in outs.values()}
        ),
        "steps": [
            [
                step,
                _last_key(ctx, summary.run_id, step),
                planner.outputs.get(step, {}),
                by_name[step].metrics,
            ]
            for step in order
        ],
    }
    ctx.state.put(KEY, json.dumps(witness))


def _config_hash(config: ProjectConfig) -> str:
    from conveyor.pipeline.keys import digest_of

    return digest_of(config.to_json())


def _last_key(ctx: Context, run_id: str, step: str) -> str:
    for row in ctx.store.step_runs(run_id):
        if row.step == step:
            return row.cache_key
    return ""


def check(root: Path) -> dict | None:
    """The witness, if it still holds for this workspace; None means 'ask the full engine'."""
    from conveyor.data.state import StateDB
    from conveyor.project import Paths

    paths = Paths(root)
    if not paths.state_db.exists():
        return None
    with StateDB(paths.state_db) as state:
        raw = state.get(KEY)
    if not raw:
        return None
    witness = json.loads(raw)
    if witness.get("version") != VERSION or witness.get("root") != str(root):
        return None
    if witness["env_vars"] != {k: os.environ.get(k) for k in ENV_VARS}:
        return None
    racy_after = witness["written_ns"] - RACY_NS
    for path, stamp in witness["files"].items():
        if _stamp(path) != stamp or stamp[1] >= racy_after:
            return None
    if witness["globs"]:
        from conveyor.data.sources import resolve_files

        for name, pattern, listed in witness["globs"]:
            try:
                now = [str(p) for p in resolve_files(name, pattern, root)]
            except Exception:
                return None
            if now != listed:
                return None
    from conveyor.pipeline.keys import env_lock

    if env_lock().hash != witness["env_hash"]:
        return None
    objects = Path(witness["artifacts"]) / "objects"
    for digest in witness["digests"]:
        if not (objects / digest[:2] / digest[2:]).is_file():
            return None
    return witness


def fast_run(root: Path) -> dict | None:
    """Record a fully cached run if nothing changed; None when the full engine must decide.

    Returns:
        ``{"run_id", "steps": [(name, metrics)], "duration_s"}`` of the recorded run.

    Raises:
        ProjectLocked: another run holds this workspace.
    """
    t0 = time.perf_counter()
    witness = check(root)
    if witness is None:
        return None
    from conveyor.pipeline.lock import RunLock
    from conveyor.project import Paths

    with RunLock(Paths(root).run_lock):
        run_id = _record(witness)
    if run_id is None:
        return None
    return {
        "run_id": run_id,
        "steps": [(name, metrics) for name, _key, _outs, metrics in witness["steps"]],
        "duration_s": time.perf_counter() - t0,
    }


def _record(witness: dict) -> str | None:
    """Insert the run, its cached steps and their events in one transaction."""
    import socket

    from conveyor.project import git_state

    commit, dirty = git_state(Path(witness["root"]))  # outside the write transaction
    host = socket.gethostname()
    conn = sqlite3.connect(witness["db"], timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            version = None
        stale = conn.execute(
            "SELECT count(*) FROM runs WHERE status='running' AND workspace=? AND host=?",
            (witness["root"], host),
        ).fetchone()[0]
        if version is None or version[0] != records.HEAD_REVISION or stale:
            conn.execute("ROLLBACK")
            return None
        now = records.utcnow()
        ts = records.sqlite_timestamp(now)
        run_id = records.new_run_id(now)
        who = records.actor()
        steps = [s[0] for s in witness["steps"]]
        conn.execute(
            "INSERT INTO runs (id, project, status, started_at, finished_at, host, pid, "
            "workspace, git_commit, git_dirty, env_hash, config_hash, args, error) "
            "VALUES (?, ?, 'succeeded', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                run_id,
                witness["project"],
                ts,
                ts,
                host,
                os.getpid(),
                witness["root"],
                commit,
                None if dirty is None else int(dirty),
                witness["env_hash"],
                witness["config_hash"],
                json.dumps({"steps": [], "force": False, "jobs": None, "fast": True}),
            ),
        )
        events = [(ts, ev.RUN_STARTED, "run", run_id, who, json.dumps({"steps": steps}))]
        for name, key, outputs, _metrics in witness["steps"]:
            conn.execute(
                "INSERT INTO step_runs (run_id, step, status, cache_key, key_parts, reason, "
                "started_at, finished_at, duration_s, outputs, log_digest, error, traceback) "
                "VALUES (?, ?, 'cached', ?, ?, 'unchanged', NULL, NULL, NULL, ?, NULL, NULL, "
                "NULL)",
                (run_id, name, key, json.dumps(_parts_of(conn, key)), json.dumps(outputs)),
            )
            events.append(
                (
                    ts,
                    ev.STEP_CACHED,
                    "run",
                    run_id,
                    who,
                    json.dumps({"step": name, "cache_key": key}),
                )
            )
        conn.executemany(
            "INSERT INTO run_snapshots (run_id, snapshot_id) VALUES (?, ?)",
            [(run_id, snap_id) for snap_id in witness["snapshots"]],
        )
        events.append((ts, ev.RUN_SUCCEEDED, "run", run_id, who, json.dumps({})))
        conn.executemany(
            "INSERT INTO events (at, kind, entity, entity_id, actor, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            events,
        )
        conn.execute("COMMIT")
        return run_id
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
    finally:
        conn.close()


def _parts_of(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT key_parts FROM step_cache WHERE cache_key=?", (key,)).fetchone()
    return json.loads(row[0]) if row and row[0] else {}
