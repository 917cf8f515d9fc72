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
list page, 300 ms for a run or version page. Prints a Markdown table and writes it to
benchmarks/results/ui.md (ui-quick.md for --quick).
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


def twin(path: str) -> str:
    head, sep, query = path.partition("?")
    head = "/index" if head == "/" else head
    return f"{head}.json{sep}{query}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of every table")
    parser.add_argument("--repeats", type=int, default=11, help="requests per page (median)")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "ui")
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
    url, server, thread = serve(config)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            client.get("/monitoring")  # first use imports the monitor's libraries
            for name, path, kind in pages(client, n):
                goal = LIST_GOAL_MS if kind == "list" else ITEM_GOAL_MS
                html = timed(client, path, args.repeats)
                data = timed(client, twin(path), args.repeats)
                rows.append(
                    {"page": name, "path": path, "goal_ms": goal, "html": html, "json": data}
                )
                log(f"{name}: {html[0]:.1f} ms HTML, {data[0]:.1f} ms JSON")
    finally:
        server.should_exit = True
        thread.join(30)
    lines = [
        f"# Dashboard page times ({'quick: ' if args.quick else ''}"
        f"{n['runs']:,} runs, {n['versions']:,} versions, {n['releases']:,} releases, "
        f"{n['events']:,} events)",
        "",
        f"SQLite store; median of {args.repeats} requests per page; server time from the "
        "Server-Timing header (handler, queries, template), round trip from the client on "
        f"127.0.0.1. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d}.",
        "`.venv/bin/python benchmarks/ui_bench.py" + (" --quick" if args.quick else "") + "`",
        "",
        "| page | HTML server ms | HTML round trip ms | JSON server ms | JSON round trip ms "
        "| goal ms | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        html, data = r["html"], r["json"]
        met = max(html[0], data[0]) <= r["goal_ms"] and html[2] == data[2] == 200
        lines.append(
            f"| {r['page']} (`{r['path']}`) | {html[0]:.1f} | {html[1]:.1f} | {data[0]:.1f} "
            f"| {data[1]:.1f} | {r['goal_ms']:.0f} | {'yes' if met else 'NO'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "results" / ("ui-quick.md" if args.quick else "ui.md")
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"sizes": n, "pages": rows}, indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
