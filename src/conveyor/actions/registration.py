"""Judging and registering a model fitted outside a pipeline: what :func:`conveyor.register`
(and the MLflow import) run.

The same stages as ``conveyor ci`` after training: the built-in evaluation on the rows given,
the model file through its flavour, an ONNX copy when faithful, the gates (the project's, given
ones, or none), then the servability gate in a clean process; a blocking verdict is a
``candidate.rejected`` event and :class:`RegistrationRefused`, anything else a registered
version whose lineage is the Python run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import GateError, RegistrationRefused

if TYPE_CHECKING:
    from conveyor.actions.python_api import Project, Run
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry, Version

__all__ = ["PROJECT_GATES", "Options", "judge_and_register"]

#: ``gates=`` of :func:`conveyor.register`: the project's ``gates:`` list from conveyor.yaml.
PROJECT_GATES = "project"


@dataclass(frozen=True)
class Options:
    """How :func:`conveyor.register` was asked to judge the model (its keyword arguments)."""

    target: str | None
    task: str | None
    gates: Any
    metrics: Mapping[str, float] | None
    aliases: tuple[str, ...]
    positive_class: Any
    slices: Sequence[str] | None
    onnx: bool | None


@dataclass
class _Data:
    """The rows a model is judged on: the holdout (features and, when known, the target)."""

    holdout: Any
    target: str | None


def _data(data: Any, target: str | None) -> _Data:
    import pandas as pd

    if isinstance(data, tuple):
        if len(data) != 2:
            raise GateError(
                f"data= takes (X, y) or a holdout DataFrame; got a tuple of {len(data)} items."
            )
        X, y = data
        if not isinstance(X, pd.DataFrame):
            raise GateError(
                f"data=(X, y): X must be a DataFrame with named columns, not a "
                f"{type(X).__name__}; the signature requests are checked against comes from it."
            )
        if y is None:
            return _Data(X.reset_index(drop=True), None)
        name = target or (getattr(y, "name", None) if isinstance(y, pd.Series) else None)
        name = str(name) if name is not None else "target"
        if name in X.columns:
            raise GateError(
                f"data=(X, y): X already has a column {name!r}, the name taken for y; pass "
                "target='...' to name y otherwise."
            )
        values = y.to_numpy() if hasattr(y, "to_numpy") else list(y)
        if len(values) != len(X):
            raise GateError(f"data=(X, y): X has {len(X)} rows and y has {len(values)}.")
        return _Data(X.reset_index(drop=True).assign(**{name: values}), name)
    if isinstance(data, pd.DataFrame):
        if target is None:
            raise GateError(
                "data= is a holdout frame; name its target column with target='...' (or "
                "pass data=(X, y))."
            )
        if target not in data.columns:
            raise GateError(
                f"target {target!r} is not a column of the holdout; it has "
                f"{', '.join(map(str, data.columns))}."
            )
        return _Data(data.reset_index(drop=True), target)
    raise GateError(
        f"data= takes (X, y) or a holdout DataFrame with the target column, not a "
        f"{type(data).__name__}."
    )


def _task_of(model: Any) -> str:
    return "classification" if hasattr(model, "classes_") else "regression"


def _gates(gates: Any, config: ProjectConfig) -> list[Any]:
    from conveyor.config import GateConfig

    if gates == PROJECT_GATES:
        return list(config.gates)
    if gates is None:
        return []
    if isinstance(gates, str | Mapping):
        gates = [gates]
    parsed = []
    for index, gate in enumerate(gates):
        if isinstance(gate, GateConfig):
            parsed.append(gate)
            continue
        try:
            parsed.append(GateConfig.model_validate(gate))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            detail = str(exc).splitlines()
            reason = detail[-1].strip() if detail else str(exc)
            raise GateError(
                f"gates[{index}] ({gate!r}) is not a gate: {reason}. Write it as in "
                "conveyor.yaml, such as 'roc_auc >= 0.8' or {'size': {'max_mb': 20}}."
            ) from None
    return parsed


def judge_and_register(
    proj: Project,
    run: Run,
    model: Any,
    name: str,
    data: Any,
    options: Options,
    source: Mapping[str, Any] | None,
) -> Version:
    """Evaluate, store, gate and register ``model`` as ``name`` within ``run``; the arguments
    are those of :func:`conveyor.register` (``options``) and the lineage to add (``source``).

    Raises:
        RegistrationRefused: a blocking gate failed (a ``candidate.rejected`` event is written).
        GateError: the data or a gate cannot be used as given.
    """
    from conveyor.actions.ci import slice_numbers
    from conveyor.actions.models import store_frame
    from conveyor.evaluate.steps import features_of
    from conveyor.evaluate.values import jsonable
    from conveyor.gates.model_gates import Candidate, evaluate_gate
    from conveyor.registry.flavours import flavour_of
    from conveyor.registry.modelfile import save_model
    from conveyor.registry.onnx import OnnxModel
    from conveyor.registry.registry import NewVersion

    config = proj.config
    own = config.model if config.model is not None and config.model.name == name else None
    rows = _data(data, options.target or (own.target if own else None))
    task = options.task or (config.task() if own else None) or _task_of(model)
    positive_class = options.positive_class
    if positive_class is None and own is not None:
        positive_class = own.positive_class
    slices = list(options.slices if options.slices is not None else (own.slices if own else []))
    metrics, aliases, onnx = options.metrics, options.aliases, options.onnx
    judged = _gates(options.gates, config)
    evaluation = _evaluate(model, rows, task, slices, positive_class, name)
    computed = {
        k: v
        for k, v in evaluation.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for key, value in (metrics or {}).items():
        if key in computed:
            raise GateError(
                f"metrics[{key!r}] is computed from data= ({computed[key]:.4g}); record your "
                f"own number under another name, such as 'cv_{key}'."
            )
        computed[key] = float(value)
    run.log_metrics(computed)
    target_col = rows.target or ""
    features = features_of(model, rows.holdout, target_col)
    flavour = flavour_of(model)
    signature = flavour.signature(model, features, task)
    trusted = proj.trusted_types()
    with proj.registry() as registry:
        artifacts = registry.artifacts
        file = save_model(model, artifacts, trusted_extra=trusted)
        holdout_desc = store_frame(artifacts, rows.holdout)
        onnx_record, serving = None, None
        if onnx if onnx is not None else (own.onnx if own else True):
            data_bytes, report = flavour.export_onnx(model, features.head(500), task)
            if data_bytes is None:
                onnx_record = {"digest": None, "size": None, **report}
            else:
                stored = artifacts.put_bytes(data_bytes)
                onnx_record = {"digest": stored.digest, "size": stored.size, **report}
                serving = OnnxModel(data_bytes)
        candidate = Candidate(
            model_name=name,
            task=task,
            target=target_col,
            model=model,
            holdout=rows.holdout,
            metrics=computed,
            file_size=file.size,
            evaluation_step="conveyor.register",
            threshold=float((evaluation.get("settings") or {}).get("threshold", 0.5)),
            serving=serving,
            positive_class=positive_class,
        )
        incumbents: dict[str, Any] = {}

        def incumbent(env: str) -> tuple[int, Any] | None:
            from conveyor.exceptions import ModelNotFound

            if env not in incumbents:
                try:
                    served = registry.version(name, env)
                except ModelNotFound:
                    incumbents[env] = None
                else:
                    native = registry.load(
                        served, allow_pickle=config.registry.allow_pickle, trusted_extra=trusted
                    )
                    incumbents[env] = (served.version, native)
            return incumbents[env]

        results = [evaluate_gate(gate, candidate, incumbent) for gate in judged]
        if not any(r.blocks for r in results):
            spec = {
                "artifacts": config.artifacts_url(),
                "model": name,
                "task": task,
                "signature": signature,
                "file": file.to_dict(),
                "onnx": onnx_record,
                "holdout": holdout_desc,
                "allow_pickle": config.registry.allow_pickle,
                "trusted_extra": list(trusted),
            }
            results.append(_servable(proj, spec, model, features, signature, task))
        verdicts = [r.to_dict() for r in results]
        if any(r.blocks for r in results):
            _refused(registry, name, run.id, verdicts)
        plots = {
            key: artifacts.put_bytes(svg.encode()).digest
            for key, svg in (evaluation.get("plots") or {}).items()
            if isinstance(svg, str)
        }
        lineage = _lineage(proj, run, source)
        new = NewVersion(
            project=config.project,
            model=name,
            run_id=run.id,
            task=task,
            file=file,
            signature=signature,
            metrics=jsonable(computed),
            lineage=lineage,
            holdout=holdout_desc,
            onnx=onnx_record,
            slices=jsonable(slice_numbers(evaluation.get("slices") or {})),
            gates=verdicts,
            plots=plots,
            card={
                "target": rows.target,
                "intended_use": own.intended_use if own else None,
                "limitations": own.limitations if own else None,
                "confusion_matrix": evaluation.get("confusion_matrix"),
                "per_class": evaluation.get("per_class"),
                "positive_class": (evaluation.get("settings") or {}).get("positive_class"),
                "holdout_rows": len(rows.holdout),
                "evaluation_step": "conveyor.register" if evaluation else None,
                "registered_from": "python",
            },
        )
        version = registry.register(new)
        for alias in aliases:
            registry.set_alias(name, alias, version.version, reason="python-api")
        return registry.version(name, version.version)


def _evaluate(
    model: Any,
    rows: _Data,
    task: str,
    slices: list[str],
    positive_class: Any,
    name: str,
) -> dict[str, Any]:
    """The built-in evaluation's dict (as an evaluation step returns it), or {} without a
    target."""
    from conveyor.evaluate.steps import classification, regression

    if rows.target is None:
        return {}
    try:
        if task == "classification":
            return classification(
                model,
                rows.holdout,
                target=rows.target,
                slices=slices,
                positive_class=positive_class,
            )
        if task == "regression":
            return regression(model, rows.holdout, target=rows.target, slices=slices)
    except ValueError as exc:
        raise GateError(f"Cannot evaluate {name!r} on data=: {exc}") from exc
    raise GateError(f"task={task!r}: use 'classification' or 'regression'.")


def _servable(
    proj: Project,
    spec: dict[str, Any],
    model: Any,
    features: Any,
    signature: dict[str, Any],
    task: str,
) -> Any:
    """The servability gate of ``conveyor ci``, run on this candidate: the same subprocess
    (``python -m conveyor.actions.ci --servable``) and the same verdict."""
    from conveyor.actions.ci import SERVABLE_ROWS, run_servable_check
    from conveyor.evaluate.steps import class_probabilities
    from conveyor.evaluate.values import jsonable

    start = time.perf_counter()
    names = [f["name"] for f in signature["inputs"]]
    rows = features[names].head(SERVABLE_ROWS)
    if task == "classification":
        expected = jsonable([[float(v) for v in r] for r in class_probabilities(model, rows)[1]])
    else:
        expected = jsonable([float(v) for v in model.predict(rows)])
    spec = {**spec, "columns": names, "rows": len(rows), "expected": expected}
    result = run_servable_check(spec, proj.root)
    result.duration_s = time.perf_counter() - start
    return result


def _refused(registry: Registry, name: str, run_id: str, verdicts: list[dict[str, Any]]) -> None:
    """Record the refusal (a ``candidate.rejected`` event, as ``conveyor ci`` writes) and raise."""
    from conveyor.store import events as ev

    failed = [g for g in verdicts if g["blocks"]]
    with registry.store.session() as s:
        registry.store.add_event(
            s,
            ev.CANDIDATE_REJECTED,
            "model",
            name,
            {
                "run_id": run_id,
                "failed": [g["name"] for g in failed],
                "gates": [
                    {k: g[k] for k in ("name", "kind", "verdict", "summary")} for g in verdicts
                ],
            },
        )
    reasons = "; ".join(f"{g['name']}: {g['verdict']} ({g['summary']})" for g in failed)
    raise RegistrationRefused(
        f"{name!r} was not registered: {reasons}. The verdicts are in .gates; fix the model or "
        "the data, or pass gates= to judge it otherwise.",
        verdicts,
    )


def _lineage(proj: Project, run: Run, source: Mapping[str, Any] | None) -> dict[str, Any]:
    """Where the version came from: the Python run, the code's commit, the environment."""
    from conveyor.pipeline import keys
    from conveyor.project import git_state

    commit, dirty = git_state(proj.root)
    env = keys.env_lock()
    lineage: dict[str, Any] = {
        "source": "registered from Python",
        "registered_by": "python-api",
        "run_id": run.id,
        "run_name": run.name,
        "git_commit": commit,
        "git_dirty": dirty,
        "params": {run.name: run.params} if run.params else {},
        "snapshots": [],
        "env_hash": env.hash,
        "python": env.python,
        "packages": len(env.packages),
        "config_hash": keys.digest_of(proj.config.to_json()),
    }
    if source:
        lineage.update(source)
    return lineage
