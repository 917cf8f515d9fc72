"""The prediction log's layout on disk: the contract every writer and reader follows.

Written down for people in ``docs/prediction-log.md``; this module is that document in code, and
nothing else decides a path, a file name or a column name. It imports only the standard
library, so the CLI's fast path and ``open_stores`` may import it.

::

    <artifacts>/prediction-log/v1/
      requests/model=<m>/environment=<e>/date=YYYY-MM-DD/<HH>-<gateway>-<pid>-<token>-<seq>.parquet
      feedback/date=YYYY-MM-DD/<HH>-<gateway>-<pid>-<token>-<seq>.parquet
      .../c-<token>.parquet     a compacted file; its footer lists the files it replaces

Partition values are percent-encoded (Hive's convention), dates and hours are UTC. A name that
starts with ``.`` or ``_`` is not data (a temp file being written, a lock): readers skip it, as
Spark, DuckDB and PyArrow do by default.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import weakref
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "COMPACTED_PREFIX",
    "FEEDBACK",
    "FEEDBACK_COLUMNS",
    "INPUT_PREFIX",
    "REPLACES_KEY",
    "REQUESTS",
    "REQUEST_COLUMNS",
    "attach",
    "data_file",
    "day_of",
    "feedback_dir",
    "file_name",
    "join",
    "location",
    "log_url",
    "requests_dir",
]

ROOT = "prediction-log/v1"
REQUESTS = "requests"
FEEDBACK = "feedback"

# One Parquet row per data row of a request; request-level columns repeat on each of its rows.
REQUEST_COLUMNS = (
    "request_id",  # string: the gateway's id, what feedback names
    "row",  # int32: the row's 0-based position in its request (0 for a request without rows)
    "rows",  # int32: how many rows the request held
    "at",  # timestamp[us, UTC]: when the answer was sent
    "version",  # int32: the model version that answered
    "role",  # string: serve, shadow, pinned, smoke, test, admin
    "status",  # int16: the HTTP status
    "latency_ms",  # float32
    "gateway",  # string: the gateway's name
    # then one column per signature input, named INPUT_PREFIX + field name, typed
    "prediction",  # the model's answer for the row (int64, float64, string or bool)
    "probabilities",  # list<float32>, when the model gives them
    "raw_inputs",  # string: the inputs as sent, on row 0, only when they do not fit the signature
    "raw_outputs",  # string: the answer as sent, on row 0, only when it has no per-row predictions
)
INPUT_PREFIX = "in."
FEEDBACK_COLUMNS = ("request_id", "at", "labels", "actor")  # labels: a JSON array, one per row
COMPACTED_PREFIX = "c-"
REPLACES_KEY = b"conveyor.replaces"  # footer key of a compacted file: JSON list of file names

_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_TOKEN = secrets.token_hex(4)  # one per process: a restarted gateway reuses pids, never this
_SEQ = itertools.count(1)  # next() on a count is atomic under the GIL: threads share it


def log_url(artifacts_url: str) -> str:
    """The log's root under an artifact store (a local folder or an fsspec URL)."""
    return join(artifacts_url, ROOT)


def join(base: str, *parts: str) -> str:
    """A path under ``base``, with ``/`` on URLs and the OS separator on local folders."""
    if _URL.match(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def is_url(path: str) -> bool:
    return bool(_URL.match(path))


def requests_dir(root: str, model: str, environment: str, day: str | None = None) -> str:
    """The folder of one model's and environment's requests (of one day, when given)."""
    parts = [
        REQUESTS,
        f"model={quote(model, safe='')}",
        f"environment={quote(environment, safe='')}",
    ]
    if day is not None:
        parts.append(f"date={day}")
    return join(root, *parts)


def feedback_dir(root: str, day: str | None = None) -> str:
    parts = [FEEDBACK] if day is None else [FEEDBACK, f"date={day}"]
    return join(root, *parts)


def partition_value(name: str) -> str:
    """The value of a ``key=value`` folder name, decoded."""
    return unquote(name.partition("=")[2])


def day_of(ts: datetime | float) -> str:
    """The ``date=`` partition (UTC) of a time."""
    when = datetime.fromtimestamp(ts, UTC) if isinstance(ts, float | int) else ts.astimezone(UTC)
    return when.strftime("%Y-%m-%d")


def file_name(hour: int, gateway: str) -> str:
    """A new data file's name: unique across processes (pid and a random token drawn at
    start) and within one (a sequence number shared by all its writers)."""
    who = _UNSAFE.sub("_", gateway)[:60] or "gateway"
    return f"{hour:02d}-{who}-{os.getpid()}-{_TOKEN}-{next(_SEQ):06d}.parquet"


def compacted_name() -> str:
    return f"{COMPACTED_PREFIX}{secrets.token_hex(8)}.parquet"


def data_file(name: str) -> bool:
    """Whether a file name is data a reader reads (not a temp file, a lock or a manifest)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


# -- where a metadata store's log lives ----------------------------------------------------------

_LOCATIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def attach(store: Any, url: str) -> None:
    """Remember where the log of the project whose metadata store is ``store`` lives.

    ``open_stores`` and the gateway call it with ``log_url(artifacts_url)``; the readers
    (monitoring windows, release analysis) are handed the metadata store and find the log here.
    """
    _LOCATIONS[store] = url


def location(store: Any) -> str | None:
    """The log attached to ``store``, or None (nothing attached: no log to read)."""
    try:
        return _LOCATIONS.get(store)
    except TypeError:  # not weak-referenceable: nothing can have been attached
        return None
