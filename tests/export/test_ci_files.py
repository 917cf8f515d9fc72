"""The CI files: valid for their CI system, wired to `conveyor ci`, and written safely.

GitHub and GitLab files are checked against the JSON schemas vendored in check-jsonschema (the
ones SchemaStore and GitLab publish), both through the `jsonschema` library and through the
`check-jsonschema` command. No schema exists for a Jenkinsfile, so a small tokenizer below checks
that it is balanced and has the declarative structure Jenkins requires.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import Draft7Validator, validator_for

from conveyor.exceptions import ExportError
from conveyor.export.ci_files import (
    COMMAND,
    DEFAULT_INSTALL,
    DEFAULT_PATHS,
    JUNIT,
    KINDS,
    render_ci,
    write_ci,
)

BIN = Path(sys.executable).parent
SCHEMAS = {"github-actions": "github-workflows", "gitlab-ci": "gitlab-ci"}

# Quotes, backslashes, a GitHub expression, Groovy's triple quote and a continuation line: every
# quoting rule of the three file formats meets something to get wrong.
AWKWARD_INSTALL = (
    "pip install -r 'requirements ci.txt' \\\n"
    "  && echo \"done: ${{ github.sha }} $HOME\" ''' \\\\ end"
)
INSTALLS = [pytest.param(None, id="default-install"), pytest.param(AWKWARD_INSTALL, id="awkward")]


# -- helpers ---------------------------------------------------------------------------------


def _validator(kind: str) -> Draft7Validator:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath(f"{SCHEMAS[kind]}.json").read_text(encoding="utf-8"))
    cls = validator_for(schema)
    assert cls is Draft7Validator  # both schemas declare draft-07
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(kind: str, doc: Any) -> list[str]:
    """Every error, with those under a failed oneOf/anyOf, which say what the branch lacked."""
    found: list[str] = []
    pending = list(_validator(kind).iter_errors(doc))
    while pending:
        error = pending.pop(0)
        found.append(f"{list(error.absolute_path)}: {error.message}")
        pending += error.context or []
    return found


def _check_jsonschema(kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    # --builtin-schema reads the vendored file from the package: nothing is fetched.
    cmd = [
        str(BIN / "check-jsonschema"),
        "--no-cache",
        "--builtin-schema",
        f"vendor.{SCHEMAS[kind]}",
    ]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60)


def _step(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    steps = workflow["jobs"]["conveyor"]["steps"]
    found = [s for s in steps if s.get("name") == name or s.get("id") == name]
    assert len(found) == 1, [s.get("name") for s in steps]
    return found[0]


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `run:` block the way GitHub's default shell does (`bash -e {0}`)."""
    file = cwd / ".step.sh"
    file.write_text(script)
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    full = {**os.environ, "PATH": path, **env}
    return subprocess.run(
        ["bash", "-e", str(file)], cwd=cwd, env=full, capture_output=True, text=True, timeout=60
    )


# -- a structural checker for Jenkinsfiles ---------------------------------------------------

_GROOVY_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r]+)
  | (?P<newline>\n)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>'''(?:\\.|(?!''')[^\\])*'''|\"\"\"(?:\\.|(?!\"\"\")[^\\])*\"\"\"
              |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>[{(\[])
  | (?P<close>[})\]])
  | (?P<other>[^\s\w{}()\[\]'"/]+|/(?![/*]))
  | (?P<number>\d+)
    """,
    re.X | re.S,
)
_PAIRS = {")": "(", "]": "[", "}": "{"}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "$": "$"}


@dataclass
class Block:
    """A `name(args) { ... }` block: the words and strings directly in it, and its blocks."""

    name: str
    args: list[str]
    line: int
    words: list[str] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)

    def blocks(self, name: str) -> list[Block]:
        return [child for child in self.children if child.name == name]


def _decode(literal: str) -> str:
    quote = 3 if literal[:3] in ("'''", '"""') else 1
    body = literal[quote:-quote]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), body, flags=re.S)


