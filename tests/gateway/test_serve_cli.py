"""`conveyor serve` and `conveyor export docker|k8s` through the real command line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.cli.test_cli import conveyor, executable
from tests.gateway.servers import TOKEN, gateway_project, load, spawn, write_project


def test_serve_refuses_a_short_token_before_listening(tmp_path: Path) -> None:
    write_project(tmp_path / "p")
    result = executable("serve", "--port", "1", cwd=tmp_path / "p", CONVEYOR_TOKEN="short")
    assert result.returncode == 2
    assert "at least 16" in result.stderr


def test_export_docker_and_k8s(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    missing = conveyor("export", "k8s", "-C", root)
    assert missing.code == 2 and "--image" in missing.stderr
    made = conveyor("export", "k8s", "-C", root, "--image", "registry.example/gw:1")
    assert made.code == 0, made.stderr
    docs = list(yaml.safe_load_all((root / "deploy" / "k8s.yaml").read_text()))
    # the gateway (Deployment, Service, autoscaler), then the controller and its metrics Service
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "gw"),
        ("Service", "gw"),
        ("HorizontalPodAutoscaler", "gw"),
        ("Deployment", "gw-controller"),
        ("Service", "gw-controller"),
    ]
    again = conveyor("export", "k8s", "-C", root, "--image", "registry.example/gw:1")
    assert again.code == 0 and "Up to date" in again.stdout
    changed = conveyor("export", "k8s", "-C", root, "--image", "registry.example/gw:2")
    assert changed.code != 0 and "--force" in changed.stderr
    docker = conveyor("export", "docker", "-C", root, "--workers", "2")
    assert docker.code == 0, docker.stderr
    assert "--workers" in (root / "Dockerfile").read_text()


@pytest.mark.slow
def test_serve_as_a_process_answers_and_stops_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "p"
    gateway_project(root)
    with spawn(root) as gw:
        r = gw.predict("num", [[0.0] * 5])
        assert r.status_code == 200 and r.json()["version"] == 1
        assert gw.get("/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        docs = gw.get("/docs")
        assert docs.status_code == 200 and "/v1/models/num/predict" in docs.text
        process = gw.process
    # uvicorn finishes in-flight requests and the lifespan shutdown, then re-raises SIGTERM
    assert process.returncode in (0, -15)
    from tests.gateway.test_requestlog import logged

    assert [r.status for r in logged(load(root))] == [200]  # the shutdown flushed the log
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.url + "/healthz", timeout=2)
