"""A Conveyor step that logs ``n`` values of one metric and times its own loop.

Run by the benchmark with n=10000 and with n=0; the rest of the step is identical, so the
difference in the run's wall time is what the calls cost end to end, including the store write.
"""

from __future__ import annotations

import time

import conveyor


def log_many(n: int) -> None:
    started = time.perf_counter()
    for i in range(n):
        conveyor.log_metric("loss", 1.0 / (i + 1))
    conveyor.log_metric("loop_s", time.perf_counter() - started)
