"""The dashboard's page times over a big store: 100,000 runs, 1,000 versions, 10,000 releases,
1,000,000 events.

    .venv/bin/python benchmarks/ui_bench.py            # full size (~3 min to fill, once)
    .venv/bin/python benchmarks/ui_bench.py --quick    # a tenth of everything

The store is filled with bulk inserts through SQLAlchemy Core (four steps and three metrics per
run, a 200-point loss curve on one run in a hundred, 10 models of 100 versions each cloned from
one really registered version, releases over three environments per model, events of every
family), in a SQLite file under benchmarks/work/ that is kept and reused when its size matches.
Then the real dashboard runs on uvicorn on 127.0.0.1 and each page and its JSON twin is asked
``--repeats`` times; the figure is the median of the server's own time (its ``Server-Timing``
header: handler, queries and template), with the median round trip beside it. Goals: 150 ms for a
list page, 300 ms for a run or version page.

Beside it, in the same run, MLflow's tracking server (``mlflow server``, the one its UI talks to)
over a SQLite store holding the same runs: the same number, each with the same three metrics, a
200-point loss curve on one in a hundred, its params and the tags MLflow's own client writes,
inserted in bulk through MLflow's SQLAlchemy tables (after its own migrations made them) and
kept under benchmarks/work/ like ours. Only the reads are timed: the run list as MLflow's UI asks
for it (``POST /ajax-api/2.0/mlflow/runs/search``, 100 runs, newest first) and filtered, paged,
one run and a metric's history, each beside our page that answers the same question. MLflow
sends no server time, so both are compared on the client's round trip over 127.0.0.1 (ours is
the JSON twin's, as MLflow's is its JSON API; its UI page itself is static files whose script
then calls that API). ``--no-mlflow`` leaves it out.

Prints a Markdown table and writes it to benchmarks/results/ui.md (ui-quick.md for --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

import httpx  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

STEPS = ("prepare", "train", "evaluate", "report")
ENVIRONMENTS = ("staging", "production", "eu")
MODELS = 10
LIST_GOAL_MS, ITEM_GOAL_MS = 150.0, 300.0


def log(message: str) -> None:
    print(f"[ui-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sizes(quick: bool) -> dict[str, int]:
    scale = 10 if quick else 1
    return {
        "runs": 100_000 // scale,
        "versions": 1_000 // scale,
        "releases": 10_000 // scale,
        "events": 1_000_000 // scale,
    }


def project(work: Path) -> Any:
    from conveyor.config import load_config

    work.mkdir(parents=True, exist_ok=True)
    (work / "conveyor.yaml").write_text("project: bench\n")
    return load_config(work / "conveyor.yaml")


# -- filling the store ---------------------------------------------------------------------------


def fill(config: Any, n: dict[str, int]) -> None:
    """Fill an empty store with ``n`` rows of each kind, in chunks of one transaction each."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from conveyor.actions.models import register_fitted
    from conveyor.store import models as m
    from conveyor.store.stores import open_stores

    rng = random.Random(0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int)
    seed = register_fitted(
        config,
        LogisticRegression().fit(X, y),
        X,
        name="seed",
        task="classification",
        metrics={"roc_auc": 0.9},
        onnx=False,
    )
    with open_stores(config) as stores:
        engine = stores.metadata.engine
        with engine.begin() as conn:
            template = dict(
                conn.execute(select(m.ModelVersion.__table__).where(m.ModelVersion.model == "seed"))
                .mappings()
                .one()
            )
        run_ids: list[str] = []
        log(f"runs: {n['runs']:,} with {len(STEPS)} steps and 3 metrics each")
        for chunk in range(0, n["runs"], 10_000):
            runs, steps, metrics = [], [], []
            for i in range(chunk, min(chunk + 10_000, n["runs"])):
                at = start + timedelta(minutes=5 * i)
                rid = f"{at:%Y%m%d-%H%M%S}-{i:06x}"
                run_ids.append(rid)
                failed = rng.random() < 0.05
                runs.append(
                    {
                        "id": rid,
                        "project": "bench",
                        "status": "failed" if failed else "succeeded",
                        "started_at": at,
                        "finished_at": at + timedelta(seconds=rng.uniform(5, 300)),
                        "host": "bench",
                        "pid": 1,
                        "workspace": "/bench",
                        "git_commit": f"{i:040x}",
                        "git_dirty": False,
                        "env_hash": "e" * 64,
                        "config_hash": "c" * 64,
                        "args": {},
                        "error": "train: boom" if failed else None,
                    }
                )
                inputs = {
                    "prepare": {"data.rows": "h"},
                    "train": {"prepare.train": "d"},
                    "evaluate": {"train": {}, "prepare.test": "d"},
                    "report": {"evaluate": {}},
                }
                for j, step in enumerate(STEPS):
                    status = "cached" if j == 0 and i % 3 else "ran"
                    if failed and step == "train":
                        status = "failed"
                    elif failed and j > 1:
                        status = "blocked"
                    steps.append(
                        {
                            "run_id": rid,
                            "step": step,
                            "status": status,
                            "cache_key": f"{i:058x}{j:06x}",
                            "key_parts": {"inputs": inputs[step], "params": {"C": 1.0}},
                            "reason": "input changed",
                            "duration_s": rng.uniform(0.1, 60),
                            "outputs": {},
                        }
                    )
                for key in ("roc_auc", "accuracy", "log_loss"):
                    metrics.append(
                        {
                            "run_id": rid,
                            "step": "evaluate",
                            "key": key,
                            "value": rng.random(),
                            "index": 0,
                            "logged_at": at.timestamp(),
                        }
                    )
                if i % 100 == 0:
                    metrics.extend(
                        {
                            "run_id": rid,
                            "step": "train",
                            "key": "loss",
                            "value": 1 / (k + 1),
                            "index": k,
                            "logged_at": at.timestamp() + k,
                        }
                        for k in range(200)
                    )
            with engine.begin() as conn:
                conn.execute(insert(m.Run.__table__), runs)
                conn.execute(insert(m.StepRun.__table__), steps)
                conn.execute(insert(m.Metric.__table__), metrics)
        log(f"versions: {n['versions']:,} over {MODELS} models")
        per_model = max(1, n["versions"] // MODELS)
        rows = []
        for k in range(MODELS):
            for v in range(1, per_model + 1):
                row = {key: value for key, value in template.items() if key != "id"}
                row.update(
                    model=f"model{k}",
                    version=v,
                    run_id=run_ids[(k * per_model + v) * 37 % len(run_ids)],
                    created_at=start + timedelta(hours=k * per_model + v),
                    metrics={"roc_auc": 0.8 + rng.random() / 10, "accuracy": rng.random()},
                    gates=[
                        {
                            "name": "roc_auc >= 0.7",
                            "kind": "threshold",
                            "verdict": "pass",
                            "message": "0.83 >= 0.7",
                            "evidence": {"value": 0.83, "bound": 0.7},
                        }
                    ],
                )
                rows.append(row)
        with engine.begin() as conn:
            conn.execute(insert(m.ModelVersion.__table__), rows)
            conn.execute(
                insert(m.Alias.__table__),
                [
                    {
                        "model": f"model{k}",
                        "alias": env,
                        "version": per_model - e,
                        "updated_at": start,
                    }
                    for k in range(MODELS)
                    for e, env in enumerate(ENVIRONMENTS)
                ],
            )
        log(f"releases: {n['releases']:,}")
        releases, release_ids = [], []
        lanes = MODELS * len(ENVIRONMENTS)
        for i in range(n["releases"]):
            k, env = (i % lanes) // len(ENVIRONMENTS), ENVIRONMENTS[i % len(ENVIRONMENTS)]
            at = start + timedelta(minutes=30 * i)
            rid = f"r{at:%Y%m%d%H%M%S}-{i:06x}"
            release_ids.append(rid)
            state = rng.choice(["promoted"] * 8 + ["rolled_back", "aborted"])
            to = 1 + i // lanes % per_model
            releases.append(
                {
                    "id": rid,
                    "model": f"model{k}",
                    "environment": env,
                    "from_version": max(1, to - 1),
                    "to_version": to,
                    "strategy": "canary",
                    "state": state,
                    "step": 1,
                    "step_started_at": at,
                    "plan": {"steps": [{"weight": 10}, {"weight": 50}]},
                    "verdicts": [{"action": "promote", "why": "all checks passed"}],
                    "reason": None,
                    "active": None,
                    "created_at": at,
                    "updated_at": at + timedelta(minutes=20),
                    "finished_at": at + timedelta(minutes=20),
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(m.Release.__table__), releases)
        log(f"events: {n['events']:,}")
        kinds = [
            ("run.started", "run"),
            ("step.ran", "run"),
            ("step.cached", "run"),
            ("run.succeeded", "run"),
            ("traffic.changed", "release"),
            ("release.started", "release"),
            ("release.promoted", "release"),
            ("alias.moved", "model"),
            ("alert.fired", "alert"),
            ("alert.resolved", "alert"),
            ("controller.retrain_finished", "project"),
        ]
        weights = [30, 30, 20, 10, 3, 2, 2, 1, 0.2, 0.2, 0.1]
        for chunk in range(0, n["events"], 50_000):
            batch = []
            for i in range(chunk, min(chunk + 50_000, n["events"])):
                kind, entity = rng.choices(kinds, weights)[0]
                if entity == "run":
                    eid = run_ids[i * len(run_ids) // n["events"]]
                elif entity == "release":
                    eid = release_ids[i * len(release_ids) // n["events"]]
                elif entity == "alert":
                    eid = f"model{i % MODELS}@production:drift"
                else:
                    eid = f"model{i % MODELS}" if entity == "model" else "bench"
                batch.append(
                    {
                        "at": start + timedelta(seconds=30 * i),
                        "kind": kind,
                        "entity": entity,
                        "entity_id": eid,
                        "actor": "bench@host",
                        "payload": {"step": "train", "weight": 10, "summary": "bench"},
                    }
                )
            with engine.begin() as conn:
                conn.execute(insert(m.Event.__table__), batch)
    log(f"seeded versions from {seed.label}")


def counts(config: Any) -> dict[str, int]:
    from conveyor.store import models as m
    from conveyor.store.metadata import Store

    with Store(config.store_url()) as store, store.engine.connect() as conn:
        seeded = conn.execute(
            select(func.count()).select_from(m.Event).where(m.Event.entity_id == "seed")
        ).scalar_one()
        return {
            "runs": store.count(m.Run),
            "versions": store.count(m.ModelVersion) - 1,  # less the seed and its events
            "releases": store.count(m.Release),
            "events": store.count(m.Event) - seeded,
        }


# -- MLflow beside it ----------------------------------------------------------------------------


class MlflowSide:
    """MLflow's tracking server over a SQLite store holding ``runs`` runs like ours.

    The store's tables are made by MLflow itself (``SqlAlchemyStore`` runs its migrations);
    the rows go in through SQLAlchemy Core on those tables in chunks, as ours do, because
    logging 100,000 runs through its client takes hours. Kept and reused when it holds as many
    runs as asked.
    """

    def __init__(self, work: Path, runs: int) -> None:
        self.work, self.runs = work, runs
        self.db = work / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.proc: Any = None
        self.url = ""
        self.experiment = ""
        self.questions: dict[str, dict[str, Any]] = {}

    def _store(self) -> Any:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(self.uri, str(self.work / "artifacts"))

    def _count(self) -> int:
        import sqlite3

        with sqlite3.connect(self.db) as conn:
            return int(conn.execute("select count(*) from runs").fetchone()[0])

    def fill(self) -> None:
        """Make the store (once) with ``runs`` runs in an experiment named ``bench``."""
        if self.db.exists() and self._count() != self.runs:
            log(f"{self.db} holds another number of runs: starting again")
            self.db.unlink()
        if self.db.exists():
            return
        from mlflow.store.tracking.dbmodels import models as mm

        t0 = time.perf_counter()
        self.work.mkdir(parents=True, exist_ok=True)
        store = self._store()
        experiment = store.create_experiment("bench")
        engine = store.engine
        rng = random.Random(0)
        start = datetime(2025, 1, 1, tzinfo=UTC)
        log(f"MLflow: {self.runs:,} runs with 3 metrics, 2 params and 4 tags each")
        for chunk in range(0, self.runs, 10_000):
            runs, metrics, latest, params, tags = [], [], [], [], []
            for i in range(chunk, min(chunk + 10_000, self.runs)):
                at = int((start + timedelta(minutes=5 * i)).timestamp() * 1000)
                uuid = f"{i:032x}"
                failed = rng.random() < 0.05
                runs.append(
                    {
                        "run_uuid": uuid,
                        "name": f"run-{i}",
                        "source_type": "LOCAL",
                        "source_name": "train.py",
                        "entry_point_name": "",
                        "user_id": "bench",
                        "status": "FAILED" if failed else "FINISHED",
                        "start_time": at,
                        "end_time": at + int(rng.uniform(5, 300) * 1000),
                        "deleted_time": None,
                        "source_version": f"{i:040x}",
                        "lifecycle_stage": "active",
                        "artifact_uri": f"{self.work}/artifacts/{uuid}/artifacts",
                        "experiment_id": int(experiment),
                    }
                )
                for key in ("roc_auc", "accuracy", "log_loss"):
                    row = {
                        "key": key,
                        "value": rng.random(),
                        "timestamp": at,
                        "step": 0,
                        "is_nan": False,
                        "run_uuid": uuid,
                    }
                    metrics.append(row)
                    latest.append(dict(row))
                if i % 100 == 0:
                    curve = [
                        {
                            "key": "loss",
                            "value": 1 / (k + 1),
                            "timestamp": at + k * 1000,
                            "step": k,
                            "is_nan": False,
                            "run_uuid": uuid,
                        }
                        for k in range(200)
                    ]
                    metrics.extend(curve)
                    latest.append(dict(curve[-1]))
                params += [
                    {"key": "C", "value": "1.0", "run_uuid": uuid},
                    {"key": "step", "value": "train", "run_uuid": uuid},
                ]
                tags += [
                    {"key": "mlflow.runName", "value": f"run-{i}", "run_uuid": uuid},
                    {"key": "mlflow.user", "value": "bench", "run_uuid": uuid},
                    {"key": "mlflow.source.name", "value": "train.py", "run_uuid": uuid},
                    {"key": "mlflow.source.type", "value": "LOCAL", "run_uuid": uuid},
                ]
            with engine.begin() as conn:
                conn.execute(insert(mm.SqlRun.__table__), runs)
                conn.execute(insert(mm.SqlMetric.__table__), metrics)
                conn.execute(insert(mm.SqlLatestMetric.__table__), latest)
                conn.execute(insert(mm.SqlParam.__table__), params)
                conn.execute(insert(mm.SqlTag.__table__), tags)
        engine.dispose()
        log(f"MLflow store filled in {time.perf_counter() - t0:.0f} s")

    def start(self) -> None:
        """``mlflow server`` on a free loopback port, one worker, until ``/health`` answers."""
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        mlflow = Path(sys.executable).parent / "mlflow"
        self.log = open(self.work / "server.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--backend-store-uri",
                self.uri,
                "--default-artifact-root",
                str(self.work / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # its job runner (seven task consumers for GenAI jobs) would take CPU from both
            # servers on this machine and answers none of the requests timed here
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.work / 'server.log'}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer; see {self.work / 'server.log'}")
            time.sleep(0.25)
        self.client = httpx.Client(base_url=self.url, timeout=120)
        found = self.client.get(
            "/ajax-api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "bench"}
        ).json()
        self.experiment = found["experiment"]["experiment_id"]
        self._ask()
        log(f"MLflow {self._version()} serving {self.runs:,} runs at {self.url}")

    def _version(self) -> str:
        import mlflow

        return str(mlflow.__version__)

    def _search(self, **extra: Any) -> dict[str, Any]:
        return {
            "experiment_ids": [self.experiment],
            "max_results": 50,
            "order_by": ["attributes.start_time DESC"],
            "run_view_type": "ACTIVE_ONLY",
            **extra,
        }

    def _ask(self) -> None:
        """The questions, named as our pages that answer them."""
        search = "/ajax-api/2.0/mlflow/runs/search"
        day = 86_400_000
        since = int(datetime(2025, 1, 10, tzinfo=UTC).timestamp() * 1000)
        token = None
        for _ in range(10):  # past the first 500 runs, as our "page 10" row starts after them
            body = self._search(**({"page_token": token} if token else {}))
            token = self.client.post(search, json=body).json()["next_page_token"]
        curve = f"{(self.runs // 2) // 100 * 100:032x}"
        self.questions = {
            "runs": {"method": "POST", "path": search, "body": self._search()},
            "runs, 100 rows": {
                "method": "POST",
                "path": search,
                "body": self._search(max_results=100),
            },
            "runs, status=failed": {
                "method": "POST",
                "path": search,
                "body": self._search(filter="attributes.status = 'FAILED'"),
            },
            "runs, ten days": {
                "method": "POST",
                "path": search,
                "body": self._search(
                    filter=f"attributes.start_time >= {since} and "
                    f"attributes.start_time < {since + 10 * day}"
                ),
            },
            "runs, page 10": {
                "method": "POST",
                "path": search,
                "body": self._search(page_token=token),
            },
            # the run page of MLflow's UI asks for the run, then each charted metric's history
            "run (200-point curve)": {
                "method": "GET",
                "path": f"/ajax-api/2.0/mlflow/runs/get?run_id={curve}",
                "then": "/ajax-api/2.0/mlflow/metrics/get-history"
                f"?run_id={curve}&metric_key=loss&max_results=25000",
            },
        }

    def timed(self, name: str, repeats: int) -> dict[str, Any]:
        """The median round trip of one question (both requests, for a run page)."""
        q = self.questions[name]
        wall = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = self.client.request(q["method"], q["path"], json=q.get("body"))
            r.raise_for_status()
            if q.get("then"):
                self.client.get(q["then"]).raise_for_status()
            wall.append((time.perf_counter() - t0) * 1000)
        return {"ms": statistics.median(wall)}

    def describe(self) -> str:
        return (
            f"MLflow {self._version()}: `mlflow server --backend-store-uri sqlite:///... "
            "--workers 1` (its job runner off: `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`) on "
            "127.0.0.1, on the same disk and machine, started before the dashboard and queried "
            "in the same run; round trips, median of the same number of requests."
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.client.close()
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
            self.log.close()
            self.proc = None


# -- timing --------------------------------------------------------------------------------------


def serve(config: Any) -> tuple[str, Any, threading.Thread]:
    import socket

    import uvicorn

    from conveyor.dashboard.app import Dashboard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            Dashboard(config, token=None),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def pages(client: httpx.Client, n: dict[str, int]) -> list[tuple[str, str, str]]:
    """(name, path, kind) of every page measured; ids come from the store's own pages."""
    runs = client.get("/runs.json", params={"limit": 500}).json()
    deep_run = runs["runs"][-1]["run_id"]
    curve_run = next(r["run_id"] for r in runs["runs"] if int(r["run_id"][-6:], 16) % 100 == 0)
    release = client.get("/releases.json").json()["releases"][0]["id"]
    events = client.get("/events.json", params={"limit": 500}).json()
    per_model = max(1, n["versions"] // MODELS)
    # events are 30 s apart from 2025-01-01: the day in the middle of the log
    middle_day = (datetime(2025, 1, 1) + timedelta(seconds=15 * n["events"])).date()
    return [
        ("overview", "/", "list"),
        ("runs", "/runs", "list"),
        ("runs, 100 rows", "/runs?limit=100", "list"),
        ("runs, status=failed", "/runs?status=failed", "list"),
        ("runs, step=train", "/runs?step=train", "list"),
        ("runs, ten days", "/runs?since=2025-01-10&until=2025-01-19", "list"),
        ("runs, page 10", f"/runs?after={deep_run}", "list"),
        ("run (200-point curve)", f"/runs/{curve_run}", "item"),
        ("models", "/models", "list"),
        ("models, one model", "/models?model=model3", "list"),
        ("version", f"/models/model3/{per_model // 2 or 1}", "item"),
        ("releases", "/releases", "list"),
        ("releases, production", "/releases?environment=production", "list"),
        ("releases, rolled back", "/releases?state=rolled_back", "list"),
        ("release", f"/releases/{release}", "item"),
        ("audit log", "/events", "list"),
        ("audit log, kind", "/events?kind=release.started", "list"),
        ("audit log, one run", f"/events?entity=run&entity_id={deep_run}", "list"),
        ("audit log, page 6", f"/events?after={events['events'][-1]['id']}", "list"),
        ("audit log, since a day", "/events?since=2025-01-20", "list"),
        ("audit log, until the 2nd day", "/events?until=2025-01-02", "list"),
        ("audit log, until mid-log", f"/events?until={middle_day}", "list"),
        ("monitoring", "/monitoring", "list"),
        ("monitoring, one environment", "/monitoring/model3/production", "item"),
    ]


def timed(client: httpx.Client, path: str, repeats: int) -> tuple[float, float, int]:
    server, wall = [], []
    status = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = client.get(path)
        wall.append((time.perf_counter() - t0) * 1000)
        status = r.status_code
        server.append(float(r.headers["server-timing"].split("dur=")[1]))
    return statistics.median(server), statistics.median(wall), status


def _settle(client: httpx.Client) -> None:
    """Wait until the dashboard's worker has computed every environment's monitoring report
    (the first visit starts them), so the page is timed as a person would see it after."""
    deadline = time.monotonic() + 600
    while client.get("/monitoring.json").json()["computing"] and time.monotonic() < deadline:
        time.sleep(0.5)


def twin(path: str) -> str:
    head, sep, query = path.partition("?")
    head = "/index" if head == "/" else head
    return f"{head}.json{sep}{query}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of every table")
    parser.add_argument("--repeats", type=int, default=11, help="requests per page (median)")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "ui")
    parser.add_argument("--no-mlflow", action="store_true", help="time only the dashboard")
    args = parser.parse_args(argv)
    n = sizes(args.quick)
    work = args.work / ("quick" if args.quick else "full")
    config = project(work)
    db = work / ".conveyor" / "conveyor.db"
    if db.exists() and counts(config) != n:
        log(f"{db} holds other sizes: starting again")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    if not db.exists():
        t0 = time.perf_counter()
        fill(config, n)
        log(f"filled in {time.perf_counter() - t0:.0f} s ({db.stat().st_size / 1e6:.0f} MB)")
    have = counts(config)
    assert have == n, (have, n)
    mlflow = None
    if not args.no_mlflow:
        mlflow = MlflowSide(work.parent / f"mlflow-{work.name}", n["runs"])
        mlflow.fill()
        mlflow.start()
    url, server, thread = serve(config)
    load = os.getloadavg()
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            t0 = time.perf_counter()
            client.get("/monitoring")  # first use imports the monitor's libraries
            cold_list = (time.perf_counter() - t0) * 1000
            _settle(client)
            settled = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            client.get("/monitoring/model4/production")
            cold_env = (time.perf_counter() - t0) * 1000
            for name, path, kind in pages(client, n):
                goal = LIST_GOAL_MS if kind == "list" else ITEM_GOAL_MS
                html = timed(client, path, args.repeats)
                data = timed(client, twin(path), args.repeats)
                row = {"page": name, "path": path, "goal_ms": goal, "html": html, "json": data}
                if mlflow is not None and name in mlflow.questions:
                    row["mlflow"] = mlflow.timed(name, args.repeats)
                rows.append(row)
                log(
                    f"{name}: {html[0]:.1f} ms HTML, {data[0]:.1f} ms JSON"
                    + (f", MLflow {row['mlflow']['ms']:.1f} ms" if "mlflow" in row else "")
                )
    finally:
        server.should_exit = True
        thread.join(30)
        if mlflow is not None:
            mlflow.stop()
    lines = [
        f"# Dashboard page times ({'quick: ' if args.quick else ''}"
        f"{n['runs']:,} runs, {n['versions']:,} versions, {n['releases']:,} releases, "
        f"{n['events']:,} events)",
        "",
        f"SQLite store; median of {args.repeats} requests per page; server time from the "
        "Server-Timing header (handler, queries, template), round trip from the client on "
        f"127.0.0.1. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load[0]:.1f} when timing began and "
        f"{os.getloadavg()[0]:.1f} at the end (other work shared the machine); "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "`.venv/bin/python benchmarks/ui_bench.py" + (" --quick" if args.quick else "") + "`",
        "",
        "| page | HTML server ms | HTML round trip ms | JSON server ms | JSON round trip ms "
        "| goal ms | met | MLflow round trip ms | MLflow / ours (round trip) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        html, data = r["html"], r["json"]
        met = max(html[0], data[0]) <= r["goal_ms"] and html[2] == data[2] == 200
        theirs = r.get("mlflow")
        beside = f"{theirs['ms']:.1f} | {theirs['ms'] / data[1]:.1f}×" if theirs else "– | –"
        lines.append(
            f"| {r['page']} (`{r['path']}`) | {html[0]:.1f} | {html[1]:.1f} | {data[0]:.1f} "
            f"| {data[1]:.1f} | {r['goal_ms']:.0f} | {'yes' if met else 'NO'} | {beside} |"
        )
    from conveyor.dashboard.views import MONITOR_BUDGET_S

    lines += [
        "",
        f"Monitoring, cold: the first visit took {cold_list:.0f} ms (it computes reports for "
        f"{MONITOR_BUDGET_S * 1000:.0f} ms at most, after the first, which imports the monitor's "
        f"libraries; the worker thread computes the rest: all {MODELS * len(ENVIRONMENTS)} "
        f"were kept {settled / 1000:.1f} s after the first visit); an environment's page "
        f"visited first took {cold_env:.0f} ms (its report, its open window and its earlier "
        "windows for 50 ms at most, the worker computing the rest). The "
        "table's times are of pages whose reports are kept (a report is recomputed in the "
        "background once older than 30 s).",
    ]
    if mlflow is not None:
        lines += ["", "MLflow's requests, each beside the page that answers the same question:", ""]
        lines += [
            f"- {name}: `{q['method']} {q['path']}`"
            + (f" `{json.dumps(q['body'])}`" if q.get("body") else "")
            + (f", then `GET {q['then']}`" if q.get("then") else "")
            for name, q in mlflow.questions.items()
        ]
        lines += ["", mlflow.describe()]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "results" / ("ui-quick.md" if args.quick else "ui.md")
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"sizes": n, "pages": rows}, indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
