"""Release reliability under load: two `conveyor serve` replicas share one store while a canary
of a healthy version is pushed to 50% and rolled back by hand, then while the controller rolls
back a canary of a deliberately bad version on its own.

    .venv/bin/python benchmarks/release_bench.py                  # ~2.5 min (60 s per scenario)
    .venv/bin/python benchmarks/release_bench.py --duration 30
    .venv/bin/python benchmarks/release_bench.py --postgres postgresql+psycopg://me@host/bench

Prints a Markdown table (figure | measured | goal | met) and writes it with the raw figures to
benchmarks/results/release.{md,json}. Scenario 1 counts failed requests, times the rollback
from its commit until every replica serves only the stable version, and counts request-log rows
lost across a SIGTERM of both replicas; scenario 2 counts what the bad version answered before
`conveyor watch` rolled it back. Everything runs on this one host and nothing is pinned to a
CPU: the replicas, the controller, the commands and the load generator share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from suite import environments, serving
from suite.machine import (
    commit,
    describe_machine,
    load_average,
    package_version,
    quiet_feature_names,
)
from suite.release_load import Answer, BenchError, Gateway, LoadRun, Process, wait_for

MODEL = "release-bench"
ENV = "production"
N_BODIES = 512
CANARY_STEPS = (10, 50)  # the canary's weights; the second step lasts 10 minutes


def log(message: str) -> None:
    print(f"[release-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds per scenario (60)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    parser.add_argument(
        "--step-seconds", type=float, default=5, help="length of the canary's 10%% step (5)"
    )
    parser.add_argument(
        "--min-requests", type=int, default=50, help="analysis: requests before a verdict (50)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.2, help="`conveyor watch --interval` (0.2)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL SQLAlchemy URL for the store (default: a SQLite file); use a "
        "database of its own: the bench creates its tables and adds versions to it",
    )
    parser.add_argument("--work", type=Path, default=environments.DEFAULT_WORK / "release")
    parser.add_argument("--results", type=Path, default=environments.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1 or args.step_seconds <= 0:
        parser.error("--duration and --step-seconds must be positive, --concurrency at least 1")
    if args.postgres and not args.postgres.startswith("postgresql"):
        parser.error(
            f"--postgres takes a URL such as postgresql+psycopg://..., not {args.postgres!r}"
        )
    return args


# -- models and the project ----------------------------------------------------------------------


@dataclass
class Bench:
    """The project both scenarios run on, and how to start its processes."""

    root: Path
    config: Any
    env: dict[str, str]
    logs: Path
    versions: dict[str, int]  # stable, healthy, bad -> version number
    bodies: list[bytes]
    model: dict[str, Any]  # accuracies and the healthy candidate's agreement with the stable one

    def conveyor(self, *args: str, timeout: float = 60) -> tuple[str, float, float]:
        """Run one `conveyor` command on the project; returns (stdout, started, ended).

        Raises:
            BenchError: it exited non-zero (its stderr is in the message).
        """
        argv = [str(environments.conveyor_bin() / "conveyor"), *args, "-C", str(self.root)]
        started = time.time()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        ended = time.time()
        if done.returncode != 0:
            raise BenchError(
                f"`conveyor {' '.join(args)}` exited {done.returncode}: "
                f"{done.stderr.strip()[-1500:]}"
            )
        return done.stdout, started, ended

    def process(self, name: str, *args: str) -> Process:
        argv = [str(environments.conveyor_bin() / "conveyor"), *args, "-C", str(self.root)]
        return Process(name, argv, self.env, self.logs / f"{name}.log")


def make_bench(args: argparse.Namespace, work: Path) -> Bench:
    """Fit the three versions, write a fresh project and register them (v1 in production)."""
    import pandas as pd

    from conveyor.actions.models import register_fitted
    from conveyor.config import load_config

    data = serving.make_dataset()
    stable = serving.fit_model(data)
    # a close relative of the stable model: a canary of it is healthy
    healthy = serving.fit_model(data, max_iter=80, max_leaf_nodes=21)
    # the same recipe on inverted labels: it answers the opposite of the truth
    bad = serving.fit_model(type(data)(data.x_train, 1 - data.y_train, data.x_test, data.y_test))
    x, y = data.x_test, data.y_test
    model = {
        "features": x.shape[1],
        "accuracy": {
            "stable": float(stable.score(x, y)),
            "healthy": float(healthy.score(x, y)),
            "bad": float(bad.score(x, y)),
        },
        "agreement_healthy_vs_stable": float(np.mean(stable.predict(x) == healthy.predict(x))),
        "agreement_bad_vs_stable": float(np.mean(stable.predict(x) == bad.predict(x))),
    }
    root = work / "project"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    store = f"store: {{url: '{args.postgres}'}}\n" if args.postgres else ""
    first, second = CANARY_STEPS
    (root / "conveyor.yaml").write_text(
        "project: release-bench\n"
        f"{store}"
        "deploy:\n"
        f"  {ENV}:\n"
        "    strategy: canary\n"
        f"    steps: [{{weight: {first}, for: {args.step_seconds:g}s}}, "
        f"{{weight: {second}, for: 10m}}]\n"
        f"    analysis: {{min_requests: {args.min_requests}}}\n"
    )
    env = environments.base_env(work)
    config = load_config(root / "conveyor.yaml", env=env)
    features = pd.DataFrame(x[:2000], columns=data.columns)
    versions = {}
    with quiet_feature_names():
        for key, fitted in (("stable", stable), ("healthy", healthy), ("bad", bad)):
            aliases = (ENV,) if key == "stable" else ()
            registered = register_fitted(
                config, fitted, features, name=MODEL, task="classification", aliases=aliases
            )
            versions[key] = registered.version
    bodies = [json.dumps({"instances": x[i : i + 1].tolist()}).encode() for i in range(N_BODIES)]
    return Bench(root, config, env, work / "logs", versions, bodies, model)


# -- gateways, load and the store ----------------------------------------------------------------


def start_gateways(bench: Bench, tag: str) -> tuple[list[Process], list[Gateway]]:
    """Two `conveyor serve` replicas of the project, ready and serving the stable version."""
    processes, gateways = [], []
    for i in (1, 2):
        port = serving.free_port()
        name = f"{tag}-gateway{i}"
        proc = bench.process(name, "serve", "--port", str(port), "--log-level", "warning")
        proc.start()
        processes.append(proc)
        gateways.append(Gateway(name, port))
    try:
        for proc, gw in zip(processes, gateways, strict=True):

            def ready(proc: Process = proc, gw: Gateway = gw) -> bool:
                proc.check_alive()
                try:
                    status, answer = serving.http(
                        "GET", f"http://127.0.0.1:{gw.port}/v1/models/{MODEL}/versions", timeout=2
                    )
                except OSError:
                    return False
                route = answer.get("environments", {}).get(ENV, {}) if status == 200 else {}
                return route.get("stable") == bench.versions["stable"]

            wait_for(ready, f"{gw.name} to serve version {bench.versions['stable']}", 90)
    except BaseException:
        for proc in processes:
            proc.stop()
        raise
    return processes, gateways


def stop_all(processes: list[Process]) -> list[dict[str, Any]]:
    """SIGTERM each process (gracefully: the gateways flush their request log) and wait."""
    stopped = []
    for proc in processes:
        code = proc.stop()
        # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done: -15
        graceful = not proc.killed and code in (0, -signal.SIGTERM)
        stopped.append(
            {
                "name": proc.name,
                "exit_code": code,
                "graceful": graceful,
                "stop_s": round(proc.stop_seconds or 0.0, 3),
            }
        )
    return stopped


def sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


def release_events(bench: Bench, release_id: str) -> dict[str, dict[str, Any]]:
    """The release's events by kind (the last of each kind), with their time as epoch seconds."""
    from conveyor.actions.models import open_registry
    from conveyor.store.metadata import as_utc

    out: dict[str, dict[str, Any]] = {}
    with open_registry(bench.config) as registry:
        for event in registry.store.events(entity="release", entity_id=release_id, limit=1000):
            at: datetime = as_utc(event.at)
            out[event.kind] = {"at": at.timestamp(), "payload": event.payload}
    return out


