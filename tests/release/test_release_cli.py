"""`conveyor deploy`, `releases`, `release ...`, `rollback` and `watch --once` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import conveyor
from tests.gateway.servers import gateway_project

DEPLOY = """
deploy:
  production:
    strategy: canary
    steps: [{weight: 25, for: 1h}]
"""


def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    gateway_project(root)
    (root / "conveyor.yaml").write_text((root / "conveyor.yaml").read_text() + DEPLOY)
    return root


def test_deploy_show_pause_resume_and_rollback(tmp_path: Path) -> None:
    root = project(tmp_path)
    started = conveyor("deploy", "num", "2", "--to", "production", "--json", "-C", root)
    assert started.code == 0, started.stderr
    release = json.loads(started.stdout)["release"]
    assert (release["state"], release["weight"], release["strategy"]) == ("running", 25.0, "canary")
    rid = release["id"]
    again = conveyor("deploy", "num", "2", "--to", "production", "-C", root)
    assert again.code == 1 and "already active" in again.stderr
    listed = conveyor("releases", "-C", root)
    assert rid in listed.stdout and "canary" in listed.stdout and "25%" in listed.stdout
    assert conveyor("release", "pause", rid, "-C", root).stdout.strip() == f"{rid}: paused"
    assert conveyor("release", "step", "-C", root).stdout.strip() == f"{rid}: paused"
    assert conveyor("release", "resume", rid, "-C", root).stdout.strip() == f"{rid}: running"
    shown = conveyor("release", "show", rid, "-C", root)
    for kind in ("release.started", "traffic.changed", "release.paused", "release.resumed"):
        assert kind in shown.stdout
    back = conveyor("rollback", "production", "--model", "num", "-C", root)
    assert back.code == 0 and back.stdout.strip() == (
        f"num@production -> version 1 (release {rid} rolled back)"
    )
    timeline = json.loads(conveyor("release", "show", rid, "--json", "-C", root).stdout)
    assert timeline["release"]["state"] == "rolled_back"
    assert conveyor("release", "promote", rid, "-C", root).code == 1


def test_a_shadow_comparison_by_hand_and_a_bad_duration(tmp_path: Path) -> None:
    root = project(tmp_path)
    bad = conveyor("deploy", "num", "2", "--to", "production", "--shadow", "soon", "-C", root)
    assert bad.code == 2 and "duration" in bad.stderr
    made = conveyor(
        "deploy", "num", "2", "--to", "production", "--shadow", "5m", "--json", "-C", root
    )
    release = json.loads(made.stdout)["release"]
    assert (release["strategy"], release["state"]) == ("shadow", "running")
    once = conveyor("watch", "--once", "--monitor-every", "3600", "-C", root)
    assert once.code == 0, once.stderr
    aborted = conveyor("release", "abort", release["id"], "-C", root)
    assert aborted.stdout.strip() == f"{release['id']}: aborted"
