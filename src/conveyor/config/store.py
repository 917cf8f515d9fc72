"""The ``store:`` section: where metadata (a SQLAlchemy URL) and artifacts (a folder or an fsspec
URL) live, and how a relative SQLite path is resolved against the project."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from conveyor.config.base import ConfigModel, invalid

DEFAULT_STORE_URL = "sqlite:///.conveyor/conveyor.db"
DEFAULT_ARTIFACTS = ".conveyor/artifacts"
ENV_STORE_URL = "CONVEYOR_STORE_URL"
ENV_ARTIFACTS = "CONVEYOR_ARTIFACTS"

URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE = re.compile(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?")


class StoreConfig(ConfigModel):
    """Where metadata (a SQLAlchemy URL) and artifacts (a path or fsspec URL) live."""

    shape: ClassVar[str] = "a mapping with 'url' and/or 'artifacts'"
    yaml_example: ClassVar[str] = """
store:
  url: postgresql+psycopg://conveyor@db.internal/conveyor
  artifacts: s3://ml-bucket/conveyor
"""

    url: str = Field(
        default=DEFAULT_STORE_URL,
        description="SQLAlchemy URL of the metadata database (runs, versions, releases); a "
        f"relative SQLite path is relative to the project. Overridden by {ENV_STORE_URL}.",
    )
    artifacts: str = Field(
        default=DEFAULT_ARTIFACTS,
        description="Folder or fsspec URL (such as s3://bucket/prefix) where step outputs and "
        f"model files are stored by content hash. Overridden by {ENV_ARTIFACTS}.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not URL.match(value):
            raise invalid(
                "expected a SQLAlchemy URL such as 'sqlite:///.conveyor/conveyor.db' or "
                f"'postgresql+psycopg://user@host/db', got {value!r}"
            )
        return value

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, value: str) -> str:
        if not value.strip():
            raise invalid("expected a folder or an fsspec URL such as 's3://bucket/conveyor'")
        return value


def resolve_sqlite_url(url: str, root: Path) -> str:
    """A relative SQLite path means relative to the project, not to the working directory."""
    match = _SQLITE.fullmatch(url)
    if not match:
        return url
    prefix, db, query = match.group(1), match.group(2), match.group(3) or ""
    if not db or db == ":memory:" or db.startswith("file:") or Path(db).is_absolute():
        return url
    return prefix + os.path.normpath(root / Path(db).expanduser()) + query
