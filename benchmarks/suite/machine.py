"""What every benchmark records about where and on what it ran: the machine, its load, the
commit and package versions, and a guard for sklearn's feature-name warning."""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from suite import environments


def describe_machine() -> str:
    """CPUs, their model, RAM and the kernel, e.g. ``2 CPU AMD EPYC, 23 GiB RAM, Linux 6.1``."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {mem_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = ""
    return f"{os.cpu_count()} CPU {model}{memory}, {platform.system()} {platform.release()}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def package_version(package: str) -> str:
    """An installed distribution's version in this interpreter, or ``?``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def commit() -> str:
    """The repository's short HEAD, ``+dirty`` when tracked files changed."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=environments.REPO_ROOT, capture_output=True, text=True
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


@contextmanager
def quiet_feature_names() -> Iterator[None]:
    """Models fitted on arrays (servers get arrays) warn once per call when given a named
    frame; the benchmarks' checks and registrations do that on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "X has feature names", UserWarning)
        yield
