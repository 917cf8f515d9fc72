"""`conveyor ci`: validate the data, run the pipeline, judge the candidate, register it or not.

The order is the cheap-first order of a CI job: the config and gate references were checked on
load, the data gates run before any training, then the pipeline (cached steps cost nothing),
then the model gates. A candidate that fails a gate is never registered; the refusal is an
event with every verdict, and the report says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.evaluate.values import jsonable
from conveyor.exceptions import GateError, PipelineError
from conveyor.gates.verdicts import GateResult
from conveyor.store import events as ev

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.config.model import ModelConfig
    from conveyor.pipeline.plan import Context
    from conveyor.registry.story import VersionStory

SAMPLE_ROWS = 100_000  # rows of each source kept with a version as its drift reference
ONNX_CHECK_ROWS = 500
SERVABLE_ROWS = 200  # holdout rows the servability check sends through the gateway's path
SERVABLE_TIMEOUT_S = 300
SERVABLE_TOLERANCE = 1e-3  # served vs evaluated probabilities (ONNX computes in float32)


@dataclass
class CiOutcome:
    """What `conveyor ci` decided, and where it wrote the report."""

    passed: bool
    report: VersionStory
    run_id: str | None = None
    version: int | None = None
    written: list[Path] = field(default_factory=list)
    already_registered: bool = False  # the model file is that of an existing version

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.report["gates"] if g.get("blocks")]


def run_ci(
    config: ProjectConfig,
    *,
    report_path: Path | None = None,
    junit_path: Path | None = None,
    register: bool = True,
    listener: Callable[..., None] | None = None,
    executor: Any = None,
    jobs: int | None = None,
    wait_for_lock: bool = False,
    on_gate: Callable[[GateResult], None] | None = None,
) -> CiOutcome:
    """Run the whole CI job of the project ``config`` describes.

    Args:
        config: the loaded ProjectConfig.
        report_path: where to write the Markdown report (plots go in a folder beside it).
        junit_path: where to write the JUnit XML of the gate results.
        register: register the candidate when every gate passes.
        listener: pipeline progress callback, as for ``run_pipeline``.
        executor, jobs, wait_for_lock: as for ``run_pipeline``.
        on_gate: called with each gate result as soon as it is known.

    Raises:
        GateError: the project has no ``model:`` section, or a gate refers to something the
            pipeline cannot produce.
        PipelineError, DataError, StoreError: the pipeline could not run to the end.
    """
    from conveyor.pipeline.engine import run_pipeline
    from conveyor.pipeline.plan import Context

    if config.model is None:
        raise GateError(
            f"'conveyor ci' judges a model, and {config.file.name} has no 'model:' section. Add "
            "one naming the step that returns the model (from), the holdout frame (holdout) and "
            "the target column; see 'conveyor init' for an example."
        )
    notify_gate = on_gate or (lambda _r: None)
    preflight(config)
    ctx = Context(config)
    try:
        job = _Job(config, ctx, notify_gate)
        data_results = job.data_gates()
        if any(r.blocks for r in data_results):
            return job.finish(
                None, data_results, [], register=False, report_path=report_path, junit=junit_path
            )
        summary = run_pipeline(
            config,
            listener=listener,
            executor=executor,
            jobs=jobs,
            wait_for_lock=wait_for_lock,
            wait_for_profiles=True,
        )
        if not summary.ok:
            failed = [s for s in summary.steps if s.status in ("failed", "blocked")]
            raise PipelineError(
                "The pipeline failed, so there is no candidate to judge: "
                + "; ".join(f"{s.name}: {s.error or s.reason}" for s in failed)
            )
        candidate = job.candidate(summary.run_id)
        model_results = job.model_gates(candidate)
        if not any(r.blocks for r in data_results + model_results):
            model_results.append(job.servable(candidate))
        return job.finish(
            candidate,
            data_results,
            model_results,
            register=register,
            report_path=report_path,
            junit=junit_path,
        )
    finally:
        ctx.close()


def preflight(config: ProjectConfig) -> None:
    """Problems that need the code of the gates to see, found before any data is read.

    Raises:
        GateError: a comparison of a metric no paired test covers, a bound on the wrong side
            of a metric, a threshold gate without an evaluation step, or a schema file missing.
    """
    from conveyor.config.gates import Comparison
    from conveyor.evaluate.compare import HIGHER_IS_BETTER
    from conveyor.gates.data_gates import read_schema

    problems = []
    evaluation = config.evaluation_step()
    for index, gate in enumerate(config.gates):
        where = f"gates[{index}] ({gate.label!r})"
        if gate.kind in ("threshold", "compare") and evaluation is None:
            problems.append(
                f"{where}: no step produces metrics for it; add an evaluation step (such as "
                "'run: conveyor.evaluate:classification') or name one in model.evaluation"
            )
        if gate.kind == "compare" and isinstance(gate.expression, Comparison):
            metric = gate.expression.metric
            if metric not in HIGHER_IS_BETTER:
                problems.append(
                    f"{where}: {metric!r} has no paired test; comparable metrics: "
                    f"{', '.join(HIGHER_IS_BETTER)}"
                )
            elif gate.expression.higher_wanted != HIGHER_IS_BETTER[metric]:
                better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
                flip = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}[gate.expression.op]
                problems.append(
                    f"{where}: a {better} {metric} is better, so the bound points the wrong way; "
                    f"did you mean '{flip}'?"
                )
    if problems:
        raise GateError("Gates in conveyor.yaml cannot be evaluated:\n  " + "\n  ".join(problems))
    for name in config.validate_:
        read_schema(config, name)


class _Job:
    """The state of one CI job; split out of run_ci only to keep each stage readable."""

    def __init__(
        self, config: ProjectConfig, ctx: Context, notify: Callable[[GateResult], None]
    ) -> None:
        from conveyor.registry.registry import Registry

        if config.model is None:  # run_ci() refuses such a project before it gets here
            raise GateError("conveyor ci needs a model: section in conveyor.yaml.")
        self.config = config
        self.model_cfg: ModelConfig = config.model
        self.ctx = ctx
        self.registry = Registry(ctx.store, ctx.artifacts)
        self.notify = notify
        self.frames: dict[str, Any] = {}
        self._incumbents: dict[str, Any] = {}

    # -- data ------------------------------------------------------------------------------

    def data_gates(self) -> list[GateResult]:
        from conveyor.gates.data_gates import drift_gate, load_source, validation_gate

        results = []
        for name, vcfg in self.config.validate_.items():
            frame = self.frames[name] = load_source(self.config, name)
            result = validation_gate(self.config, name, frame)
            self.notify(result)
            results.append(result)
            if vcfg.drift is not None:
                reference, version = self._reference(name)
                result = drift_gate(name, frame, reference, vcfg.drift, version)
                self.notify(result)
                results.append(result)
        return results

    def _reference(self, source: str) -> tuple[Any, int | None]:
        import pandas as pd

        served = self._served("production")
        if served is None or source not in served.references:
            return None, None
        return pd.read_parquet(self.ctx.artifacts.path(served.references[source])), served.version

    def _served(self, env: str) -> Any:
        from conveyor.exceptions import ModelNotFound

        try:
            return self.registry.version(self.model_cfg.name, env)
        except ModelNotFound:
            return None

    # -- candidate -------------------------------------------------------------------------

    def candidate(self, run_id: str) -> Any:
        from conveyor.gates.model_gates import Candidate
        from conveyor.pipeline.outputs import load_output

        self.run_id = run_id
        self.step_outputs = {r.step: r.outputs for r in self.ctx.store.step_runs(run_id)}
        model_desc = self._output(self.model_cfg.from_, "model.from")
        holdout_desc = self._output(self.model_cfg.holdout, "model.holdout")
        if holdout_desc["format"] != "parquet":
            raise GateError(
                f"model.holdout {self.model_cfg.holdout!r} is a {holdout_desc['format']} output; "
                "it must be a DataFrame (the rows both models are scored on)."
            )
        self.model_desc, self.holdout_desc = model_desc, holdout_desc
        model = load_output(
            model_desc, self.ctx.artifacts, trusted_extra=tuple(self.model_cfg.trusted_types)
        )
        holdout = load_output(holdout_desc, self.ctx.artifacts)
        if self.model_cfg.target not in holdout.columns:
            raise GateError(
                f"model.target {self.model_cfg.target!r} is not a column of the holdout "
                f"{self.model_cfg.holdout!r}; it has {', '.join(map(str, holdout.columns))}."
            )
        self.evaluation = self._evaluation()
        task = self.config.task() or self.evaluation.get("task") or "classification"
        metrics = {
            k: v
            for k, v in self.evaluation.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.file = self._model_file(model, model_desc)
        self.onnx_bytes, self.onnx_report, serving = self._onnx(model, holdout, task)
        return Candidate(
            model_name=self.model_cfg.name,
            task=task,
            target=self.model_cfg.target,
            model=model,
            holdout=holdout,
            metrics=metrics,
            file_size=self.file.size,
            evaluation_step=self.config.evaluation_step() or "?",
            threshold=float((self.evaluation.get("settings") or {}).get("threshold", 0.5)),
            serving=serving,
            positive_class=self.model_cfg.positive_class,
        )

    def _output(self, ref: str, key: str) -> dict:
        from conveyor.pipeline.outputs import WHOLE

        step, _, name = ref.partition(".")
        outputs = self.step_outputs.get(step) or {}
        desc = outputs.get(name or WHOLE)
        if desc is None:
            have = ", ".join(f"{step}.{n}" if n != WHOLE else step for n in outputs) or "nothing"
            raise GateError(f"{key} is {ref!r}, but step {step!r} returned {have}.")
        return desc

    def _evaluation(self) -> dict[str, Any]:
        import json

        step = self.config.evaluation_step()
        if step is None:
            return {}
        desc = (self.step_outputs.get(step) or {}).get("return")
        if desc is None or desc["format"] != "json":
            raise GateError(
                f"The evaluation step {step!r} must return a dict of metrics; it returned "
                f"{desc['format'] if desc else 'nothing'}."
            )
        value = json.loads(self.ctx.artifacts.read_bytes(desc["digest"]))
        if not isinstance(value, dict):
            raise GateError(f"The evaluation step {step!r} returned a {type(value).__name__}.")
        return value

    def _model_file(self, model: Any, desc: dict) -> Any:
        from conveyor.registry.modelfile import check_trusted, from_step_output, save_model

        what = f"the candidate of model {self.model_cfg.name!r}"
        if self.model_cfg.format == "pickle":
            return save_model(
                model,
                self.ctx.artifacts,
                format="pickle",
                allow_pickle=self.config.registry.allow_pickle,
            )
        from conveyor.registry.flavours import for_class

        if for_class(str(desc.get("class") or "")).name != "sklearn":
            # XGBoost and LightGBM are registered in their own model format, not as skops
            return save_model(model, self.ctx.artifacts)
        file = from_step_output(desc)
        check_trusted(list(file.trusted), self.model_cfg.trusted_types, what=what)
        return file

    def _onnx(self, model: Any, holdout: Any, task: str) -> tuple[bytes | None, dict | None, Any]:
        if not self.model_cfg.onnx:
            return None, None, None
        from conveyor.evaluate.steps import features_of
        from conveyor.registry.flavours import flavour_of
        from conveyor.registry.onnx import OnnxModel

        sample = features_of(model, holdout, self.model_cfg.target).head(ONNX_CHECK_ROWS)
        data, report = flavour_of(model).export_onnx(model, sample, task)
        return data, report, OnnxModel(data) if data is not None else None

    # -- model gates -----------------------------------------------------------------------

    def model_gates(self, candidate: Any) -> list[GateResult]:
        from conveyor.gates.model_gates import evaluate_gate

        self.candidate_obj = candidate
        results = []
        for gate in self.config.gates:
            result = evaluate_gate(gate, candidate, self._incumbent)
            self.notify(result)
            results.append(result)
        return results

    def _incumbent(self, env: str) -> tuple[int, Any] | None:
        if env not in self._incumbents:
            served = self._served(env)
            self._incumbents[env] = (
                None
                if served is None
                else (
                    served.version,
                    self.registry.load(
                        served,
                        allow_pickle=self.config.registry.allow_pickle,
                        trusted_extra=tuple(self.model_cfg.trusted_types),
                    ),
                )
            )
        return self._incumbents[env]

    # -- the decision ----------------------------------------------------------------------

    def finish(
        self,
        candidate: Any,
        data_results: list[GateResult],
        model_results: list[GateResult],
        *,
        register: bool,
        report_path: Path | None,
        junit: Path | None,
    ) -> CiOutcome:
        from conveyor.reports.markdown import write_ci_report

        results = data_results + model_results
        gates = [r.to_dict() for r in results]
        passed = not any(r.blocks for r in results)
        version = None
        if passed and register and candidate is not None:
            # The same bytes as a registered version (an unchanged re-run): that version, not a
            # duplicate under a new number.
            same = self.registry.find(self.model_cfg.name, self.file.digest)
            version = same.version if same else self._register(candidate, gates).version
            self.already_registered = same is not None
            status = "registered"
        elif passed:
            status = "not-registered"
        else:
            status = "rejected"
            self._reject(gates)
        report = self._report(candidate, gates, status, version)
        written: list[Path] = []
        if report_path is not None:
            written = write_ci_report(report, Path(report_path), Path(junit) if junit else None)
        elif junit is not None:
            from conveyor.reports.junit import junit_xml

            Path(junit).write_text(junit_xml(report))
            written = [Path(junit)]
        outcome = CiOutcome(passed, report, getattr(self, "run_id", None), version, written)
        outcome.already_registered = getattr(self, "already_registered", False)
        return outcome

    def _reject(self, gates: list[dict]) -> None:
        with self.ctx.store.session() as s:
            self.ctx.store.add_event(
                s,
                ev.CANDIDATE_REJECTED,
                "model",
                self.model_cfg.name,
                {
                    "run_id": getattr(self, "run_id", None),
                    "failed": [g["name"] for g in gates if g["blocks"]],
                    "gates": [
                        {k: g[k] for k in ("name", "kind", "verdict", "summary")} for g in gates
                    ],
                },
            )

    def _register(self, candidate: Any, gates: list[dict]) -> Any:
        from conveyor.registry.registry import NewVersion

        artifacts = self.ctx.artifacts
        plots = {
            name: artifacts.put_bytes(svg.encode()).digest
            for name, svg in (self.evaluation.get("plots") or {}).items()
            if isinstance(svg, str)
        }
        signature = self._signature(candidate)
        new = NewVersion(
            project=self.config.project,
            model=self.model_cfg.name,
            run_id=self.run_id,
            task=candidate.task,
            file=self.file,
            signature=signature,
            metrics=jsonable(candidate.metrics),
            lineage=self._lineage(),
            holdout=self.holdout_desc,
            onnx=self._onnx_record(),
            slices=jsonable(slice_numbers(self.evaluation.get("slices") or {})),
            gates=gates,
            plots=plots,
            references=self._references(),
            card={
                "baseline": self.baseline(candidate),
                "target": self.model_cfg.target,
                "intended_use": self.model_cfg.intended_use,
                "limitations": self.model_cfg.limitations,
                "confusion_matrix": self.evaluation.get("confusion_matrix"),
                "per_class": self.evaluation.get("per_class"),
                "positive_class": (self.evaluation.get("settings") or {}).get("positive_class"),
                "holdout_rows": len(candidate.holdout),
                "evaluation_step": self.config.evaluation_step(),
            },
        )
        return self.registry.register(new)

    def _signature(self, candidate: Any) -> dict[str, Any]:
        from conveyor.evaluate.steps import features_of
        from conveyor.registry.flavours import flavour_of

        features = features_of(candidate.model, candidate.holdout, candidate.target)
        return flavour_of(candidate.model).signature(candidate.model, features, candidate.task)

    def _onnx_record(self) -> dict[str, Any] | None:
        """The ONNX copy's record; an export that failed keeps its reason (supported: false)."""
        if self.onnx_report is None:
            return None
        if self.onnx_bytes is None:
            return {"digest": None, "size": None, **self.onnx_report}
        stored = self.ctx.artifacts.put_bytes(self.onnx_bytes)
        return {"digest": stored.digest, "size": stored.size, **self.onnx_report}

    # -- servability -----------------------------------------------------------------------

    def servable(self, candidate: Any) -> GateResult:
        """Load the candidate as the gateway will and predict rows built from its signature,
        in a clean subprocess: a model that cannot be served is refused with the gateway's
        own error, before it is registered."""
        import time

        from conveyor.evaluate.steps import class_probabilities, features_of

        start = time.perf_counter()
        signature = self._signature(candidate)
        names = [f["name"] for f in signature["inputs"]]
        rows = features_of(candidate.model, candidate.holdout, candidate.target)[names]
        rows = rows.head(SERVABLE_ROWS)
        if candidate.task == "classification":
            expected = class_probabilities(candidate.model, rows)[1]
        else:
            expected = candidate.model.predict(rows)
        spec = {
            "artifacts": self.config.artifacts_url(),
            "model": self.model_cfg.name,
            "task": candidate.task,
            "signature": signature,
            "file": self.file.to_dict(),
            "onnx": self._onnx_record(),
            "holdout": self.holdout_desc,
            "columns": names,
            "rows": len(rows),
            "expected": jsonable([[float(v) for v in r] for r in expected])
            if candidate.task == "classification"
            else jsonable([float(v) for v in expected]),
            "allow_pickle": self.config.registry.allow_pickle,
            "trusted_extra": list(self.model_cfg.trusted_types),
        }
        result = run_servable_check(spec, self.config.root, tmp_dir=self.ctx.artifacts.tmp_dir())
        result.duration_s = time.perf_counter() - start
        self.notify(result)
        return result

    def _references(self) -> dict[str, str]:
        """A sample of each source the model was trained from, kept as its drift reference."""
        import os
        import tempfile

        from conveyor.gates.data_gates import load_source

        out: dict[str, str] = {}
        for name in self._sources_upstream():
            frame = self.frames.get(name)
            if frame is None:
                frame = load_source(self.config, name)
            if len(frame) > SAMPLE_ROWS:
                frame = frame.sample(SAMPLE_ROWS, random_state=0)
            fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=self.ctx.artifacts.tmp_dir())
            os.close(fd)
            frame.to_parquet(tmp)
            out[name] = self.ctx.artifacts.put_file(tmp, move=True).digest
        return out

    def _sources_upstream(self) -> list[str]:
        steps = self.config.upstream_closure([self.model_cfg.from_.partition(".")[0]])
        return sorted({source for step in steps for source in self.config.sources_of(step)})

    def _lineage(self) -> dict[str, Any]:
        from conveyor.store import models as m

        store = self.ctx.store
        run = store.run(self.run_id)
        with store.session() as s:
            lock = s.get(m.EnvLock, run.env_hash)
        steps = set(self._steps_upstream())
        return {
            "run_id": run.id,
            "git_commit": run.git_commit,
            "git_dirty": run.git_dirty,
            "params": {
                name: dict(cfg.params)
                for name, cfg in self.config.pipeline.items()
                if name in steps
            },
            "snapshots": [
                {
                    "source": snap.source,
                    "id": snap.id,
                    "content_hash": snap.content_hash,
                    "row_count": snap.row_count,
                    "files": len(snap.files or []),
                }
                for snap in store.run_snapshots(run.id)
            ],
            "env_hash": run.env_hash,
            "python": lock.python if lock else None,
            "packages": len(lock.packages) if lock else None,
            "config_hash": run.config_hash,
            "model_step": self.model_cfg.from_,
            "holdout": self.model_cfg.holdout,
        }

    def _steps_upstream(self) -> list[str]:
        roots = [self.model_cfg.from_.partition(".")[0], self.model_cfg.holdout.partition(".")[0]]
        evaluation = self.config.evaluation_step()
        if evaluation:
            roots.append(evaluation)
        return sorted(self.config.upstream_closure(roots))

    def _report(
        self, candidate: Any, gates: list[dict], status: str, version: int | None
    ) -> VersionStory:
        from conveyor.registry.story import assemble, version_report

        if version is not None:
            return version_report(
                self.registry, self.registry.version(self.model_cfg.name, version)
            )
        evaluation = getattr(self, "evaluation", {})
        parts: dict[str, Any] = {
            "project": self.config.project,
            "model": self.model_cfg.name,
            "status": status,
            "gates": gates,
            "target": self.model_cfg.target,
            "intended_use": self.model_cfg.intended_use,
            "limitations": self.model_cfg.limitations,
            "task": self.config.task() or evaluation.get("task") or "classification",
        }
        if candidate is not None:
            parts.update(
                run_id=self.run_id,
                metrics=jsonable(candidate.metrics),
                baseline=self.baseline(candidate),
                slices=jsonable(slice_numbers(evaluation.get("slices") or {})),
                confusion_matrix=evaluation.get("confusion_matrix"),
                plots={k: v for k, v in (evaluation.get("plots") or {}).items()},
                lineage=self._lineage(),
                holdout_rows=len(candidate.holdout),
                model_file=self.file.to_dict(),
                onnx=self.onnx_report,
                per_class=evaluation.get("per_class"),
                positive_class=(evaluation.get("settings") or {}).get("positive_class"),
            )
        return assemble(**parts)

    def baseline(self, candidate: Any) -> dict[str, Any] | None:
        """Production's metrics on the candidate's own holdout: a like-for-like diff."""
        served = self._incumbent("production")
        if served is None:
            return None
        from conveyor.evaluate.metrics import (
            classification_metrics,
            multiclass_metrics,
            regression_metrics,
        )

        number, model = served
        try:
            scores = candidate.score(model)
            truth = candidate.truth()
        except ValueError as exc:
            return {"alias": "production", "version": number, "metrics": {}, "note": str(exc)}
        if candidate.task == "regression":
            metrics = regression_metrics(truth, scores)
        elif scores.ndim == 2:
            metrics = multiclass_metrics(truth, scores, candidate.classes)
        else:
            metrics = classification_metrics(truth, scores, threshold=candidate.threshold)
        numbers = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return {"alias": "production", "version": number, "metrics": jsonable(numbers)}


