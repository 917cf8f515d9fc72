"""`conveyor models ...`: list, show, compare, card and alias, over the registry."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.exceptions import RegistryError
from conveyor.store.atomic import write_text

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.story import VersionStory

T = TypeVar("T")


@contextmanager
def open_registry(config: ProjectConfig) -> Iterator[Any]:
    """The project's registry over its stores (see ``open_stores``), closed with the block."""
    from conveyor.registry.registry import Registry
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        yield Registry(stores.metadata, stores.artifacts)


def _model_name(config: ProjectConfig, name: str | None) -> str:
    if name:
        return name
    if config.model is None:
        raise RegistryError(
            "Name the model (conveyor.yaml has no 'model:' section to take it from)."
        )
    return config.model.name


def _read(config: ProjectConfig, read: Callable[[Any], T]) -> T:
    """``read(registry)`` through a plain ``sqlite3`` reader when the store is a SQLite file at
    head (``actions.runs.plain_store``), else through the registry itself.

    Both answer ``models``, ``versions``, ``version`` and ``alias`` alike and have ``artifacts``;
    a ``sqlite3.Error`` is retried once through the full registry, which says what is wrong.
    """
    from conveyor.actions.runs import full_config, plain_store

    with plain_store(config) as conn:
        if conn is not None:
            from conveyor.registry.registry import PlainReader

            reader = _PlainRegistry(PlainReader(conn), config)
            try:
                return read(reader)
            except sqlite3.Error:
                pass
            finally:
                reader.close()
    with open_registry(full_config(config)) as registry:
        return read(registry)


class _PlainRegistry:
    """A ``PlainReader`` with the project's artifact store opened on first use (the plots)."""

    def __init__(self, reader: Any, config: Any) -> None:
        self._reader = reader
        self._config = config
        self._artifacts: Any = None
        self.models, self.versions = reader.models, reader.versions
        self.version, self.alias = reader.version, reader.alias

    @property
    def artifacts(self) -> Any:
        if self._artifacts is None:
            from conveyor.store.artifacts import ArtifactStore

            self._artifacts = ArtifactStore(self._config.artifacts_url()).open()
        return self._artifacts

    def close(self) -> None:
        if self._artifacts is not None:
            self._artifacts.close()


def list_models(config: ProjectConfig) -> list[dict[str, Any]]:
    """One row per registered model of any project in the store."""
    rows = _read(config, lambda registry: registry.models())
    return [{**row, "updated_at": row["updated_at"].isoformat()} for row in rows]


def list_versions(config: ProjectConfig, name: str | None = None) -> list[dict[str, Any]]:
    """Every version of a model, newest first, with its headline facts."""
    from conveyor.exceptions import ModelNotFound

    model = _model_name(config, name)
    try:
        versions = _read(config, lambda registry: registry.versions(model))
    except ModelNotFound:
        if name is not None:  # a name typed by hand that matches nothing is a mistake
            raise
        versions = []
    return [
        {
            "model": v.model,
            "version": v.version,
            "status": v.status,
            "created_at": v.created_at.isoformat(),
            "aliases": v.aliases,
            "metrics": {k: v.metrics[k] for k in _headline(v.metrics)},
            "run_id": v.run_id,
            "git_commit": v.lineage.get("git_commit"),
            "git_dirty": v.lineage.get("git_dirty"),
            "format": v.file.format,
            "onnx": v.onnx is not None,
        }
        for v in versions
    ]


