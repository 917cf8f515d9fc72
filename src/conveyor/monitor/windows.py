"""Windows of the request log: what an environment was asked and answered, as a data frame.

The gateway logs each request's rows as the caller sent them (records or arrays, JSON text).
A window reads the ``serve`` rows of one model and environment over the last ``seconds`` or
the last ``last`` requests, parses them with orjson and checks them against the signature of
the version being monitored, in whole columns at once (``registry.signature``). A row that
does not fit (a log written by hand, a signature that changed since) is skipped and counted,
never fatal: one bad row must not hide a day of drift. Rows are checked in blocks, and a block
that fails is split in halves until the bad rows are isolated, so a clean log costs one check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from conveyor.exceptions import InvalidInput, MonitorError, RegistryError
from conveyor.store import models as m
from conveyor.store.metadata import as_utc

if TYPE_CHECKING:
    import numpy
    import pandas

__all__ = ["Window", "read_window"]

MAX_PROBLEMS = 5  # bad rows described in a window; the rest are only counted


@dataclass
class Window:
    """The served requests of one model and environment over a span of time.

    ``inputs`` holds one row per served row (status 200) that fits the signature, with the
    signature's columns; ``predictions``, ``request_ids``, ``positions`` (the row's index in
    its request, which feedback labels follow) and ``versions`` run parallel to it.
    ``statuses`` and ``latencies_ms`` hold one entry per request of any status.
    """

    model: str
    environment: str
    start: datetime
    end: datetime
    seconds: float | None
    last: int | None
    inputs: pandas.DataFrame
    predictions: list[Any]
    request_ids: list[str]
    positions: list[int]
    versions: list[int]
    statuses: numpy.ndarray
    latencies_ms: numpy.ndarray
    requests: int
    served_at: dict[str, datetime] = field(default_factory=dict)  # request id -> time
    request_rows: dict[str, int] = field(default_factory=dict)  # request id -> rows sent
    skipped: int = 0  # rows of served requests that did not fit the signature
    problems: list[str] = field(default_factory=list)  # the first few reasons, for people
    version: int | None = None  # the version filter, when one was asked

    @property
    def rows(self) -> int:
        """Served rows that fit the signature."""
        return len(self.inputs)


def read_window(
    store: Any,
    model: str,
    environment: str,
    *,
    seconds: float | None = None,
    last: int | None = None,
    now: datetime | None = None,
    version: int | None = None,
    signature: dict[str, Any] | None = None,
) -> Window:
    """Read a window of the request log.

    Args:
        store: the open metadata store (``registry.store``).
        model: the model's name.
        environment: the environment whose traffic to read (``production``).
        seconds: the window is the ``seconds`` before ``now``; or
        last: the window is the last ``last`` requests before ``now``.
        now: the window's end (default: the current time); a naive datetime is UTC.
        version: only requests this version answered (default: every version).
        signature: the signature rows are checked against (default: that of ``version``,
            else of the version the environment's alias serves).

    Raises:
        MonitorError: neither or both of ``seconds`` and ``last``; no signature to check rows
            against (no such version, nothing routed to the environment); a malformed one.
    """
    import numpy as np

    if (seconds is None) == (last is None):
        raise MonitorError(
            "A window is the last `seconds` or the last `last` requests; give exactly one "
            f"(got seconds={seconds!r}, last={last!r})."
        )
    if seconds is not None and not seconds > 0:
        raise MonitorError(f"A window of {seconds!r} seconds is empty; give a positive duration.")
    if last is not None and last < 1:
        raise MonitorError(f"A window of the last {last!r} requests is empty; give 1 or more.")
    end = _utc(now) if now is not None else datetime.now(UTC)
    if signature is None:
        signature = _signature(store, model, environment, version)
    names = _input_names(signature)
    query = select(
        m.RequestLog.request_id,
        m.RequestLog.at,
        m.RequestLog.version,
        m.RequestLog.status,
        m.RequestLog.latency_ms,
        m.RequestLog.rows,
        m.RequestLog.inputs,
        m.RequestLog.outputs,
    ).where(
        m.RequestLog.model == model,
        m.RequestLog.environment == environment,
        m.RequestLog.role == "serve",
        m.RequestLog.at <= _bound(end),
    )
    if version is not None:
        query = query.where(m.RequestLog.version == version)
    if seconds is not None:
        start = end - timedelta(seconds=seconds)
        query = query.where(m.RequestLog.at >= _bound(start)).order_by(
            m.RequestLog.at, m.RequestLog.id
        )
    else:
        query = query.order_by(m.RequestLog.at.desc(), m.RequestLog.id.desc()).limit(last)
    with store.engine.connect() as conn:
        logged = conn.execute(query).all()
    if last is not None:
        logged.reverse()
        start = _utc(logged[0].at) if logged else end

    parsed = _Parsed(names)
    for rid, at, ver, status, _latency, rows, inputs, outputs in logged:
        if status == 200:
            parsed.add(rid, as_utc(at), ver, rows, inputs, outputs)
    frame = parsed.frame(signature)
    return Window(
        model=model,
        environment=environment,
        start=start,
        end=end,
        seconds=seconds,
        last=last,
        inputs=frame,
        predictions=parsed.kept("predictions"),
        request_ids=parsed.kept("request_ids"),
        positions=parsed.kept("positions"),
        versions=parsed.kept("versions"),
        statuses=np.array([r.status for r in logged], dtype=np.int64),
        latencies_ms=np.array([r.latency_ms for r in logged], dtype=np.float64),
        requests=len(logged),
        served_at=parsed.served_at,
        request_rows=parsed.request_rows,
        skipped=parsed.skipped,
        problems=parsed.problems,
        version=version,
    )


# -- parsing -----------------------------------------------------------------------------------


class _Parsed:
    """Rows of the window's requests, split by shape (records or arrays), with their origins."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows: list[Any] = []
        self.predictions: list[Any] = []
        self.request_ids: list[str] = []
        self.positions: list[int] = []
        self.versions: list[int] = []
        self.served_at: dict[str, datetime] = {}
        self.request_rows: dict[str, int] = {}
        self.skipped = 0
        self.problems: list[str] = []
        self._keep: numpy.ndarray | None = None

    def add(self, rid: str, at: Any, version: int, rows: int, inputs: str, outputs: str) -> None:
        try:
            values = orjson.loads(inputs) if inputs else None
        except orjson.JSONDecodeError as exc:
            self._skip_request(rid, rows, f"its inputs are not JSON ({exc})")
            return
        if not isinstance(values, list) or not values:
            self._skip_request(rid, rows, "its inputs are not a list of rows")
            return
        self.served_at[rid] = at
        self.request_rows[rid] = len(values)
        predictions = _predictions(outputs, len(values))
        self.rows.extend(values)
        self.predictions.extend(predictions)
        self.request_ids.extend([rid] * len(values))
        self.positions.extend(range(len(values)))
        self.versions.extend([version] * len(values))

    def _skip_request(self, rid: str, rows: int, why: str) -> None:
        self.skipped += max(int(rows or 0), 1)
        self._problem(f"request {rid}: {why}")

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def frame(self, signature: dict[str, Any]) -> pandas.DataFrame:
        """The rows that fit the signature, in log order; the others are skipped and counted."""
        import numpy as np

        from conveyor.registry.signature import frame_from_columns

        n = len(self.rows)
        keep = np.zeros(n, dtype=bool)
        pieces: list[tuple[numpy.ndarray, list[Any]]] = []
        records = [i for i, row in enumerate(self.rows) if type(row) is dict]
        arrays = [i for i, row in enumerate(self.rows) if type(row) is list]
        for group in (records, arrays):
            if group:
                index = np.asarray(group, dtype=np.int64)
                for sub, columns in self._check(signature, index):
                    keep[sub] = True
                    pieces.append((sub, columns))
        for i in np.flatnonzero(~keep)[: MAX_PROBLEMS - len(self.problems)]:
            self._problem(
                f"request {self.request_ids[i]} row {self.positions[i]}: "
                f"{self._why(signature, int(i))}"
            )
        self.skipped += int(n - keep.sum())
        self._keep = keep
        if not pieces:
            return _empty(signature)
        order = np.concatenate([sub for sub, _c in pieces])
        merged = [np.concatenate([cols[j] for _s, cols in pieces]) for j in range(len(self.names))]
        frame = frame_from_columns(signature, merged)
        # back into log order: the positions of the kept rows, sorted
        if len(pieces) > 1:
            frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
        return frame

    def _check(
        self, signature: dict[str, Any], index: numpy.ndarray
    ) -> list[tuple[numpy.ndarray, list[Any]]]:
        """Checked column arrays for the rows at ``index``: the whole block when it fits,
        else its halves, down to single rows, which are dropped."""
        from conveyor.registry.signature import columns_from_rows

        rows = [self.rows[i] for i in index]
        try:
            return [(index, columns_from_rows(signature, rows))]
        except RegistryError as exc:
            raise MonitorError(f"Cannot read the request log: {exc}") from exc
        except (InvalidInput, TypeError, ValueError, OverflowError):
            if len(index) == 1:
                return []
        half = len(index) // 2
        return self._check(signature, index[:half]) + self._check(signature, index[half:])

    def _why(self, signature: dict[str, Any], i: int) -> str:
        from conveyor.registry.signature import columns_from_rows

        try:
            columns_from_rows(signature, [self.rows[i]])
        except (InvalidInput, TypeError, ValueError, OverflowError) as exc:
            return str(exc).replace("Row 0 (0-based)", "the row").replace("Row 0", "the row")
        return "a row of another shape"

    def kept(self, name: str) -> list[Any]:
        values = getattr(self, name)
        keep = self._keep
        if keep is None or keep.all():
            return list(values)
        return [v for v, k in zip(values, keep, strict=True) if k]


def _predictions(outputs: str, n: int) -> list[Any]:
    """One prediction per row from a logged answer (JSON or v2), or None where unknown."""
    try:
        answer = orjson.loads(outputs) if outputs else None
    except orjson.JSONDecodeError:
        return [None] * n
    values: Any = None
    if isinstance(answer, dict):
        values = answer.get("predictions")
        if values is None and isinstance(answer.get("outputs"), list):  # Open Inference v2
            for tensor in answer["outputs"]:
                if isinstance(tensor, dict) and tensor.get("name") == "predictions":
                    values = tensor.get("data")
    if not isinstance(values, list) or len(values) != n:
        return [None] * n
    return values


def _input_names(signature: dict[str, Any]) -> list[str]:
    try:
        names = [str(f["name"]) for f in signature["inputs"]]
    except (KeyError, TypeError) as exc:
        raise MonitorError(
            f"The model's signature is malformed (missing {exc}); register the model again."
        ) from None
    if not names:
        raise MonitorError("The model's signature has no inputs; register the model again.")
    return names


def _empty(signature: dict[str, Any]) -> pandas.DataFrame:
    """A frame with no rows and the dtypes a checked frame would have."""
    import numpy as np
    import pandas as pd

    dtypes = {
        "integer": np.float64,
        "number": np.float64,
        "string": object,
        "boolean": object,
        "datetime": "datetime64[ns]",
    }
    return pd.DataFrame(
        {
            f["name"]: pd.Series([], dtype=dtypes.get(f.get("type"), object))
            for f in signature["inputs"]
        }
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _bound(value: datetime) -> datetime:
    """A datetime in UTC: SQLite compares the text of its wall time, which must be UTC's."""
    return value.astimezone(UTC)


def _signature(store: Any, model: str, environment: str, version: int | None) -> dict[str, Any]:
    """The signature of ``version``, else of the version the environment's alias serves."""
    with store.session() as s:
        if version is None:
            alias = s.get(m.Alias, (model, environment))
            if alias is None:
                raise MonitorError(nothing_routed(model, environment, s))
            version = alias.version
        row = s.scalar(
            select(m.ModelVersion.signature).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        )
    if row is None:
        raise MonitorError(f"Model {model!r} has no version {version}; nothing to monitor.")
    return dict(row)


def nothing_routed(model: str, environment: str, session: Any) -> str:
    """The message for an environment that serves no version of ``model``."""
    aliases = sorted(session.scalars(select(m.Alias.alias).where(m.Alias.model == model)))
    if not aliases:
        known = session.scalar(select(m.ModelVersion.id).where(m.ModelVersion.model == model))
        if known is None:
            return (
                f"No model {model!r} in the registry, so environment {environment!r} serves "
                "nothing to monitor. Check the name with 'conveyor models list'."
            )
    return (
        f"Nothing is routed to environment {environment!r}: model {model!r} has no "
        f"{environment!r} alias (it has: {', '.join(aliases) or 'none'}). Deploy a version "
        f"there with 'conveyor deploy {model} VERSION --to {environment}', or monitor another "
        "environment."
    )
