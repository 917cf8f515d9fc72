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
    - {name: errors, when: {error_rate: 0.05}, for: 5m}   # fires after 5 minutes in a row
    - {name: slow, when: {p99_ms: 100}, for: 10m, resolve_for: 30m}
  retrain:
    triggers: [new_data, drift, quality, {schedule: "0 3 * * 0"}]
    cooldown: 1h
    min_new_rows: 1000
    max_runs_per_day: 4
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from conveyor.config.base import ConfigModel
from conveyor.config.deploy import DURATION_SCHEMA, Duration, parse_duration

__all__ = [
    "AlertCondition",
    "AlertRule",
    "DriftSettings",
    "MonitorConfig",
    "RetrainConfig",
    "WindowConfig",
]

LIVE_METRICS = ("accuracy", "precision", "recall", "f1", "mae", "rmse")
ALERT_KINDS = ("drift_share", "column", "metric", "error_rate", "p99_ms")
TRIGGERS = ("new_data", "drift", "quality")


class WindowConfig(ConfigModel):
    """A window of the request log: the last ``seconds``, or the last ``last`` requests."""

    shape: ClassVar[str] = "a duration such as 1h, or {last: N} requests"
    shorthand_schema: ClassVar[dict[str, Any] | None] = DURATION_SCHEMA

    seconds: float | None = Field(
        default=None,
        description="The last this many seconds of traffic; a window written as a duration "
        "(1h) means this key.",
    )
    last: int | None = Field(default=None, ge=1, description="The last this many requests.")

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


class DriftSettings(ConfigModel):
    """How live inputs are compared with the reference (see ``data/drift.py``)."""

    psi: float = Field(
        default=0.2,
        ge=0.0,
        description="The population stability index from which a column counts as drifted.",
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="Significance level of the per-column tests, corrected over the columns.",
    )
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = Field(
        default="holm",
        description="How p-values are corrected for testing many columns at once.",
    )
    share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="The share of drifting columns from which the window counts as drifted "
        "(for the drift trigger and the report).",
    )
    numeric: list[str] = Field(
        default_factory=lambda: ["ks", "psi"],
        description="The tests run on numeric columns (see data/drift.py: ks, psi, "
        "wasserstein, ...).",
    )
    categorical: list[str] = Field(
        default_factory=lambda: ["chi2", "psi"],
        description="The tests run on categorical columns (chi2, psi, ...).",
    )


class AlertCondition(ConfigModel):
    """Exactly one condition: a share of drifting columns, one column's drift, a live metric
    below a bound, an error rate or a p99 latency above one."""

    drift_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Fires when at least this share of the input columns drifts.",
    )
    column: str | None = Field(default=None, description="Fires when this input column drifts.")
    metric: str | None = Field(
        default=None,
        description=f"Fires when this live metric, from labelled feedback, falls below "
        f"'below'; one of {', '.join(LIVE_METRICS)}.",
    )
    below: float | None = Field(default=None, description="The bound that goes with 'metric'.")
    error_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Fires when the share of failed requests reaches this.",
    )
    p99_ms: float | None = Field(
        default=None, gt=0.0, description="Fires when the p99 latency exceeds this many ms."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> AlertCondition:
        chosen = [k for k in ALERT_KINDS if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "an alert's `when` needs exactly one of drift_share, column, metric (with "
                f"below), error_rate, p99_ms; got {', '.join(chosen) or 'none'}"
            )
        if self.metric is not None:
            if self.metric not in LIVE_METRICS:
                raise ValueError(f"unknown live metric {self.metric!r}; use one of {LIVE_METRICS}")
            if self.below is None:
                raise ValueError(f"`metric: {self.metric}` needs `below: NUMBER`")
        elif self.below is not None:
            raise ValueError("`below` goes with `metric`")
        return self

    @property
    def kind(self) -> str:
        for key in ALERT_KINDS:
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated to hold one condition")


class AlertRule(ConfigModel):
    """A named condition; when it starts to hold, an ``alert.fired`` event and the webhook."""

    name: str = Field(description="The alert's name, unique in the section.")
    when: AlertCondition = Field(
        description="Exactly one condition: drift_share, column, metric with below, "
        "error_rate or p99_ms."
    )
    webhook: str | None = Field(
        default=None, description="An http(s) URL that receives a JSON POST when the alert fires."
    )
    secret_env: str | None = Field(
        default=None,
        description="The environment variable holding the key that signs each webhook call: "
        "X-Conveyor-Signature is t=<unix time>,v1=<HMAC-SHA256 of '<t>.<body>'>, and a "
        "receiver refuses a call more than five minutes old. Without it the webhook is sent "
        "unsigned and the controller warns once.",
    )
    severity: Literal["info", "warning", "critical"] = Field(
        default="warning", description="How urgent the alert is, passed on to the webhook."
    )
    for_: Duration = Field(
        default=0.0,
        alias="for",
        description="How long the condition must hold without a break before the alert fires, "
        "as a Prometheus rule's for: (10m); by default it fires on the first report where it "
        "holds.",
    )
    resolve_for: Annotated[
        Duration | None, WithJsonSchema({"anyOf": [DURATION_SCHEMA, {"type": "null"}]})
    ] = Field(
        default=None,
        description="How long the condition must be false without a break before a firing "
        "alert resolves; by default the same as 'for'.",
    )

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"a webhook is an http(s) URL, got {value!r}")
        return value


