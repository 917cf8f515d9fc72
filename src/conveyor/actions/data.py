"""`conveyor data infer|validate|diff`: schemas for sources, checks against them, and what changed
between two snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from conveyor.exceptions import DataError
from conveyor.store.atomic import write_text

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.store.stores import Stores


def _source(config: ProjectConfig, name: str) -> None:
    if name not in config.data:
        known = ", ".join(config.data) or "none"
        raise DataError(f"No data source {name!r} in {config.file.name}; known sources: {known}.")


def infer_source_schema(
    config: ProjectConfig, name: str, out: Path | None = None, *, force: bool = False
) -> tuple[Path, Any]:
    """Infer the schema of source ``name`` from its current data and write it as YAML.

    Args:
        out: the file to write; default ``validate.NAME.schema`` if set, else
            ``schemas/NAME.yaml``.
        force: overwrite an existing file.

    Raises:
        DataError: unknown source, unreadable data, or the file exists and ``force`` is off.
    """
    from conveyor.data.schema import infer_schema
    from conveyor.gates.data_gates import load_source

    _source(config, name)
    if out is None:
        declared = config.validate_.get(name)
        out = Path(declared.schema_ if declared else f"schemas/{name}.yaml")
    path = out if out.is_absolute() else Path(config.root) / out
    if path.exists() and not force:
        raise DataError(
            f"{str(path)!r} exists already; pass --force to replace it (edit it instead to keep "
            "your changes)."
        )
    frame = load_source(config, name)
    schema = infer_schema(frame)
    header = (
        f"# Schema of data source {name!r}, inferred by 'conveyor data infer' from "
        f"{len(frame):,} rows.\n# Edit the bounds and categories to what the data may hold; "
        f"'validate: {{{name}: {out.as_posix()}}}' in conveyor.yaml checks it before training.\n"
    )
    write_text(path, header + schema.to_yaml())
    return path, schema


def validate_source(config: ProjectConfig, name: str, schema: Path | None = None) -> Any:
    """Check source ``name`` against its schema file; returns the validation gate's result.

    Raises:
        DataError: unknown source, no schema given or declared, or a malformed schema file.
    """
    from conveyor.data.schema import Schema
    from conveyor.gates.data_gates import load_source, validation_gate

    _source(config, name)
    if schema is None:
        if name not in config.validate_:
            raise DataError(
                f"Source {name!r} has no schema in 'validate:' of {config.file.name}; pass "
                f"--schema FILE or write one with 'conveyor data infer {name}'."
            )
        return validation_gate(config, name, load_source(config, name))
    path = schema if schema.is_absolute() else Path(config.root) / schema
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"Cannot read schema file {str(path)!r}: {exc.strerror}.") from exc
    parsed = Schema.from_yaml(text, file=str(path))
    return validation_gate(config, name, load_source(config, name), parsed, str(schema))


def diff_snapshots(config: ProjectConfig, a: str, b: str) -> dict[str, Any]:
    """What changed from snapshot ``a`` to ``b``, from their recorded profiles.

    Each side is a snapshot id or a unique prefix of one (``loans:3fa2``), a source name (its
    newest profiled snapshot), ``SOURCE~N`` (the N-th before the newest), or
    ``SOURCE@ALIAS`` (the snapshot that trained the version an alias serves).

    Raises:
        DataError: a side matches no snapshot, or several, or has no profile yet.
    """
    from conveyor.data.diff import diff_profiles
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        first, second = _snapshot(config, stores, a), _snapshot(config, stores, b)
    result = diff_profiles(_as_dict(first), _as_dict(second))
    result["a"] = {"id": first.id, "created_at": first.created_at.isoformat()}
    result["b"] = {"id": second.id, "created_at": second.created_at.isoformat()}
    return result


def _as_dict(snap: Any) -> dict[str, Any]:
    return {
        "source": snap.source,
        "row_count": snap.row_count,
        "schema": snap.schema,
        "profile": snap.profile,
    }


def _snapshot(config: ProjectConfig, stores: Stores, ref: str) -> Any:
    from conveyor.store import models as m

    with stores.metadata.session() as s:
        if "@" in ref:
            return _trained(config, stores, ref)
        source, tilde, back = ref.partition("~")
        if source in config.data and ":" not in ref:
            if tilde and not (back.isascii() and back.isdigit()):
                raise DataError(f"{ref!r}: write SOURCE~N with N a number, such as 'loans~1'.")
            rows = list(
                s.scalars(
                    select(m.Snapshot)
                    .where(m.Snapshot.source == source, m.Snapshot.profile.is_not(None))
                    .order_by(m.Snapshot.created_at.desc())
                    .limit(int(back or 0) + 1)
                )
            )
            index = int(back or 0)
            if len(rows) <= index:
                raise DataError(
                    f"Source {source!r} has {len(rows)} profiled snapshot(s); {ref!r} asks for "
                    f"number {index + 1}. Run the pipeline to take one."
                )
            return rows[index]
        rows = list(s.scalars(select(m.Snapshot).where(m.Snapshot.id.startswith(ref)).limit(2)))
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise DataError(
            f"No snapshot matches {ref!r}. Give a source name ({', '.join(config.data)}), "
            "SOURCE~N, SOURCE@ALIAS, or an id from 'conveyor show latest'."
        )
    raise DataError(f"Snapshot prefix {ref!r} is ambiguous; give more characters.")


def _trained(config: ProjectConfig, stores: Stores, ref: str) -> Any:
    from conveyor.registry.registry import Registry

    source, _, alias = ref.partition("@")
    if config.model is None:
        raise DataError(f"{ref!r} names an alias, but conveyor.yaml has no 'model:' section.")
    version = Registry(stores.metadata, stores.artifacts).version(config.model.name, alias)
    for snap in version.lineage.get("snapshots", []):
        if snap["source"] == source:
            found = stores.metadata.snapshot(snap["id"])
            if found is not None:
                return found
    raise DataError(
        f"Version {version.version} of {config.model.name!r} ({alias}) was not trained on "
        f"source {source!r}."
    )
