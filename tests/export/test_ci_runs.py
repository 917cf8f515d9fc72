"""The exported CI files run unedited, as the CI system's runner would run them, against a shared
PostgreSQL store: a pull (merge) request with a worse model fails with exit code 3 and registers
nothing, and the main branch registers.

The repository is a real git repository in tmp_path with the churn project and the files that
``conveyor export github-actions`` and ``conveyor export gitlab-ci`` wrote into it, committed;
each run checks it out afresh into an empty workspace and installs Conveyor from the wheel built
from the committed tree into a fresh virtual environment (``--install`` names the wheel). GitHub's
runner is the double in github_runner.py: every ``run:`` step is executed by bash exactly as
written in the file. ``gh`` (the pull-request comment) is a recording double on PATH, as GitHub's
API is not here. GitLab's shell executor is simpler: the job's ``script:`` lines, as one script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.churn_project import CONFIG_HEAD, STEPS, rows
from tests.export.builds import build_wheel, clean_env, fresh_venv
from tests.export.github_runner import Event, JobResult, Runner
from tests.pg_server import drop_database, fresh_database, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1200)]

CONFIG = (
    CONFIG_HEAD
    + """\
gates:
  - roc_auc >= 0.55
  - name: not worse than production
    check: roc_auc >= production.roc_auc - 0.01
