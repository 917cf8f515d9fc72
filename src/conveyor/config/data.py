"""The ``data:`` section: each named source is files (a path or glob of CSV/Parquet) or a SQL
query against a database URL."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from conveyor.config.base import ConfigModel, invalid
from conveyor.exceptions import ConveyorError


class SourceConfig(ConfigModel):
    """A data source: files (a path or glob of CSV/Parquet) or a SQL query against a URL."""

    shape: ClassVar[str] = (
        "a path or glob such as 'data/loans/*.parquet', or a mapping with 'source' or 'sql'"
    )
    shorthand_schema: ClassVar[dict[str, Any] | None] = {"type": "string", "minLength": 1}
    yaml_example: ClassVar[str] = """
data:
  loans: data/loans/*.parquet                       # shorthand for {source: ...}
  raw: {source: data/raw/*.csv, format: csv, options: {sep: ";"}}
  accounts: {sql: "SELECT * FROM accounts", url: "postgresql+psycopg://db/crm"}
"""

    source: str | None = Field(
        default=None,
        description="A file or glob of files, relative to the project; "
        "a source written as a plain string means this key.",
    )
    format: Literal["csv", "parquet"] | None = Field(
        default=None,
        description="The file format; by default it is read from the file extension.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments passed to the reader (pandas.read_csv or read_parquet), "
        "such as {sep: ';'}.",
    )
    sql: str | None = Field(
        default=None, description="A SQL query whose result is the source; needs 'url'."
    )
    url: str | None = Field(
        default=None, description="SQLAlchemy URL of the database that 'sql' runs against."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"source": data} if isinstance(data, str) else data

    def files(self) -> str:
        """The file or glob of a file source; validation keeps exactly one of it and ``sql``."""
        if self.source is None:
            raise ConveyorError("This data source is a SQL query, not files.")
        return self.source

    def database_url(self) -> str:
        """The URL a SQL source's query runs against; validation gives every ``sql`` one."""
        if self.url is None:
            raise ConveyorError("This data source is files, not a SQL query.")
        return self.url

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if self.source is not None and self.sql is not None:
            raise invalid("give either 'source' (a file or glob) or 'sql' with 'url', not both")
        if self.source is None and self.sql is None:
            raise invalid("give either 'source' (a file or glob) or 'sql' with 'url'")
        if self.sql is not None and self.url is None:
            raise invalid("'sql' needs 'url', the SQLAlchemy URL of the database to query")
        if self.source is not None and self.url is not None:
            raise invalid("'url' goes with 'sql'; for files use 'source' alone")
        if self.sql is not None and self.format is not None:
            raise invalid("'format' applies to 'source' files only; remove it")
        return self