def release_state(bench: Bench, release_id: str) -> str:
    from conveyor.actions.models import open_registry
    from conveyor.release.releases import Releases

    with open_registry(bench.config) as registry:
        return Releases(bench.config, registry).get(release_id).state


def logged_rows(bench: Bench, since: float) -> set[str]:
    """Request ids of the prediction log's requests with role 'serve' since ``since``."""
    from datetime import UTC

    from conveyor.store.predictionlog.files import LogFiles
    from conveyor.store.predictionlog.layout import log_url
    from conveyor.store.predictionlog.query import read_requests

    table = read_requests(
        LogFiles(log_url(bench.config.artifacts_url())),
        MODEL,
        ENV,
        since=datetime.fromtimestamp(since, UTC),
        roles=["serve"],
        columns=["request_id"],
    )
    return set(table.column("request_id").to_pylist())


def load_summary(load: LoadRun) -> dict[str, Any]:
    """Requests sent, failed (non-200 or no answer), by gateway and version, and latency."""
    answers = load.answers
    seconds = max(load.stopped_at - load.started_at, 1e-9)
    failed = [a for a in answers if a.status != 200]
    latencies = np.array([a.latency for a in answers if a.status == 200]) * 1000
    return {
        "requests": len(answers),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(answers) / seconds, 1),
        "failed": len(failed),
        "failures": dict(Counter(a.error or f"HTTP {a.status}" for a in failed)),
        "by_gateway": dict(Counter(load.gateways[a.gateway].name for a in answers)),
        "by_version": {
            str(k): v for k, v in sorted(Counter(a.version for a in answers if a.version).items())
        },
        "p50_ms": round(float(np.percentile(latencies, 50)), 3) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 3) if len(latencies) else None,
    }