def parse_groovy(text: str) -> tuple[Block, list[str], list[str]]:
    """The block tree of a Groovy file, its string values, and any problems found."""
    root = Block("<file>", [], 0)
    stack, brackets, problems, strings = [root], [], [], []
    header: list[tuple[str, str]] = []
    pos, line = 0, 1
    while pos < len(text):
        match = _GROOVY_TOKEN.match(text, pos)
        if match is None:
            problems.append(f"line {line}: cannot read {text[pos : pos + 20]!r} (unclosed string?)")
            break
        kind, value = match.lastgroup or "", match[0]
        pos = match.end()
        if kind == "string":
            strings.append(_decode(value))
            header.append((kind, strings[-1]))
        elif kind == "word":
            stack[-1].words.append(value)
            header.append((kind, value))
        elif kind == "open":
            brackets.append((value, line))
            if value == "{":
                names = [v for k, v in header if k == "word"]
                args = [v for k, v in header if k == "string"]
                block = Block(names[0] if names else "", args, line)
                stack[-1].children.append(block)
                stack.append(block)
                header = []
        elif kind == "close":
            if not brackets or brackets[-1][0] != _PAIRS[value]:
                problems.append(f"line {line}: {value!r} closes nothing open")
                break
            brackets.pop()
            if value == "}":
                stack.pop()
                header = []
        elif kind == "newline" and not any(b == "(" for b, _ in brackets[-1:]):
            header = []
        elif kind == "other" and ";" in value:
            header = []
        line += value.count("\n")
    problems += [f"line {n}: {b!r} is never closed" for b, n in brackets]
    return root, strings, problems


def jenkinsfile_problems(text: str) -> list[str]:
    """What keeps a Jenkinsfile from being a declarative pipeline that publishes JUnit results."""
    root, _, problems = parse_groovy(text)
    if problems:
        return problems
    if [block.name for block in root.children] != ["pipeline"]:
        return [f"expected one top-level 'pipeline {{ }}', got {[b.name for b in root.children]}"]
    pipeline = root.children[0]
    if "agent" not in pipeline.words and not pipeline.blocks("agent"):
        problems.append("pipeline has no agent")
    stages = pipeline.blocks("stages")
    stage_list = stages[0].blocks("stage") if len(stages) == 1 else []
    if not stage_list:
        problems.append("pipeline has no 'stages { stage(...) { } }'")
    for stage in stage_list:
        steps = stage.blocks("steps")
        if len(stage.args) != 1 or len(steps) != 1 or not (steps[0].words or steps[0].children):
            problems.append(f"line {stage.line}: a stage needs a name and one non-empty steps")
    always = [a for post in pipeline.blocks("post") for a in post.blocks("always")]
    if not any("junit" in block.words for block in always):
        problems.append("pipeline has no 'post { always { junit ... } }'")
    return problems


# -- GitHub Actions --------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [".", "ml/loans"])
@pytest.mark.parametrize("install", INSTALLS)
def test_github_workflow_fits_the_schema(folder: str, install: str | None) -> None:
    text = render_ci("github-actions", project="loans", install=install, working_directory=folder)
    workflow = yaml.safe_load(text)

    assert _errors("github-actions", workflow) == []
    assert (
        _step(workflow, "Install the project and Conveyor")["run"]
        == (install or DEFAULT_INSTALL) + "\n"
    )
    defaults = workflow["jobs"]["conveyor"].get("defaults", {"run": {"working-directory": "."}})
    assert defaults["run"]["working-directory"] == folder
    upload = _step(workflow, "Upload the report, its plots and the JUnit results")
    prefix = "" if folder == "." else folder + "/"
    assert upload["with"]["path"].split() == [
        f"{prefix}conveyor-report.md",
        f"{prefix}conveyor-report-plots/",
        f"{prefix}{JUNIT}",
    ]


