"""How often the release judge is wrong: simulated canaries of good and bad candidates.

    .venv/bin/python benchmarks/release_judge.py            # 500 canaries of each kind
    .venv/bin/python benchmarks/release_judge.py --quick    # 25 of each, 60 s steps: < 2 min
    .venv/bin/python benchmarks/release_judge.py --json     # one JSON object on stdout

Each canary is one canary step: 50 requests a second reach the environment, 20% of them the
candidate, and the gateway mirrors each of the candidate's requests to the stable version (1%
of mirrors dropped, as under load). Labels arrive for half of the requests one second after
them. Latency is a lognormal around 2 ms plus scheduling noise: 2% of requests, on either
version, wait an extra exponential 15 ms. Both versions fail 0.1% of requests. Every two seconds
the real ``judge`` looks at everything since the step began, as ``conveyor watch`` would; a
rollback ends the canary, and after 120 s a ``promote`` verdict promotes it. A verdict still
waiting then (a check over its bound, not yet shown) gets 120 s more before it counts as
undecided.

The candidates: ``equal`` (another model as accurate as the stable one, disagreeing on about 1%
of requests), ``better`` (more accurate on the 30% of requests where it differs), and the bad
ones: ``inverted-5``/``-20``/``-40`` (the equal model with its predictions inverted on a slice
of 5, 20 or 40% of traffic), ``latency+5ms``, ``errors-2%`` (2% more 5xx) and ``shift`` (the rare
class predicted three times as often: 12% of answers to 35%). False rollbacks are rollbacks of
equal or better candidates; exposure is how many requests the bad candidate answered before its
rollback. ``--quick`` also runs a few canaries through a real SQLite store (the request log's
writer, its feedback files and ``collect()``) and checks they reach the same verdicts.

The full run writes its table to benchmarks/results/release_judge.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.config.deploy import AnalysisConfig
from conveyor.release.analysis import Side, collect, judge

RESULTS = Path(__file__).resolve().parent / "results" / "release_judge.md"
GOOD = ("equal", "better")
BAD = ("inverted-5", "inverted-20", "inverted-40", "latency+5ms", "errors-2%", "shift")
KINDS = GOOD + BAD
STABLE, CANDIDATE = 1, 2
# what the benchmark's environment sets; everything else is AnalysisConfig's default
SETTINGS = {"alpha": 0.01, "min_agreement": 0.95}


@dataclass(frozen=True)
class Traffic:
    """The simulated environment; the defaults are the ones the module docstring describes."""

    rate: float = 50.0  # requests a second
    weight: float = 0.2  # the candidate's share
    seconds: float = 120.0  # the step's length
    hold: float = 120.0  # more time for a verdict still waiting at the end
    interval: float = 2.0  # seconds between looks
    label_share: float = 0.5
    label_delay: float = 1.0
    mirror_drop: float = 0.01
    positive: float = 0.1  # the rare class's share of the truth
    error_rate: float = 0.001
    outliers: float = 0.02  # share of requests delayed by scheduling noise
    outlier_ms: float = 15.0


@dataclass
class Requests:
    """Every request of one canary, drawn up front (vectorised)."""

    at: np.ndarray
    to_candidate: np.ndarray
    truth: np.ndarray
    stable: np.ndarray  # the stable version's prediction
    candidate: np.ndarray
    status: np.ndarray  # of the answer the caller got
    latency: np.ndarray
    mirrored: np.ndarray
    mirror_status: np.ndarray
    mirror_latency: np.ndarray
    labelled: np.ndarray


def draw(kind: str, traffic: Traffic, rng: np.random.Generator) -> Requests:
    horizon = traffic.seconds + traffic.hold
    n = int(rng.poisson(traffic.rate * horizon))
    at = np.sort(rng.random(n) * horizon)
    to_candidate = rng.random(n) < traffic.weight
    truth = rng.random(n) < traffic.positive
    # the stable model: recall 0.8, false-positive rate 0.05 (accuracy 0.935)
    u = rng.random(n)
    stable = np.where(truth, u < 0.8, u < 0.05)
    # another model: its own answer on 30% of requests, the stable one's elsewhere
    own = rng.random(n) < 0.3
    v = rng.random(n)
    if kind == "better":  # recall 0.9, false positives 0.035 where it answers differently
        mine = np.where(truth, v < 0.9, v < 0.035)
    else:
        mine = np.where(truth, v < 0.8, v < 0.05)
    candidate = np.where(own, mine, stable)
    if kind.startswith("inverted-"):
        slice_ = rng.random(n) < int(kind.split("-")[1]) / 100.0
        candidate = np.where(slice_, ~candidate, candidate)
    if kind == "shift":
        candidate = candidate | (rng.random(n) < 0.26)
    errors = np.full(n, traffic.error_rate)
    if kind == "errors-2%":
        errors = np.where(to_candidate, traffic.error_rate + 0.02, errors)
    status = np.where(rng.random(n) < errors, 500, 200)

    def latency() -> np.ndarray:
        base = 2.0 * np.exp(0.25 * rng.standard_normal(n))
        noise = rng.random(n) < traffic.outliers
        return base + np.where(noise, rng.exponential(traffic.outlier_ms, n), 0.0)

    served_latency = latency()
    if kind == "latency+5ms":
        served_latency = np.where(to_candidate, served_latency + 5.0, served_latency)
    return Requests(
        at=at,
        to_candidate=to_candidate,
        truth=truth,
        stable=stable,
        candidate=candidate,
        status=status,
        latency=served_latency,
        mirrored=to_candidate & (rng.random(n) >= traffic.mirror_drop),
        mirror_status=np.where(rng.random(n) < traffic.error_rate, 500, 200),
        mirror_latency=latency(),
        labelled=rng.random(n) < traffic.label_share,
    )


@dataclass
class Outcome:
    decision: str  # rollback, promote, undecided
    exposure: int  # candidate requests answered by then
    seconds: float
    failed: tuple[str, ...]
    verdict: dict[str, Any] | None = None


def run_canary(kind: str, seed: int, traffic: Traffic, analysis: AnalysisConfig) -> Outcome:
    """One canary step judged every ``interval`` seconds on everything since it began."""
    r = draw(kind, traffic, np.random.default_rng(seed))
    sides = {
        "stable": Side(STABLE, "serve"),
        "candidate": Side(CANDIDATE, "serve"),
        "mirror": Side(STABLE, "shadow"),
    }
    ids = [f"{seed}-{i}" for i in range(len(r.at))]
    label_order = np.argsort(r.at + traffic.label_delay, kind="stable")
    next_request = next_label = 0
    t = 0.0
    while True:
        t += traffic.interval
        while next_request < len(r.at) and r.at[next_request] <= t:
            add(sides, r, ids, next_request)
            next_request += 1
        while next_label < len(label_order):
            i = int(label_order[next_label])
            if r.at[i] + traffic.label_delay > t:
                break
            if r.labelled[i]:
                for side in sides.values():
                    if ids[i] in side.status:
                        side.label(ids[i], [int(r.truth[i])])
            next_label += 1
        verdict = judge(sides["stable"], sides["candidate"], analysis, sides["mirror"])
        exposure = sides["candidate"].requests
        if verdict.decision == "rollback":
            failed = tuple(c["name"] for c in verdict.checks if c.get("result") == "fail")
            return Outcome("rollback", exposure, t, failed, verdict.to_dict())
        if t >= traffic.seconds and verdict.decision == "promote":
            return Outcome("promote", exposure, t, (), verdict.to_dict())
        if t >= traffic.seconds + traffic.hold:
            return Outcome("undecided", exposure, t, (), verdict.to_dict())


def _run(job: tuple[str, int, Traffic, AnalysisConfig]) -> Outcome:
    outcome = run_canary(*job)
    outcome.verdict = None  # only the figures cross back from a worker
    return outcome


def add(sides: dict[str, Side], r: Requests, ids: list[str], i: int) -> None:
    """One request as the gateway logs it: a classifier's answer (it has probabilities)."""
    rid = ids[i]
    if not r.to_candidate[i]:
        sides["stable"].add(
            rid, int(r.status[i]), float(r.latency[i]), [int(r.stable[i])], classes=True
        )
        return
    sides["candidate"].add(
        rid, int(r.status[i]), float(r.latency[i]), [int(r.candidate[i])], classes=True
    )
    if r.mirrored[i]:
        sides["mirror"].add(
            rid,
            int(r.mirror_status[i]),
            float(r.mirror_latency[i]),
            [int(r.stable[i])],
            classes=True,
        )