def log_loss(bench: Bench, load: LoadRun) -> dict[str, Any]:
    """Requests answered 200 against their request-log rows (role 'serve') in the store."""
    answered = {a.request_id for a in load.answers if a.status == 200 and a.request_id}
    rows = logged_rows(bench, load.started_at - 5)
    return {
        "answered_200": len(answered),
        "rows": len(rows & answered),
        "lost": len(answered - rows),
        "rows_without_answer": len(rows - answered),
    }


def only(state: dict[str, Any], version: int) -> bool:
    """Whether a route sends every request to ``version`` and nothing anywhere else."""
    return (
        state.get("stable") == version and state.get("canary") is None and not state.get("shadow")
    )


def settled_after(
    routes: list[tuple[float, dict[str, Any]]], since: float, version: int
) -> float | None:
    """Seconds from ``since`` until the route last became (and stayed) ``only(version)``."""
    settled = None
    for seen, state in routes:
        if only(state, version):
            settled = seen if settled is None else settled
        else:
            settled = None
    return None if settled is None else max(0.0, settled - since)


def poll_gap(times: list[float], around: float) -> float | None:
    """The longest gap between route polls in the 3 s around ``around`` (the resolution)."""
    near = [t for t in times if around - 1 <= t <= around + 2]
    return max(np.diff(near)) if len(near) > 1 else None


# -- scenario 1: a healthy canary to 50%, rolled back by hand ------------------------------------


