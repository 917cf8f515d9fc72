"""Load-testing machinery of ``gateway_bench.py``: the model and its request bodies, servers
pinned to one core, ``wrk`` pinned to another, and what ``/proc`` says the servers cost.

Serving figures compare only when every server gets the same core, the same bytes and the same
load generator, and when the load that other processes put on that core is known: each cell
measures it and is repeated once when it was not quiet, keeping the cleaner try.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SERVING_SRC = Path(__file__).resolve().parent.parent / "serving_src"
WRK_SCRIPT = SERVING_SRC / "post.lua"
N_FEATURES = 20
N_BODIES_ONE = 512  # distinct single-row bodies
N_BODIES_HUNDRED = 20  # distinct 100-row bodies
# One BLAS/OpenMP thread per server: each server owns exactly one core.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A server, wrk or a check failed; the message says which and why."""


# -- model and request bodies ------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The 80/20 split of ``make_classification(n_samples=50_000, n_features=20)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def columns(self) -> list[str]:
        return [f"f{i}" for i in range(self.x_train.shape[1])]


def make_dataset() -> Dataset:
    """The reference kit's data: 40,000 training rows and 10,000 held out."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=50_000, n_features=N_FEATURES, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    return Dataset(x_train, y_train, np.ascontiguousarray(x_test), y_test)


def fit_model(data: Dataset, **params: Any) -> Any:
    """A ``HistGradientBoostingClassifier`` (default ``random_state=0``) fitted on the split."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(**{"random_state": 0, **params})
    return model.fit(data.x_train, data.y_train)


@dataclass(frozen=True)
class Bodies:
    """Files of request bodies, one JSON body per line, and the rows each body holds."""

    one_row: Path
    hundred_rows: Path

    def path(self, rows: int) -> Path:
        return self.one_row if rows == 1 else self.hundred_rows


def write_bodies(rows: np.ndarray, folder: Path) -> Bodies:
    """512 single-row and 20 hundred-row ``{"instances": [[...]]}`` bodies from held-out rows.

    Raises:
        BenchError: fewer than 2,000 rows were given.
    """
    if len(rows) < N_BODIES_HUNDRED * 100:
        raise BenchError(f"Need {N_BODIES_HUNDRED * 100} held-out rows, got {len(rows)}.")
    folder.mkdir(parents=True, exist_ok=True)
    bodies = Bodies(folder / "rows1.jsonl", folder / "rows100.jsonl")
    with bodies.one_row.open("w") as out:
        for i in range(N_BODIES_ONE):
            out.write(json.dumps({"instances": rows[i : i + 1].tolist()}) + "\n")
    with bodies.hundred_rows.open("w") as out:
        for i in range(N_BODIES_HUNDRED):
            out.write(json.dumps({"instances": rows[i * 100 : (i + 1) * 100].tolist()}) + "\n")
    return bodies


