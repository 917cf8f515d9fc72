"""Gates on the data, judged before any training time is spent: the schema of each source in
``validate:``, and its drift against the data that trained the version in production."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from conveyor.exceptions import DataError
from conveyor.gates.verdicts import GateResult, blocking

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig


def load_source(config: ProjectConfig, name: str) -> pd.DataFrame:
    """The current data of source ``name``, as the pipeline would read it.

    Raises:
        DataError: the source is missing or unreadable.
    """
    from conveyor.config import resolve_sqlite_url
    from conveyor.data import snapshot as snap_mod
    from conveyor.data.hashing import FileHasher

    src = config.data[name]
    root = Path(config.root)
    if src.sql is not None:
        _, table = snap_mod.fingerprint_sql(
            name, resolve_sqlite_url(src.database_url(), root), src.sql
        )
        return table.to_pandas()
    snap = snap_mod.fingerprint_files(name, src.files(), root, FileHasher(None))
    return snap_mod.load(snap, root, src.format, src.options)


def schema_path(config: ProjectConfig, name: str) -> Path:
    return Path(config.root) / config.validate_[name].schema_


def read_schema(config: ProjectConfig, name: str) -> Any:
    """The schema file ``validate.NAME`` names.

    Raises:
        DataError: the file is missing or malformed (the message names it and the fix).
    """
    from conveyor.data.schema import Schema

    path = schema_path(config, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(
            f"validate.{name}: schema file {str(path)!r} does not exist. Write one with "
            f"'conveyor data infer {name} -o {config.validate_[name].schema_}'."
        ) from None
    except OSError as exc:
        raise DataError(f"validate.{name}: cannot read {str(path)!r}: {exc.strerror}.") from exc
    return Schema.from_yaml(text, file=str(path))


def validation_gate(
    config: ProjectConfig,
    name: str,
    frame: pd.DataFrame,
    schema: Any = None,
    schema_file: str | None = None,
) -> GateResult:
    """Every check of the source's schema (``validate.NAME``, or ``schema`` when given); the
    evidence lists each failing check with its column, its number of failing rows and up to 5
    examples."""
    from conveyor.data.validation import validate

    start = time.perf_counter()
    report = validate(frame, schema if schema is not None else read_schema(config, name))
    failures = [
        {
            "column": f.column,
            "check": f.check,
            "failing_rows": f.failing_rows,
            "examples": f.examples,
            "text": f.to_text(),
        }
        for f in report.failures
    ]
    evidence = {
        "source": name,
        "schema": schema_file or config.validate_[name].schema_,
        "rows": report.rows,
        "columns": report.columns,
        "failures": failures,
    }
    if report.ok:
        summary = f"{report.rows:,} rows × {report.columns} columns; every check holds"
    else:
        first = failures[0]["text"]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        summary = f"{len(failures)} check(s) failed: {first}{more}"
    result = GateResult(
        f"data validation: {name}",
        "validation",
        "pass" if report.ok else "fail",
        summary,
        evidence,
        time.perf_counter() - start,
    )
    result.blocks = blocking(result)
    return result


def drift_gate(
    name: str, frame: pd.DataFrame, reference: pd.DataFrame | None, cfg: Any, version: int | None
) -> GateResult:
    """Drift of the new data against the sample of the data the production version was
    trained on; skipped when nothing serves production yet."""
    from conveyor.data.drift import drift_report

    start = time.perf_counter()
    label = f"data drift: {name}"
    if reference is None:
        result = GateResult(
            label,
            "drift",
            "skipped",
            "no production version with a reference sample of this source: nothing to compare",
            {"source": name},
        )
    else:
        common = [c for c in reference.columns if c in frame.columns]
        # A column drifts when its test is significant (Holm-corrected over the columns) and
        # its PSI reaches the threshold: on large data a p-value alone flags harmless shifts.
        report = drift_report(
            reference[common],
            frame[common],
            methods={"numeric": ["ks", "psi"], "categorical": ["chi2", "psi"]},
            alpha=cfg.alpha,
            psi_threshold=cfg.psi,
        )
        share = float(report["share_drifted"])
        drifted = list(report["drifted"])
        verdict = "fail" if share > cfg.max_share else "pass"
        summary = (
            f"{len(drifted)} of {len(common)} columns drifted against production v{version}'s "
            f"training data ({share:.0%}; allowed {cfg.max_share:.0%})"
            + (f": {', '.join(drifted[:5])}" if drifted else "")
        )
        evidence = {
            "source": name,
            "production_version": version,
            "drifted": drifted,
            "share_drifted": share,
            "max_share": cfg.max_share,
            "columns": report["columns"],
            "missing_columns": [c for c in reference.columns if c not in frame.columns],
        }
        result = GateResult(label, "drift", verdict, summary, evidence)
    result.duration_s = time.perf_counter() - start
    result.blocks = blocking(result)
    return result