# -- the same canaries through a real store ----------------------------------------------------


def through_store(
    kind: str, seed: int, traffic: Traffic, analysis: AnalysisConfig, work: Path
) -> tuple[str, str]:
    """Write one canary's first ``seconds`` into a SQLite store with the gateway's request-log
    writer and its feedback files, read it back with ``collect()``, and judge both ways.

    Also writes pinned and smoke rows of the candidate that all failed: ``collect`` must not
    read them. Returns (verdict from the store, verdict in memory)."""
    from datetime import UTC, datetime, timedelta

    import orjson

    from conveyor.gateway.requestlog import RequestLog
    from conveyor.store.metadata import Store
    from conveyor.store.predictionlog.layout import attach

    r = draw(kind, traffic, np.random.default_rng(seed))
    upto = int(np.searchsorted(r.at, traffic.seconds))
    since = datetime.now(UTC) - timedelta(seconds=5)
    store = Store("sqlite:///" + str(work / f"{kind}-{seed}.db")).open()
    attach(store, str(work / f"{kind}-{seed}-log"))  # the prediction log beside the store
    try:
        log = RequestLog(store, gateway="bench")
        ids = [f"{seed}-{i}" for i in range(upto)]
        sides = {
            "stable": Side(STABLE, "serve"),
            "candidate": Side(CANDIDATE, "serve"),
            "mirror": Side(STABLE, "shadow"),
        }
        for i in range(upto):
            add(sides, r, ids, i)
            version = CANDIDATE if r.to_candidate[i] else STABLE
            answer = int(r.candidate[i]) if r.to_candidate[i] else int(r.stable[i])
            log.record(
                ids[i],
                "judge",
                version,
                "production",
                "serve",
                int(r.status[i]),
                float(r.latency[i]),
                1,
                "[[0]]",
                _outputs(int(r.status[i]), answer, orjson),
            )
            if r.to_candidate[i] and r.mirrored[i]:
                log.record(
                    ids[i],
                    "judge",
                    STABLE,
                    "production",
                    "shadow",
                    int(r.mirror_status[i]),
                    float(r.mirror_latency[i]),
                    1,
                    "",
                    _outputs(int(r.mirror_status[i]), int(r.stable[i]), orjson),
                )
        for j in range(200):  # requests that are not routed traffic: all failures
            for role in ("pinned", "smoke"):
                log.record(
                    f"{role}-{j}", "judge", CANDIDATE, "production", role, 500, 900.0, 1, "", ""
                )
        log.flush()
        labelled = [i for i in range(upto) if r.labelled[i]]
        log.add_feedback([(ids[i], f"[{int(r.truth[i])}]") for i in labelled], actor="bench")
        for i in labelled:
            for side in sides.values():
                if ids[i] in side.status:
                    side.label(ids[i], [int(r.truth[i])])
        read = collect(
            store,
            "judge",
            "production",
            since,
            [(STABLE, "serve"), (CANDIDATE, "serve"), (STABLE, "shadow")],
        )
    finally:
        store.close()
    from_store = judge(
        read[(STABLE, "serve")], read[(CANDIDATE, "serve")], analysis, read[(STABLE, "shadow")]
    )
    in_memory = judge(sides["stable"], sides["candidate"], analysis, sides["mirror"])
    return from_store.decision, in_memory.decision


