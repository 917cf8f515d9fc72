"""The exported Dockerfile, built and run by a real container runtime (podman), becomes ready
with only the environment its comments document, holds no training data, imports the project's
code, and runs the controller too.

Nothing is pulled from a registry: the Dockerfile's base, ``python:3.11-slim``, is built here
once from Debian's packages with debootstrap (Debian 12's Python is 3.11) as
``localhost/python:3.11-slim``, with Python's ``/usr/local`` layout of the official image. It
carries this machine's trust settings (its extra CA certificates and /etc/pip.conf), as a
company's base image carries its proxy's, so that ``pip install`` in the build reaches PyPI
through this machine's network. The build installs the wheel built from the committed tree
(``--install dist/<wheel>``) and its dependencies from PyPI; the container then serves a model
registered in a PostgreSQL database from a shared artifacts folder.

Skipped, with the reason, where podman (with runc and debootstrap) cannot run a container; on
this sandbox podman needs runc (crun refuses the hybrid cgroup layout) and explicit ulimits.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.churn_project import CONFIG_HEAD, STEPS, rows
from tests.export.builds import build_wheel, clean_env
from tests.pg_server import drop_database, fresh_database, on_ci, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(2400)]

BASE = "localhost/python:3.11-slim"
TOKEN = "image-test-token-0123456789abcdef"
CONFIG = (
    CONFIG_HEAD
    + """\
gates:
  - roc_auc >= 0.55