def list_releases(
    config: ProjectConfig, *, model: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Releases, newest first (only ``model``'s if given), as ``ReleaseView.to_dict``."""
    return _read_releases(
        config, lambda releases: [r.to_dict() for r in releases.list(model=model, limit=limit)]
    )


def describe_release(
    config: ProjectConfig, release_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A release (``ReleaseView.to_dict``) and its timeline: at, kind, payload of each event.

    Raises:
        ReleaseError: no release has that id.
    """
    return _read_releases(
        config,
        lambda releases: (releases.get(release_id).to_dict(), releases.timeline(release_id)),
    )


def _read_releases(config: ProjectConfig, read: Callable[[Any], T]) -> T:
    """``read(releases)`` through ``release.views.PlainReader`` when the store is a SQLite file
    at head, else through ``Releases`` (whose timeline rows are turned into the same dicts)."""
    from conveyor.actions.runs import full_config, plain_store

    with plain_store(config) as conn:
        if conn is not None:
            from conveyor.release.views import PlainReader

            try:
                return read(PlainReader(conn))
            except sqlite3.Error:
                pass  # the full store says what is wrong
    config = full_config(config)
    from conveyor.release.releases import Releases

    with open_registry(config) as registry:
        return read(_TimelineDicts(Releases(config, registry)))


class _TimelineDicts:
    """``Releases`` whose ``timeline`` gives the dicts ``PlainReader.timeline`` does."""

    def __init__(self, releases: Any) -> None:
        self.get, self.list = releases.get, releases.list
        self._releases = releases

    def timeline(self, release_id: str) -> list[dict[str, Any]]:
        return [
            {"at": e.at.isoformat(), "kind": e.kind, "payload": e.payload or {}}
            for e in self._releases.timeline(release_id)
        ]


def _headline(metrics: dict[str, Any]) -> list[str]:
    order = ("roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2")
    return [k for k in order if k in metrics]


def version_story(config: ProjectConfig, name: str | None, ref: str) -> VersionStory:
    """The whole story of one version (number, 'latest' or an alias)."""
    from conveyor.registry.story import version_report

    model = _model_name(config, name)
    return _read(config, lambda registry: version_report(registry, registry.version(model, ref)))


def compare_versions(config: ProjectConfig, name: str | None, a: str, b: str) -> dict[str, Any]:
    """Versions ``a`` and ``b`` scored on ``b``'s holdout, every comparable metric judged with
    the paired test a gate would use.

    Raises:
        ModelNotFound: either version does not exist.
        ModelTampered: either model file changed since registration.
    """
    from conveyor.evaluate.compare import HIGHER_IS_BETTER
    from conveyor.gates.model_gates import Candidate, paired_comparison
    from conveyor.pipeline.outputs import load_output

    model = _model_name(config, name)
    allow = config.registry.allow_pickle
    trusted = tuple(config.model.trusted_types) if config.model else ()
    with open_registry(config) as registry:
        va, vb = registry.version(model, a), registry.version(model, b)
        holdout = load_output(vb.holdout, registry.artifacts)
        target = vb.card.get("target") or (config.model.target if config.model else "")
        fitted_a, fitted_b = (
            registry.load(v, allow_pickle=allow, trusted_extra=trusted) for v in (va, vb)
        )
    # Scored as a comparison gate scores them: b's classes (and positive class), a aligned.
    judged = Candidate(
        model_name=model,
        task=vb.task,
        target=target,
        model=fitted_b,
        holdout=holdout,
        metrics=vb.metrics,
        file_size=vb.file.size,
        evaluation_step="",
        positive_class=vb.card.get("positive_class"),
    )
    comparisons = []
    not_compared: dict[str, str] = {}
    metrics = [m for m in HIGHER_IS_BETTER if m in vb.metrics]
    try:
        truth, scores_a, scores_b = judged.truth(), judged.score(fitted_a), judged.scores()
    except ValueError as exc:
        raise RegistryError(
            f"Versions {va.version} and {vb.version} of {model!r} cannot be scored on version "
            f"{vb.version}'s holdout: {exc}"
        ) from exc
    for metric in metrics:
        try:
            cmp = paired_comparison(metric, truth, scores_a, scores_b, alpha=0.05, task=vb.task)
        except ValueError as exc:  # too few rows of a class for this test: say so, go on
            not_compared[metric] = str(exc)
            continue
        comparisons.append(cmp.as_dict())
    return {
        "model": model,
        "a": {"version": va.version, "aliases": va.aliases, "metrics": va.metrics},
        "b": {"version": vb.version, "aliases": vb.aliases, "metrics": vb.metrics},
        "holdout": f"version {vb.version}'s holdout ({len(holdout)} rows)",
        "comparisons": comparisons,
        "not_compared": not_compared,
    }


def render_card(
    config: ProjectConfig, name: str | None, ref: str, out: Path | None = None
) -> tuple[str, list[Path]]:
    """The model card of a version as Markdown, also written as ``.md`` and ``.html`` files
    into ``out`` (a folder) when given."""
    from conveyor.registry.story import replaces
    from conveyor.reports.card import card_html, card_markdown

    story = version_story(config, name, ref)
    before = replaces(story)
    markdown = card_markdown(story, replaces=before)
    written: list[Path] = []
    if out is not None:
        stem = f"{story['model']}-v{story['version']}"
        for suffix, text in (
            (".md", markdown),
            (".html", card_html(story, replaces=before)),
        ):
            written.append(write_text(out / f"{stem}{suffix}", text))
    return markdown, written


def set_alias(config: ProjectConfig, name: str | None, version: int, alias: str) -> int | None:
    """Point ``alias`` at ``version`` (an ``alias.moved`` event records it)."""
    with open_registry(config) as registry:
        return registry.set_alias(_model_name(config, name), alias, version, reason="cli")


def register_fitted(
    config: ProjectConfig,
    model: Any,
    features: Any,
    *,
    name: str,
    task: str,
    metrics: dict[str, float] | None = None,
    aliases: tuple[str, ...] = (),
    onnx: bool = True,
) -> Any:
    """Register a model fitted outside a pipeline (a notebook, a benchmark, a test).

    No gates run and the lineage says so; ``conveyor ci`` is the path for models a pipeline
    trains. The model is stored as skops (pickles are not offered here), with an ONNX copy
    when one predicts ``features`` like the model, ``features`` as its holdout (the monitor's
    reference), and each alias is moved with its event.

    Args:
        config: the project's config (its stores receive the model).
        model: the fitted scikit-learn estimator or pipeline.
        features: a DataFrame of held-out features, columns in the order the model reads them;
            the signature and the ONNX check come from it.
        name: the model's name in the registry.
        task: ``"classification"`` or ``"regression"``.
        metrics: numbers to record with the version, if any were measured.
        aliases: environments to point at the new version, such as ``("production",)``.
        onnx: try an ONNX export (kept only when faithful).

    Returns:
        The registered :class:`~conveyor.registry.registry.Version`.
    """
    from conveyor.registry.modelfile import save_model
    from conveyor.registry.onnx import export_onnx
    from conveyor.registry.registry import NewVersion
    from conveyor.registry.signature import infer_signature
    from conveyor.store.records import new_run_id

    classes = getattr(model, "classes_", None)
    signature = infer_signature(
        features,
        task=task,
        classes=[getattr(c, "item", lambda c=c: c)() for c in classes]
        if classes is not None
        else None,
    )
    with open_registry(config) as registry:
        file = save_model(model, registry.artifacts)
        holdout = store_frame(registry.artifacts, features)
        onnx_record = None
        if onnx:
            data, report = export_onnx(model, features.head(1000), task=task)
            if data is not None:
                stored = registry.artifacts.put_bytes(data)
                onnx_record = {"digest": stored.digest, "size": stored.size, **report}
        version = registry.register(
            NewVersion(
                project=config.project,
                model=name,
                run_id=new_run_id(),
                task=task,
                file=file,
                signature=signature,
                metrics=dict(metrics or {}),
                lineage={"registered_by": "python-api", "note": "fitted outside a pipeline"},
                holdout=holdout,
                onnx=onnx_record,
                card={"holdout_rows": len(features)},
            )
        )
        for alias in aliases:
            registry.set_alias(name, alias, version.version, reason="python-api")
        return registry.version(name, version.version)


def store_frame(artifacts: Any, frame: Any) -> dict[str, Any]:
    """A frame as a Parquet artifact, described as a pipeline output (the monitor's reference)."""
    fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=artifacts.tmp_dir())
    os.close(fd)
    try:
        frame.to_parquet(tmp)
        stored = artifacts.put_file(tmp, move=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"format": "parquet", "digest": stored.digest, "size": stored.size}
