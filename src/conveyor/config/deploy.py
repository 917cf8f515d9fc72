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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["AnalysisConfig", "CanaryStep", "EnvironmentConfig", "parse_duration"]

Strategy = Literal["direct", "blue-green", "canary", "shadow"]
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CanaryStep(_Strict):
    """One canary step: this share of traffic to the candidate, held for this long."""

    weight: float = Field(gt=0.0, le=100.0)
    for_: float = Field(alias="for")

    @field_validator("for_", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class AnalysisConfig(_Strict):
    """When the candidate is judged, and the bounds it must keep against the stable version.

    Nothing is judged before ``min_requests`` requests reached the candidate (or its shadow).
    Error rate is also compared with the stable version's by a one-sided test, so a handful of
    errors in a small sample does not roll back on noise alone.
    """

    min_requests: int = Field(default=100, ge=1)
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_p99_ms: float | None = Field(default=None, gt=0.0)
    max_p99_ratio: float | None = Field(default=2.0, gt=0.0)  # candidate p99 / stable p99
    p99_slack_ms: float = Field(default=5.0, ge=0.0)  # a p99 this close to stable's always passes
    max_prediction_psi: float | None = Field(default=0.2, ge=0.0)
    min_agreement: float | None = Field(default=0.8, ge=0.0, le=1.0)
    min_labels: int = Field(default=50, ge=1)
    max_accuracy_drop: float | None = Field(default=0.02, ge=0.0, le=1.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)


class EnvironmentConfig(_Strict):
    """How versions reach one environment."""

    strategy: Strategy = "direct"
    after: str | None = None  # the environment a version must have passed first
    steps: list[CanaryStep] = Field(default_factory=list)
    sticky: str | None = None  # a request field or header whose value pins a caller's version
    duration: float = 0.0  # shadow: how long to mirror; blue-green: the check before switching
    keep_warm: float = 600.0  # blue-green: how long the old version stays loaded after
    promote: bool = True  # shadow: move the alias to the candidate when the comparison passes
    smoke: str | None = None
    tests: str | None = None
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)

    @field_validator("duration", "keep_warm", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("after")
    @classmethod
    def _after(cls, value: str | None) -> str | None:
        if value is not None and not _SLUG.fullmatch(value):
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
