"""The gateway's deployment files: valid for Docker and Kubernetes, wired to `conveyor serve`.

Every Kubernetes document is checked against the OpenAPI-derived JSON schemas that ship with
kubernetes-validate (strict: an unknown field fails), through its library and its command, for
the oldest release the manifests support and the newest the package knows. What a schema cannot
say (that the probes hit the right paths, the Service selects the pods, the secrets stay out of
the file) is asserted on the parsed documents. The Dockerfile is parsed into instructions, and
its HEALTHCHECK command is run against a real HTTP server.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import conveyor
from conveyor.exceptions import ExportError
from conveyor.export.deploy_files import (
    DEFAULT_K8S_PATH,
    KUBERNETES_VERSION,
    render_docker,
    render_k8s,
    resource_name,
    write_deploy,
)

BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/loans-gateway:1.0"
VERSIONS = [KUBERNETES_VERSION, ".".join(kubernetes_validate.latest_version().split(".")[:2])]
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def config(project):  # -> ProjectConfig
    project.write("conveyor.yaml", "project: loans\n")
    return project.config()


def _config(project, yaml_text: str):  # -> ProjectConfig
    project.write("conveyor.yaml", yaml_text)
    return project.config()


def _docs(text: str) -> dict[str, dict[str, Any]]:
    """The gateway's objects by kind; the controller's two follow them (see _controller_docs)."""
    docs = list(yaml.safe_load_all(text))
    kinds = [doc["kind"] for doc in docs]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "Deployment", "Service"]
    return {doc["kind"]: doc for doc in docs[:3]}


def _controller_docs(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(text))
    return docs[3], docs[4]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """The (INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def _only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in instructions if kw == keyword]
    assert len(found) == 1, (keyword, found)
    return found[0]


class _Health(http.server.BaseHTTPRequestHandler):
    """Answers /healthz with the status its server holds in ``status``."""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        code = self.server.status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- Kubernetes: schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("namespace", [None, "ml-prod"])
def test_every_document_fits_the_kubernetes_schema(config, version: str, namespace) -> None:
    text = render_k8s(config, image=IMAGE, namespace=namespace)
    for doc in _docs(text).values():
        assert kubernetes_validate.validate(doc, version, strict=True) == version
        assert doc["metadata"].get("namespace") == namespace


def test_the_schema_check_rejects_a_misspelt_field(config) -> None:
    # Shows the check above has teeth: strict schemas refuse a field Kubernetes does not know.
    deployment = _docs(render_k8s(config, image=IMAGE))["Deployment"]
    _container(deployment)["livenessProbes"] = _container(deployment).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenessProbes"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
def test_the_written_file_passes_the_kubernetes_validate_command(config) -> None:
    path, kustomization = write_deploy(config, "k8s", image=IMAGE, namespace="ml")
    assert path == config.root / DEFAULT_K8S_PATH
    assert kustomization == path.with_name("kustomization.yaml")
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for resource in (
        "deployment/loans",
        "service/loans",
        "horizontalpodautoscaler/loans",
        "deployment/loans-controller",
        "service/loans-controller",
    ):
        assert f"passed for resource {resource} against version {KUBERNETES_VERSION}" in (
            result.stdout
        )


def test_the_yaml_has_no_anchors_and_starts_with_how_to_use_it(config) -> None:
    text = render_k8s(config, image=IMAGE, namespace="ml")
    assert "&id" not in text and "*id" not in text
    assert text.startswith("# Generated by `conveyor export k8s` for the Conveyor project 'loans'")
    assert "kubectl -n ml create secret generic conveyor-store" in text
    assert "kubectl -n ml create secret generic conveyor-token" in text
    assert "http://loans.ml.svc/ (port 80)" in text


# -- Kubernetes: what the schemas cannot say -------------------------------------------------


def test_probes_point_at_healthz_and_readyz_on_the_served_port(config) -> None:
    deployment = _docs(render_k8s(config, image=IMAGE, port=9100))["Deployment"]
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9100}
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    probes = {kind: container[kind]["httpGet"] for kind in kinds}
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "http"},
        "livenessProbe": {"path": "/healthz", "port": "http"},
        "readinessProbe": {"path": "/readyz", "port": "http"},
    }
    assert container["image"] == IMAGE
    assert container["command"] == [
        "conveyor", "serve", "--host", "0.0.0.0", "--port", "9100", "--workers", "1",
    ]  # fmt: skip
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_service_and_autoscaler_point_at_the_deployment(config) -> None:
    docs = _docs(render_k8s(config, image=IMAGE, min_replicas=3, max_replicas=7, replicas=4))
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["targetPort"] in {p["name"] for p in _container(deployment)["ports"]}

    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == (deployment["apiVersion"], "Deployment")
    assert target["name"] == deployment["metadata"]["name"] == "loans"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert deployment["spec"]["replicas"] == 4
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] >= 1