_TRIGGERS_SCHEMA = {
    "type": "array",
    "items": {
        "anyOf": [
            {"enum": list(TRIGGERS)},
            {
                "type": "object",
                "properties": {"schedule": {"type": "string"}},
                "required": ["schedule"],
                "additionalProperties": False,
            },
        ]
    },
}


class RetrainConfig(ConfigModel):
    """What starts the pipeline by itself, and the guardrails that hold it back."""

    triggers: Annotated[list[Any], WithJsonSchema(_TRIGGERS_SCHEMA)] = Field(
        default_factory=list,
        description="What starts a retraining: new_data (a source changed), drift, quality "
        "(a live-metric alert), or {schedule: CRON}.",
    )
    cooldown: Duration = Field(
        default=3600.0, description="The least time between two automatic runs."
    )
    min_new_rows: int = Field(
        default=1, ge=0, description="new_data: the fewest new rows that start a run."
    )
    min_labels: int = Field(
        default=0,
        ge=0,
        description="Not read yet: no part of Conveyor enforces it (a quality run starts "
        "whenever a live-metric alert fires).",
    )
    max_runs_per_day: int = Field(
        default=4, ge=1, description="The most automatic runs in 24 hours."
    )
    deploy_to: str | None = Field(
        default=None,
        description="Where a passing candidate goes; by default the first deploy environment.",
    )

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, value: list[Any]) -> list[Any]:
        for item in value:
            if isinstance(item, str) and item in TRIGGERS:
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


class MonitorConfig(ConfigModel):
    """Monitoring of one environment's traffic against the serving version's reference."""

    yaml_example: ClassVar[str] = """
monitor:
  environment: production
  window: 1h                       # or {last: 5000} requests
  min_rows: 200
  drift: {psi: 0.2, alpha: 0.05, correction: holm, share: 0.2}
  alerts:
    - {name: data drift, when: {drift_share: 0.2}, webhook: "https://hooks.example/ml"}
    - {name: income drift, when: {column: annual_income}, severity: info}
    - {name: live accuracy, when: {metric: accuracy, below: 0.7}, secret_env: HOOK_KEY}
    - {name: errors, when: {error_rate: 0.05}, severity: critical, for: 5m}
    - {name: slow, when: {p99_ms: 100}, for: 10m, resolve_for: 30m}
  retrain:
    triggers: [new_data, drift, quality, {schedule: "0 3 * * 0"}]
    cooldown: 1h
    min_new_rows: 1000
    max_runs_per_day: 4
"""

    environment: str = Field(
        default="production", description="The environment whose traffic is watched."
    )
    window: WindowConfig = Field(
        default_factory=lambda: WindowConfig(seconds=3600.0),
        description="The traffic compared with the reference: a duration (1h) or {last: N} "
        "requests.",
    )
    min_rows: int = Field(
        default=200,
        ge=1,
        description="Served rows a window needs before its alerts are judged; with fewer, "
        "none fires.",
    )
    drift: DriftSettings = Field(
        default_factory=DriftSettings,
        description="How live inputs are compared with the training data.",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list, description="Named conditions that fire events and webhooks."
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig,
        description="What starts the pipeline by itself, and its guardrails.",
    )

    @model_validator(mode="after")
    def _names(self) -> MonitorConfig:
        names = [a.name for a in self.alerts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert names must differ; repeated: {', '.join(dupes)}")
        return self
