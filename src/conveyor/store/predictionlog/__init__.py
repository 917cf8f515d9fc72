"""The prediction log: served requests and their feedback as Parquet files in the artifact store.

``layout`` is the contract (paths, names, columns; see docs/prediction-log.md), ``files`` writes
and lists the files, ``query`` reads windows of them on DuckDB, ``maintenance`` compacts small
files, applies retention and moves the rows of the old ``request_log``/``feedback`` tables in.
Importing this package imports neither PyArrow nor DuckDB.
"""

from __future__ import annotations