def test_github_workflow_runs_the_gates_and_publishes_the_report() -> None:
    text = render_ci("github-actions", project="loans", python="3.12")
    workflow = yaml.safe_load(text)
    job = workflow["jobs"]["conveyor"]

    assert text.startswith("# Generated by `conveyor export github-actions`")
    assert workflow["on"] == {
        "pull_request": None,
        "push": {"branches": ["main"]},
        "workflow_dispatch": None,
    }
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert job["env"] == {
        "CONVEYOR_STORE_URL": "${{ secrets.CONVEYOR_STORE_URL }}",
        "CONVEYOR_ARTIFACTS": "${{ secrets.CONVEYOR_ARTIFACTS }}",
    }
    uses = [step.get("uses") for step in job["steps"]]
    assert uses[:2] == ["actions/checkout@v4", "actions/setup-python@v5"]
    assert job["steps"][1]["with"]["python-version"] == "3.12"
    assert job["steps"][1]["with"]["cache"] == "pip"
    assert not any("actions/cache" in (u or "") for u in uses)  # .conveyor/ is never cached

    gates = _step(workflow, "gates")
    assert COMMAND in gates["run"] and "set +e" in gates["run"]
    assert "continue-on-error" not in gates  # it succeeds by itself, and keeps the code
    assert _step(workflow, "Upload the report, its plots and the JUnit results") == {
        "id": "upload",
        "name": "Upload the report, its plots and the JUnit results",
        "if": "always()",
        "uses": "actions/upload-artifact@v4",
        "with": {
            "name": "conveyor-report",
            "path": f"conveyor-report.md\nconveyor-report-plots/\n{JUNIT}\n",
            "if-no-files-found": "ignore",
        },
    }
    comment = _step(workflow, "Comment the report on the pull request")
    assert comment["if"] == "always() && github.event_name == 'pull_request'"
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert 'gh pr comment "$PR" --body-file conveyor-comment.md --edit-last' in comment["run"]
    assert '|| gh pr comment "$PR" --body-file conveyor-comment.md\n' in comment["run"]
    assert "$GITHUB_STEP_SUMMARY" in _step(workflow, "Link the plots to the uploaded report")["run"]
    last = job["steps"][-1]
    assert last["if"] == "always() && steps.gates.outcome == 'success'"
    assert last["env"]["CODE"] == "${{ steps.gates.outputs.exit-code }}"


def test_github_steps_keep_the_exit_code_until_the_last_step(tmp_path: Path) -> None:
    """The step scripts run in bash as on a runner, with the real `conveyor` executable."""
    workflow = yaml.safe_load(render_ci("github-actions", project="loans"))
    output, summary = tmp_path / "output", tmp_path / "summary"
    env = {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}

    # No project here, so `conveyor ci` fails; the step must still succeed and keep the code.
    gates = _bash(_step(workflow, "gates")["run"], tmp_path, env)
    assert gates.returncode == 0, gates.stderr
    code = re.fullmatch(r"exit-code=(\d+)\n", output.read_text())
    assert code is not None and code[1] != "0", output.read_text()

    last = workflow["jobs"]["conveyor"]["steps"][-1]["run"]
    for value, expected in [(code[1], int(code[1])), ("0", 0), ("3", 3), ("", 1)]:
        result = _bash(last, tmp_path, {"CODE": value})
        assert result.returncode == expected, (value, result.stdout)
    assert "::error::A quality gate failed" in _bash(last, tmp_path, {"CODE": "3"}).stdout

    # Without a report the comment step does nothing (and never reaches gh); with one, the
    # plots step turns each image into a link to the artifact and appends it to the summary.
    comment = _bash(_step(workflow, "Comment the report on the pull request")["run"], tmp_path, {})
    assert (comment.returncode, comment.stdout) == (0, "No report to comment.\n")
    (tmp_path / "conveyor-report.md").write_text(
        "## Gates\n\nauc 0.81 >= 0.70\n\n![ROC curve](conveyor-report-plots/roc.svg)\n"
    )
    summary.write_text("before\n")
    url = "https://github.com/o/r/actions/runs/1/artifacts/2"
    link = _step(workflow, "Link the plots to the uploaded report")["run"]
    added = _bash(link, tmp_path, {**env, "PLOTS_URL": url})
    assert added.returncode == 0, added.stderr
    expected = f"## Gates\n\nauc 0.81 >= 0.70\n\n[ROC curve (SVG, in the uploaded report)]({url})\n"
    assert summary.read_text() == "before\n" + expected
    assert (tmp_path / "conveyor-comment.md").read_text() == expected