"""
)


def _podman_args() -> list[str]:
    """podman with the runtime and limits this machine allows: runc where installed (crun
    refuses a hybrid cgroup layout), and ulimits within the caller's (podman's defaults for
    root exceed them)."""
    args = ["podman"]
    if shutil.which("runc"):
        args += ["--runtime", "runc"]
    return args


def _limits() -> list[str]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ["--ulimit", f"nofile={soft}:{soft}", "--ulimit", "nproc=4096:4096"]


def _podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        [*_podman_args(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _base_image(tmp: Path) -> None:
    """``python:3.11-slim`` from Debian 12 with debootstrap, unless this machine has it."""
    exists = [*_podman_args(), "image", "exists", BASE]
    if subprocess.run(exists, capture_output=True, check=False).returncode == 0:
        return
    rootfs = tmp / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
         "bookworm", str(rootfs), "http://deb.debian.org/debian"],
        check=True, capture_output=True, timeout=1200,
    )  # fmt: skip
    # The official image's layout: python and pip in /usr/local/bin, packages in /usr/local.
    subprocess.run(["chroot", str(rootfs), "python3", "-m", "venv", "/usr/local"], check=True,
                   capture_output=True)  # fmt: skip
    for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
    subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True,
                   capture_output=True)  # fmt: skip
    if Path("/etc/pip.conf").is_file():
        shutil.copy("/etc/pip.conf", rootfs / "etc" / "pip.conf")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(
            [*_podman_args(), "import",
             "--change", "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", 'CMD ["python3"]', "-", BASE],
            stdin=tar.stdout, check=True, capture_output=True, timeout=600,
        )  # fmt: skip


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> None:
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install podman runc "
                    "debootstrap); the image test needs a container runtime.")  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("Building the base image (debootstrap, chroot) and rootful podman need root.")
    try:
        _base_image(tmp_path_factory.mktemp("base"))
    except subprocess.CalledProcessError as exc:
        reason = f"Cannot build the base image here: {exc.cmd[0]} failed: {exc.stderr!r}"
        if on_ci():  # on CI the tools were installed for this test: a failure must show
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    probe = subprocess.run(
        [*_podman_args(), "run", "--rm", "--network", "host", *_limits(), BASE, "true"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module-scoped: built before the per-test fixtures move XDG_CACHE_HOME (and uv's cache).
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def store_url():
    url = fresh_database(require_postgres())
    yield url
    drop_database(url)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conveyor(folder: Path, *args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _wait_ready(url: str, container: str) -> dict[str, object]:
    deadline = time.monotonic() + 180
    last = "no answer"
    while time.monotonic() < deadline:
        state = _podman("inspect", "--format", "{{.State.Running}}", container).strip()
        if state != "true":
            pytest.fail(f"The container stopped:\n{_podman('logs', container, check=False)}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                return dict(json.load(response))
        except OSError as exc:
            last = str(exc)
            time.sleep(0.5)
    pytest.fail(f"/readyz not ready in 180 s ({last}):\n{_podman('logs', container, check=False)}")


def _wait_metrics(url: str, container: str) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = _podman("inspect", "--format", "{{.State.Running}}", container).strip()
        if state != "true":
            pytest.fail(f"The controller stopped:\n{_podman('logs', container, check=False)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.headers.get("content-type", "")
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer in 120 s:\n{_podman('logs', container, check=False)}")


def test_the_exported_image_serves_and_runs_the_controller_with_the_documented_environment(
    runtime: None, wheel: Path, tmp_path: Path, store_url: str
) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "shop.py").write_text(STEPS)
    (project / "conveyor.yaml").write_text(CONFIG)
    (project / "requirements.txt").write_text("scikit-learn>=1.4\n")
    (project / "data").mkdir()
    rows().to_csv(project / "data" / "rows.csv", index=False)
    (project / "dist").mkdir()
    shutil.copy(wheel, project / "dist" / wheel.name)

    # The team's store: PostgreSQL for metadata, a shared folder for the files (an S3 bucket
    # in production; a folder here, mounted into the container), writable by the image's user.
    artifacts = tmp_path / "artifacts"
    env = clean_env(CONVEYOR_STORE_URL=store_url, CONVEYOR_ARTIFACTS=str(artifacts))
    _conveyor(project, "ci", env=env)
    _conveyor(project, "models", "alias", "1", "production", env=env)
    subprocess.run(["chmod", "-R", "a+rwX", str(artifacts)], check=True)

    port = _free_port()
    _conveyor(project, "export", "docker", "--install", f"dist/{wheel.name}", "--port",
              str(port), env=env)  # fmt: skip
    dockerfile = (project / "Dockerfile").read_text()
    assert f"COPY dist/{wheel.name}" in dockerfile and '"conveyor-ml[postgres]"' in dockerfile

    image = f"localhost/conveyor-image-test-{uuid.uuid4().hex[:8]}"
    container = image.rsplit("/", 1)[1]
    try:
        _podman("build", "--pull=never", "--network", "host", *_limits(), "-t", image,
                str(project), timeout=1800)  # fmt: skip

        # What the image holds: the configuration and the code, no data, owned by root.
        listing = _podman("run", "--rm", "--network", "host", *_limits(), image,
                          "python", "-c", INSPECT)  # fmt: skip
        found = json.loads(listing.strip().splitlines()[-1])
        assert found["uid"] == 10001 and found["shop_importable"] is True
        assert "data" not in found["app"] and not found["csv"], found
        assert {"conveyor.yaml", "shop.py", "requirements.txt"} <= set(found["app"])
        assert found["conveyor"].startswith("/usr/local/lib/python3.11/site-packages/")

        # Run it as its comments say: the store's URL, the artifacts' location, the token.
        _podman(
            "run", "-d", "--name", container, "--network", "host", *_limits(),
            "-v", f"{artifacts}:/shared/artifacts",
            "-e", f"CONVEYOR_STORE_URL={store_url}",
            "-e", "CONVEYOR_ARTIFACTS=/shared/artifacts",
            "-e", f"CONVEYOR_TOKEN={TOKEN}",
            image,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        ready = _wait_ready(url, container)
        assert ready == {"ready": True, "routes": {"churn@production": 1}}
        frame = rows(n=3, seed=1).drop(columns=["churned"])
        request = urllib.request.Request(
            f"{url}/v1/models/churn/predict",
            data=json.dumps({"instances": frame.to_dict(orient="records")}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.load(response)["predictions"]) == 3

        # The controller from the same image, as the Dockerfile's comment runs it.
        metrics_port = _free_port()
        _podman(
            "run", "-d", "--name", f"{container}-controller", "--network", "host", *_limits(),
            "-v", f"{artifacts}:/shared/artifacts",
            "-e", f"CONVEYOR_STORE_URL={store_url}",
            "-e", "CONVEYOR_ARTIFACTS=/shared/artifacts",
            "-e", f"CONVEYOR_TOKEN={TOKEN}",
            image, "conveyor", "watch", "--url", url, "--metrics-port", str(metrics_port),
            "--metrics-host", "0.0.0.0",
        )  # fmt: skip
        # Empty until its first monitoring report (this project configures no monitoring):
        # what matters here is that it answers Prometheus on the address it was given.
        status, kind = _wait_metrics(
            f"http://127.0.0.1:{metrics_port}/metrics", f"{container}-controller"
        )
        assert status == 200 and kind.startswith("text/plain"), (status, kind)
    finally:
        for name in (container, f"{container}-controller"):
            _podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
        _podman("rmi", "--force", image, check=False, timeout=120)


# Run inside the image as its user: what /app holds, any CSV anywhere in it, the project's code.
INSPECT = """
import json, os, conveyor, shop
csv = [os.path.join(d, f) for d, _, fs in os.walk('/app') for f in fs if f.endswith('.csv')]
print(json.dumps({
    'uid': os.getuid(),
    'app': sorted(os.listdir('/app')),
    'csv': csv,
    'shop_importable': callable(shop.train),
    'conveyor': conveyor.__file__,
}))
"""
