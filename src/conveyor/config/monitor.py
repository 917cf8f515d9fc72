"""The ``monitor:`` section: drift windows, alert rules, and what starts a retraining.

monitor:
  environment: production
  window: 1h                  # or {last: 5000} requests
  min_rows: 200
  drift: {psi: 0.2, alpha: 0.05, correction: holm, share: 0.2}
  alerts:
    - {name: data drift, when: {drift_share: 0.2}, webhook: "https://hooks.example/ml"}
    - {name: income drift, when: {column: annual_income}}
    - {name: live accuracy, when: {metric: accuracy, below: 0.7}}
    - {name: errors, when: {error_rate: 0.05}}
    - {name: slow, when: {p99_ms: 100}}
  retrain:
    triggers: [new_data, drift, quality, {schedule: "0 3 * * 0"}]
    cooldown: 1h
    min_new_rows: 1000
    max_runs_per_day: 4
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.config.deploy import parse_duration

__all__ = [
    "AlertCondition",
    "AlertRule",
    "DriftSettings",
    "MonitorConfig",
    "RetrainConfig",
    "WindowConfig",
]

_METRICS = ("accuracy", "precision", "recall", "f1", "mae", "rmse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WindowConfig(_Strict):
    """A window of the request log: the last ``seconds``, or the last ``last`` requests."""

    seconds: float | None = None
    last: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return {"seconds": parse_duration(value)}
        return value

    @model_validator(mode="after")
    def _one(self) -> WindowConfig:
        if (self.seconds is None) == (self.last is None):
            raise ValueError("a window is a duration such as 1h, or {last: N} requests")
        return self


class DriftSettings(_Strict):
    """How live inputs are compared with the reference (see ``data/drift.py``)."""

    psi: float = Field(default=0.2, ge=0.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    share: float = Field(default=0.2, ge=0.0, le=1.0)  # drifting share that counts as drift
    numeric: list[str] = Field(default_factory=lambda: ["ks", "psi"])
    categorical: list[str] = Field(default_factory=lambda: ["chi2", "psi"])


class AlertCondition(_Strict):
    """Exactly one condition: a share of drifting columns, one column's drift, a live metric
    below a bound, an error rate or a p99 latency above one."""

    drift_share: float | None = Field(default=None, ge=0.0, le=1.0)
    column: str | None = None
    metric: str | None = None
    below: float | None = None
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    p99_ms: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _exactly_one(self) -> AlertCondition:
        chosen = [
            k
            for k in ("drift_share", "column", "metric", "error_rate", "p99_ms")
            if getattr(self, k) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "an alert's `when` needs exactly one of drift_share, column, metric (with "
                f"below), error_rate, p99_ms; got {', '.join(chosen) or 'none'}"
            )
        if self.metric is not None:
            if self.metric not in _METRICS:
                raise ValueError(f"unknown live metric {self.metric!r}; use one of {_METRICS}")
            if self.below is None:
                raise ValueError(f"`metric: {self.metric}` needs `below: NUMBER`")
        elif self.below is not None:
            raise ValueError("`below` goes with `metric`")
        return self

    @property
    def kind(self) -> str:
        for key in ("drift_share", "column", "metric", "error_rate", "p99_ms"):
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated to hold one condition")


class AlertRule(_Strict):
    """A named condition; when it starts to hold, an ``alert.fired`` event and the webhook."""

    name: str
    when: AlertCondition
    webhook: str | None = None
    secret_env: str | None = None  # the environment variable holding the HMAC key
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"a webhook is an http(s) URL, got {value!r}")
        return value


class RetrainConfig(_Strict):
    """What starts the pipeline by itself, and the guardrails that hold it back."""

    triggers: list[Any] = Field(default_factory=list)
    cooldown: float = 3600.0
    min_new_rows: int = Field(default=1, ge=0)
    min_labels: int = Field(default=0, ge=0)
    max_runs_per_day: int = Field(default=4, ge=1)
    deploy_to: str | None = None  # where a passing candidate goes (default: first deploy env)

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, value: list[Any]) -> list[Any]:
        for item in value:
            if isinstance(item, str) and item in ("new_data", "drift", "quality"):
                continue
            if isinstance(item, dict) and set(item) == {"schedule"}:
                try:
                    from croniter import croniter

                    croniter(str(item["schedule"]))
                except Exception:
                    raise ValueError(
                        f"{item['schedule']!r} is not a cron schedule such as '0 3 * * 0'"
                    ) from None
                continue
            raise ValueError(
                f"unknown trigger {item!r}; use new_data, drift, quality or {{schedule: 'CRON'}}"
            )
        return value


class MonitorConfig(_Strict):
    """Monitoring of one environment's traffic against the serving version's reference."""

    environment: str = "production"
    window: WindowConfig = Field(default_factory=lambda: WindowConfig(seconds=3600.0))
    min_rows: int = Field(default=200, ge=1)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    alerts: list[AlertRule] = Field(default_factory=list)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    @model_validator(mode="after")
    def _names(self) -> MonitorConfig:
        names = [a.name for a in self.alerts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert names must differ; repeated: {', '.join(dupes)}")
        return self
