"""The request log's bounds in bytes: per-field caps, 4xx inputs, the buffer, the error log."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from conveyor.gateway.requestlog import RequestLog
from conveyor.store.metadata import Store
from conveyor.store.predictionlog.layout import log_url
from tests.gateway.servers import load, write_project
from tests.gateway.test_requestlog import logged


def record(
    log: RequestLog, rid: str, *, status: int = 200, inputs: str = "[]", outputs: str = "{}"
):
    log.record(rid, "num", 1, "production", "serve", status, 1.0, 1, inputs, outputs)


def test_oversized_inputs_and_outputs_are_stored_as_a_marker_with_their_size(
    tmp_path: Path,
) -> None:
    config = load(write_project(tmp_path / "p"))
    big_in = json.dumps([[0.123456789] * 5] * 20_000)  # about 300 KB
    big_out = json.dumps({"predictions": [1] * 200_000})
    with Store(config.store_url()) as store:
        log = RequestLog(
            store,
            gateway="t",
            max_input_bytes=1000,
            max_output_bytes=2000,
            log_url=log_url(config.artifacts_url()),
        )
        record(log, "big", inputs=big_in, outputs=big_out)
        record(log, "small", inputs="[[1, 2]]", outputs='{"predictions": [0]}')
        assert log.truncated == 2
        assert log.flush() == 2
    big, small = logged(config)
    assert json.loads(big.inputs) == {"truncated": True, "chars": len(big_in)}
    assert json.loads(big.outputs) == {"truncated": True, "chars": len(big_out)}
    assert (small.inputs, small.outputs) == ("[[1, 2]]", '{"predictions": [0]}')


def test_a_client_errors_inputs_are_not_stored_unless_asked(tmp_path: Path) -> None:
    config = load(write_project(tmp_path / "p"))
    with Store(config.store_url()) as store:
        root = log_url(config.artifacts_url())
        log = RequestLog(store, gateway="t", log_url=root)
        record(log, "bad", status=422, inputs="[[1, 2]]", outputs="row 0 has 2 values")
        record(log, "broken", status=500, inputs="[[3]]", outputs="Internal error")
        keep = RequestLog(store, gateway="t", client_error_inputs=True, log_url=root)
        record(keep, "kept", status=422, inputs="[[1, 2]]", outputs="row 0 has 2 values")
        log.flush()
        keep.flush()
    rows = {r.request_id: r for r in logged(config)}
    assert (rows["bad"].inputs, rows["bad"].outputs) == ("", "row 0 has 2 values")
    assert rows["broken"].inputs == "[[3]]"  # a 5xx is the gateway's fault: keep what caused it
    assert rows["kept"].inputs == "[[1, 2]]"


def test_the_buffer_is_bounded_in_bytes_and_drops_past_it_without_blocking(
    tmp_path: Path,
) -> None:
    config = load(write_project(tmp_path / "p"))
    dropped: list[int] = []
    with Store(config.store_url()) as store:
        # the writer is not started: the store "lags" for as long as the test wants
        log = RequestLog(
            store,
            gateway="t",
            max_buffer_bytes=1_000_000,
            max_input_bytes=300_000,
            on_drop=dropped.append,
            log_url=str(tmp_path / "log"),
        )
        text = "[" + "1," * 99_999 + "1]"  # 200 KB of inputs each
        started = time.perf_counter()
        for i in range(50):
            record(log, f"r{i}", inputs=text)
        assert time.perf_counter() - started < 0.5
        assert log.pending() == 4 and log.pending_bytes() <= 1_000_000
        assert log.dropped == 46 and sum(dropped) == 46
        assert log.flush() == 4 and log.pending_bytes() == 0
        for i in range(4):  # room again once written
            record(log, f"again{i}", inputs=text)
        assert log.pending() == 4 and log.dropped == 46


def test_a_store_outage_logs_a_line_per_interval_with_a_count_not_one_per_attempt(
    tmp_path: Path, caplog
) -> None:
    config = load(write_project(tmp_path / "p"))
    root = tmp_path / "log"
    root.write_text("a file where the log's folder goes: every write fails")
    with Store(config.store_url()) as store:
        log = RequestLog(
            store,
            gateway="t",
            flush_rows=1,
            flush_seconds=0.01,
            error_log_seconds=0.5,
            log_url=str(root),
        )
        caplog.set_level(logging.WARNING, logger="conveyor.gateway")
        log.start()
        try:
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:  # requests keep coming and keep waking the writer
                record(log, f"r{time.monotonic_ns()}")
                time.sleep(0.001)
            failures = log._errors.failures
        finally:
            root.unlink()
            log.close()
        lines = [r.getMessage() for r in caplog.records if "request log" in r.getMessage()]
    # backing off (0.02, 0.04, ... s) instead of one attempt per request: a few attempts
    assert 2 <= failures <= 12, failures
    cannot = [line for line in lines if "cannot write" in line]
    assert 1 <= len(cannot) <= 3, lines
    assert lines[-1] == f"request log: writing again after {failures} failed attempts"
    assert log.pending() == 0 and log.written > 0


def test_a_writer_process_that_dies_loses_no_rows_and_is_started_again(tmp_path: Path) -> None:
    """The files are written by a child process (the worker never loads PyArrow): when it is
    killed, the next flush starts another and nothing buffered is lost."""
    import os
    import signal

    config = load(write_project(tmp_path / "p"))
    with Store(config.store_url()) as store:
        log = RequestLog(store, gateway="t", log_url=log_url(config.artifacts_url()))
        record(log, "a")
        assert log.flush() == 1
        first = log._writer._proc
        assert first is not None and first.poll() is None
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        record(log, "b")
        assert log.flush() == 1 and log.pending() == 0
        second = log._writer._proc
        assert second is not None and second.pid != first.pid
        # a Ctrl-C or SIGTERM sent to the gateway's process group leaves it to the last flush
        os.kill(second.pid, signal.SIGINT)
        os.kill(second.pid, signal.SIGTERM)
        time.sleep(0.5)
        record(log, "c")
        assert log.flush() == 1 and log._writer._proc is second and second.poll() is None
        log.close()
        assert second.poll() is not None  # close() ended the child
    assert [r.request_id for r in logged(config)] == ["a", "b", "c"]


def test_the_heap_a_burst_freed_is_handed_back_on_glibc() -> None:
    """After a burst drained, the writer thread (and the writer process after a big batch) call
    malloc_trim, so a worker does not keep the buffer's peak for good (gateway-lean.md: 180 ->
    136 MB after a 100-row flood). On glibc the call exists and frees a big freed block's pages."""
    import platform

    from conveyor.gateway.logwriter import release_freed_heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")

    def rss_kb() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    # texts the size of a logged request's (over pymalloc's 512 bytes, under the mmap
    # threshold): glibc's heap, which free() keeps (measured: 77 MB held after del, 11 MB
    # after the trim)
    junk = [("x" * 600) + str(i) for i in range(100_000)]
    before_free = rss_kb()
    del junk
    assert release_freed_heap() is True
    assert rss_kb() < before_free - 30_000  # at least 30 of the ~60 MB went back


@pytest.mark.parametrize(
    ("priority", "policy"), [("normal", "SCHED_OTHER"), ("idle", "SCHED_IDLE")]
)
def test_the_writer_process_runs_at_the_configured_priority(
    tmp_path: Path, priority: str, policy: str
) -> None:
    """serve.log.writer_priority: 'idle' puts the writer process in SCHED_IDLE (it runs only
    when a core is otherwise idle); 'normal' leaves it at the worker's priority. Rows are
    written either way."""
    import os

    config = load(write_project(tmp_path / "p"))
    with Store(config.store_url()) as store:
        log = RequestLog(
            store,
            gateway="t",
            writer_priority=priority,
            log_url=log_url(config.artifacts_url()),
        )
        log.start()
        try:
            record(log, "one", status=200, inputs="[[1, 2]]", outputs='{"predictions": [0]}')
            assert log.flush() == 1
            child = log._writer._proc
            assert child is not None and child.poll() is None
            assert os.sched_getscheduler(child.pid) == getattr(os, policy)
        finally:
            log.close()
    assert [r.request_id for r in logged(config)] == ["one"]
