"""Goal 6: how long each tool's ``--help`` takes, the floor of every command a user types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from . import timing
from .environments import conveyor_bin

Log = Callable[[str], None]


def help_times(
    work: Path,
    env: Mapping[str, str],
    tools: Mapping[str, Path],
    repeats: int,
    log: Log,
) -> dict:
    """Median of ``repeats`` ``<tool> --help`` runs after one warm-up, in an empty folder.

    Args:
        work: Scratch folder.
        env: The benchmark environment.
        tools: Tool name -> its executable (conveyor, dvc, mlflow).
        repeats: Timed runs each.
        log: Where progress lines go.
    """
    empty = work / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    python = conveyor_bin() / "python"
    log("start-up: python -c pass")
    out["python -c pass"] = timing.repeat(
        [str(python), "-c", "pass"], empty, env, times=repeats, warmup=1
    ).to_dict()
    for name, exe in tools.items():
        log(f"start-up: {name} --help")
        out[name] = timing.repeat(
            [str(exe), "--help"], empty, env, times=repeats, warmup=1
        ).to_dict()
    return out
