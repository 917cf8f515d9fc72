"""What a run works from: the open stores, the data snapshots, and each step's cache key parts.

Shared by `conveyor run` (engine.py) and `conveyor status` (status.py), so that both compute a
step's key in exactly the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import PipelineError
from conveyor.pipeline import keys

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig


class Context:
    """The open stores and caches of one project, shared by run and status."""

    def __init__(self, config: ProjectConfig) -> None:
        from conveyor.data.hashing import FileHasher
        from conveyor.data.state import StateDB
        from conveyor.project import Paths
        from conveyor.store.stores import open_stores

        self.config = config
        self.root: Path = Path(config.root)
        self.paths = Paths(self.root)
        self.state = StateDB(self.paths.state_db)
        self.state.open()
        self.hasher = FileHasher(self.state)
        self.code = keys.CodeHasher(self.root, self.state)
        self.stores = open_stores(config)
        self.store = self.stores.metadata
        self.artifacts = self.stores.artifacts
        self.env = keys.env_lock()

    def close(self) -> None:
        self.stores.close()
        self.state.close()


class Planner:
    """Computes the key parts of steps from sources, code, params and upstream outputs."""

    def __init__(self, ctx: Context, snapshots: dict[str, dict]) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.snapshots = snapshots  # source name -> snapshot dict (+ "data_digest")
        self.outputs: dict[str, dict[str, dict]] = {}  # step -> outputs of this run

    def parts(self, step: str) -> dict:
        cfg = self.config.pipeline[step]
        parts: dict[str, Any] = {"env": self.ctx.env.hash, "params": cfg.params}
        if cfg.cmd is not None:
            parts["cmd"] = cfg.cmd
            parts["deps"] = self._deps(step, cfg.deps)
            parts["outs"] = list(cfg.outs)
            parts["metrics"] = cfg.metrics
        elif cfg.run is not None:  # validation gives every step a cmd or a run
            parts["run"] = cfg.run
            parts["code"] = self.ctx.code.closure(cfg.run.split(":", 1)[0])
        inputs: dict[str, Any] = {}
        for _kw, ref in cfg.input_refs():
            inputs[ref] = self._input_digest(ref)
        for up in self.config.upstream(step):
            inputs.setdefault(up, self._output_digests(up))
        parts["inputs"] = inputs
        return parts

    def _input_digest(self, ref: str) -> Any:
        if ref.startswith("data."):
            return self.snapshots[ref[5:]]["content_hash"]
        step, _, name = ref.partition(".")
        digests = self._output_digests(step)
        if name and step in self.outputs and name not in digests:
            if set(digests) == {"return"}:  # one stored value (a JSON dict is one value too)
                returned = "one value, not a dict of outputs"
            else:
                returned = "the outputs: " + (", ".join(sorted(digests)) or "none")
            raise PipelineError(
                f"An input refers to {ref!r}, but step '{step}' returned {returned}. Fix the "
                f"reference in conveyor.yaml, or return a dict with the key {name!r} from "
                f"'{step}' (its values DataFrames, arrays, models or paths)."
            )
        return digests.get(name) if name else digests

    def _output_digests(self, step: str) -> dict[str, str]:
        return {name: d["digest"] for name, d in self.outputs.get(step, {}).items()}

    def _deps(self, step: str, deps: list[str]) -> dict[str, str]:
        from conveyor.data.hashing import combine

        out: dict[str, str] = {}
        for dep in deps:
            path = self.ctx.root / dep
            if path.is_file():
                out[dep] = self.ctx.hasher.hash(path)
            elif path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file())
                hashes = self.ctx.hasher.hash_many(files)
                out[dep] = combine((p.relative_to(path).as_posix(), hashes[p]) for p in files)
            else:
                raise PipelineError(
                    f"Step '{step}': dependency {dep!r} does not exist under {self.ctx.root}. "
                    "Create it, or fix 'deps' in conveyor.yaml."
                )
        return out

    def dep_files(self, deps: list[str]) -> list[Path]:
        files: list[Path] = []
        for dep in deps:
            path = self.ctx.root / dep
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
        return files


def snapshot_sources(
    ctx: Context, names: list[str]
) -> tuple[dict[str, dict], list[tuple[str, Any]]]:
    """Fingerprint each source (cheap: the stat cache avoids re-reading unchanged files).

    Returns the snapshots, and those that still need a profile (schema, rows, statistics).
    """
    from conveyor.config import resolve_sqlite_url
    from conveyor.data import snapshot as snap_mod

    snapshots: dict[str, dict] = {}
    to_profile: list[tuple[str, Any]] = []
    for name in names:
        src = ctx.config.data[name]
        if src.sql is not None:
            snap, table = snap_mod.fingerprint_sql(
                name, resolve_sqlite_url(src.database_url(), ctx.root), src.sql
            )
            digest = _table_digest(ctx, table)
            snapshots[name] = {**snap.to_dict(), "data_digest": digest}
            continue
        snap = snap_mod.fingerprint_files(name, src.files(), ctx.root, ctx.hasher)
        data = snap.to_dict()
        snapshots[name] = data
        existing = ctx.store.snapshot(f"{name}:{snap.content_hash}")
        if existing is None or existing.profile is None:
            to_profile.append((name, snap))
    return snapshots, to_profile


def _table_digest(ctx: Context, table: Any) -> str:
    import tempfile

    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=ctx.artifacts.tmp_dir())
    os.close(fd)
    pq.write_table(table, tmp)
    return ctx.artifacts.put_file(tmp, move=True).digest
