"""The ``serve:`` section: the gateway's limits, micro-batching, request log and admin token."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from conveyor.config.base import SLUG, ConfigModel, invalid


class BatchConfig(ConfigModel):
    """Micro-batching: concurrent requests for one model share one predict call.

    ``max_delay_ms: 0`` (the default) waits for nothing: requests that arrived while the last
    call ran form the next batch, so batches grow with load and a lone request never waits.
    """

    max_rows: int = Field(
        default=256, ge=1, le=100_000, description="The most rows one predict call takes."
    )
    max_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="How long a batch may wait for more requests; 0 waits for none, so a "
        "lone request is never delayed.",
    )


class RequestLogConfig(ConfigModel):
    """The sampled request/prediction log, written off the hot path in batches."""

    sample: float = Field(
        default=1.0, ge=0.0, le=1.0, description="The share of requests written to the log."
    )
    flush_rows: int = Field(
        default=100, ge=1, description="Rows written to the store in one batch at most."
    )
    flush_seconds: float = Field(
        default=0.05,
        gt=0.0,
        le=60.0,
        description="The longest a logged row waits before its batch is written.",
    )
    max_buffer: int = Field(
        default=200_000,
        ge=1,
        description="Rows kept in memory while the store lags; beyond it rows are dropped "
        "and counted.",
    )


class ServeConfig(ConfigModel):
    """The gateway (``conveyor serve``): limits, batching, the request log, the admin token."""

    yaml_example: ClassVar[str] = """
serve:
  default_env: production
  max_rows: 10000
  batch: {max_rows: 256, max_delay_ms: 2}
  log: {sample: 0.5}
  token_env: CONVEYOR_TOKEN
"""

    default_env: str = Field(
        default="production",
        description="The environment whose version answers requests that name none.",
    )
    max_rows: int = Field(default=10_000, ge=1, description="The most rows one request may send.")
    max_body_mb: float = Field(
        default=8.0, gt=0.0, le=1024.0, description="The largest request body, in megabytes."
    )
    max_queue: int = Field(
        default=512,
        ge=1,
        description="Requests waiting per worker before the gateway answers 503.",
    )
    batch: BatchConfig = Field(
        default_factory=BatchConfig,
        description="Micro-batching: concurrent requests for one model share a predict call.",
    )
    log: RequestLogConfig = Field(
        default_factory=RequestLogConfig,
        description="The sampled log of requests and predictions that monitoring reads.",
    )
    poll_seconds: float = Field(
        default=0.25,
        gt=0.0,
        le=60.0,
        description="How often the gateway looks for alias moves (a new version to serve).",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="OpenMP/BLAS threads per worker for predictions.",
    )
    token_env: str = Field(
        default="CONVEYOR_TOKEN",
        description="The environment variable holding the admin token; without a token the "
        "admin endpoints answer 403.",
    )
    token_file: str | None = Field(
        default=None,
        description="A file holding the admin token, relative to the project; read before "
        "token_env.",
    )

    @field_validator("default_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not SLUG.fullmatch(value):
            raise invalid(f"expected an environment name such as 'production', got {value!r}")
        return value