def test_pods_run_as_the_images_non_root_user(config) -> None:
    deployment = _docs(render_k8s(config, image=IMAGE))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    user = _only(parse_dockerfile(render_docker(config)["Dockerfile"]), "USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    assert _container(deployment)["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_are_referenced_never_inlined(project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", "token-from-the-shell-0451")
    monkeypatch.setenv("CONVEYOR_STORE_URL", "postgresql+psycopg://bob:env-pw-77@db/conveyor")
    config = _config(
        project,
        """
        project: loans
        store: {url: "postgresql+psycopg://alice:file-pw-42@db.example/conveyor"}
        """,
    )
    text = render_k8s(config, image=IMAGE)
    for secret in ("file-pw-42", "env-pw-77", "token-from-the-shell-0451", "alice", "bob"):
        assert secret not in text
    env = _container(_docs(text)["Deployment"])["env"]
    assert all(set(var) == {"name", "valueFrom"} for var in env)  # no literal `value`
    refs = {var["name"]: var["valueFrom"]["secretKeyRef"] for var in env}
    assert refs == {
        "CONVEYOR_STORE_URL": {"name": "conveyor-store", "key": "url"},
        # Required: conveyor.yaml's artifacts are a local folder, which is empty in a pod.
        "CONVEYOR_ARTIFACTS": {"name": "conveyor-store", "key": "artifacts"},
        "CONVEYOR_TOKEN": {"name": "conveyor-token", "key": "token"},
    }
    controller, _ = _controller_docs(text)
    assert _container(controller)["env"] == env


def test_the_token_variable_follows_serve_token_env(project) -> None:
    config = _config(project, "project: loans\nserve: {token_env: LOANS_ADMIN_TOKEN}\n")
    env = _container(_docs(render_k8s(config, image=IMAGE))["Deployment"])["env"]
    token = [var for var in env if var["valueFrom"]["secretKeyRef"]["name"] == "conveyor-token"]
    assert [var["name"] for var in token] == ["LOANS_ADMIN_TOKEN"]
    assert '-e LOANS_ADMIN_TOKEN="$(openssl rand -hex 32)"' in render_docker(config)["Dockerfile"]


@pytest.mark.parametrize(
    ("project_name", "expected"),
    [
        ("loans", "loans"),
        ("churn_model_v2", "churn-model-v2"),
        ("risk_", "risk"),
        ("a" * 63, "a" * 63),
    ],
)
def test_names_are_made_dns_safe(project, project_name: str, expected: str) -> None:
    config = _config(project, f"project: {project_name}\n")
    assert resource_name(project_name) == expected
    docs = _docs(render_k8s(config, image=IMAGE))
    for doc in docs.values():
        assert doc["metadata"]["name"] == expected
        assert _DNS_1035.fullmatch(expected) and len(expected) <= 63
        for value in doc["metadata"]["labels"].values():
            assert _LABEL_VALUE.fullmatch(value) and len(value) <= 63


@pytest.mark.parametrize("project_name", ["2024-churn", "a" * 64])
def test_a_project_name_kubernetes_would_refuse_is_refused(project, project_name: str) -> None:
    config = _config(project, f"project: {project_name}\n")
    with pytest.raises(ExportError, match=f"project '{project_name}' cannot name Kubernetes"):
        render_k8s(config, image=IMAGE)
    # The fix the message names: choose the objects' name.
    docs = _docs(render_k8s(config, image=IMAGE, name="churn-gateway"))
    assert {doc["metadata"]["name"] for doc in docs.values()} == {"churn-gateway"}
    with pytest.raises(ExportError, match="name 'Churn' cannot name"):
        render_k8s(config, image=IMAGE, name="Churn")


@pytest.mark.parametrize("project_name", ["_-_", "", "-", "ü"])
def test_a_name_with_nothing_dns_safe_left_is_refused(project_name: str) -> None:
    # conveyor.yaml refuses these names first; the function does not rely on it.
    with pytest.raises(ExportError, match=f"project {project_name!r} cannot name Kubernetes"):
        resource_name(project_name)


@pytest.mark.parametrize("image", ["", "   ", "registry.example.com/loans:1 --privileged", "a\tb"])
def test_an_image_that_is_empty_or_holds_whitespace_is_refused(config, image: str) -> None:
    with pytest.raises(ExportError, match=r"Option 'image' .* (is empty|holds whitespace)"):
        render_k8s(config, image=image)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"replicas": 1}, "replicas"),  # below min_replicas
        ({"min_replicas": 5, "max_replicas": 4}, "max_replicas"),
        ({"cpu_target": 0}, "cpu_target"),
        ({"port": 70000}, "port"),
        ({"replicas": True}, "replicas"),
        ({"namespace": "ML_prod"}, "namespace"),
    ],
)
def test_k8s_options_out_of_range_are_refused(config, options: dict, option: str) -> None:
    with pytest.raises(ExportError, match=f"Option '{option}'"):
        render_k8s(config, image=IMAGE, **options)


