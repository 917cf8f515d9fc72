"""The three tools' interpreters and the environment every benchmarked process gets.

Conveyor runs from the project's own venv (the interpreter running this suite). DVC and MLflow
each get a venv under ``benchmarks/.venv-<tool>``, built from the pinned
``requirements-<tool>.txt`` when missing or older than it. Telemetry is off, and HOME and the
XDG folders point into ``benchmarks/work/``, so no run reads or writes the user's own config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
PIPELINE_SRC = BENCH_DIR / "pipeline_src"
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_WORK = BENCH_DIR / "work"
UV = REPO_ROOT / ".tools" / "bin" / "uv"

TELEMETRY_OFF = {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "true",  # MLflow honours only "true", not "1"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ALLOW_FILE_STORE": "true",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
# Set by a developer's shell or by tests; any of them would change what Conveyor measures.
_DROPPED = (
    "CONVEYOR_STORE_URL",
    "CONVEYOR_ARTIFACTS",
    "CONVEYOR_EXECUTOR",
    "CONVEYOR_JOBS",
    "CONVEYOR_NO_FASTPATH",
    "CONVEYOR_PARAMS",
    "MLFLOW_TRACKING_URI",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",  # without .pyc files every start-up would re-compile
)


def conveyor_bin() -> Path:
    """The bin folder of the venv running this suite: its ``python`` and ``conveyor``."""
    return Path(sys.executable).parent


def base_env(work: Path) -> dict[str, str]:
    """The environment of every benchmarked process.

    ``python`` on PATH is the Conveyor venv's interpreter, so the stage scripts run on the same
    numpy and pandas whichever tool starts them; only the runner differs.

    Args:
        work: The benchmark's scratch folder; HOME and the XDG folders go inside it.
    """
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "PATH": os.pathsep.join([str(conveyor_bin()), env.get("PATH", "/usr/bin:/bin")]),
        }
    )
    for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def dvc_env(base: dict[str, str], repo: Path) -> dict[str, str]:
    """``base`` plus DVC's site cache (state and index DBs, normally /var/tmp/dvc) in the repo."""
    return {**base, "DVC_SITE_CACHE_DIR": str(repo / ".dvc-site-cache")}


def ensure_venv(tool: str, log=print) -> Path:
    """The bin folder of ``benchmarks/.venv-<tool>``, created from its pinned requirements.

    Installs with the project's uv when present (seconds from a warm cache), else with pip.

    Args:
        tool: ``"dvc"`` or ``"mlflow"``.
        log: Where progress lines go.

    Raises:
        subprocess.CalledProcessError: The venv or the install failed.
    """
    venv = BENCH_DIR / f".venv-{tool}"
    requirements = BENCH_DIR / f"requirements-{tool}.txt"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= requirements.stat().st_mtime:
        return venv / "bin"
    log(f"creating {venv.relative_to(REPO_ROOT)} from {requirements.name}")
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = False
    if UV.exists():
        uv = [
            str(UV),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "-r",
            str(requirements),
        ]
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        installed = subprocess.run(uv, env=env, check=False).returncode == 0
        if not installed:
            log("uv failed; falling back to pip")
    if not installed:
        pip = [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)]
        subprocess.run(pip, check=True)
    stamp.touch()
    return venv / "bin"
