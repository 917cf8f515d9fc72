"""Real gateways for tests: a project with registered models, served on 127.0.0.1.

``gateway_project()`` registers two models with real files: ``num`` (HistGradientBoosting over
five numeric fields, served through its ONNX copy) and ``mixed`` (one-hot encoding + logistic
regression over a string, an integer and a nullable number, served natively). ``running()``
serves a project in a thread of the test process (uvicorn, real sockets); ``spawn()`` runs
``conveyor serve`` as its own process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

TOKEN = "test-token-0123456789abcdef"
NUM_FIELDS = [f"f{i}" for i in range(5)]


@lru_cache(maxsize=1)
def trained() -> dict[str, Any]:
    """Fitted models and their held-out features (fitted once per test process)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y = make_classification(n_samples=3000, n_features=5, random_state=0)
    frame = pd.DataFrame(X, columns=NUM_FIELDS)
    num_v1 = HistGradientBoostingClassifier(random_state=0, max_iter=30).fit(frame[:2000], y[:2000])
    # v2: a close relative of v1 (a release of it is healthy), with predictions of its own
    num_v2 = HistGradientBoostingClassifier(random_state=0, max_iter=20, max_leaf_nodes=15).fit(
        frame[:2000], y[:2000]
    )
    rng = np.random.default_rng(0)
    n = 1500
    mixed = pd.DataFrame(
        {
            "grade": rng.choice(["A", "B", "C"], n),
            "years": rng.integers(0, 30, n),
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.normal(10_000, 3000, n)),
        }
    )
    target = ((mixed["grade"] == "C") ^ (rng.random(n) < 0.2)).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["grade"]),
                        ("num", SimpleImputer(), ["years", "amount"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(mixed[:1000], target[:1000])
    return {
        "num_v1": num_v1,
        "num_v2": num_v2,
        "num_holdout": frame[2000:].reset_index(drop=True),
        "mixed": pipe,
        "mixed_holdout": mixed[1000:].reset_index(drop=True),
    }


def write_project(root: Path, *, store_url: str | None = None, serve: str = "") -> Path:
    """A project folder whose conveyor.yaml has only a name, a store and ``serve:`` settings."""
    root.mkdir(parents=True, exist_ok=True)
    text = "project: gw\n"
    if store_url:
        text += f"store:\n  url: {store_url}\n  artifacts: {root / 'artifacts'}\n"
    text += "serve:\n  poll_seconds: 0.1\n"
    if "  log:" not in serve:  # a test that sets its own log settings keeps them
        text += "  log: {flush_seconds: 0.2}\n"
    text += serve
    (root / "conveyor.yaml").write_text(text)
    return root


def load(root: Path) -> Any:
    from conveyor.config import load_config

    return load_config(root / "conveyor.yaml")


def gateway_project(root: Path, *, store_url: str | None = None, serve: str = "") -> Any:
    """Register num v1 (production), num v2 (staging) and mixed v1 (production, native)."""
    from conveyor.actions.models import register_fitted

    write_project(root, store_url=store_url, serve=serve)
    config = load(root)
    t = trained()
    register_fitted(
        config,
        t["num_v1"],
        t["num_holdout"],
        name="num",
        task="classification",
        aliases=("production",),
    )
    register_fitted(
        config,
        t["num_v2"],
        t["num_holdout"],
        name="num",
        task="classification",
        aliases=("staging",),
    )
    register_fitted(
        config,
        t["mixed"],
        t["mixed_holdout"],
        name="mixed",
        task="classification",
        aliases=("production",),
        onnx=False,
    )
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """A gateway answering on ``url``; ``client`` is an httpx client bound to it."""

    url: str
    gateway: Any = None
    process: subprocess.Popen | None = None
    client: httpx.Client = field(default_factory=httpx.Client)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(self.url + path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(self.url + path, **kw)

    def predict(self, model: str, rows: Any, **kw: Any) -> httpx.Response:
        return self.post(f"/v1/models/{model}/predict", json={"instances": rows}, **kw)


def wait_ready(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"the gateway exited with {process.returncode}:\n{out}")
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise TimeoutError(f"the gateway at {url} did not get ready: {last}")


@contextlib.contextmanager
def running(config: Any, *, token: str | None = TOKEN, ready: bool = True) -> Iterator[Running]:
    """Serve ``config`` with uvicorn in a thread of this process (real sockets)."""
    import uvicorn

    from conveyor.gateway.app import Gateway

    gateway = Gateway(config, token=token)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            gateway,
            host="127.0.0.1",
            port=port,
            lifespan="on",
            access_log=False,
            log_level="warning",
            http="httptools",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        if ready:
            wait_ready(url)
        with httpx.Client(timeout=30) as client:
            yield Running(url=url, gateway=gateway, client=client)
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def spawn(
    root: Path, *, workers: int = 1, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Running]:
    """Run ``conveyor serve`` as a separate process; stopped with SIGTERM (graceful)."""
    port = free_port()
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
    full_env = {**os.environ, "CONVEYOR_TOKEN": TOKEN, **(env or {})}
    process = subprocess.Popen(
        cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, process=process)
        with httpx.Client(timeout=30) as client:
            yield Running(url=url, process=process, client=client)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
