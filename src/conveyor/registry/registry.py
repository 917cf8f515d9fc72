"""Model versions and the aliases that say what each environment serves.

A version is written once, at registration, with everything that explains it (lineage, metrics,
gate verdicts, signature, plots); afterwards only its status may change. An alias (``staging``,
``production``) points at one version and is moved only by :meth:`Registry.set_alias`, which
writes the ``alias.moved`` event in the same transaction: the audit log can never disagree with
what is served.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ModelNotFound, RegistryError, StoreError
from conveyor.registry.modelfile import ModelFile, load_model
from conveyor.store import events as ev
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.store import models as m
    from conveyor.store.artifacts import ArtifactStore
    from conveyor.store.metadata import Store

_ATTEMPTS = 30  # SQLite: concurrent registrations race for the number and retry
_ALIAS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclass
class Version:
    """One registered version, as read from the store."""

    model: str
    version: int
    status: str
    created_at: datetime
    project: str
    run_id: str
    task: str
    file: ModelFile
    onnx: dict | None
    signature: dict
    metrics: dict
    slices: dict
    gates: list
    plots: dict
    lineage: dict
    holdout: dict
    references: dict
    card: dict
    aliases: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``model 'NAME' version N``, as errors and events name it."""
        return f"model {self.model!r} version {self.version}"


@dataclass(frozen=True)
class NewVersion:
    """What registration needs; the registry adds the number, status and time."""

    project: str
    model: str
    run_id: str
    task: str
    file: ModelFile
    signature: dict
    metrics: dict
    lineage: dict
    holdout: dict
    onnx: dict | None = None
    slices: dict = field(default_factory=dict)
    gates: list = field(default_factory=list)
    plots: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)


