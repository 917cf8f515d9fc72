"""A version's whole story as one plain dict: what the CI report, the model card and
`conveyor models show --json` render. One builder, so the three never disagree."""

from __future__ import annotations

from typing import Any

from conveyor.registry.registry import Registry, Version


def assemble(
    *,
    project: str,
    model: str,
    status: str,
    gates: list[dict],
    task: str,
    target: str,
    version: int | None = None,
    run_id: str | None = None,
    created_at: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    metrics: dict | None = None,
    baseline: dict | None = None,
    slices: dict | None = None,
    confusion_matrix: dict | None = None,
    plots: dict | None = None,
    lineage: dict | None = None,
    holdout_rows: int | None = None,
    signature: dict | None = None,
    model_file: dict | None = None,
    onnx: dict | None = None,
    aliases: list[str] | None = None,
    per_class: dict | None = None,
    positive_class: Any = None,
) -> dict[str, Any]:
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


def version_report(registry: Registry, v: Version) -> dict[str, Any]:
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


def replaces(report: dict[str, Any]) -> dict[str, Any] | None:
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


def _file_summary(file: dict | None) -> dict[str, Any] | None:
    if not file:
        return None
    return {k: file.get(k) for k in ("format", "digest", "size")}


def _onnx_summary(onnx: dict | None) -> dict[str, Any] | None:
    if not onnx or not onnx.get("digest") and not onnx.get("supported"):
        return None
    return {k: onnx.get(k) for k in ("digest", "size", "max_abs_diff")}


def _onnx_reason(onnx: dict | None) -> str | None:
    if onnx is None:
        return "no export was attempted (model.onnx: false, or registered before reasons were kept)"
    if onnx.get("supported") and onnx.get("digest"):
        return None
    return str(onnx.get("reason") or "the export was not checked")
