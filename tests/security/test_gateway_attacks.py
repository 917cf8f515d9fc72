"""Attacks on a real ``conveyor serve`` process, on 127.0.0.1 only, each bounded in time.

- descriptor starvation: 300 idle sockets and slowloris clients against a gateway limited to
  256 descriptors must not stop it answering legitimate requests;
- orphaned workers: a ``kill -9`` of a multi-worker supervisor must take its workers along and
  leave the port free for the next ``conveyor serve``;
- request-log bloat: large requests must not grow the database by their whole size;
- a ``kill -9`` under load loses at most the rows the log had buffered.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.servers import TOKEN, free_port, gateway_project, wait_ready

pytestmark = pytest.mark.slow

ROW = [0.1, -0.2, 0.3, 0.0, 1.0]


def _limit_descriptors(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


@contextlib.contextmanager
def serving(
    root: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    nofile: int | None = None,
    ready: bool = True,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``conveyor serve`` as a process (optionally with a descriptor limit); killed at the end."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "conveyor.cli.main",
        "serve",
        "-C",
        str(root),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        cmd,
        env={**os.environ, "CONVEYOR_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_limit_descriptors(nofile) if nofile else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, process=process)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_and_slowloris_sockets_do_not_starve_a_descriptor_limited_gateway(
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    gateway_project(root)
    with serving(root, nofile=256) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/models/num/predict HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        stop = threading.Event()

        def drip() -> None:  # one header byte per socket every second: slowloris
            while not stop.wait(1.0):
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.sendall(b"X")

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            answered = []
            peak = 0
            with httpx.Client(timeout=10) as client:
                for _ in range(20):  # 20 fresh connections, each a legitimate request
                    r = client.post(
                        url + "/v1/models/num/predict",
                        json={"instances": [ROW]},
                        headers={"connection": "close"},
                    )
                    answered.append(r.status_code)
                    peak = max(peak, open_descriptors(process.pid))
                    time.sleep(0.1)
            assert answered == [200] * 20
            assert peak <= 256
            assert process.poll() is None
        finally:
            stop.set()
            dripper.join(5)
            for s in idle + slow:
                s.close()


# Runs a command as the child of a "subreaper" (PR_SET_CHILD_SUBREAPER): orphans of the command
# are re-parented here, not to PID 1, as in a container whose init does not kill them (the
# init of some sandboxes stops orphans itself, which would hide the bug this test is for).
_REAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
child = subprocess.Popen(sys.argv[2:])
open(sys.argv[1], "w").write(str(child.pid))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_a_killed_supervisor_takes_its_workers_and_the_port_is_served_again(
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    gateway_project(root)
    port = free_port()
    pid_file = tmp_path / "supervisor.pid"
    cmd = [
        sys.executable,
        "-c",
        _REAPER,
        str(pid_file),
        sys.executable,
        "-m",
        "conveyor.cli.main",
        "serve",
        "-C",
        str(root),
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    reaper = subprocess.Popen(cmd, env={**os.environ, "CONVEYOR_TOKEN": TOKEN})
    workers: list[int] = []
    try:
        wait_ready(f"http://127.0.0.1:{port}", process=reaper)
        supervisor = int(pid_file.read_text())
        workers = [w for w in children(supervisor) if "spawn_main" in cmdline(w)]
        assert len(workers) == 2
        os.kill(supervisor, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [w for w in workers if alive(w)] == [], "workers outlived their supervisor"
    finally:
        for w in workers:  # the test's own processes, if the gateway left them
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
        reaper.wait(30)
    with serving(root, port=port, workers=2) as (url, _again):
        # Ready means one worker answered /readyz; the other may still be loading the model
        # and answer 503 (not ready) for a moment, never anything else.
        deadline = time.monotonic() + 30
        while True:
            r = httpx.post(url + "/v1/models/num/predict", json={"instances": [ROW]}, timeout=10)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text


def test_large_requests_do_not_bloat_the_request_log(tmp_path: Path) -> None:
    root = tmp_path / "p"
    gateway_project(root, serve="  max_rows: 100000\n")
    db = root / ".conveyor" / "conveyor.db"
    instances = [ROW] * 60_000  # about 2 MB of JSON each
    with serving(root) as (url, _process):

        def size() -> int:  # the metadata store and the prediction log's files
            log = list((db.parent / "artifacts" / "prediction-log").rglob("*.parquet"))
            return sum(
                p.stat().st_size
                for p in db.parent.glob(db.name + "*")
                if p.name in (db.name, db.name + "-wal")
            ) + sum(p.stat().st_size for p in log)

        before = size()
        with httpx.Client(timeout=60) as client:
            for i in range(10):
                rows = instances if i % 2 else [row[:4] for row in instances]  # half are 422s
                r = client.post(url + "/v1/models/num/predict", json={"instances": rows})
                assert r.status_code == (200 if i % 2 else 422)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the writer has caught up
                status = client.get(
                    url + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                if status.json()["request_log"]["pending"] == 0:
                    break
                time.sleep(0.2)
    grown = size() - before
    # 20 MB were sent; each row keeps a marker for its inputs and at most 256 KiB of outputs
    assert grown < 5 * 1024 * 1024, grown


def test_a_kill_under_load_loses_at_most_what_the_log_had_buffered(tmp_path: Path) -> None:
    from tests.gateway.servers import load
    from tests.gateway.test_requestlog import logged

    root = tmp_path / "p"
    gateway_project(root)
    with serving(root) as (url, process):
        answered: list[str] = []
        pending_seen: list[int] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        r = c.post(url + "/v1/models/num/predict", json={"instances": [ROW]})
                        if r.status_code == 200:
                            answered.append(r.headers["x-request-id"])

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        started = time.monotonic()
        with httpx.Client(timeout=5) as admin:
            while time.monotonic() - started < 4:
                s = admin.get(url + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
                pending_seen.append(s.json()["request_log"]["pending"])
                time.sleep(0.05)
        seconds = time.monotonic() - started
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
    rate = len(answered) / seconds
    stored = {r.request_id for r in logged(load(root))}
    lost = len([rid for rid in answered if rid not in stored])
    print(f"{rate:.0f} req/s; lost {lost} rows; buffered at most {max(pending_seen)} rows")
    # The bound the module states: what was buffered, i.e. one flush interval plus the rows
    # that came in during a write; the largest buffer seen while polling, with a margin of
    # one more flush interval's requests, bounds it.
    assert lost <= max(pending_seen) + rate * load(root).serve.log.flush_seconds + 10