# -- Docker ----------------------------------------------------------------------------------


def test_the_dockerfile_runs_conveyor_serve_as_a_non_root_user(config) -> None:
    files = render_docker(config, port=9000, workers=3, python="3.12")
    assert set(files) == {"Dockerfile", ".dockerignore"}
    instructions = parse_dockerfile(files["Dockerfile"])
    keywords = [kw for kw, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.12-slim")

    user = _only(instructions, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # Everything that installs runs as root, before the switch; nothing runs after it.
    assert "RUN" not in keywords[keywords.index("USER") :]
    assert keywords.index("CMD") > keywords.index("USER")
    run = " ".join(args for kw, args in instructions if kw == "RUN")
    assert f"useradd --uid {uid} --gid {gid}" in run

    assert _only(instructions, "EXPOSE") == "9000"
    assert json.loads(_only(instructions, "CMD")) == [
        "conveyor", "serve", "--host", "0.0.0.0", "--port", "9000", "--workers", "3",
    ]  # fmt: skip
    env = _only(instructions, "ENV")
    for var in ("OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1"):
        assert var in env.split()
    healthcheck = _only(instructions, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options
    args = json.loads(command)
    assert args[:2] == ["python", "-c"] and "http://127.0.0.1:9000/healthz" in args[2]


def test_the_image_installs_the_projects_requirements(project) -> None:
    config = _config(project, "project: loans\n")
    project.write("requirements.txt", "conveyor-ml[postgres]\nscikit-learn==1.5.2\n")
    instructions = parse_dockerfile(render_docker(config)["Dockerfile"])
    steps = [(kw, args) for kw, args in instructions if kw in ("COPY", "RUN")]
    # requirements.txt alone first, so the installed layer survives a change of code.
    # Conveyor pinned in the same pip run, so requirements.txt cannot move it; then only the
    # configuration: no data, no `COPY . .`.
    assert steps[1:4] == [
        ("COPY", "requirements.txt ./"),
        ("RUN", 'pip install --no-cache-dir -r requirements.txt "conveyor-ml==0.1.0"'),
        ("COPY", "conveyor.yaml ./"),
    ]
    assert ("COPY", ". .") not in steps


def test_requirements_that_refer_to_the_project_are_installed_after_copying_it(project) -> None:
    config = _config(project, "project: loans\n")
    project.write("requirements.txt", "conveyor-ml\n-e .\n")
    project.write("pyproject.toml", "[project]\nname = 'loans'\n")
    project.write("loans/model.py", "class Model: ...\n")
    project.write("data/train.csv", "a\n1\n")
    instructions = parse_dockerfile(render_docker(config)["Dockerfile"])
    steps = [(kw, args) for kw, args in instructions if kw in ("COPY", "RUN")]
    assert steps[1:6] == [
        ("COPY", "conveyor.yaml ./"),
        ("COPY", "pyproject.toml ./"),
        ("COPY", "loans ./loans/"),
        ("COPY", "requirements.txt ./"),
        ("RUN", 'pip install --no-cache-dir -r requirements.txt "conveyor-ml==0.1.0"'),
    ]


def test_without_requirements_the_image_installs_this_conveyor(config) -> None:
    assert not (config.root / "requirements.txt").exists()
    instructions = parse_dockerfile(render_docker(config)["Dockerfile"])
    installs = [args for kw, args in instructions if kw == "RUN" and "pip install" in args]
    assert installs == [f'pip install --no-cache-dir "conveyor-ml=={conveyor.__version__}"']


def test_the_image_installs_the_extras_the_store_needs_and_says_why(project) -> None:
    config = _config(
        project,
        "project: loans\nstore: {url: 'postgresql+psycopg://db/c', artifacts: 's3://b/c'}\n",
    )
    text = render_docker(config)["Dockerfile"]
    assert 'pip install --no-cache-dir "conveyor-ml[postgres,s3]==0.1.0"' in text
    assert "# Extra postgres: the store (store.url) is PostgreSQL" in text
    assert "# Extra s3: the artifacts (store.artifacts) are in S3" in text


def test_without_extras_the_image_says_how_to_add_a_store_named_only_by_the_environment(
    config,
) -> None:
    text = render_docker(config)["Dockerfile"]
    assert "# No extras: conveyor.yaml's store is SQLite on local files" in text
    assert (
        "# If CONVEYOR_STORE_URL or CONVEYOR_ARTIFACTS will name PostgreSQL or S3 where this "
        "runs, export again with --extra postgres (or s3)." in text
    )
    with_extra = render_docker(config, extra=("postgres",))["Dockerfile"]
    assert '"conveyor-ml[postgres]==0.1.0"' in with_extra and "No extras" not in with_extra


def test_an_install_spec_replaces_the_release_and_a_wheel_in_the_project_is_copied(
    project,
) -> None:
    config = _config(project, "project: loans\nstore: {url: 'postgresql://db/c'}\n")
    project.write("wheels/conveyor_ml-0.1.0-py3-none-any.whl", "")
    text = render_docker(config, install="wheels/conveyor_ml-0.1.0-py3-none-any.whl")["Dockerfile"]
    steps = [(kw, args) for kw, args in parse_dockerfile(text) if kw in ("COPY", "RUN")]
    assert steps[1:3] == [
        (
            "COPY",
            "wheels/conveyor_ml-0.1.0-py3-none-any.whl ./wheels/conveyor_ml-0.1.0-py3-none-any.whl",
        ),
        (
            "RUN",
            "pip install --no-cache-dir wheels/conveyor_ml-0.1.0-py3-none-any.whl "
            '"conveyor-ml[postgres]"',
        ),
    ]


def test_the_dockerignore_keeps_local_state_out_of_the_image(config) -> None:
    text = render_docker(config)[".dockerignore"]
    patterns = {line for line in text.splitlines() if line and not line.startswith("#")}
    assert {".conveyor", ".venv", ".git", "**/__pycache__", ".cache", ".env"} <= patterns


@pytest.mark.parametrize(
    ("options", "option"),
    [({"port": 0}, "port"), ({"workers": 0}, "workers"), ({"python": "3"}, "python")],
)
def test_docker_options_out_of_range_are_refused(config, options: dict, option: str) -> None:
    with pytest.raises(ExportError, match=f"Option '{option}'"):
        render_docker(config, **options)


@pytest.mark.slow
def test_the_healthcheck_passes_only_while_healthz_answers_ok(config, health_server) -> None:
    port = health_server.server_address[1]
    healthcheck = _only(
        parse_dockerfile(render_docker(config, port=port)["Dockerfile"]), "HEALTHCHECK"
    )
    args = json.loads(healthcheck.partition(" CMD ")[2])
    command = [sys.executable, *args[1:]]  # the image's `python`, here this interpreter

    def check() -> int:
        return subprocess.run(command, capture_output=True, timeout=30).returncode

    assert check() == 0
    health_server.status = 503  # type: ignore[attr-defined]
    assert check() != 0
    health_server.shutdown()
    health_server.server_close()
    assert check() != 0  # nothing listening


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="the hadolint binary is not installed")
def test_hadolint_finds_nothing_in_the_dockerfile(config, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_docker(config)["Dockerfile"])
    result = subprocess.run(
        ["hadolint", "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- writing ---------------------------------------------------------------------------------


def test_docker_files_go_to_the_project_and_are_not_rewritten_when_unchanged(config) -> None:
    root = config.root
    written = write_deploy(config, "docker")
    assert written == [root / "Dockerfile", root / ".dockerignore"]
    expected = render_docker(config)
    for path in written:
        assert path.read_text() == expected[path.name]
        assert path.stat().st_mode & 0o777 == 0o644
    stamp = (root / "Dockerfile").stat().st_mtime_ns
    assert write_deploy(config, "docker") == []
    assert (root / "Dockerfile").stat().st_mtime_ns == stamp
    assert not list(root.glob(".*.tmp"))


def test_a_file_that_differs_is_kept_unless_forced(config) -> None:
    root = config.root
    (root / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(
        ExportError, match=re.escape(f"{str(root / 'Dockerfile')!r} already exists")
    ):
        write_deploy(config, "docker")
    # All or nothing: the .dockerignore was not written either.
    assert (root / "Dockerfile").read_text() == "FROM scratch\n"
    assert not (root / ".dockerignore").exists()

    written = write_deploy(config, "docker", force=True)
    assert written == [root / "Dockerfile", root / ".dockerignore"]
    assert (root / "Dockerfile").read_text() == render_docker(config)["Dockerfile"]


def test_k8s_refuses_to_overwrite_unless_forced(config) -> None:
    path = config.root / "deploy" / "k8s.yaml"
    assert write_deploy(config, "k8s", image=IMAGE) == [path, path.parent / "kustomization.yaml"]
    assert write_deploy(config, "k8s", image=IMAGE) == []  # the same text: nothing to do
    with pytest.raises(ExportError, match=re.escape(f"{str(path)!r} already exists and differs")):
        write_deploy(config, "k8s", image=IMAGE, replicas=3)
    assert _docs(path.read_text())["Deployment"]["spec"]["replicas"] == 2
    assert write_deploy(config, "k8s", image=IMAGE, replicas=3, force=True) == [path]
    assert _docs(path.read_text())["Deployment"]["spec"]["replicas"] == 3


def test_outputs_are_taken_from_the_project_folder(config, tmp_path: Path) -> None:
    root = config.root
    assert write_deploy(config, "k8s", Path("ops/gateway.yaml"), image=IMAGE) == [
        root / "ops" / "gateway.yaml",
        root / "ops" / "kustomization.yaml",
    ]
    elsewhere = tmp_path / "image"
    assert write_deploy(config, "docker", elsewhere) == [
        elsewhere / "Dockerfile",
        elsewhere / ".dockerignore",
    ]


def test_outputs_of_the_wrong_sort_are_refused(config) -> None:
    root = config.root
    (root / "deploy" / "k8s.yaml").mkdir(parents=True)
    with pytest.raises(ExportError, match="is a folder; pass a file path"):
        write_deploy(config, "k8s", image=IMAGE)
    (root / "notes.txt").write_text("")
    with pytest.raises(ExportError, match="notes.txt' is a file"):
        write_deploy(config, "docker", Path("notes.txt"))
    with pytest.raises(
        ExportError, match="Unknown deployment kind 'helm'; choose one of docker, k8s"
    ):
        write_deploy(config, "helm")


def test_a_bad_image_writes_nothing(config) -> None:
    with pytest.raises(ExportError, match="Option 'image'"):
        write_deploy(config, "k8s", image="loans gateway")
    assert not (config.root / "deploy").exists()


def test_a_failed_write_names_the_file(config) -> None:
    (config.root / "notes.txt").write_text("")
    with pytest.raises(
        ExportError,
        match=r"Cannot write '.*notes\.txt/k8s\.yaml': '.*notes\.txt' is a file, not a folder",
    ):
        write_deploy(config, "k8s", Path("notes.txt/k8s.yaml"), image=IMAGE)


def test_the_controller_is_one_recreated_pod_whose_metrics_prometheus_can_reach(config) -> None:
    text = render_k8s(config, image=IMAGE)
    controller, service = _controller_docs(text)
    assert (controller["kind"], service["kind"]) == ("Deployment", "Service")
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    container = _container(controller)
    assert container["image"] == IMAGE
    assert container["command"] == [
        "conveyor", "watch", "--url", "http://loans:80",
        "--metrics-port", "9100", "--metrics-host", "0.0.0.0",
    ]  # fmt: skip
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == controller["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "9100"


def test_the_kustomization_lists_the_manifests_and_makes_the_secrets(config) -> None:
    write_deploy(config, "k8s", image=IMAGE)
    folder = config.root / "deploy"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert [(folder / name).is_file() for name in kustomization["resources"]] == [True]
    made = {g["name"] for g in kustomization["secretGenerator"]}
    referenced = {
        var["valueFrom"]["secretKeyRef"]["name"]
        for doc in yaml.safe_load_all((folder / "k8s.yaml").read_text())
        if doc["kind"] == "Deployment"
        for var in _container(doc)["env"]
    }
    assert made == referenced == {"conveyor-store", "conveyor-token"}


def test_a_project_importing_torch_installs_the_torch_extra_and_says_where_the_cpu_build_is(
    project,
) -> None:
    config = _config(project, "project: loans\n")
    project.write("loans/net.py", "import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    text = render_docker(config)["Dockerfile"]
    assert '"conveyor-ml[torch]==0.1.0"' in text
    assert "# Extra torch: the project's code imports torch" in text
    assert "https://download.pytorch.org/whl/cpu" in text