"""
)
GH = """\
#!/usr/bin/env bash
# A recording double of the GitHub CLI: keeps each call's words and the body it would post.
n=$(ls "$GH_CALLS" | wc -l)
printf '%s\\n' "$@" > "$GH_CALLS/call-$n.args"
while [ $# -gt 0 ]; do
  if [ "$1" = --body-file ]; then cp "$2" "$GH_CALLS/call-$n.body"; fi
  shift
done
"""


def _git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=CI", "-c", "user.email=ci@example.com",
         *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _conveyor(folder: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The suite's own conveyor, as the team member who exports the file runs it."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def store_url():
    url = fresh_database(require_postgres())
    yield url
    drop_database(url)


def _repository(origin: Path, wheel: Path) -> str:
    """The team's repository: the project and its exported workflow on main, and a branch
    whose model drops the strongest feature. Returns the workflow's text."""
    origin.mkdir()
    (origin / "shop.py").write_text(STEPS)
    (origin / "conveyor.yaml").write_text(CONFIG)
    (origin / "requirements.txt").write_text("scikit-learn>=1.4\npandas>=2.2\n")
    (origin / ".gitignore").write_text(".conveyor/\n")
    (origin / "data").mkdir()
    rows().to_csv(origin / "data" / "rows.csv", index=False)
    for kind in ("github-actions", "gitlab-ci"):
        exported = _conveyor(
            origin, "export", kind, "--install", str(wheel), "--extra", "postgres",
            env=clean_env(),
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
    _git(origin, "init", "--quiet", "--initial-branch=main")
    _git(origin, "add", ".")
    _git(origin, "commit", "--quiet", "-m", "churn model and its workflow")
    _git(origin, "checkout", "--quiet", "-b", "drop-tenure")
    worse = CONFIG.replace("[tenure, spend, region]", "[spend, region]")
    (origin / "conveyor.yaml").write_text(worse)
    _git(origin, "commit", "--quiet", "-am", "train without tenure")
    _git(origin, "checkout", "--quiet", "main")
    return (origin / ".github" / "workflows" / "conveyor.yml").read_text()


def _registered(store_url: str) -> list[int]:
    from conveyor.store.metadata import Store

    with Store(store_url) as store:
        return [int(e.payload["version"]) for e in store.events() if e.kind == "model.registered"]


def _log(result: JobResult) -> str:
    return "\n".join(f"--- {s.name}: {s.outcome} ({s.code})\n{s.log}" for s in result.steps)


def test_the_exported_workflow_runs_unedited_for_main_and_for_a_pull_request(
    tmp_path: Path, wheel: Path, store_url: str
) -> None:
    workflow = _repository(tmp_path / "origin", wheel)
    assert f"pip install -r requirements.txt {wheel}" in workflow  # the --install spec, unedited
    calls = tmp_path / "gh-calls"
    calls.mkdir()
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "gh").write_text(GH)
    (tools / "gh").chmod(0o755)
    artifacts = tmp_path / "shared-artifacts"
    base = clean_env(GH_CALLS=str(calls))
    base["PATH"] = f"{tools}:{base['PATH']}"
    runner = Runner(
        workflow,
        origin=tmp_path / "origin",
        home=tmp_path / "runner",
        secrets={"CONVEYOR_STORE_URL": store_url, "CONVEYOR_ARTIFACTS": str(artifacts)},
        python_env=fresh_venv,
        base_env=base,
    )

    # The main branch: every gate passes (nothing in production yet) and the model registers.
    main = runner.run("conveyor", Event("push", "refs/heads/main", "main"))
    assert main.exit_code == 0, _log(main)
    assert main.step("Run the pipeline and the quality gates").outputs == {"exit-code": "0"}
    assert main.step("Comment the report on the pull request").outcome == "skipped"
    assert _registered(store_url) == [1]
    assert "churn: 2 gates passed, 1 skipped, registered as version 1" in main.summary
    # Conveyor ran from the wheel in the fresh environment, not from this checkout.
    installed = main.step("Install the project and Conveyor").log
    assert "Successfully installed conveyor-ml" in installed, installed

    # The team promotes it; a pull request then trains without the strongest feature.
    env = clean_env(CONVEYOR_STORE_URL=store_url, CONVEYOR_ARTIFACTS=str(artifacts))
    promoted = _conveyor(tmp_path / "origin", "models", "alias", "1", "production", env=env)
    assert promoted.returncode == 0, promoted.stderr

    pr = runner.run("conveyor", Event("pull_request", "refs/pull/7/merge", "drop-tenure", 7))
    assert pr.exit_code == 3, _log(pr)
    assert pr.failed_step is not None
    assert pr.failed_step.name == "Fail unless every gate passed"
    assert "::error::A quality gate failed" in pr.failed_step.log
    gates = pr.step("Run the pipeline and the quality gates")
    assert gates.outputs == {"exit-code": "3"} and "not worse than production" in gates.log
    assert _registered(store_url) == [1]  # the pull request registered nothing

    # The report went to the artifact, the job summary and the pull request's comment, its
    # plots as absolute links to the uploaded artifact, never as relative image links.
    uploaded = pr.artifacts / "conveyor-report"
    plots = sorted(p.name for p in (uploaded / "conveyor-report-plots").iterdir())
    assert "roc.svg" in plots
    [args] = sorted(calls.glob("*.args"))
    assert args.read_text().split("\n")[:3] == ["pr", "comment", "7"]
    comment = args.with_suffix(".body").read_text()
    assert "not worse than production" in comment
    assert not re.search(r"!\[[^]]*\]\((?!https://)", comment), comment
    artifact_url = pr.step("Upload the report, its plots and the JUnit results").outputs[
        "artifact-url"
    ]
    assert f"(SVG, in the uploaded report)]({artifact_url})" in comment
    assert comment in pr.summary


def _gitlab_job(
    origin: Path, workspace: Path, branch: str, variables: dict[str, str], base: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """One run of the ``conveyor`` job as GitLab's shell executor runs it: a fresh clone, the
    job's ``script:`` lines as one bash script (-eo pipefail), the predefined variables, the
    job's ``variables:`` expanded, the CI/CD variables; ``image: python:3.11`` is a fresh
    virtual environment first on PATH."""
    shutil.rmtree(workspace, ignore_errors=True)
    _git(origin, "clone", "--quiet", "--branch", branch, str(origin), str(workspace))
    job = yaml.safe_load((workspace / ".gitlab-ci.yml").read_text())["conveyor"]
    python = fresh_venv(workspace.parent / f"python-{branch}")
    env = {**base, **variables, "CI": "true", "GITLAB_CI": "true", "CI_DEFAULT_BRANCH": "main",
           "CI_PROJECT_DIR": str(workspace), "PATH": f"{python}:{base['PATH']}"}  # fmt: skip
    for name, value in job.get("variables", {}).items():
        env[name] = os.path.expandvars(str(value).replace("$CI_PROJECT_DIR", str(workspace)))
    script = workspace.parent / f"script-{branch}.sh"
    script.write_text("\n".join(job["script"]) + "\n")
    return subprocess.run(
        ["bash", "-eo", "pipefail", str(script)], cwd=workspace, env=env, capture_output=True,
        text=True, timeout=1200, check=False,
    )  # fmt: skip


def test_the_exported_gitlab_script_runs_unedited_for_main_and_a_merge_request(
    tmp_path: Path, wheel: Path, store_url: str
) -> None:
    _repository(tmp_path / "origin", wheel)
    artifacts = tmp_path / "shared-artifacts"
    shared = {"CONVEYOR_STORE_URL": store_url, "CONVEYOR_ARTIFACTS": str(artifacts)}
    base = clean_env()
    origin, workspace = tmp_path / "origin", tmp_path / "builds" / "churn"
    workspace.parent.mkdir()

    main = _gitlab_job(origin, workspace, "main", {
        **shared, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}, base)  # fmt: skip
    assert main.returncode == 0, main.stdout + main.stderr
    assert "Store: the shared one, from CONVEYOR_STORE_URL." in main.stdout
    assert _registered(store_url) == [1]
    assert (workspace / "conveyor-junit.xml").is_file()  # the file reports: junit names

    env = clean_env(**shared)
    promoted = _conveyor(origin, "models", "alias", "1", "production", env=env)
    assert promoted.returncode == 0, promoted.stderr
    request = _gitlab_job(origin, workspace, "drop-tenure", {
        **shared, "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": "7"}, base)  # fmt: skip
    assert request.returncode == 3, request.stdout + request.stderr
    assert _registered(store_url) == [1]
    assert (workspace / "conveyor-report.md").is_file()
