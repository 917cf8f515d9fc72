"""An environment's checks, run against the gateway that serves it: smoke requests and tests.

A smoke file is JSON Lines, one request per line::

    {"name": "typical loan", "instances": [{...}], "expect": {"predictions": [0]}}
    {"name": "wrong type refused", "instances": [{"amount": "lots"}], "status": 422}
    {"instances": [[...]], "expect": {"predictions_in": [0, 1], "max_latency_ms": 200}}

``status`` defaults to 200; ``expect`` may hold ``predictions`` (exact), ``predictions_in``
(allowed values), ``probabilities`` (within ``tolerance``, default 1e-6) and ``max_latency_ms``.
Each request pins the candidate version (``?version=N``), so a blue-green candidate is checked
before it takes traffic; pinning needs the gateway's admin token, and the requests say
``X-Conveyor-Role: smoke`` so the gateway logs them apart from the environment's traffic.
``tests`` is a pytest path run with ``CONVEYOR_URL``, ``CONVEYOR_MODEL``, ``CONVEYOR_ENV``,
``CONVEYOR_VERSION`` and (when there is one) ``CONVEYOR_TOKEN`` set: a test request that sends
``Authorization: Bearer $CONVEYOR_TOKEN`` and ``X-Conveyor-Role: test`` is not counted either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from conveyor.exceptions import ReleaseError

__all__ = ["GatewayChecks", "read_smoke"]


def read_smoke(path: Path) -> list[dict[str, Any]]:
    """The smoke requests of a JSONL file.

    Raises:
        ReleaseError: the file is missing, or a line is not a request, naming the line.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReleaseError(f"Cannot read the smoke file {path}: {exc.strerror}") from None
    cases = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            case = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ReleaseError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(case, dict) or not isinstance(case.get("instances"), list):
            raise ReleaseError(f'{path}:{number}: each line needs "instances": a list of rows')
        unknown = set(case) - {"name", "instances", "expect", "status"}
        if unknown:
            raise ReleaseError(
                f"{path}:{number}: unknown key {sorted(unknown)[0]!r}; use name, instances, "
                "expect, status"
            )
        case.setdefault("name", f"line {number}")
        cases.append(case)
    if not cases:
        raise ReleaseError(f"The smoke file {path} has no requests.")
    return cases


class GatewayChecks:
    """Runs a release's checks against a gateway URL; called by ``Releases`` as ``checks``."""

    def __init__(
        self, root: Path, url: str, *, token: str | None = None, wait_seconds: float = 30.0
    ) -> None:
        self.root = Path(root)
        self.url = url.rstrip("/")
        self.token = token
        self.wait_seconds = wait_seconds

    def __call__(self, release: Any) -> tuple[bool | None, dict[str, Any]]:
        import httpx

        plan = release.plan
        evidence: dict[str, Any] = {"url": self.url, "smoke": [], "tests": None}
        with httpx.Client(timeout=30) as client:
            if not self._serves(client, release):
                evidence["summary"] = (
                    f"the gateway at {self.url} does not serve {release.model} version "
                    f"{release.to_version} yet (is `conveyor serve` running?)"
                )
                return None, evidence
            if plan.get("smoke"):
                cases = read_smoke(self.root / plan["smoke"])
                for case in cases:
                    evidence["smoke"].append(self._smoke(client, release, case))
        failed = [c for c in evidence["smoke"] if not c["ok"]]
        if plan.get("tests") and not failed:
            evidence["tests"] = self._pytest(release, plan["tests"])
        tests_ok = evidence["tests"] is None or evidence["tests"]["ok"]
        ok = not failed and tests_ok
        parts = []
        if evidence["smoke"]:
            parts.append(f"smoke {len(evidence['smoke']) - len(failed)}/{len(evidence['smoke'])}")
        if evidence["tests"] is not None:
            parts.append(f"tests {'passed' if tests_ok else 'failed'}")
        if failed:
            parts.append("first failure: " + f"{failed[0]['name']}: {failed[0]['problem']}")
        evidence["summary"] = ", ".join(parts) or "no checks"
        return ok, evidence

    def _serves(self, client: Any, release: Any) -> bool:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                r = client.get(f"{self.url}/v1/models/{release.model}/versions")
                if r.status_code == 200 and _ready_for(r.json(), release):
                    return True
            except Exception:
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def _smoke(self, client: Any, release: Any, case: dict[str, Any]) -> dict[str, Any]:
        want_status = int(case.get("status", 200))
        started = time.perf_counter()
        r = client.post(
            f"{self.url}/v1/models/{release.model}/predict",
            params={"env": release.environment, "version": str(release.to_version)},
            content=orjson.dumps({"instances": case["instances"]}),
            headers={
                "content-type": "application/json",
                "x-conveyor-role": "smoke",
                **({"authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        latency = (time.perf_counter() - started) * 1000
        result = {"name": case["name"], "status": r.status_code, "latency_ms": round(latency, 2)}
        problem = None
        if r.status_code != want_status:
            problem = f"status {r.status_code}, expected {want_status}: {r.text[:200]}"
        elif want_status == 200:
            problem = _expectations(r.json(), case.get("expect") or {}, latency, release)
        result["ok"] = problem is None
        result["problem"] = problem
        return result

    def _pytest(self, release: Any, path: str) -> dict[str, Any]:
        env = {
            **os.environ,
            "CONVEYOR_URL": self.url,
            "CONVEYOR_MODEL": release.model,
            "CONVEYOR_ENV": release.environment,
            "CONVEYOR_VERSION": str(release.to_version),
            **({"CONVEYOR_TOKEN": self.token} if self.token else {}),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "exit_code": None, "tail": "timed out after 900 s"}
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        return {"ok": done.returncode == 0, "exit_code": done.returncode, "tail": tail}


def _ready_for(versions: dict[str, Any], release: Any) -> bool:
    """Loaded, and (unless it is a blue-green candidate not yet switched) routed in its env."""
    if release.to_version not in versions.get("loaded", []):
        return False
    if release.strategy == "blue-green" and release.step == 0:
        return True
    route = (versions.get("environments") or {}).get(release.environment) or {}
    return release.to_version in (route.get("stable"), route.get("canary"), route.get("shadow"))


def _expectations(
    body: dict[str, Any], expect: dict[str, Any], latency: float, release: Any
) -> str | None:
    if body.get("version") != release.to_version:
        return f"answered by version {body.get('version')}, not {release.to_version}"
    predictions = body.get("predictions")
    if "predictions" in expect and predictions != expect["predictions"]:
        return f"predictions {predictions}, expected {expect['predictions']}"
    if "predictions_in" in expect:
        allowed = expect["predictions_in"]
        bad = [p for p in predictions or [] if p not in allowed]
        if bad:
            return f"prediction {bad[0]!r} not in {allowed}"
    if "probabilities" in expect:
        tol = float(expect.get("tolerance", 1e-6))
        got = body.get("probabilities") or []
        want = expect["probabilities"]
        flat_got = [x for row in got for x in row]
        flat_want = [x for row in want for x in row]
        if len(flat_got) != len(flat_want) or any(
            abs(a - b) > tol for a, b in zip(flat_got, flat_want, strict=True)
        ):
            return f"probabilities {got}, expected {want} within {tol}"
    if "max_latency_ms" in expect and latency > float(expect["max_latency_ms"]):
        return f"took {latency:.1f} ms, more than {expect['max_latency_ms']} ms"
    return None
