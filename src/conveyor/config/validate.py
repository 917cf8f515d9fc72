"""The ``validate:`` section: each data source's schema file and the drift check of a new
snapshot against the data that trained the production model, run before any training."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from conveyor.config.base import ConfigModel, invalid


class DriftCheckConfig(ConfigModel):
    """Drift of a new snapshot against the data that trained the production model."""

    psi: float = Field(
        default=0.2,
        description="The population stability index from which a column counts as drifted "
        "(together with a significant test).",
    )
    alpha: float = Field(
        default=0.05,
        description="Significance level of the per-column tests (KS, chi-squared), "
        "Holm-corrected over the columns.",
    )
    max_share: float = Field(
        default=0.0,
        description="The share of drifting columns above which the data gate fails.",
    )

    @field_validator("psi", "alpha", "max_share")
    @classmethod
    def _unit(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 <= value <= 1.0 or (info.field_name == "alpha" and value in (0.0, 1.0)):
            raise invalid(f"expected a number between 0 and 1, got {value!r}")
        return value


class ValidateConfig(ConfigModel):
    """A data source's schema file (from ``conveyor data infer``) and its drift check."""

    shape: ClassVar[str] = "a schema file such as 'schemas/loans.yaml' or a mapping with 'schema'"
    shorthand_schema: ClassVar[dict[str, Any] | None] = {"type": "string", "minLength": 1}
    yaml_example: ClassVar[str] = """
validate:
  loans: {schema: schemas/loans.yaml, drift: {psi: 0.25, max_share: 0.2}}
  accounts: schemas/accounts.yaml          # shorthand for {schema: ...}
"""

    schema_: str = Field(
        alias="schema",
        description="The schema file the source must satisfy, as written by 'conveyor data infer'.",
    )
    drift: DriftCheckConfig | None = Field(
        default=None,
        description="Also compare the snapshot with the production model's training data; "
        "none means no drift check.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"schema": data} if isinstance(data, str) else data
