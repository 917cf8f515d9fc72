"""Blue-green, sticky canaries, integration tests as a check, and a candidate that a gateway
cannot load: each on a real gateway."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from conveyor.actions.models import open_registry, register_fitted
from conveyor.release.checks import GatewayChecks
from conveyor.release.releases import Releases
from conveyor.store import models as m
from tests.gateway.servers import TOKEN, gateway_project, load, running, trained
from tests.release.test_releases import flushed, later, send, served_versions, wait_for

STRATEGIES = """
deploy:
  staging: {strategy: direct, tests: itests}
  production:
    strategy: blue-green
    keep_warm: 5m
    analysis: {min_requests: 20}
  sticky:
    strategy: canary
    steps: [{weight: 50, for: 1h}]
    sticky: f0
"""


def project(tmp_path: Path):
    root = tmp_path / "p"
    gateway_project(root)
    (root / "conveyor.yaml").write_text((root / "conveyor.yaml").read_text() + STRATEGIES)
    return load(root)


def test_blue_green_warms_then_switches_and_keeps_the_old_version_warm(tmp_path) -> None:
    config = project(tmp_path)
    with running(config) as gw, open_registry(config) as registry:
        releases = Releases(config, registry)
        release = releases.start("num", 2, "production")
        # B is loaded beside A but answers no one yet
        wait_for(lambda: 2 in gw.get("/v1/models/num/versions").json()["loaded"], "B warm")
        assert {a["version"] for a in send(gw, 20)} == {1}
        assert releases.step(release.id)[0]["action"] == "next"  # the switch, all at once
        wait_for(lambda: served_versions(gw)["stable"] == 2, "the switch")
        assert {a["version"] for a in send(gw, 30)} == {2}
        assert 1 in gw.get("/v1/models/num/versions").json()["loaded"]  # A kept warm
        flushed(gw)
        assert releases.step(release.id)[0]["action"] == "wait"  # keep_warm not over
        # a rollback inside the window is instant: A never left memory
        done = releases.rollback("num", "production", reason="pager")
        assert done["version"] == 1 and registry.alias("num", "production") == 1
        wait_for(lambda: served_versions(gw)["stable"] == 1, "back on A")
        again = releases.start("num", 2, "production")
        releases.step(again.id)
        flushed(gw)
        send(gw, 25)
        flushed(gw)
        assert releases.step(again.id, now=later(10))[0]["action"] == "promoted"
        with registry.store.session() as s:
            assert s.scalars(select(m.Traffic)).all() == []  # A unloaded at last


def test_a_sticky_canary_keeps_each_caller_on_one_version(tmp_path) -> None:
    config = project(tmp_path)
    with open_registry(config) as registry:
        registry.set_alias("num", "sticky", 1)
    rows = trained()["num_holdout"].head(40).values.tolist()
    with running(config) as gw, open_registry(config) as registry:
        Releases(config, registry).start("num", 2, "sticky")
        wait_for(lambda: served_versions(gw, "sticky")["canary"] == 2, "the canary")
        seen: dict[str, set[int]] = {}
        for i, row in enumerate(rows * 3):
            key = f"customer-{i % 40}"
            r = gw.predict("num", [row], params={"env": "sticky"}, headers={"x-conveyor-key": key})
            seen.setdefault(key, set()).add(r.json()["version"])
        assert all(len(v) == 1 for v in seen.values())  # one version per caller
        assert {v for vs in seen.values() for v in vs} == {1, 2}  # and both in use
        # without a header, the sticky field of the record decides
        records = trained()["num_holdout"].head(5).to_dict(orient="records")
        versions = {
            gw.predict("num", [records[0]], params={"env": "sticky"}).json()["version"]
            for _ in range(10)
        }
        assert len(versions) == 1


def test_integration_tests_run_against_the_gateway(tmp_path) -> None:
    config = project(tmp_path)
    root = Path(config.root)
    (root / "itests").mkdir()
    (root / "itests" / "test_staging.py").write_text(
        "import os, httpx\n\n"
        "def test_the_candidate_answers():\n"
        "    url, model = os.environ['CONVEYOR_URL'], os.environ['CONVEYOR_MODEL']\n"
        "    r = httpx.post(f'{url}/v1/models/{model}/predict',\n"
        "                   params={'env': os.environ['CONVEYOR_ENV']},\n"
        "                   json={'instances': [[0, 0, 0, 0, 0]]})\n"
        "    assert r.json()['version'] == int(os.environ['CONVEYOR_VERSION'])\n"
        "    assert r.json()['predictions'][0] in (0, 1)\n"
    )
    with open_registry(config) as registry:
        registry.remove_alias("num", "staging")
    with running(config) as gw, open_registry(config) as registry:
        releases = Releases(config, registry, checks=GatewayChecks(root, gw.url, token=TOKEN))
        release = releases.start("num", 2, "staging")
        outcome = releases.step(release.id)[0]
        assert outcome["action"] == "promoted", outcome
        (root / "itests" / "test_more.py").write_text("def test_fails():\n    assert False\n")
        release = releases.start("num", 1, "staging")
        outcome = releases.step(release.id)[0]
        assert outcome["action"] == "rolled_back" and "tests failed" in outcome["why"]
        assert registry.alias("num", "staging") == 2


def test_a_candidate_a_gateway_cannot_load_pauses_the_release(tmp_path) -> None:
    config = project(tmp_path)
    bad = register_fitted(
        config,
        trained()["num_v2"],
        trained()["num_holdout"],
        name="num",
        task="classification",
        onnx=False,
    )
    with open_registry(config) as registry:
        path = registry.artifacts.path(bad.file.digest, verify=False)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!!")
    with running(config) as gw, open_registry(config) as registry:
        releases = Releases(config, registry)
        registry.set_alias("num", "sticky", 1)
        release = releases.start("num", bad.version, "sticky")
        wait_for(
            lambda: registry.store.events(entity="model", entity_id=f"num:{bad.version}"),
            "the load failure",
        )
        assert {a["version"] for a in send(gw, 20, env="sticky")} == {1}  # A keeps serving
        outcome = releases.step(release.id)[0]
        assert outcome["action"] == "paused" and "cannot load" in outcome["why"]
        assert releases.get(release.id).state == "paused"
        time.sleep(0.1)
        assert releases.step(release.id)[0]["action"] == "paused"