def test_github_schema_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    workflow = yaml.safe_load(render_ci("github-actions", project="loans"))
    del workflow["jobs"]["conveyor"]["runs-on"]

    errors = _errors("github-actions", workflow)
    assert "['jobs', 'conveyor']: 'runs-on' is a required property" in errors, errors
    broken = tmp_path / "broken.yml"
    broken.write_text(json.dumps(workflow))
    result = _check_jsonschema("github-actions", broken)
    assert result.returncode == 1, result.stdout + result.stderr


# -- GitLab CI -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [".", "ml/loans"])
@pytest.mark.parametrize("install", INSTALLS)
def test_gitlab_file_fits_the_schema(folder: str, install: str | None) -> None:
    text = render_ci("gitlab-ci", project="loans", install=install, working_directory=folder)
    config = yaml.safe_load(text)
    job = config["conveyor"]

    assert _errors("gitlab-ci", config) == []
    assert (install or DEFAULT_INSTALL) + "\n" in job["script"]
    prefix = "" if folder == "." else folder + "/"
    assert ("cd ml/loans" in job["script"]) == bool(prefix)
    assert job["artifacts"]["paths"] == [
        f"{prefix}conveyor-report.md",
        f"{prefix}conveyor-report-plots/",
        f"{prefix}{JUNIT}",
    ]
    assert job["artifacts"]["reports"] == {"junit": f"{prefix}{JUNIT}"}


