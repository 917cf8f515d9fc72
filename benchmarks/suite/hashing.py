"""Goal 4: how fast Conveyor fingerprints 1 GB, beside a cold ``dvc add`` of the same files.

Conveyor's hasher is timed in this process (the call alone, after import): cold with no stat
cache, so every byte is read and hashed, and warm through a stat cache that already knows every
file. ``dvc add`` is timed as a CLI process in a fresh repo, so it always starts cold.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from . import timing
from .data import link_into, size_of
from .timing import Timing

Log = Callable[[str], None]
# The stat cache trusts an entry only when the file is older than this at hashing time.
_RACY_MARGIN_S = 2.5
DVC_VARIANTS = {
    "default (cache.type reflink,copy; 1 hash job)": [],
    "cache.type hardlink, checksum_jobs 2": [
        ("cache.type", "hardlink"),
        ("core.checksum_jobs", "2"),
    ],
}


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once, so each timed read comes from memory, for every tool alike."""
    buf = bytearray(1 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def conveyor_hashing(folder: Path, repeats: int, log: Log) -> dict:
    """Hash every file of ``folder`` with Conveyor's FileHasher, cold and through the cache.

    Args:
        folder: The generated 1 GB folder.
        repeats: Timed calls per measure (median reported).
        log: Where progress lines go.
    """
    from conveyor.data.hashing import FileHasher
    from conveyor.data.state import StateDB

    paths = sorted(p for p in folder.iterdir() if p.is_file())
    total, _ = size_of(folder)
    age = time.time() - max(p.stat().st_mtime for p in paths)
    if age < _RACY_MARGIN_S:
        time.sleep(_RACY_MARGIN_S - age)  # freshly written files are never trusted
    warm_page_cache(paths)

    log("hashing: conveyor FileHasher cold (no stat cache)")
    cold = Timing()
    reference: dict[Path, str] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        reference = FileHasher(None).hash_many(paths)
        cold.samples.append(time.perf_counter() - started)

    log("hashing: conveyor FileHasher through the stat cache")
    first = Timing()
    warm = Timing()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-state-") as tmp:
        with StateDB(Path(tmp) / "state.db") as state:
            hasher = FileHasher(state)
            started = time.perf_counter()
            hasher.hash_many(paths)
            first.samples.append(time.perf_counter() - started)
            for _ in range(repeats):
                started = time.perf_counter()
                cached = hasher.hash_many(paths)
                warm.samples.append(time.perf_counter() - started)
    if cached != reference:
        raise AssertionError("The stat cache returned other hashes than a cold hash did.")
    mb = total / 1e6
    return {
        "bytes": total,
        "files": len(paths),
        "cold": {**cold.to_dict(), "MBps": mb / cold.median},
        "filling_cache": {**first.to_dict(), "MBps": mb / first.median},
        "warm": {**warm.to_dict(), "MBps": mb / warm.median},
    }


def dvc_add(
    folder: Path, work: Path, env: Mapping[str, str], dvc: Path, repeats: int, log: Log
) -> dict:
    """Cold ``dvc add`` of the folder in a fresh repo (empty cache, no state DB) per sample."""
    total, _ = size_of(folder)
    out: dict[str, dict] = {}
    for name, settings in DVC_VARIANTS.items():
        cold = Timing()
        for attempt in range(repeats):
            log(f"hashing: dvc add, {name}, {attempt + 1}/{repeats}")
            repo = work / "dvc-add"
            if repo.exists():
                shutil.rmtree(repo)
            repo.mkdir(parents=True)
            repo_env = {**env, "DVC_SITE_CACHE_DIR": str(repo / ".dvc-site-cache")}
            timing.run(["git", "init", "-q"], repo, repo_env)
            timing.run([str(dvc), "init", "-q"], repo, repo_env)
            timing.run([str(dvc), "config", "core.check_update", "false"], repo, repo_env)
            for key, value in settings:
                timing.run([str(dvc), "config", key, value], repo, repo_env)
            link_into(folder, repo / "data" / "raw")
            cold.samples.append(timing.run([str(dvc), "add", "data/raw"], repo, repo_env).wall)
            shutil.rmtree(repo)
        out[name] = {**cold.to_dict(), "MBps": total / 1e6 / cold.median}
    return {"bytes": total, "variants": out}
