"""What the exported files' tests install: the wheel built from the committed tree, and fresh
virtual environments for it.

The wheel is built as a release is (``git archive HEAD``, then ``uv build``), so a file that
works with it works with what a team would install. A fresh environment gets the wheel from its
own ``pip install``; the wheel's dependencies come from the suite's environment through a
``.pth`` file and ``PIP_NO_INDEX=1``, because CI machines may be offline (as in
tests/packaging). The editable ``conveyor`` of the suite is a ``.pth`` that Python does not
follow from a path added this way, so ``conveyor`` in such an environment is the wheel's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import conveyor

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"
# The runner's machine: pip never reaches an index, so every dependency must be satisfied.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def build_wheel(tmp: Path) -> Path:
    """Build ``conveyor_ml-<version>-py3-none-any.whl`` from ``git archive HEAD`` into ``tmp``."""
    if not UV.exists():
        pytest.skip(f"{UV} is missing; run `make setup`.")
    source, out = tmp / "source", tmp / "dist"
    source.mkdir(parents=True)
    out.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True, timeout=120
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=120)
    built = subprocess.run(
        [str(UV), "build", "--wheel", "--offline", "--out-dir", str(out), str(source)],
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    wheel = out / f"conveyor_ml-{conveyor.__version__}-py3-none-any.whl"
    assert wheel.is_file(), sorted(out.iterdir())
    return wheel


def fresh_venv(root: Path) -> Path:
    """A new virtual environment at ``root`` without Conveyor; returns its ``bin`` folder."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, timeout=300)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    Path(site, "zz_suite_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return root / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without Conveyor's variables or an active environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVEYOR_", "VIRTUAL_ENV", "PYTHON", "GITHUB_"))
    }
    return {**env, **OFFLINE_PIP, **extra}