def test_gitlab_job_runs_the_gates_on_merge_requests_and_the_default_branch() -> None:
    text = render_ci("gitlab-ci", project="loans", python="3.12")
    job = yaml.safe_load(text)["conveyor"]

    assert text.startswith("# Generated by `conveyor export gitlab-ci`")
    assert (job["stage"], job["image"]) == ("test", "python:3.12")
    assert job["rules"] == [
        {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
        {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"},
    ]
    assert job["cache"]["paths"] == [".cache/pip"]
    assert job["variables"]["PIP_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/pip"
    assert job["script"][-1] == (
        "register=--register\n"
        'if [ "$CI_PIPELINE_SOURCE" = merge_request_event ]; then register=--no-register; fi\n'
        f'{COMMAND} "$register"\n'
    )
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["expose_as"] == "Conveyor report"
    # CI/CD variables reach the job by themselves; the file names them where it says so.
    assert "CONVEYOR_STORE_URL" in text and "CONVEYOR_ARTIFACTS" in text


def test_gitlab_job_says_which_store_without_printing_its_url(tmp_path: Path) -> None:
    job = yaml.safe_load(render_ci("gitlab-ci", project="loans"))["conveyor"]
    (snippet,) = [line for line in job["script"] if "CONVEYOR_STORE_URL" in line]
    url = "postgresql://ci:s3cret@db/conveyor"

    shared = _bash(snippet, tmp_path, {"CONVEYOR_STORE_URL": url})
    local = _bash(snippet, tmp_path, {"CONVEYOR_STORE_URL": ""})
    assert shared.stdout == "Store: the shared one, from CONVEYOR_STORE_URL.\n"
    assert local.stdout == "Store: a local one in .conveyor/, as CONVEYOR_STORE_URL is unset.\n"


def test_gitlab_schema_rejects_an_unknown_artifacts_when(tmp_path: Path) -> None:
    config = yaml.safe_load(render_ci("gitlab-ci", project="loans"))
    config["conveyor"]["artifacts"]["when"] = "sometimes"

    assert any("'sometimes' is not one of" in error for error in _errors("gitlab-ci", config))
    broken = tmp_path / "broken.yml"
    broken.write_text(json.dumps(config))
    result = _check_jsonschema("gitlab-ci", broken)
    assert result.returncode == 1, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["github-actions", "gitlab-ci"])
def test_check_jsonschema_accepts_the_written_file(kind: str, tmp_path: Path) -> None:
    project = tmp_path / "repo" / "ml"
    path = write_ci(kind, project, project="loans", path=tmp_path / "repo" / DEFAULT_PATHS[kind])

    result = _check_jsonschema(kind, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


# -- Jenkins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [".", "ml/loans"])
@pytest.mark.parametrize("install", INSTALLS)
def test_jenkinsfile_is_a_declarative_pipeline(folder: str, install: str | None) -> None:
    text = render_ci("jenkins", project="loans", install=install, working_directory=folder)
    _, strings, _ = parse_groovy(text)

    assert jenkinsfile_problems(text) == []
    assert text.startswith("// Generated by `conveyor export jenkins`")
    (setup,) = [s for s in strings if "-m venv" in s]
    # The Groovy escapes decode back to the command, indented like the script around it.
    lines = [line.strip() for line in setup.splitlines()]
    wanted = [line.strip() for line in (install or DEFAULT_INSTALL).splitlines()]
    assert lines[-len(wanted) - 1 : -1] == wanted, setup
    (gates,) = [s for s in strings if COMMAND in s]
    prefix = "" if folder == "." else folder + "/"
    assert (f"cd {folder}" in gates) == (folder != ".")
    assert f"{prefix}{JUNIT}" in strings


def test_jenkinsfile_fails_the_build_when_a_gate_fails() -> None:
    text = render_ci("jenkins", project="loans")
    root, _, _ = parse_groovy(text)
    (stages,) = root.children[0].blocks("stages")
    (gates,) = [stage for stage in stages.blocks("stage") if stage.args == ["Gates"]]

    assert "sh(returnStatus: true, script:" in text
    assert "error" in [w for block in _walk(gates) for w in block.words]
    assert "if (code == 3)" in text and "else if (code != 0)" in text
    # credentials() would fail a build whose Jenkins has no such credential: only a comment.
    (environment,) = root.children[0].blocks("environment")
    assert environment.words == ["PYTHON"]


def _walk(block: Block) -> list[Block]:
    return [block, *[b for child in block.children for b in _walk(child)]]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda t: t.rstrip()[:-1], "'{' is never closed"),
        (lambda t: t.replace("junit '", "junit '\n"), "cannot read"),
        (lambda t: t.replace("        stage('Setup')", "        }}stage('Setup')"), "closes"),
        (lambda t: re.sub(r"\n    post \{.*?\n    \}\n", "\n", t, flags=re.S), "junit"),
        (lambda t: t.replace("steps {\n                sh '''", "dir('.') {\n sh '''"), "steps"),
        (lambda t: t.replace("    agent any\n", ""), "no agent"),
    ],
)
def test_jenkins_checker_rejects_a_broken_file(damage: Any, problem: str) -> None:
    text = render_ci("jenkins", project="loans")
    broken = damage(text)

    assert broken != text
    problems = jenkinsfile_problems(broken)
    assert any(problem in p for p in problems), problems


def test_jenkins_checker_ignores_braces_in_strings_and_comments() -> None:
    text = """\
        // a comment with { and '
        pipeline { /* } */
            agent any
            stages { stage('a } b') { steps { sh 'echo "{"' } } }
            post { always { junit "x}.xml" } }
        }
    """

    assert jenkinsfile_problems(text) == []


