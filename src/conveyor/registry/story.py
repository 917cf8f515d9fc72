"""A version's whole story as one plain dict (:class:`VersionStory`): what the CI report, the
model card and `conveyor models show --json` render. One builder, so the three never disagree."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from conveyor.registry.registry import Registry, Version

__all__ = [
    "Artifacts",
    "FileSummary",
    "OnnxSummary",
    "StoryData",
    "VersionStory",
    "assemble",
    "replaces",
    "version_report",
]


class FileSummary(TypedDict):
    format: str | None
    digest: str | None
    size: int | None


class OnnxSummary(TypedDict):
    digest: str | None
    size: int | None
    max_abs_diff: float | None


class Artifacts(TypedDict):
    model: FileSummary | None
    onnx: OnnxSummary | None
    onnx_not_exported: str | None  # why there is no ONNX copy, else None


class StoryData(TypedDict):
    snapshots: list[dict[str, Any]]  # the lineage's dataset snapshots
    holdout_rows: int | None


class VersionStory(TypedDict):
    """Every key is present (None or empty when unknown), so renderers need no guards."""

    project: str
    model: str
    version: int | None  # None: a candidate not registered
    status: str
    run_id: str | None
    created_at: str | None
    task: str
    target: str
    intended_use: str | None
    limitations: str | None
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None  # production's metrics on the same holdout, when judged
    slices: dict[str, Any]
    confusion_matrix: dict[str, Any] | None
    per_class: dict[str, Any] | None
    positive_class: Any
    gates: list[dict[str, Any]]  # ``GateResult.to_dict()`` of each gate
    # name -> SVG text; a surface that shows the plots on their own (the dashboard) drops them
    plots: NotRequired[dict[str, str]]
    data: StoryData
    lineage: dict[str, Any]
    signature: dict[str, Any]
    artifacts: Artifacts
    aliases: list[str]


def assemble(
    *,
    project: str,
    model: str,
    status: str,
    gates: list[dict[str, Any]],
    task: str,
    target: str,
    version: int | None = None,
    run_id: str | None = None,
    created_at: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    metrics: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    slices: dict[str, Any] | None = None,
    confusion_matrix: dict[str, Any] | None = None,
    plots: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    holdout_rows: int | None = None,
    signature: dict[str, Any] | None = None,
    model_file: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
    aliases: list[str] | None = None,
    per_class: dict[str, Any] | None = None,
    positive_class: Any = None,
) -> VersionStory:
    """The report dict, every key present (see ``conveyor.reports``)."""
    lineage = lineage or {}
    return {
        "project": project,
        "model": model,
        "version": version,
        "status": status,
        "run_id": run_id or lineage.get("run_id"),
        "created_at": created_at,
        "task": task,
        "target": target,
        "intended_use": intended_use,
        "limitations": limitations,
        "metrics": metrics or {},
        "baseline": baseline,
        "slices": slices or {},
        "confusion_matrix": confusion_matrix,
        "per_class": per_class,
        "positive_class": positive_class,
        "gates": gates,
        "plots": plots or {},
        "data": {"snapshots": lineage.get("snapshots", []), "holdout_rows": holdout_rows},
        "lineage": lineage,
        "signature": signature or {"inputs": [], "output": {}},
        "artifacts": {
            "model": _file_summary(model_file),
            "onnx": _onnx_summary(onnx),
            # why there is no ONNX copy (the converter's or the check's reason), else None
            "onnx_not_exported": _onnx_reason(onnx),
        },
        "aliases": aliases or [],
    }


def version_report(registry: Registry, v: Version) -> VersionStory:
    """The story of a registered version, read back from the registry and artifact store."""
    plots = {
        name: registry.artifacts.read_bytes(digest).decode() for name, digest in v.plots.items()
    }
    card = v.card
    return assemble(
        project=v.project,
        model=v.model,
        status=v.status if v.status != "registered" else "registered",
        gates=v.gates,
        task=v.task,
        target=card.get("target", ""),
        version=v.version,
        run_id=v.run_id,
        created_at=v.created_at.isoformat(),
        intended_use=card.get("intended_use"),
        limitations=card.get("limitations"),
        metrics=v.metrics,
        baseline=card.get("baseline"),
        slices=v.slices,
        confusion_matrix=card.get("confusion_matrix"),
        plots=plots,
        lineage=v.lineage,
        holdout_rows=card.get("holdout_rows"),
        signature=v.signature,
        model_file=v.file.to_dict(),
        onnx=v.onnx,
        aliases=v.aliases,
        per_class=card.get("per_class"),
        positive_class=card.get("positive_class"),
    )


def replaces(report: VersionStory) -> dict[str, Any] | None:
    """What a card compares against: the version that served production when this one was
    judged, its metrics on the same holdout, and the comparison gates' evidence."""
    baseline = report.get("baseline")
    if not baseline:
        return None
    comparisons = [
        g["evidence"] for g in report["gates"] if g.get("kind") == "compare" and g.get("evidence")
    ]
    comparisons = [c for c in comparisons if "diff" in c]
    return {**baseline, "comparisons": comparisons}


def _file_summary(file: dict[str, Any] | None) -> FileSummary | None:
    if not file:
        return None
    return {"format": file.get("format"), "digest": file.get("digest"), "size": file.get("size")}


def _onnx_summary(onnx: dict[str, Any] | None) -> OnnxSummary | None:
    if not onnx or not onnx.get("digest") and not onnx.get("supported"):
        return None
    return {
        "digest": onnx.get("digest"),
        "size": onnx.get("size"),
        "max_abs_diff": onnx.get("max_abs_diff"),
    }


def _onnx_reason(onnx: dict[str, Any] | None) -> str | None:
    if onnx is None:
        return "no export was attempted (model.onnx: false, or registered before reasons were kept)"
    if onnx.get("supported") and onnx.get("digest"):
        return None
    return str(onnx.get("reason") or "the export was not checked")
