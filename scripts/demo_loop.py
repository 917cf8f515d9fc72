"""The demo's continuous-delivery loop, driven from outside like a user would: real processes
(`conveyor serve`, `conveyor watch`), real HTTP traffic and labels, real time.

    python scripts/demo_loop.py split PROJECT   # hold March back: training sees Jan-Feb 2018
    python scripts/demo_loop.py loop PROJECT    # serve, watch, traffic, drift, retraining...

What is simulated, and said so when it happens: the traffic (held-out applications replayed at
about 60 requests a second), the labels (the true grade of each replayed loan, sent back a
moment later for 60% of requests), and the drift (March's applications arrive with loan
amounts 1.6 times larger (up to the $40,000 limit) and debt-to-income 8 points higher, as if
a campaign had changed who applies). Everything else is the product doing its job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent.parent
CONVEYOR = str(HERE / ".venv" / "bin" / "conveyor")
PORT = int(os.environ.get("CONVEYOR_DEMO_PORT", "8765"))
HOOK_PORT = PORT + 1
URL = f"http://127.0.0.1:{PORT}"
SECRET = "demo-webhook-secret-4c1f"
TOKEN = os.environ.get("CONVEYOR_TOKEN") or "demo-token-0123456789abcdef"
MODEL = "loans-risk"
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def note(text: str) -> None:
    print(f"   [{time.monotonic() - T0:6.1f}s] {text}", flush=True)


# -- split: the data arrives in time ----------------------------------------------------------


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """The simulated campaign: larger loans, more debt (said aloud wherever it is used)."""
    out = frame.copy()
    # capped at the lender's $40,000 limit, which the schema checks (without the cap, the
    # validation gate refuses the new data, as it should)
    larger = (out["loan_amount"] * 1.6).round().clip(upper=40_000)
    out["loan_amount"] = larger.astype(out["loan_amount"].dtype)
    out["debt_to_income"] = out["debt_to_income"] + 8.0
    return out


def split(project: Path) -> None:
    data = pd.read_parquet(project / "data" / "loans.parquet")
    months = data["issue_month"]
    (project / "data" / "loans").mkdir(exist_ok=True)
    data[months != "Mar-2018"].to_parquet(project / "data" / "loans" / "2018-01-02.parquet")
    incoming = project / "incoming"
    incoming.mkdir(exist_ok=True)
    shifted(data[months == "Mar-2018"]).to_parquet(incoming / "2018-03.parquet")
    (project / "data" / "loans.parquet").unlink()
    config = project / "conveyor.yaml"
    text = config.read_text().replace("loans: data/loans.parquet", "loans: data/loans/*.parquet")
    hook = (
        "    - {name: data drift, when: {drift_share: 0.05}, "
        f'webhook: "http://127.0.0.1:{HOOK_PORT}/hook", secret_env: DEMO_WEBHOOK_SECRET}}'
    )
    text = text.replace("    - {name: data drift, when: {drift_share: 0.05}}", hook)
    config.write_text(text)
    kept = int((months != "Mar-2018").sum())
    print(f"data/loans/2018-01-02.parquet: {kept:,} loans of Jan-Feb 2018 (training sees these)")
    print(
        f"incoming/2018-03.parquet: {int((months == 'Mar-2018').sum()):,} loans of March, held "
        "back; they arrive later (with the simulated campaign applied)"
    )


# -- the webhook receiver -------------------------------------------------------------------


class Hooks(ThreadingHTTPServer):
    received: list[dict]


class HookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        # as any receiver would: "t=<unix>,v1=<hex>", the HMAC of "<t>.<body>", and a fresh t
        fields = dict(
            part.split("=", 1)
            for part in self.headers.get("x-conveyor-signature", "").split(",")
            if "=" in part
        )
        stamp = fields.get("t", "")
        want = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
        ok = fresh and hmac.compare_digest(want, fields.get("v1", ""))
        payload = json.loads(body)
        self.server.received.append({"signed": ok, **payload})
        note(
            f"webhook received: alert {payload.get('alert')!r} {payload.get('state')} "
            f"(HMAC signature {'verified' if ok else 'WRONG'}): {payload.get('summary')}"
        )
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# -- traffic and labels ---------------------------------------------------------------------


class Traffic:
    """About 60 single-application requests a second from the current 'world'; labels later."""

    def __init__(self, features: list[str]) -> None:
        self.features = features
        self.world: pd.DataFrame | None = None
        self.answers: list[tuple[float, int, int]] = []  # (time, status, version)
        self.stop = threading.Event()
        self._labels: list[tuple[float, str, int]] = []
        self._lock = threading.Lock()

    def use(self, frame: pd.DataFrame) -> None:
        self.world = frame.reset_index(drop=True)

    def run(self) -> None:
        rng = random.Random(0)
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                world = self.world
                i = rng.randrange(len(world))
                row = world.iloc[i]
                record = {
                    k: (None if isinstance(v, float) and np.isnan(v) else _plain(v))
                    for k, v in row[self.features].items()
                }
                try:
                    r = client.post(
                        f"{URL}/v1/models/{MODEL}/predict", json={"instances": [record]}
                    )
                except httpx.HTTPError:
                    self.answers.append((time.monotonic(), 0, 0))
                    continue
                version = r.json().get("version", 0) if r.status_code == 200 else 0
                self.answers.append((time.monotonic(), r.status_code, version))
                if r.status_code == 200 and rng.random() < 0.6:
                    label = int(row["grade"] in ("D", "E", "F", "G"))
                    with self._lock:
                        self._labels.append((time.monotonic() + 1.0, r.json()["request_id"], label))
                time.sleep(0.012)

    def feedback(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                now = time.monotonic()
                with self._lock:
                    due = [x for x in self._labels if x[0] <= now]
                    self._labels = [x for x in self._labels if x[0] > now]
                if due:
                    items = [{"request_id": rid, "label": label} for _t, rid, label in due]
                    r = client.post(f"{URL}/v1/feedback", json={"feedback": items}, headers=headers)
                    if r.status_code == 422:  # not flushed to the log yet: try again later
                        with self._lock:
                            self._labels.extend((now + 1.0, rid, y) for _t, rid, y in due)
                time.sleep(0.5)

    def since(self, t: float) -> list[tuple[float, int, int]]:
        return [a for a in self.answers if a[0] >= t]


def _plain(value: object) -> object:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


# -- the loop -------------------------------------------------------------------------------


def cli(*args: str, quiet: bool = False) -> str:
    done = subprocess.run([CONVEYOR, *args], capture_output=True, text=True, check=False)
    out = (done.stdout + done.stderr).rstrip()
    if not quiet:
        for line in out.splitlines():
            print(f"   {line}", flush=True)
    return out


def events_since(store_cli_limit: int = 400) -> list[dict]:
    out = subprocess.run(
        [CONVEYOR, "events", "--json", "--limit", str(store_cli_limit)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def wait_until(what: str, predicate, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.25)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def production() -> dict:
    try:
        r = httpx.get(f"{URL}/v1/models/{MODEL}/versions", timeout=5)
        return (
            r.json().get("environments", {}).get("production", {}) if r.status_code == 200 else {}
        )
    except httpx.HTTPError:
        return {}


def loop(project: Path) -> None:
    os.chdir(project)
    env = {
        **os.environ,
        "CONVEYOR_TOKEN": TOKEN,
        "DEMO_WEBHOOK_SECRET": SECRET,
        "CONVEYOR_GATEWAY_URL": URL,
    }
    os.environ.update(env)
    hooks = Hooks(("127.0.0.1", HOOK_PORT), HookHandler)
    hooks.received = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(project / f"{name}.log", "w")  # noqa: SIM115 (kept open for the process)
        proc = subprocess.Popen([CONVEYOR, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        return proc

    def follow(path: Path, prefix: str) -> None:
        with open(path) as handle:
            while True:
                line = handle.readline()
                if line:
                    note(f"{prefix}: {line.rstrip()}")
                elif all(p.poll() is not None for p in procs):
                    return
                else:
                    time.sleep(0.1)

    traffic: Traffic | None = None
    try:
        say("conveyor serve (the gateway) and conveyor watch (the controller) start")
        start("gateway", "serve", "--port", str(PORT), "--log-level", "warning")
        start("controller", "watch", "--interval", "0.5", "--monitor-every", "2")
        threading.Thread(
            target=follow, args=(project / "controller.log", "watch"), daemon=True
        ).start()
        note(
            "the controller sees version 1 serving production but never staged: it releases "
            "it to staging, where the smoke requests run against the gateway"
        )
        wait_until("production to serve version 1", lambda: production().get("stable") == 1, 120)
        note(f"production serves version 1 (gateway {URL})")
        sys.path.insert(0, str(HERE / "scripts"))
        import demo_client

        demo_client.main(URL, str(project / "data" / "loans" / "2018-01-02.parquet"), TOKEN)

        steps = __import__("loans.steps", fromlist=["NUMERIC"])
        features = steps.NUMERIC + steps.CATEGORICAL
        data = pd.read_parquet(project / "data" / "loans" / "2018-01-02.parquet")
        march = pd.read_parquet(project / "incoming" / "2018-03.parquet")
        traffic = Traffic(features)
        traffic.use(data.sample(frac=0.3, random_state=1))
        threading.Thread(target=traffic.run, daemon=True).start()
        threading.Thread(target=traffic.feedback, daemon=True).start()

        say(
            "live traffic (simulated: Jan-Feb applications replayed, ~60/s) and labels "
            "(simulated: each loan's true grade, sent back 1 s later for 60% of requests)"
        )
        time.sleep(10)
        cli("monitor", "--html", "monitor-before.html")

        say(
            "March arrives: a new data file, and live applications change (SIMULATED campaign: "
            "loan amounts x1.6 up to the $40,000 limit, debt-to-income +8)"
        )
        arrival = time.monotonic()
        (project / "data" / "loans" / "2018-03.parquet").write_bytes(
            (project / "incoming" / "2018-03.parquet").read_bytes()
        )
        traffic.use(march)
        note("data/loans/2018-03.parquet written; traffic now comes from March")
        alerted = wait_until(
            "the drift alert", lambda: any(h.get("state") == "firing" for h in hooks.received), 180
        )
        note(f"drift alert {alerted - arrival:.1f}s after the drifting batch arrived")
        serving = wait_until(
            "the retrained version to serve all of production",
            lambda: (production().get("stable") or 0) >= 2 and production().get("canary") is None,
            300,
        )
        version = production().get("stable")
        note(
            f"retrained version {version} serves 100% of production "
            f"{serving - arrival:.1f}s after the batch arrived (retraining, gates, staging smoke, "
            "canary 20% -> 50% -> 100%)"
        )
        cli("monitor", "--html", "monitor-after.html")

        say(
            f"a shadow comparison: version 1 against version {version} on the same live "
            "requests (answers no one)"
        )
        out = cli(
            "deploy", MODEL, "1", "--to", "production", "--shadow", "8s", "--json", quiet=True
        )
        shadow_id = json.loads(out)["release"]["id"]
        note(f"release {shadow_id}: v1 mirrors production traffic for 8 s")
        wait_until(
            "the comparison to finish",
            lambda: (
                json.loads(cli("release", "show", shadow_id, "--json", quiet=True))["release"][
                    "state"
                ]
                not in ("running", "paused")
            ),
            90,
        )
        cli("release", "show", shadow_id)

        say(
            "a bad candidate: a model trained on inverted labels, registered by hand with no "
            "gates (the Python API), goes through staging's smoke requests and into a canary"
        )
        bad = register_inverted(project, features)
        note(f"version {bad} registered")
        bad_start = time.monotonic()
        wait_until(
            f"version {bad} to reach the production canary",
            lambda: production().get("canary") == bad,
            120,
        )
        note(f"version {bad} takes 20% of production")
        wait_until(
            f"the automatic rollback of version {bad}",
            lambda: production().get("canary") is None and production().get("stable") == version,
            120,
        )
        served = [a for a in traffic.since(bad_start) if a[2] == bad]
        total = traffic.since(T0)
        note(
            f"rolled back automatically: version {bad} answered {len(served)} requests, "
            f"{len(served) / max(len(total), 1):.2%} of the {len(total):,} requests of the demo"
        )
        cli("releases", "--limit", "6")

        failed = [a for a in total if a[1] != 200]
        say(f"traffic: {len(total):,} requests, {len(failed)} failed")
        figures = {
            "requests": len(total),
            "failed": len(failed),
            "drift_to_alert_s": round(alerted - arrival, 1),
            "drift_to_serving_s": round(serving - arrival, 1),
            "bad_version_requests": len(served),
            "bad_version_share": len(served) / max(len(total), 1),
            "webhooks": len(hooks.received),
            "webhooks_signed": all(h["signed"] for h in hooks.received),
        }
        (project / "demo-figures.json").write_text(json.dumps(figures, indent=2))
    finally:
        if traffic is not None:
            traffic.stop.set()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        hooks.shutdown()


def register_inverted(project: Path, features: list[str]) -> int:
    sys.path.insert(0, str(project))
    import conveyor
    from conveyor.actions.models import register_fitted
    from conveyor.config import load_config

    steps = __import__("loans.steps", fromlist=["prepare"])
    # the steps log metrics to their run; called by hand here, there is no run to log to
    conveyor.log_metric = conveyor.log_param = lambda *args, **kwargs: None
    steps.conveyor = conveyor
    data = pd.concat(pd.read_parquet(p) for p in sorted((project / "data" / "loans").glob("*")))
    parts = steps.prepare(data, test_size=0.2, seed=0)
    flipped = parts["train"].assign(high_risk=1 - parts["train"]["high_risk"])
    model = steps.train(flipped, max_depth=6, learning_rate=0.1, max_iter=60)
    config = load_config(project / "conveyor.yaml")
    version = register_fitted(
        config, model, parts["test"][features], name=MODEL, task="classification"
    )
    return version.version


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2]).resolve()
    sys.path.insert(0, str(folder))
    {"split": split, "loop": loop}[command](folder)