# -- render_ci's checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "circleci"}, "Unknown CI system 'circleci'; choose one of " + ", ".join(KINDS)),
        ({"python": "3.x"}, "Python version '3.x' is not a version such as '3.11'."),
        ({"install": " \n "}, "Install command ' \\n ' is empty"),
        ({"project": "two\nlines"}, "Project name 'two\\nlines' is not one line"),
        ({"working_directory": "../elsewhere"}, "Working directory '../elsewhere' is not a rel"),
        ({"working_directory": "/abs/path"}, "Working directory '/abs/path' is not a relative"),
        ({"working_directory": "my project"}, "Working directory 'my project' is not a relat"),
    ],
)
def test_render_ci_rejects_what_it_cannot_write(kwargs: dict[str, str], message: str) -> None:
    args = {"kind": "github-actions", "project": "loans", **kwargs}
    kind = args.pop("kind")

    with pytest.raises(ExportError, match=re.escape(message)):
        render_ci(kind, **args)


def test_render_ci_accepts_a_clean_working_directory_spelled_loosely() -> None:
    loose = render_ci("gitlab-ci", project="loans", working_directory="./ml//loans/")

    assert loose == render_ci("gitlab-ci", project="loans", working_directory="ml/loans")
    assert render_ci("jenkins", project="loans", working_directory="./") == render_ci(
        "jenkins", project="loans"
    )


# -- write_ci --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_write_ci_creates_folders_and_writes_the_rendered_file(kind: str, tmp_path: Path) -> None:
    path = write_ci(kind, tmp_path, project="loans", python="3.12")

    assert path == tmp_path / DEFAULT_PATHS[kind]
    assert path.read_text() == render_ci(kind, project="loans", python="3.12")
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_write_ci_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text("mine\n")

    with pytest.raises(ExportError, match=rf"'{re.escape(str(path))}' already exists; .*--force"):
        write_ci("gitlab-ci", tmp_path, project="loans")
    assert path.read_text() == "mine\n"

    assert write_ci("gitlab-ci", tmp_path, project="loans", force=True) == path
    assert path.read_text() == render_ci("gitlab-ci", project="loans")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitlab-ci.yml"]


def test_write_ci_runs_a_project_in_a_subfolder_from_the_repository_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    project = repo / "ml" / "loans"
    project.mkdir(parents=True)

    relative = Path("../../.github/workflows/ci.yml")  # taken from the project's folder
    path = write_ci("github-actions", project, project="loans", path=relative)

    assert path == repo / ".github" / "workflows" / "ci.yml"
    workflow = yaml.safe_load(path.read_text())
    assert workflow["jobs"]["conveyor"]["defaults"]["run"]["working-directory"] == "ml/loans"
    gitlab = yaml.safe_load(
        write_ci("gitlab-ci", project, project="loans", path=repo / ".gitlab-ci.yml").read_text()
    )
    assert gitlab["conveyor"]["script"][0] == "cd ml/loans"
    jenkins = write_ci("jenkins", project, project="loans", path=repo / "Jenkinsfile")
    assert "cd ml/loans\n" in jenkins.read_text()


def test_write_ci_refuses_a_file_that_cannot_reach_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()

    with pytest.raises(ExportError, match="is not inside .*; write the file into the project's"):
        write_ci("gitlab-ci", project, project="loans", path=tmp_path / "other" / ".gitlab-ci.yml")
    assert not (tmp_path / "other").exists()


def test_write_ci_reports_a_path_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / ".github").write_text("a file where a folder should be\n")
    (tmp_path / "Jenkinsfile").mkdir()

    with pytest.raises(ExportError, match=r"Cannot write '.*conveyor\.yml': "):
        write_ci("github-actions", tmp_path, project="loans")
    with pytest.raises(ExportError, match=r"Jenkinsfile' is a folder; pass a file path"):
        write_ci("jenkins", tmp_path, project="loans", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".github", "Jenkinsfile"]
