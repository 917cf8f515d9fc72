"""Wall clock of a whole CLI process, as a user waits for it: start-up and imports included.

The child is reaped with ``os.wait4``, which also gives its CPU time and peak RSS (of the child
and the children it waited for).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class CommandFailed(RuntimeError):
    """A benchmarked command exited non-zero; the message carries the tail of its output."""


@dataclass
class Sample:
    """One process: wall seconds, CPU seconds (user + sys), peak RSS in MB, output."""

    wall: float
    cpu: float
    rss_mb: float
    output: str

    def to_dict(self) -> dict:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "rss_mb": self.rss_mb}


@dataclass
class Timing:
    """Repeated samples of one measure; the median is the figure that is reported."""

    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_dict(self) -> dict:
        return {
            "median_s": self.median,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "n": len(self.samples),
            "samples_s": self.samples,
            **({"note": self.note} if self.note else {}),
        }


def run(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    check: bool = True,
) -> Sample:
    """Run one command to completion and time it.

    Args:
        argv: The command; no shell.
        cwd: Its working directory.
        env: Its whole environment.
        check: Raise when it exits non-zero.

    Raises:
        CommandFailed: ``check`` is set and the command failed.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()  # drained before waiting, so a chatty child never blocks
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = output.decode(errors="replace")
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)!r} in {cwd} exited with {proc.returncode}:\n{text[-3000:]}"
        )
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text)


def repeat(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    times: int,
    warmup: int = 0,
    verify: Callable[[Sample], None] | None = None,
) -> Timing:
    """Run a command ``warmup`` times untimed, then ``times`` times timed.

    Args:
        argv: The command.
        cwd: Its working directory.
        env: Its whole environment.
        times: Timed runs (the report uses their median).
        warmup: Untimed runs first, to warm the page cache and any lazily built state.
        verify: Called on every timed sample; raises if the command did the wrong thing
            (a "no-op" that actually ran a stage must not count as fast).
    """
    for _ in range(warmup):
        run(argv, cwd, env)
    timing = Timing()
    for _ in range(times):
        sample = run(argv, cwd, env)
        if verify is not None:
            verify(sample)
        timing.samples.append(sample.wall)
    return timing
