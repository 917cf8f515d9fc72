"""Adaptive micro-batching: concurrent requests for one version share one predict call.

Requests queue on the event loop; a flush is scheduled for the end of the current loop turn
(or after ``max_delay_ms`` when set). Under load many requests arrive in one turn and share a
call; a lone request is flushed at once, so batching never adds latency at low load. A batch
that fails is retried request by request, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from conveyor.gateway.runtime import Prediction, Served

__all__ = ["Batcher"]


class Batcher:
    """The queue in front of one ``Served``; lives on the event loop's thread."""

    def __init__(
        self,
        served: Served,
        *,
        max_rows: int,
        max_delay_ms: float,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self.served = served
        self.max_rows = max_rows
        self.max_delay = max_delay_ms / 1000.0
        self._observe = observe  # (batch rows, seconds the oldest request queued)
        self._queue: list[tuple[Any, int, asyncio.Future[Prediction], float]] = []
        self._rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None

    def submit(self, block: Any, n: int) -> asyncio.Future[Prediction]:
        """Queue one request's checked block; the future resolves to its ``Prediction``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append((block, n, future, time.perf_counter()))
        self._rows += n
        if self._rows >= self.max_rows:
            if self._scheduled is not None:
                self._scheduled.cancel()
            self._scheduled = loop.call_soon(self._flush)
        elif self._scheduled is None:
            if self.max_delay > 0:
                self._scheduled = loop.call_later(self.max_delay, self._flush)
            else:
                self._scheduled = loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = None
        while self._queue:
            batch, rows = self._take()
            self._run(batch, rows)

    def _take(self) -> tuple[list[tuple[Any, int, asyncio.Future[Prediction], float]], int]:
        taken = 0
        rows = 0
        for _block, n, _future, _at in self._queue:
            if taken and rows + n > self.max_rows:
                break
            taken += 1
            rows += n
        batch = self._queue[:taken]
        del self._queue[:taken]
        self._rows -= rows
        return batch, rows

    def _run(
        self, batch: list[tuple[Any, int, asyncio.Future[Prediction], float]], rows: int
    ) -> None:
        live = [item for item in batch if not item[2].done()]  # a cancelled caller went away
        if not live:
            return
        if self._observe is not None:
            self._observe(rows, time.perf_counter() - live[0][3])
        try:
            results = self.served.predict([item[0] for item in live])
        except Exception as exc:
            if len(live) == 1:
                live[0][2].set_exception(exc)
                return
            for item in live:  # find the request that broke the batch; the others succeed
                self._run([item], item[1])
            del exc
            return
        for item, result in zip(live, results, strict=True):
            item[2].set_result(result)
