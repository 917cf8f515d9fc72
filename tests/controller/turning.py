"""Turning a controller until an act appears: retraining runs beside the loop, so a test waits
for its end the way `conveyor watch` does, by turning."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any


def turn_until(
    controller: Any,
    act: str,
    *,
    timeout: float = 120.0,
    pause: float = 0.1,
    now: datetime | None = None,
) -> list[dict]:
    """Turn until a turn returns ``act``; every act seen on the way, in order.

    Raises:
        AssertionError: ``timeout`` seconds went by without it (the acts seen are named).
    """
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        acts = controller.turn(now=now)
        seen += acts
        if any(a["act"] == act for a in acts):
            return seen
        time.sleep(pause)
    raise AssertionError(f"no {act!r} within {timeout:g}s; acts seen: {seen}")
