"""A full disk and a read-only `.conveyor/`: each ends in one `Error: ...` naming the path and
the fix, never a traceback.

Tests run as root here, where chmod stops no write; so a read-only folder is a read-only bind
mount and a full disk is a 1 MiB tmpfs. Where mounting is not permitted (an unprivileged
container), the tests skip and say so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.cli.main import run as conveyor
from conveyor.exceptions import ArtifactUnwritable, StoreUnwritable
from conveyor.store.artifacts import ArtifactStore
from conveyor.store.metadata import Store

CONFIG = """
project: disks
pipeline:
  train: {run: "steps:train"}
"""


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}: {done.stderr.strip()})")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount when the test ends, newest first."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        # Lazily: a file still open on it (RunLock leaks its fd when the write fails) would
        # otherwise keep it busy.
        subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.fixture
def full_disk(mounts: list[Path]) -> Callable[[Path], Path]:
    """Mount a 1 MiB tmpfs at a folder; ``fill`` it later with :func:`_fill`."""

    def mount(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder))
        mounts.append(folder)
        return folder

    return mount


@pytest.fixture
def read_only(mounts: list[Path]) -> Callable[[Path], Path]:
    """Make a folder read-only in place, as a read-only bind mount of itself."""

    def freeze(folder: Path) -> Path:
        _mount("--bind", str(folder), str(folder))
        mounts.append(folder)
        _mount("-o", "remount,bind,ro", str(folder))
        return folder

    return freeze


def _fill(folder: Path) -> None:
    """Take every free block of the file system holding ``folder``."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "conveyor.yaml").write_text(textwrap.dedent(CONFIG))
    (root / "steps.py").write_text("def train():\n    return {'a': 1}\n")
    return root


def _with_store(root: Path) -> Path:
    """Create the project's metadata store and artifact folder, as a first command would."""
    with Store(f"sqlite:///{root / '.conveyor' / 'conveyor.db'}"):
        pass
    ArtifactStore(str(root / ".conveyor" / "artifacts")).open().close()
    return root


# -- a full disk --------------------------------------------------------------------------------


def test_a_metadata_write_on_a_full_disk_names_the_disk_and_the_fix(
    tmp_path: Path, full_disk: Callable[[Path], Path]
) -> None:
    folder = full_disk(tmp_path / "disk")
    db = folder / "conveyor.db"
    with Store(f"sqlite:///{db}") as store:
        _fill(folder)
        with pytest.raises(StoreUnwritable) as caught:
            for _ in range(50):  # the first few pages may still fit in what SQLite holds
                store.save_env_lock("e" * 8 + str(_), "3.11", ["x" * 4000] * 20)

    assert str(caught.value).startswith(f"The metadata store sqlite:///{db} refused a write (")
    assert str(caught.value).endswith(
        f"): the disk holding {db} is full. Free space there (`conveyor gc` removes artifacts "
        "nothing refers to), or move the store to a larger disk."
    )


def test_an_artifact_put_on_a_full_disk_names_the_disk_and_the_fix(
    tmp_path: Path, full_disk: Callable[[Path], Path]
) -> None:
    folder = full_disk(tmp_path / "disk")
    with ArtifactStore(str(folder / "artifacts")) as store:
        _fill(folder)
        with pytest.raises(ArtifactUnwritable, match=r"the disk holding .* is full\. Free space"):
            store.put_bytes(b"a model file" * 10_000)

    assert list((folder / "artifacts" / "tmp").iterdir()) == []  # no half-written temp file


def test_gc_on_a_full_disk_prints_an_error_not_a_traceback(
    tmp_path: Path, full_disk: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path / "proj")
    conveyor_dir = full_disk(root / ".conveyor")
    _fill(conveyor_dir)

    code = conveyor(["gc", "-C", str(root)])

    lock = conveyor_dir / "run.lock"
    assert (code, capsys.readouterr().err) == (
        1,
        f"Error: Cannot take the run lock {lock}: the disk holding {lock} is full. Free space "
        "there (`conveyor gc` removes artifacts nothing refers to), or move the store to a "
        "larger disk.\n",
    )


# -- a read-only .conveyor/ ---------------------------------------------------------------------


def test_gc_in_a_read_only_conveyor_folder_prints_an_error(
    tmp_path: Path, read_only: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _with_store(_project(tmp_path / "proj"))
    read_only(root / ".conveyor")

    code = conveyor(["gc", "-C", str(root)])

    lock = root / ".conveyor" / "run.lock"
    assert (code, capsys.readouterr().err) == (
        1,
        f"Error: Cannot take the run lock {lock}: {lock} is on a read-only file system. "
        "Remount it read-write, or point the store at a writable place (store.url and "
        "store.artifacts in conveyor.yaml, or CONVEYOR_STORE_URL and CONVEYOR_ARTIFACTS).\n",
    )


def test_reading_runs_from_a_read_only_store_names_the_mount(
    tmp_path: Path, read_only: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _with_store(_project(tmp_path / "proj"))
    read_only(root / ".conveyor")

    code = conveyor(["runs", "-C", str(root)])

    db = root / ".conveyor" / "conveyor.db"
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"Error: Cannot open the metadata store sqlite:///{db} (")
    assert err.endswith(
        f"): {db} is on a read-only file system. Remount it read-write, or "
        "point the store at a writable place (store.url and store.artifacts in conveyor.yaml, "
        "or CONVEYOR_STORE_URL and CONVEYOR_ARTIFACTS).\n"
    )


def test_an_artifact_put_into_a_read_only_folder_names_the_mount(
    tmp_path: Path, read_only: Callable[[Path], Path]
) -> None:
    folder = tmp_path / "artifacts"
    ArtifactStore(str(folder)).open().close()
    read_only(folder)

    with ArtifactStore(str(folder)) as store:
        with pytest.raises(ArtifactUnwritable, match=r"is on a read-only file system\. Remount"):
            store.put_bytes(b"model")


def test_run_in_a_read_only_conveyor_folder_prints_an_error(
    tmp_path: Path, read_only: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _with_store(_project(tmp_path / "proj"))
    read_only(root / ".conveyor")

    code = conveyor(["run", "-C", str(root)])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: ") and "read-only file system. Remount" in err
