"""A retraining as a child process: started by the controller, dying with it, never blocking it.

``conveyor ci`` takes as long as training does, minutes or hours; run inside the controller's
turn it would leave a canary unwatched for all that time. So the controller starts this
module's :func:`main` in a child Python process and keeps turning. The child records how the
job ended (``controller.retrain_finished`` or ``controller.retrain_failed``) and exits; the
controller notices the exit on its next turn.

The child dies with the controller: Linux sends it SIGTERM when the controller's process (more
exactly, the thread that started it) ends (``PR_SET_PDEATHSIG``), and a watchdog thread polling
its parent covers other systems. SIGTERM interrupts the pipeline as Ctrl-C does (its run is
recorded as interrupted and its workers stop), and no end is recorded, so the next controller
sees a ``controller.retrain_started`` without an end and runs that retraining again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import FrameType

    from conveyor.config import ProjectConfig

__all__ = ["RetrainJob", "describe_exit", "main"]

STOPPED = 128 + signal.SIGTERM  # the child's exit status when it was stopped by SIGTERM
# The child's program. Not ``-m conveyor.controller.job``: the package's __init__ imports this
# module before runpy runs it again as __main__, which Python warns about in the child's log.
_ENTRY = "import sys; from conveyor.controller.job import main; sys.exit(main())"


class RetrainJob:
    """One running retraining child process, as the controller sees it.

    Args:
        process: the child.
        causes: why it was started (the ``retrain_started`` event's causes).
        start_id: the id of that event; the child's end event comes after it.
        log: the file the child's output goes to.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], *, causes: list[str], start_id: int, log: Path
    ) -> None:
        self.process = process
        self.causes = causes
        self.start_id = start_id
        self.log = log

    @classmethod
    def start(
        cls,
        config_file: Path,
        *,
        causes: list[str],
        start_id: int,
        report: Path,
        log: Path,
    ) -> RetrainJob:
        """Start ``conveyor ci`` for the project of ``config_file`` in a child process.

        Raises:
            OSError: the process cannot be started.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-c",
            _ENTRY,
            "--config",
            str(config_file),
            "--parent",
            str(os.getpid()),
            "--causes",
            json.dumps(causes),
            "--report",
            str(report),
        ]
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command,
                cwd=config_file.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(process, causes=causes, start_id=start_id, log=log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The child's exit status once it has ended, else None."""
        return self.process.poll()

    def stop(self, grace: float = 10.0) -> int:
        """Stop the child: SIGTERM (its pipeline run is recorded as interrupted), then SIGKILL
        after ``grace`` seconds. Returns its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def describe_exit(status: int) -> str:
    """``exit status 3`` or ``signal SIGKILL``, for a message about a child's end."""
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the pipeline stops on it as on Ctrl-C, recording its run


def main(argv: list[str] | None = None) -> int:
    """Run ``conveyor ci`` as the controller's retraining and record how it ended."""
    parser = argparse.ArgumentParser(
        prog="conveyor.controller.job",
        description="The controller's retraining; started by `conveyor watch`, not by hand.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the project's conveyor.yaml")
    parser.add_argument("--parent", type=int, required=True, help="the controller's pid")
    parser.add_argument("--causes", required=True, help="a JSON list: why it runs")
    parser.add_argument("--report", type=Path, required=True, help="where the CI report goes")
    args = parser.parse_args(argv)

    from conveyor.gateway.server import die_with_parent

    signal.signal(signal.SIGTERM, _interrupt)
    die_with_parent(args.parent, grace=30.0)

    from conveyor.actions.ci import run_ci
    from conveyor.config import load_config
    from conveyor.exceptions import ConveyorError
    from conveyor.store import events as ev

    causes = json.loads(args.causes)
    config = load_config(args.config)
    try:
        outcome = run_ci(config, report_path=args.report, wait_for_lock=True)
    except KeyboardInterrupt:
        print("The retraining was stopped; the next controller runs it again.", flush=True)
        return STOPPED
    except ConveyorError as exc:
        _record(config, ev.RETRAIN_FAILED, {"causes": causes, "error": str(exc)})
        print(f"The retraining failed: {exc}", flush=True)
        return 0  # its end is recorded: the controller reads it from the event
    result: dict[str, Any] = {
        "causes": causes,
        "run_id": outcome.run_id,
        "passed": outcome.passed,
        "version": outcome.version,
        "already_registered": outcome.already_registered,
        "failed_gates": [g["name"] for g in outcome.failed_gates],
    }
    _record(config, ev.RETRAIN_FINISHED, result)
    print(f"The retraining ended: {json.dumps(result)}", flush=True)
    return 0


def _record(config: ProjectConfig, kind: str, payload: dict[str, Any]) -> None:
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores, stores.metadata.session() as s:
        stores.metadata.add_event(s, kind, "project", config.project, payload)


if __name__ == "__main__":
    sys.exit(main())
