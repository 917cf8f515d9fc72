"""The built wheel works on its own: installed into a fresh virtual environment, its `conveyor`
creates a project, gates and registers a model, and serves a prediction.

This checks what the editable install of the suite cannot: that the wheel holds every template,
migration and static file it needs. Dependencies come from the suite's own environment through a
`.pth` file, because this machine is offline and the uv cache does not hold them (resolving the
wheel with `uv pip install --offline` fails on numpy); the wheel itself is installed with
`pip install --no-index --no-deps`, and the test checks that `conveyor` is imported from it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import conveyor

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600):
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not UV.exists():
        pytest.skip(f"{UV} is missing; run `make setup`.")
    # Built from the committed tree (git archive), as a release is: not from the work tree's
    # uncommitted edits.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True,
                             check=True, timeout=120).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=120)
    built = _run([str(UV), "build", "--offline", "--out-dir", str(out), str(source)], out, {
        **os.environ, "UV_PYTHON_DOWNLOADS": "never"})  # fmt: skip
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("conveyor_ml-*-py3-none-any.whl")
    assert found.name == f"conveyor_ml-{conveyor.__version__}-py3-none-any.whl"
    assert len(list(out.glob("conveyor_ml-*.tar.gz"))) == 1
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    installed = _run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)],
        root,
        {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert installed.returncode == 0, installed.stderr
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                root, dict(os.environ)).stdout.strip()  # fmt: skip
    # The suite's site-packages after the venv's own: its editable conveyor is a .pth there,
    # which Python does not follow from a path added this way, so `conveyor` is the wheel's.
    Path(site, "zz_suite_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return root


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_installs_and_runs_init_ci_and_serve(venv: Path, tmp_path: Path) -> None:
    env = _env(venv)
    conveyor_bin = str(venv / "bin" / "conveyor")
    where = _run([str(venv / "bin" / "python"), "-c", "import conveyor; print(conveyor.__file__)"],
                 tmp_path, env).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), where  # the wheel's code, not the checkout's

    version = _run([conveyor_bin, "--version"], tmp_path, env)
    assert version.returncode == 0, version.stderr
    assert conveyor.__version__ in version.stdout

    project = tmp_path / "proj"
    init = _run([conveyor_bin, "init", str(project)], tmp_path, env)
    assert init.returncode == 0, init.stderr
    ci = _run([conveyor_bin, "ci"], project, env, timeout=900)
    assert ci.returncode == 0, ci.stdout + ci.stderr
    assert "registered" in ci.stdout and (project / "conveyor-report.md").is_file()
    config = yaml.safe_load((project / "conveyor.yaml").read_text())
    model = config["model"]["name"]
    alias = _run([conveyor_bin, "models", "alias", "1", "production"], project, env)
    assert alias.returncode == 0, alias.stderr

    rows = _rows(project)
    port = _free_port()
    server = subprocess.Popen(
        [conveyor_bin, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/{model}/predict",
            data=json.dumps({"instances": rows}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        assert response.status == 200
        assert len(body["predictions"]) == len(rows)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


def _rows(project: Path) -> list[dict]:
    """The rows of the first smoke request `conveyor init` wrote, valid for the model."""
    first = (project / "smoke" / "loans.jsonl").read_text().splitlines()[0]
    return list(json.loads(first)["instances"])


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"conveyor serve exited with {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} was not ready within 120 s.")
