"""The ``deploy:`` section: each environment's release strategy, checks and live analysis.

    deploy:
      staging: {strategy: direct, smoke: tests/smoke.jsonl, tests: tests/integration}
      production:
        after: staging
        strategy: canary
        steps: [{weight: 10, for: 5m}, {weight: 50, for: 10m}]
        sticky: customer_id
        analysis: {min_requests: 200, max_error_rate: 0.01, max_p99_ms: 50,
                   max_prediction_psi: 0.2}

Durations are ``30s``, ``5m``, ``1h`` or a number of seconds. Analysis bounds are typed fields
rather than expressions: each one says which way it goes in its name.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from conveyor.config.base import SLUG, ConfigModel

__all__ = ["AnalysisConfig", "CanaryStep", "Duration", "EnvironmentConfig", "parse_duration"]

Strategy = Literal["direct", "blue-green", "canary", "shadow"]
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``1.5h``, ``2d``, ``250ms`` or a plain number.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '5m' or '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a duration of zero or more, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as '5m', '30s' or '1h', got {value!r}")


DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
    ],
    "description": "A duration: 30s, 5m, 1.5h, 2d, 250ms or a number of seconds.",
}
# Seconds, written as 30s, 5m, 1h, 2d, 250ms or a number.
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]


class CanaryStep(ConfigModel):
    """One canary step: this share of traffic to the candidate, held for this long."""

    weight: float = Field(
        gt=0.0, le=100.0, description="The percentage of traffic the candidate receives."
    )
    for_: Duration = Field(
        alias="for", description="How long the step lasts before analysis moves it on."
    )


class AnalysisConfig(ConfigModel):
    """When the candidate is judged, and the bounds it must keep against the stable version.

    Each check has a test that fits its data (paired on mirrored requests where both versions
    answered), with p-values that stay valid however often the judge looks; ``alpha`` is shared
    among the checks and the steps, so it is the false-rollback rate of the whole release. A
    check fails only when its test rejects and the effect crosses its bound
    (``docs/release-judge.md``).
    """

    min_requests: int = Field(
        default=100,
        ge=1,
        description="Requests the candidate (or its shadow) must have answered before it is "
        "judged at all.",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="The largest share of failed requests; above it, and shown worse than "
        "stable by its test (paired on mirrored requests), the release rolls back.",
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0.0, description="An absolute bound on the candidate's p99 latency, ms."
    )
    max_p99_ratio: float | None = Field(
        default=2.0,
        gt=0.0,
        description="The largest candidate p99 / stable p99; null turns the bound off.",
    )
    p99_slack_ms: float = Field(
        default=5.0,
        ge=0.0,
        description="A candidate p99 within this many ms of stable's always passes the ratio.",
    )
    max_prediction_psi: float | None = Field(
        default=0.2,
        ge=0.0,
        description="The largest shift (PSI) of the candidate's predictions from stable's, "
        "unless a test says they do not differ; null turns it off.",
    )
    min_agreement: float | None = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="The smallest share of requests on which candidate and stable predict the "
        "same class; null reports it without a bound.",
    )
    min_labels: int = Field(
        default=50,
        ge=1,
        description="Labelled requests (feedback) needed before accuracy is compared.",
    )
    max_accuracy_drop: float | None = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="The largest fall of live accuracy below stable's, counted only when a "
        "test on the same labelled requests (McNemar) shows it; null turns it off.",
    )
    max_latency_shift_ms: float | None = Field(
        default=1.0,
        ge=0.0,
        description="How much slower (median shift, ms) the candidate may answer before a "
        "Mann-Whitney test that shows it rolls back; null turns it off.",
    )
    alpha: float = Field(
        default=0.01,
        gt=0.0,
        lt=0.5,
        description="The false-rollback rate of the whole release: shared among the checks and "
        "the canary's steps, valid however often the judge looks.",
    )


class EnvironmentConfig(ConfigModel):
    """How versions reach one environment."""

    yaml_example: ClassVar[str] = """
deploy:
  staging: {strategy: direct, smoke: smoke/loans.jsonl, tests: tests/integration}
  production:
    after: staging
    strategy: canary
    steps: [{weight: 10, for: 5m}, {weight: 50, for: 10m}]
    sticky: customer_id
    analysis: {min_requests: 200, max_error_rate: 0.01, max_p99_ratio: 1.5, min_agreement: 0.9}
"""

    strategy: Strategy = Field(
        default="direct",
        description="direct moves the alias at once; blue-green loads the new version beside "
        "the old and switches after a check; canary shifts traffic in steps under analysis; "
        "shadow mirrors traffic to the candidate without answering with it.",
    )
    after: str | None = Field(
        default=None,
        description="An environment a version must have passed first, such as staging; "
        "these links may not form a cycle.",
    )
    steps: list[CanaryStep] = Field(
        default_factory=list,
        description="canary: the traffic steps, with increasing weights.",
    )
    sticky: str | None = Field(
        default=None,
        description="A request field or header whose value pins each caller to one version "
        "during a canary.",
    )
    duration: Duration = Field(
        default=0.0,
        description="shadow: how long traffic is mirrored; blue-green: how long the check "
        "before switching lasts.",
    )
    keep_warm: Duration = Field(
        default=600.0,
        description="blue-green: how long the old version stays loaded after the switch, for "
        "an instant rollback.",
    )
    promote: bool = Field(
        default=True,
        description="shadow: move the alias to the candidate when the comparison passes.",
    )
    smoke: str | None = Field(
        default=None,
        description="A JSON Lines file of requests (and expected answers) sent before the "
        "version takes traffic.",
    )
    tests: str | None = Field(
        default=None,
        description="A pytest path run against the gateway (CONVEYOR_URL) before the version "
        "takes traffic.",
    )
    retry_inconclusive: int = Field(
        default=0,
        ge=0,
        description="How many times the controller may start a version again after a live "
        "verdict rolled it back, when the same window re-judged with the labels known now "
        "shows no failing check; 0 never retries.",
    )
    analysis: AnalysisConfig = Field(
        default_factory=AnalysisConfig,
        description="The live bounds the candidate must keep against the stable version.",
    )

    @field_validator("after")
    @classmethod
    def _after(cls, value: str | None) -> str | None:
        if value is not None and not SLUG.fullmatch(value):
            raise ValueError(f"expected an environment name such as 'staging', got {value!r}")
        return value

    @model_validator(mode="after")
    def _steps(self) -> EnvironmentConfig:
        if self.strategy == "canary":
            if not self.steps:
                raise ValueError(
                    "a canary needs steps, e.g. steps: [{weight: 10, for: 5m}, {weight: 50, "
                    "for: 10m}]"
                )
            weights = [s.weight for s in self.steps]
            if weights != sorted(weights) or len(set(weights)) != len(weights):
                raise ValueError(f"canary step weights must increase, got {weights}")
        elif self.steps:
            raise ValueError(f"steps belong to a canary; this environment is {self.strategy}")
        if self.strategy == "shadow" and self.duration <= 0:
            raise ValueError("a shadow release needs a duration, e.g. duration: 10m")
        return self
