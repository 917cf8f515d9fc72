"""What changed between two snapshots, from their recorded profiles alone.

``conveyor data diff A B`` must answer without reading either data set again, so it compares
what :func:`conveyor.data.snapshot.profile` recorded: row counts, column types and per-column
statistics. Profiles hold no row identities, so the row change is a net count: a snapshot that
replaced 10 rows and added 5 shows +5.
"""

from __future__ import annotations

from typing import Any

from conveyor.exceptions import DataError


def diff_profiles(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two profiled snapshots (``Snapshot.to_dict()`` output, ``a`` the older one).

    Returns a JSON-safe dict::

        {"rows": {"before", "after", "added", "removed"},
         "columns": {"added": [...], "removed": [...],
                     "type_changed": {name: {"before", "after"}}},
         "changes": {name: {"null_share": {"before", "after", "change"},
                            "mean": {...}, "std": {...},          # numeric columns
                            "top": {"before", "after", "entered", "left"}}}}  # text columns

    ``added``/``removed`` rows are the net change (one of them is 0). Each column present in
    both snapshots gets an entry in ``changes``; ``mean``/``std`` appear where both sides are
    numeric, ``top`` where both sides are text (the commonest values with their shares).

    Args:
        a: The earlier snapshot, as a dict with ``row_count``, ``schema`` and ``profile``.
        b: The later snapshot, in the same shape.

    Raises:
        DataError: A snapshot has not been profiled (no ``profile`` or ``row_count``).
    """
    before_rows, before_schema, before_profile = _parts(a, "first")
    after_rows, after_schema, after_profile = _parts(b, "second")
    before_names = list(before_schema or before_profile)
    after_names = list(after_schema or after_profile)
    common = [name for name in after_names if name in before_schema or name in before_profile]
    type_changed = {
        name: {"before": before_schema[name], "after": after_schema[name]}
        for name in common
        if name in before_schema
        and name in after_schema
        and before_schema[name] != after_schema[name]
    }
    changes = {}
    for name in common:
        old, new = before_profile.get(name, {}), after_profile.get(name, {})
        entry: dict[str, Any] = {
            "null_share": _change(
                _share(old.get("null_count"), before_rows),
                _share(new.get("null_count"), after_rows),
            )
        }
        if "mean" in old and "mean" in new:
            entry["mean"] = _change(old["mean"], new["mean"])
            entry["std"] = _change(old.get("std"), new.get("std"))
        if "top" in old and "top" in new:
            entry["top"] = _top(old["top"], before_rows, new["top"], after_rows)
        changes[name] = entry
    net = after_rows - before_rows
    return {
        "rows": {
            "before": before_rows,
            "after": after_rows,
            "added": max(net, 0),
            "removed": max(-net, 0),
        },
        "columns": {
            "added": [name for name in after_names if name not in before_names],
            "removed": [name for name in before_names if name not in after_names],
            "type_changed": type_changed,
        },
        "changes": changes,
    }


def _parts(snapshot: dict[str, Any], which: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    profile = snapshot.get("profile")
    rows = snapshot.get("row_count")
    if profile is None or rows is None:
        source = snapshot.get("source", "?")
        raise DataError(
            f"The {which} snapshot (source {source!r}) has no profile to compare;"
            " profile it first (conveyor.data.snapshot.profile)."
        )
    return int(rows), dict(snapshot.get("schema") or {}), dict(profile)


def _share(count: Any, rows: int) -> float | None:
    if count is None or rows == 0:
        return None
    return count / rows


def _change(before: Any, after: Any) -> dict[str, Any]:
    change = None if before is None or after is None else after - before
    return {"before": before, "after": after, "change": change}


def _top(
    before: list[dict[str, Any]], before_rows: int, after: list[dict[str, Any]], after_rows: int
) -> dict[str, Any]:
    """The commonest values on each side, as shares of rows, and which entered or left."""

    def shares(top: list[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
        return [
            {"value": t["value"], "count": t["count"], "share": _share(t["count"], rows)}
            for t in top
        ]

    old = [t["value"] for t in before]
    new = [t["value"] for t in after]
    return {
        "before": shares(before, before_rows),
        "after": shares(after, after_rows),
        "entered": [v for v in new if v not in old],
        "left": [v for v in old if v not in new],
    }