def first_body(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline().strip()


# -- /proc ---------------------------------------------------------------------------------------


def cpu_busy_seconds(cpu: int) -> float:
    """Busy time of one CPU since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as handle:
        for line in handle:
            parts = line.split()
            if parts[0] == f"cpu{cpu}":
                ticks = [int(v) for v in parts[1:]]
                return (sum(ticks[0:3]) + sum(ticks[5:8])) / _CLOCK_TICKS
    raise BenchError(f"/proc/stat has no line for cpu{cpu}; pick a CPU this machine has.")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
        frontier.extend(parents.get(pid, []))
    return sorted(found)


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (threads included)."""
    ticks = 0
    for pid in pids:
        if (fields := _stat_fields(pid)) is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


def tree_rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def foreign_load(cpu: int, server_root: int, seconds: float = 1.0) -> float:
    """Percent of ``cpu`` that processes outside the server's tree used over ``seconds``."""
    pids = process_tree(server_root)
    busy0, own0 = cpu_busy_seconds(cpu), tree_cpu_seconds(pids)
    time.sleep(seconds)
    busy1, own1 = cpu_busy_seconds(cpu), tree_cpu_seconds(process_tree(server_root))
    return 100 * max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds


def wait_quiet(cpu: int, server_root: int, limit_pct: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other load on ``cpu`` is under ``limit_pct``."""
    deadline = time.monotonic() + max_wait
    while True:
        load = foreign_load(cpu, server_root)
        if load < limit_pct or time.monotonic() > deadline:
            return round(load, 1)
        time.sleep(1.0)


# -- HTTP ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, Any]:
    """Status and decoded JSON (or text) of one request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def predicted_labels(answer: Any) -> list[int]:
    """Labels from ``{"predictions": [...]}`` or a bare list, as ints."""
    values = answer.get("predictions") if isinstance(answer, dict) else answer
    if not isinstance(values, list):
        raise BenchError(f"The answer has no list of predictions: {str(answer)[:200]}")
    return [int(v) for v in values]


# -- servers -------------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    """How to start one server: ``{port}`` in ``argv`` is replaced by the port it gets."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    log: Path
    cwd: Path | None = None
    notes: list[str] = field(default_factory=list)


class Server:
    """A server process pinned with ``taskset`` (its children inherit the pin), in its own
    process group so that stopping it stops every process it started."""

    def __init__(self, spec: ServerSpec, cpu: int) -> None:
        self.spec = spec
        self.cpu = cpu
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.spec.name} is not running.")
        return self.proc.pid

    def start(self, timeout: float = 180) -> float:
        """Start and wait until the ready path answers 200; returns the seconds it took.

        Raises:
            BenchError: the server exited or was not ready within ``timeout`` (its log's tail
                is in the message).
        """
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.spec.argv]
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log.open("wb") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.cpu), *argv],
                cwd=self.spec.cwd,
                env=self.spec.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.spec.name} exited with code {self.proc.returncode} before it was "
                    f"ready: {self._log_tail()}"
                )
            try:
                if http("GET", self.url(self.spec.ready_path), timeout=2)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise BenchError(
            f"{self.spec.name} was not ready at {self.spec.ready_path} after {timeout:.0f} s: "
            f"{self._log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, wait for every member, SIGKILL what is left after 20 s.

        ``mlflow models serve`` exits before its uvicorn child does, so waiting for the parent
        alone would leave the port taken.
        """
        if self.proc is None:
            return
        group = self.proc.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (self.proc.poll() is None or _group_alive(group)):
            time.sleep(0.1)
        if self.proc.poll() is None or _group_alive(group):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.proc = None

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            return self.spec.log.read_text(errors="replace")[-chars:].strip() or "(empty log)"
        except OSError:
            return "(no log)"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    for entry in os.listdir("/proc"):
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


# -- wrk -----------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get if missing and possible.

    Raises:
        BenchError: wrk is not installed and apt-get could not install it.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError(
        "The load generator 'wrk' is not installed and 'apt-get install -y wrk' did not "
        "install it. Install it (Debian/Ubuntu: 'sudo apt-get install wrk') and run again."
    )


def start_wrk(
    url: str, bodies: Path, connections: int, seconds: float, cpu: int, *, versions: bool = False
) -> subprocess.Popen[str]:
    """Start one wrk thread pinned to ``cpu``, rotating through the bodies in ``bodies``."""
    argv = ["taskset", "-c", str(cpu), ensure_wrk(), "-t1", f"-c{connections}"]
    argv += [f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(WRK_SCRIPT), url]
    env = {**os.environ, "WRK_BODIES": str(bodies), "WRK_VERSIONS": "1" if versions else "0"}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_wrk(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    """Wait for wrk and parse the line that ``post.lua`` prints.

    Raises:
        BenchError: wrk failed or printed no result.
    """
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :])
    raise BenchError(f"wrk exited with code {proc.returncode} and no result: {out[-400:]} {err}")


def run_wrk(url: str, bodies: Path, connections: int, seconds: float, cpu: int) -> dict[str, Any]:
    return finish_wrk(start_wrk(url, bodies, connections, seconds, cpu), seconds)


def summarize(raw: dict[str, Any], rows_per_request: int) -> dict[str, Any]:
    """Throughput, latency and error counts of one wrk run, from ``post.lua``'s line."""
    seconds = raw["duration_us"] / 1e6
    statuses = {int(k): int(v) for k, v in raw["statuses"].items()}
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "requests": raw["requests"],
        "ok": ok,
        "seconds": round(seconds, 3),
        "ok_rps": ok / seconds,
        "ok_rows_per_s": ok * rows_per_request / seconds,
        "p50_ms": raw["lat_p50_us"] / 1e3,
        "p90_ms": raw["lat_p90_us"] / 1e3,
        "p99_ms": raw["lat_p99_us"] / 1e3,
        "mean_ms": raw["lat_mean_us"] / 1e3,
        "max_ms": raw["lat_max_us"] / 1e3,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non_2xx": raw["requests"] - ok,
        "wrk_non_2xx_or_3xx": raw["err_status"],
        "status_503": statuses.get(503, 0),
        "status_503_without_retry_after": raw["shed_without_retry_after"],
        "socket_errors": {
            k: raw[f"err_{k}"] for k in ("connect", "read", "write", "timeout") if raw[f"err_{k}"]
        },
        "socket_error_count": sum(raw[f"err_{k}"] for k in ("connect", "read", "write", "timeout")),
        "versions": raw.get("versions") or {},
    }


