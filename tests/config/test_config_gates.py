"""Gate expressions: the two shapes parse, anything else is refused with what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import load_config
from conveyor.config.gates import Comparison, Threshold, parse_expression
from conveyor.exceptions import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("roc_auc >= 0.80", Threshold("roc_auc", ">=", 0.80)),
        ("log_loss<0.5", Threshold("log_loss", "<", 0.5)),
        ("r2 > -1", Threshold("r2", ">", -1.0)),
        ("mae <= 1e3", Threshold("mae", "<=", 1000.0)),
        (
            "roc_auc >= production.roc_auc - 0.005",
            Comparison("roc_auc", ">=", "production", -0.005),
        ),
        ("roc_auc > staging.roc_auc", Comparison("roc_auc", ">", "staging", 0.0)),
        (
            "log_loss <= production.log_loss + 0.01",
            Comparison("log_loss", "<=", "production", 0.01),
        ),
    ],
)
def test_the_two_shapes_parse(text: str, expected: object) -> None:
    assert parse_expression(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("roc_auc >== 0.8", "unexpected '= 0.8'"),
        ("roc_auc", "cannot parse"),
        ("", "empty"),
        ("roc_auc >= production.accuracy", "same metric"),
        ("production.roc_auc <= roc_auc", "left side must be the candidate's metric"),
        ("roc_auc >= 0.8 and f1 > 0.5", "cannot parse"),
        ("__import__('os') >= 1", "unexpected"),
        ("roc_auc >= production.roc_auc * 2", "unexpected"),
    ],
)
def test_anything_else_is_refused_saying_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_expression(text)
    assert fragment in str(info.value)


def test_bounds_are_judged_by_the_operator() -> None:
    assert Threshold("auc", ">=", 0.8).holds(0.8)
    assert not Threshold("auc", ">", 0.8).holds(0.8)
    assert Threshold("loss", "<", 0.5).holds(0.49)
    assert not Threshold("loss", "<=", 0.5).holds(0.51)


PROJECT = """\
project: p
data:
  loans: data/loans.parquet
pipeline:
  prepare: {run: m:prepare, inputs: [data.loans]}
  train: {run: m:train, inputs: [prepare.train]}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model: {name: loans, from: train, holdout: prepare.test, target: y, slices: [state]}
"""


def _errors(tmp_path: Path, extra: str) -> list[str]:
    (tmp_path / "conveyor.yaml").write_text(PROJECT + extra)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    return [str(issue) for issue in info.value.issues]


def test_gate_problems_name_the_gate_and_line(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        "gates:\n"
        "  - roc_acu >= 0.8\n"
        "  - {fairness: {group: state, metric: recal, max_gap: 0.1}}\n"
        "  - {latency: {p99_ms: 20}, size: {max_mb: 1}}\n",
    )
    assert errors[0].startswith("gates[2]: a gate is one expression")
    assert "(line 12)" in errors[0]
    (tmp_path / "conveyor.yaml").write_text(
        PROJECT + "gates:\n  - roc_acu >= 0.8\n  - {fairness: {group: state, metric: recal, "
        "max_gap: 0.1}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    lines = [str(i) for i in info.value.issues]
    assert lines == [
        "gates[0]: metric 'roc_acu' is not produced by the classification evaluation (it "
        "reports roc_auc, accuracy, precision, recall, f1, log_loss, brier, ece, selection_rate, "
        "balanced_accuracy, precision_weighted, recall_weighted, f1_weighted); did you mean "
        "'roc_auc'? (line 10)",
        "gates[1]: metric 'recal' is not produced by the classification evaluation (it "
        "reports roc_auc, accuracy, precision, recall, f1, log_loss, brier, ece, selection_rate, "
        "balanced_accuracy, precision_weighted, recall_weighted, f1_weighted); did you mean "
        "'recall'? (line 11)",
    ]


def test_model_and_validate_references_are_checked(tmp_path: Path) -> None:
    text = PROJECT.replace("from: train", "from: trian") + "validate: {loan: s.yaml}\n"
    (tmp_path / "conveyor.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    lines = [str(i) for i in info.value.issues]
    assert (
        "model.from: unknown step 'trian'; known steps: prepare, train, evaluate (line 8)" in lines
    )
    assert "validate.loan: unknown data source 'loan'; known sources: loans (line 9)" in lines


def test_builtin_evaluator_takes_target_and_slices_from_model(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(PROJECT + "gates: [roc_auc >= 0.7]\n")
    config = load_config(tmp_path)
    assert config.pipeline["evaluate"].params == {"target": "y", "slices": ["state"]}
    assert config.evaluation_step() == "evaluate"
    assert config.task() == "classification"
    gate = config.gates[0]
    assert (gate.kind, gate.label, gate.alpha, gate.on_inconclusive) == (
        "threshold",
        "roc_auc >= 0.7",
        0.05,
        "fail",
    )


def test_gates_without_a_model_are_refused(tmp_path: Path) -> None:
    text = PROJECT.split("model:")[0] + "gates: [roc_auc >= 0.7]\n"
    (tmp_path / "conveyor.yaml").write_text(text)
    with pytest.raises(ConfigError, match="gates judge a model: add a 'model:' section"):
        load_config(tmp_path)