def slice_numbers(slices: dict) -> dict:
    """Per-slice metrics without nested tables (each group's confusion matrix)."""
    return {
        column: {
            group: {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}
            for group, metrics in groups.items()
        }
        for column, groups in slices.items()
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_servable_check(
    spec: dict[str, Any], cwd: Path, *, tmp_dir: Path | None = None
) -> GateResult:
    """Run ``check_servable(spec)`` in a clean subprocess (``python -m conveyor.actions.ci
    --servable``) from the project's folder, so the project's own modules import as the
    gateway imports them, and judge its answer; a crash or a hang is a failed check."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".json", dir=tmp_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor.actions.ci", "--servable", path],
            capture_output=True,
            text=True,
            timeout=SERVABLE_TIMEOUT_S,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
        )
        lines = done.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines else None
        if not isinstance(answer, dict):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            answer = {"ok": False, "error": f"the check exited {done.returncode}: {tail}"}
    except subprocess.TimeoutExpired:
        answer = {"ok": False, "error": f"loading and predicting took over {SERVABLE_TIMEOUT_S} s"}
    finally:
        os.unlink(path)
    return servable_result(answer, int(spec["rows"]))


def servable_result(answer: dict[str, Any], rows: int) -> GateResult:
    evidence = {k: v for k, v in answer.items() if k != "ok"}
    if not answer.get("ok"):
        summary = f"cannot be served: {answer.get('error')}"
        return GateResult("servable", "servable", "fail", summary, evidence, blocks=True)
    diff = answer.get("max_abs_diff")
    runtime = answer.get("runtime")
    if diff is None or not diff <= SERVABLE_TOLERANCE:
        summary = (
            f"served through the gateway ({runtime}), it answers {rows} holdout rows differently "
            f"from the model evaluated: predictions differ by up to {diff} (tolerance "
            f"{SERVABLE_TOLERANCE:g}); a column is decoded from JSON otherwise than in training"
        )
        return GateResult("servable", "servable", "fail", summary, evidence, blocks=True)
    summary = (
        f"loaded as the gateway loads it ({runtime}) and predicted {rows} holdout rows sent as "
        f"JSON; largest difference from the model evaluated {diff:.2g}"
    )
    return GateResult("servable", "servable", "pass", summary, evidence)


def check_servable(spec: dict[str, Any]) -> dict[str, Any]:
    """The subprocess side of the servability gate: ``gateway.runtime.load_served`` on the
    unregistered version, then the holdout rows as a client sends them (JSON records) through
    the gateway's body decoding, ``prepare`` and ``predict``."""
    import numpy as np

    from conveyor.gateway.app import _instances
    from conveyor.gateway.runtime import load_served
    from conveyor.pipeline.outputs import load_output
    from conveyor.registry.modelfile import ModelFile
    from conveyor.registry.registry import Registry, Version
    from conveyor.store.artifacts import ArtifactStore
    from conveyor.store.records import utcnow

    artifacts = ArtifactStore(spec["artifacts"]).open()

    class Candidate(Version):
        @property
        def label(self) -> str:
            return f"the candidate of model {self.model!r}"

    record = Candidate(
        model=spec["model"],
        version=0,
        status="candidate",
        created_at=utcnow(),
        project="",
        run_id="",
        task=spec["task"],
        file=ModelFile.from_dict(spec["file"]),
        onnx=spec["onnx"],
        signature=spec["signature"],
        metrics={},
        slices={},
        gates=[],
        plots={},
        lineage={},
        holdout=spec["holdout"],
        references={},
        card={},
    )

    class Unregistered(Registry):
        def version(self, model: str, ref: int | str) -> Version:
            return record

    try:
        served = load_served(
            Unregistered(None, artifacts),  # type: ignore[arg-type]  # no metadata is read
            spec["model"],
            0,
            allow_pickle=spec["allow_pickle"],
            trusted_extra=tuple(spec["trusted_extra"]),
        )
        holdout = load_output(spec["holdout"], artifacts)
        rows = holdout[spec["columns"]].head(spec["rows"])
        body = b'{"instances": ' + rows.to_json(orient="records", date_format="iso").encode() + b"}"
        instances = _instances(body)  # the JSON decoding of POST /predict
        block, n = served.prepare(instances, max_rows=len(instances))
        (prediction,) = served.predict([block])
    except Exception as exc:  # the gateway's own error is the reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "runtime": None}
    got = prediction.probabilities if spec["task"] == "classification" else prediction.values
    want = np.asarray(spec["expected"], dtype=float)
    got = np.asarray(got, dtype=float)
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else None
    return {"ok": True, "runtime": served.runtime, "rows": int(n), "max_abs_diff": diff}


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] != ["--servable"] or len(sys.argv) != 3:
        sys.exit("usage: python -m conveyor.actions.ci --servable SPEC.json")
    with open(sys.argv[2]) as spec_file:
        print(json.dumps(check_servable(json.load(spec_file)), default=str))
