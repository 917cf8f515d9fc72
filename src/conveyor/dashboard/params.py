"""Query strings and forms, checked before anything reads them.

Every page declares the parameters it takes and how each is read; anything else, a repeated
parameter, or a value that does not parse answers 400 naming the parameter and what it takes.
Values reach the store only as bound parameters (``queries.py``) and never reach a path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from conveyor.dashboard.errors import BadRequest

__all__ = [
    "Param",
    "choice_param",
    "date_param",
    "duration_param",
    "form",
    "int_param",
    "parse",
    "text_param",
]

_TEXT = re.compile(r"^[\w .@:/+=-]{1,200}$")
Reader = Callable[[str], Any]


class Param:
    """One parameter: its name, how to read it, and what it takes (said in a 400)."""

    def __init__(self, name: str, read: Reader, takes: str) -> None:
        self.name, self.read, self.takes = name, read, takes


def parse(query: bytes | str, params: Mapping[str, Param]) -> dict[str, Any]:
    """The query string read through ``params``; every declared name is in the result.

    Raises:
        BadRequest: an unknown or repeated parameter, or a value its reader refuses.
    """
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except ValueError:
        raise BadRequest("The query string has more than 50 parameters.") from None
    values: dict[str, Any] = dict.fromkeys(params)
    seen: set[str] = set()
    for name, raw in pairs:
        param = params.get(name)
        if param is None:
            known = ", ".join(sorted(params)) or "none"
            raise BadRequest(f"Unknown query parameter {name[:50]!r}; this page takes: {known}.")
        if name in seen:
            raise BadRequest(f"Query parameter {name!r} is given twice; give it once.")
        seen.add(name)
        if raw == "":
            continue  # an empty filter field of a form: not filtered
        try:
            values[name] = param.read(raw)
        except (ValueError, TypeError):
            raise BadRequest(
                f"Query parameter {name!r} is {raw[:60]!r}; it takes {param.takes}."
            ) from None
    return values


def int_param(name: str, lo: int, hi: int) -> Param:
    def read(raw: str) -> int:
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(raw)
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(raw)
        return value

    return Param(name, read, f"a whole number from {lo} to {hi}")


def date_param(name: str, *, end: bool = False) -> Param:
    """A day as YYYY-MM-DD (UTC); ``end`` makes it the day's end, so a range includes it."""

    def read(raw: str) -> datetime:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        return day + timedelta(days=1) if end else day

    return Param(name, read, "a date as YYYY-MM-DD")


def text_param(name: str) -> Param:
    def read(raw: str) -> str:
        if not _TEXT.match(raw):
            raise ValueError(raw)
        return raw

    return Param(name, read, "up to 200 letters, digits and . @ : / + = - _ or spaces")


def duration_param(name: str, lo_s: float, hi_s: float) -> Param:
    """A duration as a number and a unit (90s, 5m, 1h, 1d), in seconds within [lo_s, hi_s]."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def read(raw: str) -> float:
        found = re.fullmatch(r"([0-9]{1,6})([smhd])", raw)
        if not found:
            raise ValueError(raw)
        seconds = int(found.group(1)) * units[found.group(2)]
        if not lo_s <= seconds <= hi_s:
            raise ValueError(raw)
        return seconds

    return Param(
        name,
        read,
        f"a duration such as 5m, 1h or 1d, from {lo_s:g} s to {hi_s / 86400:g} days",
    )


def choice_param(name: str, choices: tuple[str, ...] | list[str]) -> Param:
    allowed = tuple(choices)

    def read(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(raw)
        return raw

    shown = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
    return Param(name, read, f"one of {shown}")


def form(body: bytes, fields: Mapping[str, int]) -> dict[str, str]:
    """A urlencoded form: each field (name -> longest length) once at most, nothing else.

    Raises:
        BadRequest: the body is not a form, or has an unknown, repeated or too long field.
    """
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The request body is not a URL-encoded form in UTF-8.") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in fields:
            raise BadRequest(
                f"Unknown form field {name[:50]!r}; this form takes: {', '.join(fields)}."
            )
        if name in out:
            raise BadRequest(f"Form field {name!r} is given twice; give it once.")
        if len(value) > fields[name]:
            raise BadRequest(
                f"Form field {name!r} has {len(value)} characters; at most {fields[name]}."
            )
        out[name] = value
    return out
