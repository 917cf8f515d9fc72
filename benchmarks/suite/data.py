"""Deterministic benchmark data: one 10 MB CSV, and 1 GB as 100 distinct 10 MB CSVs.

Rows are ``id, f0..f7, city, segment, label`` (about 97 bytes each). Formatting floats as text is
the slow part of generating CSV, so one block of rows is formatted once and every large file is
that block cut at a different row and swapped around, with its own first row. No two files share
bytes, so neither tool can deduplicate whole files, and 1 GB is written in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FILE_BYTES = 10_000_000
LARGE_FILES = 100
HEADER = "id," + ",".join(f"f{j}" for j in range(8)) + ",city,segment,label\n"
_ROW_BYTES = 97  # average width of a generated row; sets the rows per 10 MB file


def _rows(seed: int, first_id: int, count: int) -> list[str]:
    """``count`` CSV lines; the label depends on f0..f2, so the model has something to learn."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 8)).astype(np.float32)
    city = rng.integers(0, 12, size=count)
    segment = rng.integers(0, 5, size=count)
    noise = rng.normal(scale=0.5, size=count)
    label = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + noise > 0).astype(np.int8)
    columns = [np.arange(first_id, first_id + count).astype(str)]
    columns += [np.char.mod("%.6f", x[:, j]) for j in range(8)]
    columns += [
        np.char.add("city_", city.astype(str)),
        np.char.add("seg_", segment.astype(str)),
        label.astype(str),
    ]
    return [",".join(fields) + "\n" for fields in zip(*columns, strict=True)]


def _write(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(HEADER)
        f.writelines(lines)
    os.replace(tmp, path)  # a half-written file from an interrupted run is never reused


def small_csv(folder: Path, rows: int = FILE_BYTES // _ROW_BYTES) -> Path:
    """The 10 MB CSV (about 103,000 rows), written once and reused.

    Args:
        folder: Where generated data lives (``benchmarks/work/data``).
        rows: Fewer rows make a smaller file, for a smoke test.
    """
    path = folder / "small.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _write(path, _rows(seed=7, first_id=0, count=rows))
    return path


def large_dir(folder: Path, files: int = LARGE_FILES) -> Path:
    """A folder of ``files`` distinct 10 MB CSVs (1 GB for 100), written once and reused.

    Args:
        folder: Where generated data lives (``benchmarks/work/data``).
        files: How many 10 MB files.
    """
    out = folder / "large"
    out.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(files) if not (out / f"part-{i:03d}.csv").exists()]
    if missing:
        block = _rows(seed=11, first_id=0, count=FILE_BYTES // _ROW_BYTES)
        for i in missing:
            cut = (i * 1013) % len(block)
            marker = f"{-(i + 1)},0,0,0,0,0,0,0,0,city_0,seg_0,0\n"  # unique to this file
            _write(out / f"part-{i:03d}.csv", [marker, *block[cut:], *block[:cut]])
    return out


def size_of(path: Path) -> tuple[int, int]:
    """(bytes, files) of a file or a folder's regular files."""
    if path.is_file():
        return path.stat().st_size, 1
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def link_into(source: Path, target: Path) -> None:
    """Hard-link generated data into a project: the same bytes, no copy, no extra disk.

    Args:
        source: A generated file or folder.
        target: Its path inside the project.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        os.link(source, target)
        return
    target.mkdir()
    for path in sorted(source.iterdir()):
        os.link(path, target / path.name)