@dataclass(frozen=True)
class Load:
    """Where and how long wrk runs, and how quiet the server's core must be."""

    server_cpu: int
    loadgen_cpu: int
    seconds: float
    max_foreign_pct: float = 10.0
    max_tries: int = 2
    quiet_wait: float = 8.0


def measure_cell(
    server: Server, bodies: Path, rows: int, connections: int, load: Load
) -> dict[str, Any]:
    """One cell: wrk for ``load.seconds``, with the server tree's CPU and the foreign load on its
    core; repeated (up to ``load.max_tries``) when foreign load passed the limit, cleanest kept.
    """
    tries = []
    for _ in range(load.max_tries):
        before = wait_quiet(load.server_cpu, server.pid, load.max_foreign_pct, load.quiet_wait)
        pids = process_tree(server.pid)
        busy0, own0 = cpu_busy_seconds(load.server_cpu), tree_cpu_seconds(pids)
        kids0 = _children_cpu()
        started = time.monotonic()
        url = server.url(server.spec.predict_path)
        raw = run_wrk(url, bodies, connections, load.seconds, load.loadgen_cpu)
        wall = time.monotonic() - started
        pids = process_tree(server.pid)
        busy1, own1 = cpu_busy_seconds(load.server_cpu), tree_cpu_seconds(pids)
        server_cpu = own1 - own0
        cell = summarize(raw, rows)
        cell.update(
            {
                "rows_per_request": rows,
                "connections": connections,
                "server_cpu_pct": round(100 * server_cpu / wall, 1),
                "cpu_us_per_request": 1e6 * server_cpu / max(raw["requests"], 1),
                "wrk_cpu_pct": round(100 * (_children_cpu() - kids0) / wall, 1),
                "foreign_pct_server_core": round(
                    100 * max(0.0, (busy1 - busy0) - server_cpu) / wall, 1
                ),
                "foreign_pct_before": before,
                "rss_mb": round(tree_rss_mb(pids), 1),
            }
        )
        tries.append(cell)
        if cell["foreign_pct_server_core"] <= load.max_foreign_pct:
            break
    best = min(tries, key=lambda c: c["foreign_pct_server_core"])
    best["tries"] = len(tries)
    best["ok_rps_all_tries"] = [round(c["ok_rps"], 1) for c in tries]
    return best


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