def _outputs(status: int, answer: int, orjson: Any) -> str:
    if status != 200:
        return "InternalError: simulated"
    return orjson.dumps({"predictions": [answer], "probabilities": [[0.5, 0.5]]}).decode()


# -- the run -------------------------------------------------------------------------------


def summarise(kind: str, outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    decisions = Counter(o.decision for o in outcomes)
    rolled = [o for o in outcomes if o.decision == "rollback"]
    exposure = np.array([o.exposure for o in rolled]) if rolled else np.array([])
    caught_by = Counter(name for o in rolled for name in o.failed)
    return {
        "kind": kind,
        "canaries": n,
        "rollback": decisions["rollback"] / n,
        "promote": decisions["promote"] / n,
        "undecided": decisions["undecided"] / n,
        "exposure_median": float(np.median(exposure)) if len(exposure) else None,
        "exposure_p95": float(np.percentile(exposure, 95)) if len(exposure) else None,
        "seconds_median": float(np.median([o.seconds for o in rolled])) if rolled else None,
        "caught_by": dict(caught_by.most_common()),
    }


def table(rows: list[dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| candidate | canaries | rolled back | promoted | undecided | exposure median "
        "| exposure p95 | seconds median | caught by |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        caught = ", ".join(f"{k} {v}" for k, v in row["caught_by"].items()) or "-"
        lines.append(
            f"| {row['kind']} | {row['canaries']} | {row['rollback']:.1%} | "
            f"{row['promote']:.1%} | {row['undecided']:.1%} | {fmt(row['exposure_median'])} | "
            f"{fmt(row['exposure_p95'])} | {fmt(row['seconds_median'])} | {caught} |"
        )
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["kind"]: r for r in rows}
    good = [by[k] for k in GOOD if k in by]
    total = sum(r["canaries"] for r in good)
    false = sum(r["rollback"] * r["canaries"] for r in good) / total if total else None
    return {
        "false_rollback_rate": false,
        "detection_rate": {k: by[k]["rollback"] for k in BAD if k in by},
        "exposure_median": {k: by[k]["exposure_median"] for k in BAD if k in by},
        "exposure_p95": {k: by[k]["exposure_p95"] for k in BAD if k in by},
    }


def goals(result: dict[str, Any]) -> list[str]:
    """The figures the judge must reach, each with whether it did."""
    out = []
    false = result["false_rollback_rate"]
    if false is not None:
        ok = "met" if false <= 0.01 else "NOT met"
        out.append(f"- false rollbacks {false:.2%} (goal <= 1%): {ok}")
    for kind, rate in result["detection_rate"].items():
        out.append(
            f"- {kind} caught {rate:.1%} (goal >= 99%): {'met' if rate >= 0.99 else 'NOT met'}"
        )
    for kind in ("inverted-20", "inverted-40"):
        median = result["exposure_median"].get(kind)
        if median is not None:
            ok = "met" if median <= 100 else "NOT met"
            out.append(f"- {kind} exposure median {median:.0f} requests (goal <= 100): {ok}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canaries", type=int, default=500, help="canaries of each kind (500)")
    parser.add_argument("--quick", action="store_true", help="25 canaries of each kind, 60 s steps")
    parser.add_argument("--workers", type=int, default=1, help="processes (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--write", type=Path, help=f"write the table here (the full run: {RESULTS})"
    )
    parser.add_argument(
        "--store-canaries",
        type=int,
        default=None,
        help="canaries of each kind also run through a SQLite store and collect() "
        "(1 with --quick, else 0)",
    )
    args = parser.parse_args(argv)
    canaries = 25 if args.quick else args.canaries
    if canaries < 1 or args.workers < 1:
        parser.error("--canaries and --workers must be at least 1")
    traffic = Traffic(seconds=60.0, hold=60.0) if args.quick else Traffic()
    analysis = AnalysisConfig(**SETTINGS)
    started = time.perf_counter()
    rows = []
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    try:
        for kind in args.kinds:
            k = KINDS.index(kind)
            seeds = [args.seed * 1_000_003 + k * 100_003 + i for i in range(canaries)]
            jobs = [(kind, seed, traffic, analysis) for seed in seeds]
            if pool is None:
                outcomes = [run_canary(*job) for job in jobs]
            else:
                outcomes = list(pool.map(_run, jobs, chunksize=max(1, canaries // 20)))
            rows.append(summarise(kind, outcomes))
            print(
                f"[release-judge] {kind}: {rows[-1]['rollback']:.1%} rolled back "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
    finally:
        if pool is not None:
            pool.shutdown()
    store_checks = (
        args.store_canaries if args.store_canaries is not None else (1 if args.quick else 0)
    )
    agreed = []
    if store_checks:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            for kind in args.kinds:
                for i in range(store_checks):
                    short = Traffic(seconds=20.0)
                    agreed.append(
                        (kind, *through_store(kind, 7_000 + i, short, analysis, Path(work)))
                    )
    elapsed = time.perf_counter() - started
    result = figures(rows)
    result |= {
        "canaries_per_kind": canaries,
        "settings": SETTINGS,
        "traffic": traffic.__dict__,
        "kinds": rows,
        "seconds": round(elapsed, 1),
        "store_verdicts": [
            {"kind": k, "from_store": a, "in_memory": b, "same": a == b} for k, a, b in agreed
        ],
    }
    header = (
        f"Release judge: {canaries} simulated canaries of each kind "
        f"(`benchmarks/release_judge.py{' --quick' if args.quick else ''}`, "
        f"{elapsed:.0f} s). Analysis: {SETTINGS} and AnalysisConfig's defaults otherwise; "
        f"traffic {traffic.rate:g} req/s, {traffic.weight:.0%} to the candidate, labels for "
        f"{traffic.label_share:.0%} after {traffic.label_delay:g} s, a look every "
        f"{traffic.interval:g} s for {traffic.seconds:g} s (+{traffic.hold:g} s if waiting). "
        "Exposure: requests the bad candidate answered before its rollback."
    )
    text = table(rows, header) + "\n\n" + "\n".join(goals(result)) + "\n"
    if agreed:
        same = sum(a == b for _k, a, b in agreed)
        text += (
            f"\nThrough a SQLite store and collect(): {same} of {len(agreed)} verdicts the same.\n"
        )
    if args.json:
        print(json.dumps(result, indent=None, default=str))
    else:
        print(text)
    target = args.write or (None if args.quick or args.canaries != 500 else RESULTS)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if agreed and not all(a == b for _k, a, b in agreed):
        print("[release-judge] collect() and the in-memory sides disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