def rollback_scenario(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    stable, candidate = bench.versions["stable"], bench.versions["healthy"]
    processes, gateways = start_gateways(bench, "rollback")
    load = LoadRun(gateways, MODEL, ENV, bench.bodies, concurrency=args.concurrency)
    result: dict[str, Any] = {
        "stable": stable,
        "candidate": candidate,
        "timeline": {},
        "rollback_to_stable_s": None,  # stays None when the canary never reached 50%
    }
    timeline = result["timeline"]
    try:
        load.start()
        t0 = load.started_at
        sleep_until(t0 + max(2.0, 0.1 * args.duration))
        out, began, _ = bench.conveyor("deploy", MODEL, str(candidate), "--to", ENV, "--json")
        release = json.loads(out)["release"]
        result["release"] = release["id"]
        timeline["deploy_s"] = round(began - t0, 2)
        log(f"canary {release['id']}: v{candidate} at {release['weight']:g}%")
        first, second = CANARY_STEPS

        def routed(weight: float) -> bool:
            for g in range(len(gateways)):
                processes[g].check_alive()
                state = load.route(g)
                if state.get("canary") != candidate or state.get("weight") != weight:
                    return False
            return True

        wait_for(lambda: routed(first), f"both replicas to route {first}% to v{candidate}", 15)
        timeline["canary_routed_s"] = round(time.time() - t0, 2)
        sleep_until(began + args.step_seconds)
        outcome = _step_to_next(bench, release["id"], args)
        result["step"] = outcome
        if outcome.get("action") != "next":
            result["error"] = (
                f"the healthy canary did not reach {second}%: {outcome.get('action')} "
                f"({outcome.get('why') or outcome.get('verdict', {}).get('summary')})"
            )
            log(result["error"])
        else:
            wait_for(
                lambda: routed(second), f"both replicas to route {second}% to v{candidate}", 15
            )
            at_half = time.time()
            timeline["at_50_s"] = round(at_half - t0, 2)
            log(f"both replicas route {second}% to v{candidate}")
            sleep_until(max(t0 + 0.5 * args.duration, at_half + 2.0))
            _, began, ended = bench.conveyor("rollback", ENV, "--model", MODEL)
            timeline["rollback_command_s"] = round(began - t0, 2)
            result["rollback_command_wall_s"] = round(ended - began, 3)
            log("rolled back by hand")
        sleep_until(max(t0 + args.duration, time.time() + 3.0))
        for proc in processes:
            proc.check_alive()
    finally:
        load.stop()
        result["gateways"] = stop_all(processes)
    result["load"] = load_summary(load)
    result["log"] = log_loss(bench, load)
    if "rollback_command_s" in timeline:
        result |= _convergence(bench, load, result["release"], stable, candidate)
    return result


def _step_to_next(bench: Bench, release_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """`conveyor release step` until the release moves on (the analysis may wait for data)."""
    deadline = time.time() + 30
    while True:
        out, _, _ = bench.conveyor("release", "step", release_id, "--json")
        outcomes = json.loads(out)
        outcome = outcomes[0] if outcomes else {"action": "none", "why": "no active release"}
        if outcome.get("action") != "wait" or time.time() > deadline:
            return outcome
        time.sleep(0.5)


def _convergence(
    bench: Bench, load: LoadRun, release_id: str, stable: int, candidate: int
) -> dict[str, Any]:
    """From the rollback's commit (its event) until every replica serves only the stable version:
    each replica's route as polled, and the last answer any caller got from the candidate."""
    events = release_events(bench, release_id)
    rolled_back_at = events["release.rolled_back"]["at"]
    replicas = {}
    for g, gw in enumerate(load.gateways):
        replicas[gw.name] = {
            "route_settled_s": _round(settled_after(load.routes[g], rolled_back_at, stable)),
            "poll_gap_s": _round(poll_gap(load.poll_times[g], rolled_back_at)),
        }
    late = [a for a in load.answers if a.version == candidate and a.answered > rolled_back_at]
    last = max((a.answered for a in late), default=None)
    parts = [r["route_settled_s"] for r in replicas.values()]
    parts.append(0.0 if last is None else last - rolled_back_at)
    return {
        "commit_at": rolled_back_at,
        "replicas": replicas,
        "candidate_answers_after_commit": len(late),
        "candidate_sent_after_commit": sum(a.sent > rolled_back_at for a in late),
        "last_candidate_answer_s": _round(None if last is None else last - rolled_back_at),
        "rollback_to_stable_s": None if None in parts else _round(max(parts)),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# -- scenario 2: a bad canary, rolled back by the controller -------------------------------------


def bad_canary_scenario(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    stable, bad = bench.versions["stable"], bench.versions["bad"]
    processes, gateways = start_gateways(bench, "bad-canary")
    controller = bench.process(
        "bad-canary-controller",
        "watch",
        "--interval",
        f"{args.interval:g}",
        "--url",
        f"http://127.0.0.1:{gateways[0].port}",
    )
    controller.start()
    load = LoadRun(gateways, MODEL, ENV, bench.bodies, concurrency=args.concurrency)
    result: dict[str, Any] = {
        "stable": stable,
        "candidate": bad,
        "timeline": {},
        "rolled_back": False,
        "bad_answers": None,
        "bad_share": None,
        "start_to_rollback_s": None,
    }
    timeline = result["timeline"]
    try:
        load.start()
        t0 = load.started_at
        sleep_until(t0 + max(2.0, 0.1 * args.duration))
        controller.check_alive()
        out, began, _ = bench.conveyor("deploy", MODEL, str(bad), "--to", ENV, "--json")
        release_id = json.loads(out)["release"]["id"]
        result["release"] = release_id
        timeline["deploy_s"] = round(began - t0, 2)
        log(f"bad canary {release_id}: v{bad} at {CANARY_STEPS[0]}%")
        deadline = max(t0 + args.duration, began + 30)
        state = "running"
        while state in ("running", "paused") and time.time() < deadline:
            controller.check_alive()
            time.sleep(0.25)
            state = release_state(bench, release_id)
        result["state"] = state
        log(f"bad canary: {state}")
        sleep_until(max(t0 + args.duration, time.time() + 2.0))
        for proc in processes:
            proc.check_alive()
    finally:
        load.stop()
        result["controller"] = stop_all([controller])[0]
        result["gateways"] = stop_all(processes)
    result["load"] = load_summary(load)
    result["log"] = log_loss(bench, load)
    if "release" in result:
        result |= _bad_figures(bench, load, result["release"], stable, bad)
    return result


def _bad_figures(
    bench: Bench, load: LoadRun, release_id: str, stable: int, bad: int
) -> dict[str, Any]:
    events = release_events(bench, release_id)
    answers: list[Answer] = load.answers
    served = [a for a in answers if a.version == bad and a.status == 200]
    figures: dict[str, Any] = {
        "bad_answers": len(served),
        "bad_share": len(served) / len(answers) if answers else None,
        "canary_started_at": events["release.started"]["at"],
    }
    rolled = events.get("release.rolled_back")
    if rolled is None:
        from conveyor.actions.models import open_registry
        from conveyor.release.releases import Releases

        with open_registry(bench.config) as registry:  # leave the store clean for a re-run
            Releases(bench.config, registry).abort(release_id, "release bench: not rolled back")
        return figures | {"rolled_back": False, "start_to_rollback_s": None}
    start = figures["canary_started_at"]
    after = [a for a in served if a.answered > rolled["at"]]
    replicas = {
        gw.name: _round(settled_after(load.routes[g], rolled["at"], stable))
        for g, gw in enumerate(load.gateways)
    }
    return figures | {
        "rolled_back": True,
        "rolled_back_at": rolled["at"],
        "why": rolled["payload"].get("why"),
        "start_to_rollback_s": _round(rolled["at"] - start),
        "first_bad_answer_s": _round(min((a.answered for a in served), default=start) - start),
        "bad_answers_after_rollback": len(after),
        "replicas_settled_s": replicas,
    }


# -- the table -----------------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def figure_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure the release benchmark reports, with its goal and whether it was met."""
    one, two = results["rollback"], results["bad_canary"]
    rows = []

    def row(figure: str, measured: str, goal: str = "", met: bool | None = None) -> None:
        rows.append({"figure": figure, "measured": measured, "goal": goal, "met": met})

    load = one["load"]
    row(
        "1 · requests sent (canary to 50%, rollback)",
        f"{_n(load['requests'])} "
        f"({_n(load['requests_per_s'])} req/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms)",
    )
    row("1 · failed requests (non-200 or no answer)", _n(load["failed"]), "0", load["failed"] == 0)
    settled = one.get("rollback_to_stable_s")
    if settled is None:
        measured = f"not measured: {one.get('error', 'no rollback')}"
    else:
        per = ", ".join(f"{r['route_settled_s']:.2f} s" for r in one["replicas"].values())
        measured = (
            f"{settled:.2f} s (routes {per}; last v{one['candidate']} answer "
            f"{_s(one['last_candidate_answer_s'])})"
        )
    row(
        "1 · rollback commit → every replica serves only v1",
        measured,
        "≤ 1 s",
        settled is not None and settled <= 1.0,
    )
    lost = one["log"]
    row(
        "1 · request-log rows lost (after SIGTERM of both)",
        f"{_n(lost['lost'])} of {_n(lost['answered_200'])}{_stopped(one['gateways'])}",
        "0",
        lost["lost"] == 0,
    )
    load = two["load"]
    row(
        "2 · requests sent (bad canary at 10%)",
        f"{_n(load['requests'])} ({_n(load['requests_per_s'])} req/s)",
    )
    row("2 · failed requests", _n(load["failed"]), "0", load["failed"] == 0)
    share = two.get("bad_share")
    if share is None:
        row("2 · answered by the bad version", "n/a", "< 1% of all requests", False)
    else:
        row(
            "2 · answered by the bad version",
            f"{_n(two['bad_answers'])} ({share:.2%} of all)",
            "< 1% of all requests",
            bool(two.get("rolled_back")) and share < 0.01,
        )
    if two.get("rolled_back"):
        why = str(two["why"]).removeprefix("rolled back: ")
        measured = f"{two['start_to_rollback_s']:.2f} s ({why})"
    else:
        measured = "not rolled back"
    row(
        "2 · canary start → automatic rollback (events)",
        measured,
        "automatic",
        bool(two.get("rolled_back")),
    )
    lost = two["log"]
    row(
        "2 · request-log rows lost",
        f"{_n(lost['lost'])} of {_n(lost['answered_200'])}{_stopped(two['gateways'])}",
        "0",
        lost["lost"] == 0,
    )
    return rows


def _stopped(gateways: list[dict[str, Any]]) -> str:
    if all(g["graceful"] for g in gateways):
        return ", both stopped gracefully"
    return ", NOT stopped gracefully: " + ", ".join(
        f"{g['name']} exit {g['exit_code']}" for g in gateways if not g["graceful"]
    )


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Conveyor releases: reliability under load",
        "",
        f"{meta['date']}; {meta['machine']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. {meta['note']}",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for r in results["figures"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        measured = r["measured"].replace("|", "/")
        lines.append(f"| {r['figure']} | {measured} | {r['goal']} | {met} |")
    lines += ["", *_notes(results)]
    return "\n".join(lines) + "\n"


def _notes(results: dict[str, Any]) -> list[str]:
    meta, one, two, model = (
        results["meta"],
        results["rollback"],
        results["bad_canary"],
        results["model"],
    )
    s = meta["settings"]
    acc = model["accuracy"]
    notes = [
        f"Setup: two `conveyor serve --workers 1` replicas on one {meta['store']} store "
        f"(`serve.poll_seconds` {s['poll_seconds']:g} s, request log flushed every "
        f"{s['log_flush_seconds']:g} s); {meta['concurrency']} workers of an asyncio client "
        "send single-row predictions back to back, alternating between the replicas, and read "
        "each replica's `/v1/models/NAME/versions` every 10 ms. Canary steps "
        f"{s['steps']}, analysis `min_requests: {s['min_requests']}`, otherwise defaults. "
        f"Each scenario runs {meta['duration_s']:g} s of load.",
        "",
        f"Models: `HistGradientBoostingClassifier` on `make_classification(50_000, "
        f"{model['features']})`: v{one['stable']} (stable, accuracy {acc['stable']:.3f}), "
        f"v{one['candidate']} (a close relative, accuracy {acc['healthy']:.3f}, agrees with "
        f"v{one['stable']} on {model['agreement_healthy_vs_stable']:.1%}), v{two['candidate']} "
        f"(trained on inverted labels, accuracy {acc['bad']:.3f}).",
    ]
    t = one["timeline"]
    if "rollback_command_s" in t:
        replicas = "; ".join(
            f"{name}: route settled {_s(r['route_settled_s'])}, longest poll gap "
            f"{_s(r['poll_gap_s'])}"
            for name, r in one["replicas"].items()
        )
        notes += [
            "",
            f"Scenario 1: `conveyor deploy` at {t['deploy_s']:g} s, both replicas at 10% by "
            f"{t['canary_routed_s']:g} s, `conveyor release step` to 50% (both by "
            f"{t['at_50_s']:g} s), `conveyor rollback {ENV}` at {t['rollback_command_s']:g} s "
            f"({one['rollback_command_wall_s']:.2f} s wall for the command). Measured from the "
            f"`release.rolled_back` event's time (written inside the commit): {replicas}; "
            f"{one['candidate_answers_after_commit']} answers from v{one['candidate']} arrived "
            f"after it ({one['candidate_sent_after_commit']} of them sent after it). Answers by "
            f"version: {one['load']['by_version']}.",
        ]
    elif one.get("error"):
        notes += ["", f"Scenario 1 could not roll back from 50%: {one['error']}."]
    if two.get("rolled_back"):
        settled = ", ".join(f"{n} {_s(v)}" for n, v in two["replicas_settled_s"].items())
        notes += [
            "",
            f"Scenario 2: `conveyor watch --interval {s['interval']:g}` ran as a process; "
            f"`conveyor deploy` of v{two['candidate']} at {two['timeline']['deploy_s']:g} s; the "
            f"first bad answer came {_s(two['first_bad_answer_s'])} after the release started, "
            f"the controller rolled it back after {_s(two['start_to_rollback_s'])} "
            f"({two['why']}), replicas settled on v{two['stable']} {settled} after that, and "
            f"{two['bad_answers_after_rollback']} bad answers arrived after the rollback.",
        ]
    gws = one["gateways"] + two["gateways"]
    graceful = all(g["graceful"] for g in gws)
    slowest = max(g["stop_s"] for g in gws)
    notes += [
        "",
        f"Stopping: each gateway got SIGTERM once the load had stopped; "
        f"{'all' if graceful else 'NOT all'} shut down gracefully (slowest {slowest:.2f} s; "
        "uvicorn exits with -15 by re-raising the signal after its shutdown); the request-log "
        "rows were counted after that.",
    ]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    notes += ["", f"Versions: {versions}."]
    return notes


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log("fitting three versions and registering them")
    began = time.monotonic()
    bench = make_bench(args, work)
    log(f"set up in {time.monotonic() - began:.1f} s: versions {bench.versions}")
    serve = bench.config.serve
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": describe_machine(),
            "load_before": load_average(),
            "note": (
                f"Everything on this one host, nothing pinned to a CPU: two gateways, the "
                f"controller, the CLI commands and the load generator share {os.cpu_count()} "
                "cores, so the figures include that contention."
            ),
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "store": "PostgreSQL" if args.postgres else "SQLite file",
            "setup_s": round(time.monotonic() - began, 1),
            "settings": {
                "poll_seconds": serve.poll_seconds,
                "log_flush_seconds": serve.log.flush_seconds,
                "interval": args.interval,
                "min_requests": args.min_requests,
                "steps": f"[{{weight: {CANARY_STEPS[0]}, for: {args.step_seconds:g}s}}, "
                f"{{weight: {CANARY_STEPS[1]}, for: 10m}}]",
            },
            "versions": {
                "conveyor": f"{package_version('conveyor-ml')} (commit {commit()})",
                "python": platform.python_version(),
                "scikit-learn": package_version("scikit-learn"),
            },
        },
        "model": bench.model,
        "versions": bench.versions,
    }
    log("scenario 1: a healthy canary to 50%, then `conveyor rollback`")
    results["rollback"] = rollback_scenario(bench, args)
    log("scenario 2: a bad canary at 10% under `conveyor watch`")
    results["bad_canary"] = bad_canary_scenario(bench, args)
    results["meta"]["load_after"] = load_average()
    results["figures"] = figure_rows(results)
    table = markdown(results)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "release.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "release.md").write_text(table)
    print(table)
    log(f"wrote {args.results / 'release.md'} and release.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
