"""The ``model:`` and ``registry:`` sections: which step's return value is the model, what it is
scored on, what its card says, and the policy for loading model files."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from conveyor.config.base import SLUG, ConfigModel, StrList, invalid

# The built-in evaluation steps and the task each one judges.
BUILTIN_EVALUATORS = {
    "conveyor.evaluate:classification": "classification",
    "conveyor.evaluate:regression": "regression",
}

# What the built-in evaluators report, by task (every name is one of config/metrics.py's
# METRICS, whose table says which way is better: tests/evaluate/test_metric_table.py checks it);
# a gate naming anything else is refused at load.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        "roc_auc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "log_loss",
        "brier",
        "ece",
        "selection_rate",
        "balanced_accuracy",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    ),
    "regression": ("mae", "rmse", "r2", "mape"),
}


class ModelConfig(ConfigModel):
    """What the pipeline produces for the registry: which step's return value is the model,
    which frame both models are scored on, and what the model card says about its use."""

    shape: ClassVar[str] = "a mapping with 'name', 'from', 'holdout' and 'target'"
    yaml_example: ClassVar[str] = """
model:
  name: loans-risk
  from: train
  holdout: prepare.test
  target: high_risk
  slices: [homeownership, verified_income]
  intended_use: Flags applications for an analyst to review first.
  limitations: Trained on 2018 US loans only.
"""

    name: str = Field(description="The model's name in the registry, a slug such as loans-risk.")
    from_: str = Field(
        alias="from",
        description="The step whose return value (or STEP.OUTPUT) is the model to register.",
    )
    holdout: str = Field(
        description="The step output (STEP or STEP.OUTPUT) of rows that gates score the "
        "candidate and the serving version on."
    )
    target: str = Field(description="The column of the holdout that the model predicts.")
    task: Literal["classification", "regression"] | None = Field(
        default=None,
        description="The kind of model; by default the built-in evaluator's task.",
    )
    positive_class: str | int | bool | None = Field(
        default=None,
        description="The label of the class a binary model's scores, precision, recall and "
        "selection rate are about (such as 'Yes'); by default the model's second class. With "
        "more classes, the class a selection_rate fairness gate is about.",
    )
    evaluation: str | None = Field(
        default=None,
        description="The step whose metrics the gates read; by default the one step running a "
        "built-in evaluator, else a step named evaluate.",
    )
    slices: StrList = Field(
        default_factory=list,
        description="Columns whose values the metrics are also reported per (and fairness "
        "gates compare); passed to built-in evaluators.",
    )
    intended_use: str | None = Field(
        default=None, description="What the model is for, printed on its model card."
    )
    limitations: str | None = Field(
        default=None,
        description="Where the model should not be trusted, printed on its model card.",
    )
    format: Literal["skops", "pickle"] = Field(
        default="skops",
        description="How the model file is written: skops (loaded without running code) or pickle.",
    )
    trusted_types: list[str] = Field(
        default_factory=list,
        description="Full names of your own classes a skops file may contain beyond the "
        "built-in allow-list, such as loans.features.Binner; a custom Python model's class "
        "(loans.model.Churn) is imported only when named here.",
    )
    onnx: bool = Field(
        default=True,
        description="Also export the model to ONNX, served instead when it gives the same answers.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SLUG.fullmatch(value):
            raise invalid(
                "expected a slug such as 'loans-default' (lowercase letters, digits, '_' and '-'), "
                f"got {value!r}"
            )
        return value


class RegistryConfig(ConfigModel):
    """Policy for model files: a pickle is loaded only when its sha256 matches the record, and
    ``allow_pickle: false`` refuses pickles altogether."""

    yaml_example: ClassVar[str] = """
registry:
  allow_pickle: false
"""

    allow_pickle: bool = Field(
        default=True,
        description="Whether pickle model files may be loaded at all (only ever when their "
        "sha256 matches the registry's record).",
    )
