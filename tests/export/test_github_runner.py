"""The runner double reads GitHub's expressions and output files as GitHub does, so that the
workflow test (test_ci_runs.py) cannot pass by skipping a step the real runner would run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.export.github_runner import _read_key_values, evaluate

CTX: dict[str, Any] = {
    "github": {"event_name": "pull_request", "event": {"pull_request": {"number": 7}}},
    "steps": {"gates": {"outcome": "success", "outputs": {"exit-code": "3"}}},
    "vars": {},
    "_failed": True,
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("always() && github.event_name == 'pull_request'", True),
        ("github.event_name != 'pull_request' && vars.CONVEYOR_DEPLOY_STAGING == 'true'", False),
        ("always() && steps.gates.outcome == 'success'", True),
        ("success()", False),  # an earlier step failed
        ("failure()", True),
        ("github.event_name == 'PULL_REQUEST'", True),  # strings compare ignoring case
        ("steps.gates.outputs.exit-code", "3"),
        ("github.event.pull_request.number", 7.0),
        ("vars.MISSING", None),
        ("!(github.event_name == 'push') || false", True),
    ],
)
def test_expressions_the_exported_workflow_uses(expression: str, value: Any) -> None:
    assert evaluate(expression, CTX) == value


@pytest.mark.parametrize("expression", ["contains(github.ref, 'x')", "github.ref ==", "a b"])
def test_an_expression_it_does_not_understand_fails_loudly(expression: str) -> None:
    with pytest.raises(ValueError):
        evaluate(expression, CTX)


def test_output_files_hold_lines_and_heredoc_blocks(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("exit-code=3\nbody<<EOF\nline one\nx=y\nEOF\nurl=https://h/a=b\n")
    assert _read_key_values(path) == {
        "exit-code": "3",
        "body": "line one\nx=y",
        "url": "https://h/a=b",
    }
