"""The ``serve:`` section: the gateway's limits, micro-batching, request log and admin token."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from conveyor.config.base import SLUG, ConfigModel, invalid
from conveyor.config.deploy import Duration


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
    """The sampled request/prediction log: Parquet files under the artifact store, written off
    the hot path in batches (the layout is in docs/prediction-log.md)."""

    sample: float = Field(
        default=1.0, ge=0.0, le=1.0, description="The share of requests written to the log."
    )
    flush_rows: int = Field(
        default=100_000,
        ge=1,
        description="Requests in one file at most; a file is written as soon as this many wait.",
    )
    flush_seconds: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        description="The longest a logged request waits before its file is written (what a "
        "killed gateway loses at most).",
    )
    max_buffer: int = Field(
        default=200_000,
        ge=1,
        description="Rows kept in memory while the store lags; beyond it rows are dropped "
        "and counted.",
    )
    max_buffer_mb: float = Field(
        default=64.0,
        gt=0.0,
        description="Memory for rows not yet written; beyond it rows are dropped and counted, "
        "never requests.",
    )
    max_input_kb: int = Field(
        default=256,
        ge=1,
        description="A request's inputs longer than this are stored as a marker with their "
        "length instead.",
    )
    max_output_kb: int = Field(
        default=256,
        ge=1,
        description="A response's outputs longer than this are stored as a marker with their "
        "length instead.",
    )
    client_error_inputs: bool = Field(
        default=False,
        description="Store the inputs of requests answered 4xx (their error text is always "
        "stored).",
    )
    writer_priority: Literal["normal", "idle"] = Field(
        default="normal",
        description="The CPU priority of the process that writes the log's files: 'idle' runs "
        "it only when a core is otherwise idle (a pinned, saturated gateway then answers with "
        "the log-off tail latency, but a flood that keeps every core busy drops most rows, and a "
        "stop waits for the last flush while other work holds the cores); 'normal' keeps every "
        "row and costs the requests its share of the CPU.",
    )
    error_log_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description="While the store refuses writes, one log line per this many seconds, with "
        "the count of those not logged.",
    )
    retain: Duration = Field(
        default=30 * 86400.0,
        gt=0.0,
        description="How long the log is kept (default 30 days): older days are deleted by "
        "'conveyor log compact' (a duration such as 30d).",
    )
    max_gb: float | None = Field(
        default=None,
        gt=0.0,
        description="The most the log may take on disk; past it the oldest days are deleted "
        "first. Unset: no bound but 'retain'.",
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
    load_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="Seconds one read of a model's file may block while a version loads (a "
        "FIFO in place of the file, a hung network mount) before the load fails; /readyz then "
        "answers 503 naming it, as it does while any load runs longer than this.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="OpenMP/BLAS threads per worker for predictions.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0.0,
        description="Seconds a client has to send a request's whole head, from connecting or "
        "from the previous response; then 408 and the connection is closed.",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0.0,
        description="Seconds a request body may go without a byte before the connection is closed.",
    )
    max_header_bytes: int = Field(
        default=65_536, ge=1024, description="The largest request head, in bytes; 431 beyond."
    )
    max_headers: int = Field(
        default=100, ge=8, description="The most header fields in one request; 431 beyond."
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Open connections per worker; 0 derives it from the descriptor limit. Past "
        "it the connection that has waited longest for a request is closed.",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, description="Idle time allowed between requests on one connection."
    )
    backlog: int = Field(default=2048, ge=1, description="The listening socket's backlog.")
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