class Registry:
    """Versions and aliases over an open metadata store and artifact store."""

    def __init__(self, store: Store, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    # -- writing ---------------------------------------------------------------------------

    def register(self, new: NewVersion) -> Version:
        """Add the next version of ``new.model``; the number is assigned in the transaction.

        Raises:
            RegistryError: the model file is not in the artifact store.
        """
        if not self.artifacts.exists(new.file.digest):
            raise RegistryError(
                f"Cannot register {new.model!r}: its model file {new.file.digest[:12]} is not in "
                "the artifact store. Re-run the pipeline that produced it."
            )
        from sqlalchemy import func, select, text
        from sqlalchemy.exc import IntegrityError

        from conveyor.store import models as m

        for attempt in range(_ATTEMPTS):
            if attempt:  # lost a race for the number: let the winners commit, then look again
                time.sleep(random.uniform(0.0, 0.01 * attempt))
            try:
                with self.store.session() as s:
                    if s.get_bind().dialect.name == "postgresql":
                        # one registration of a model at a time: the number is then never taken
                        s.execute(
                            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                            {"key": f"conveyor.register:{new.model}"},
                        )
                    latest = s.scalar(
                        select(func.max(m.ModelVersion.version)).where(
                            m.ModelVersion.model == new.model
                        )
                    )
                    number = (latest or 0) + 1
                    row = m.ModelVersion(
                        project=new.project,
                        model=new.model,
                        version=number,
                        status="registered",
                        created_at=utcnow(),
                        run_id=new.run_id,
                        task=new.task,
                        file=new.file.to_dict(),
                        onnx=new.onnx,
                        signature=new.signature,
                        metrics=new.metrics,
                        slices=new.slices,
                        gates=new.gates,
                        plots=new.plots,
                        lineage=new.lineage,
                        holdout=new.holdout,
                        references=new.references,
                        card=new.card,
                    )
                    s.add(row)
                    s.flush()
                    self.store.add_event(
                        s,
                        ev.MODEL_REGISTERED,
                        "model",
                        new.model,
                        {
                            "version": number,
                            "run_id": new.run_id,
                            "digest": new.file.digest,
                            "metrics": _numbers(new.metrics),
                        },
                    )
                return self.version(new.model, number)
            except StoreError as exc:
                # Two registrations of one model at once: the unique (model, version) index
                # refuses the second; it takes the next number.
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise RegistryError(f"Cannot register {new.model!r}: the version number kept changing.")

    def set_alias(self, model: str, alias: str, version: int, *, reason: str = "") -> int | None:
        """Point ``alias`` of ``model`` at ``version``; returns the version it pointed at before.

        Raises:
            ModelNotFound: no such version.
            RegistryError: the version is archived, or the alias is not a valid name.
        """
        _check_alias(alias)
        with self.store.session() as s:
            return self.move_alias(s, model, alias, version, reason=reason)

    def move_alias(
        self, s: Any, model: str, alias: str, version: int, *, reason: str = ""
    ) -> int | None:
        """``set_alias`` inside the caller's transaction (a release moves traffic with it)."""
        from conveyor.store import models as m

        _check_alias(alias)
        row = self._row(s, model, version)
        if row.status != "registered":
            raise RegistryError(
                f"Model {model!r} version {version} is {row.status}; only a registered "
                "version can be served."
            )
        current = s.get(m.Alias, (model, alias))
        before = current.version if current is not None else None
        if current is None:
            s.add(m.Alias(model=model, alias=alias, version=version, updated_at=utcnow()))
        else:
            current.version, current.updated_at = version, utcnow()
        self.store.add_event(
            s,
            ev.ALIAS_MOVED,
            "model",
            model,
            {"alias": alias, "from": before, "to": version, "reason": reason},
        )
        return before

    def remove_alias(self, model: str, alias: str, *, reason: str = "") -> int | None:
        """Stop serving ``alias``; returns the version it pointed at (None if unset)."""
        with self.store.session() as s:
            return self.unset_alias(s, model, alias, reason=reason)

    def unset_alias(self, s: Any, model: str, alias: str, *, reason: str = "") -> int | None:
        """``remove_alias`` inside the caller's transaction."""
        from conveyor.store import models as m

        current = s.get(m.Alias, (model, alias))
        if current is None:
            return None
        before = current.version
        s.delete(current)
        self.store.add_event(
            s,
            ev.ALIAS_REMOVED,
            "model",
            model,
            {"alias": alias, "from": before, "reason": reason},
        )
        return before

    # -- reading ---------------------------------------------------------------------------

    def models(self, project: str | None = None) -> list[dict[str, Any]]:
        """One summary per model: name, latest version, count, aliases."""
        from sqlalchemy import func, select

        from conveyor.store import models as m

        with self.store.session() as s:
            q = select(
                m.ModelVersion.model,
                func.max(m.ModelVersion.version),
                func.count(),
                func.max(m.ModelVersion.created_at),
            ).group_by(m.ModelVersion.model)
            if project is not None:
                q = q.where(m.ModelVersion.project == project)
            rows = s.execute(q.order_by(m.ModelVersion.model)).all()
            aliases = self._aliases(s, [r[0] for r in rows])
        return [
            {
                "model": name,
                "latest": latest,
                "versions": count,
                "updated_at": _utc(when),
                "aliases": {a: v for a, v in aliases.get(name, {}).items()},
            }
            for name, latest, count, when in rows
        ]

    def versions(self, model: str) -> list[Version]:
        """Every version of ``model``, newest first.

        Raises:
            ModelNotFound: the model has no versions.
        """
        from sqlalchemy import select

        from conveyor.store import models as m

        with self.store.session() as s:
            rows = list(
                s.scalars(
                    select(m.ModelVersion)
                    .where(m.ModelVersion.model == model)
                    .order_by(m.ModelVersion.version.desc())
                )
            )
            if not rows:
                raise ModelNotFound(self._no_model(s, model))
            aliases = self._aliases(s, [model]).get(model, {})
        return [_version(row, aliases) for row in rows]

    def version(self, model: str, ref: int | str) -> Version:
        """A version by number, ``latest``, or an alias name (``production``).

        Raises:
            ModelNotFound: no such model, version or alias.
        """
        with self.store.session() as s:
            number = self._resolve(s, model, ref)
            row = self._row(s, model, number)
            aliases = self._aliases(s, [model]).get(model, {})
        return _version(row, aliases)

    def find(self, model: str, digest: str) -> Version | None:
        """The version of ``model`` whose model file has this sha256, if one was registered."""
        from sqlalchemy import select

        from conveyor.store import models as m

        with self.store.session() as s:
            for row in s.scalars(
                select(m.ModelVersion)
                .where(m.ModelVersion.model == model)
                .order_by(m.ModelVersion.version)
            ):
                if row.file.get("digest") == digest:
                    return _version(row, self._aliases(s, [model]).get(model, {}))
        return None

    def alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points at, or None."""
        from conveyor.store import models as m

        with self.store.session() as s:
            row = s.get(m.Alias, (model, alias))
            return row.version if row is not None else None

    def load(self, version: Version, *, allow_pickle: bool, trusted_extra: tuple = ()) -> Any:
        """The fitted model of ``version``, only after its bytes match the recorded sha256.

        Raises:
            ModelTampered: the file changed since registration.
            UnsafeModelFile: a pickle under a policy that forbids them, or an untrusted type.
        """
        return load_model(
            self.artifacts,
            version.file,
            what=version.label,
            allow_pickle=allow_pickle,
            trusted_extra=trusted_extra,
        )

    def verify(self, version: Version, *, allow_pickle: bool) -> None:
        """Check ``version``'s model file as :meth:`load` would, without deserialising it: its
        bytes match the recorded sha256, and a pickle only where the policy allows pickles.

        For a server that answers from the version's ONNX copy and never calls the model.

        Raises:
            ModelTampered: the file changed since registration.
            UnsafeModelFile: a pickle under a policy that forbids them.
            RegistryError: the file is missing from the artifact store or cannot be read.
        """
        from conveyor.registry.modelfile import pickle_refused, verified_bytes

        if version.file.format == "pickle" and not allow_pickle:
            raise pickle_refused(version.label)
        verified_bytes(self.artifacts, version.file, version.label)

    # -- helpers ---------------------------------------------------------------------------

    def _resolve(self, s: Any, model: str, ref: int | str) -> int:
        from sqlalchemy import func, select

        from conveyor.store import models as m

        if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
            return int(ref)
        if ref == "latest":
            latest = s.scalar(
                select(func.max(m.ModelVersion.version)).where(m.ModelVersion.model == model)
            )
            if latest is None:
                raise ModelNotFound(self._no_model(s, model))
            return int(latest)
        row = s.get(m.Alias, (model, ref))
        if row is None:
            known = sorted(self._aliases(s, [model]).get(model, {}))
            if not known and not _exists(s, model):
                raise ModelNotFound(self._no_model(s, model))
            raise ModelNotFound(
                f"Model {model!r} has no alias {ref!r} (aliases: {', '.join(known) or 'none'}). "
                f"Give a version number, 'latest', or an alias."
            )
        return int(row.version)

    def _row(self, s: Any, model: str, version: int) -> m.ModelVersion:
        from sqlalchemy import func, select

        from conveyor.store import models as m

        row = s.scalar(
            select(m.ModelVersion).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        )
        if row is None:
            latest = s.scalar(
                select(func.max(m.ModelVersion.version)).where(m.ModelVersion.model == model)
            )
            if latest is None:
                raise ModelNotFound(self._no_model(s, model))
            raise ModelNotFound(
                f"Model {model!r} has no version {version} (latest is {latest}). "
                f"Run 'conveyor models show {model}'."
            )
        return row

    @staticmethod
    def _aliases(s: Any, names: list[str]) -> dict[str, dict[str, int]]:
        from sqlalchemy import select

        from conveyor.store import models as m

        out: dict[str, dict[str, int]] = {}
        if not names:
            return out
        for row in s.scalars(select(m.Alias).where(m.Alias.model.in_(names))):
            out.setdefault(row.model, {})[row.alias] = row.version
        return out

    @staticmethod
    def _no_model(s: Any, model: str) -> str:
        from sqlalchemy import select

        from conveyor.store import models as m

        names = list(s.scalars(select(m.ModelVersion.model).distinct().limit(20)))
        if not names:
            return (
                f"No model {model!r} in the registry: nothing is registered yet. Run "
                "'conveyor ci' to judge and register a candidate."
            )
        return (
            f"No model {model!r} in the registry. Registered models: "
            f"{', '.join(sorted(names))}; 'conveyor models list' shows them."
        )


class PlainReader:
    """The registry's reads over a read-only ``sqlite3`` connection to a store at head.

    `conveyor models list|show` must answer in a fraction of a second, and SQLAlchemy with the
    store's table models takes longer than that to import. These are :class:`Registry`'s
    reading methods in plain SQL: the same rows in the same order, the same errors. Callers
    fall back to :class:`Registry` on any ``sqlite3.Error`` (which these let through).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def models(self, project: str | None = None) -> list[dict[str, Any]]:
        """As :meth:`Registry.models`."""
        where, args = (" WHERE project = ?", [project]) if project is not None else ("", [])
        rows = self.conn.execute(
            "SELECT model, MAX(version), COUNT(*), MAX(created_at) FROM model_versions"
            f"{where} GROUP BY model ORDER BY model",
            args,
        ).fetchall()
        aliases = self._aliases([r[0] for r in rows])
        return [
            {
                "model": name,
                "latest": latest,
                "versions": count,
                "updated_at": _utc(when),
                "aliases": dict(aliases.get(name, {})),
            }
            for name, latest, count, when in rows
        ]

    def versions(self, model: str) -> list[Version]:
        """As :meth:`Registry.versions`.

        Raises:
            ModelNotFound: the model has no versions.
        """
        rows = self.conn.execute(
            f"SELECT {_PLAIN_COLUMNS} FROM model_versions WHERE model = ? ORDER BY version DESC",
            (model,),
        ).fetchall()
        if not rows:
            raise ModelNotFound(self._no_model(model))
        aliases = self._aliases([model]).get(model, {})
        return [_version(_plain_row(row), aliases) for row in rows]

    def version(self, model: str, ref: int | str) -> Version:
        """As :meth:`Registry.version`.

        Raises:
            ModelNotFound: no such model, version or alias.
        """
        number = self._resolve(model, ref)
        row = self.conn.execute(
            f"SELECT {_PLAIN_COLUMNS} FROM model_versions WHERE model = ? AND version = ?",
            (model, number),
        ).fetchone()
        if row is None:
            latest = self._latest(model)
            if latest is None:
                raise ModelNotFound(self._no_model(model))
            raise ModelNotFound(
                f"Model {model!r} has no version {number} (latest is {latest}). "
                f"Run 'conveyor models show {model}'."
            )
        return _version(_plain_row(row), self._aliases([model]).get(model, {}))

    def alias(self, model: str, alias: str) -> int | None:
        """As :meth:`Registry.alias`."""
        row = self.conn.execute(
            "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
        ).fetchone()
        return int(row[0]) if row is not None else None

    def _latest(self, model: str) -> int | None:
        row = self.conn.execute(
            "SELECT MAX(version) FROM model_versions WHERE model = ?", (model,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _resolve(self, model: str, ref: int | str) -> int:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
            return int(ref)
        if ref == "latest":
            latest = self._latest(model)
            if latest is None:
                raise ModelNotFound(self._no_model(model))
            return latest
        number = self.alias(model, ref)
        if number is None:
            known = sorted(self._aliases([model]).get(model, {}))
            exists = self.conn.execute(
                "SELECT id FROM model_versions WHERE model = ? LIMIT 1", (model,)
            ).fetchone()
            if not known and exists is None:
                raise ModelNotFound(self._no_model(model))
            raise ModelNotFound(
                f"Model {model!r} has no alias {ref!r} (aliases: {', '.join(known) or 'none'}). "
                f"Give a version number, 'latest', or an alias."
            )
        return number

    def _aliases(self, names: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        if not names:
            return out
        marks = ",".join("?" * len(names))
        for model, alias, version in self.conn.execute(
            f"SELECT model, alias, version FROM aliases WHERE model IN ({marks})", names
        ):
            out.setdefault(model, {})[alias] = version
        return out

    def _no_model(self, model: str) -> str:
        names = [
            r[0] for r in self.conn.execute("SELECT DISTINCT model FROM model_versions LIMIT 20")
        ]
        if not names:
            return (
                f"No model {model!r} in the registry: nothing is registered yet. Run "
                "'conveyor ci' to judge and register a candidate."
            )
        return (
            f"No model {model!r} in the registry. Registered models: "
            f"{', '.join(sorted(names))}; 'conveyor models list' shows them."
        )


_VERSION_FIELDS = (
    "model", "version", "status", "created_at", "project", "run_id", "task", "file", "onnx",
    "signature", "metrics", "slices", "gates", "plots", "lineage", "holdout", "references",
    "card",
)  # fmt: skip
_JSON_FIELDS = frozenset(_VERSION_FIELDS[7:])
# quoted: "references" is an SQL keyword
_PLAIN_COLUMNS = ", ".join(f'"{name}"' for name in _VERSION_FIELDS)


class _PlainRow:
    """A model_versions row read with sqlite3, with the attributes of the table model."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _plain_row(row: tuple[Any, ...]) -> Any:
    """The row as SQLAlchemy would hand it: JSON columns decoded."""
    return _PlainRow(
        {
            name: json.loads(value) if name in _JSON_FIELDS and value is not None else value
            for name, value in zip(_VERSION_FIELDS, row, strict=True)
        }
    )


def _utc(value: datetime | str | None) -> Any:
    """A stored time as an aware UTC datetime: SQLite hands back naive ones (sqlite3, text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _exists(s: Any, model: str) -> bool:
    from sqlalchemy import select

    from conveyor.store import models as m

    return (
        s.scalar(select(m.ModelVersion.id).where(m.ModelVersion.model == model).limit(1))
        is not None
    )


def _check_alias(alias: str) -> None:
    if not alias or alias[0] not in _ALIAS_CHARS[:26] or not set(alias) <= set(_ALIAS_CHARS):
        raise RegistryError(
            f"{alias!r} is not an alias name; use lowercase letters, digits, '-' and '_', "
            "starting with a letter (such as 'staging' or 'production')."
        )
    if alias == "latest" or (alias.isascii() and alias.isdigit()):
        raise RegistryError(f"{alias!r} is reserved; pick another alias name.")


def _numbers(metrics: dict) -> dict[str, float]:
    return {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _version(row: m.ModelVersion, aliases: dict[str, int]) -> Version:
    return Version(
        model=row.model,
        version=row.version,
        status=row.status,
        created_at=_utc(row.created_at),
        project=row.project,
        run_id=row.run_id,
        task=row.task,
        file=ModelFile.from_dict(row.file),
        onnx=row.onnx,
        signature=row.signature,
        metrics=row.metrics,
        slices=row.slices or {},
        gates=row.gates or [],
        plots=row.plots or {},
        lineage=row.lineage,
        holdout=row.holdout,
        references=row.references or {},
        card=row.card or {},
        aliases=sorted(a for a, v in aliases.items() if v == row.version),
    )
