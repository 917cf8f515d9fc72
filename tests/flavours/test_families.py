"""Each model family through `conveyor ci` on a small project of its own: binary with string
labels, multi-class and regression for scikit-learn, XGBoost and LightGBM. The registered
version loads through Registry.load and predicts like the model evaluated in process, a real
gateway serves it over JSON and v2 with the same answers, and its card renders; a model the
gateway cannot serve is refused with the gateway's error and never registered."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.actions.ci import run_ci
from tests.churn_project import backdate
from tests.flavours.matrix import TASKS, v2_outputs
from tests.flavours.matrix import rows as _rows

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")

STEPS = """
import numpy as np
import pandas as pd

FEATURES = ["x1", "x2", "x3"]


def prepare(rows: pd.DataFrame, category: bool) -> dict:
    if category:
        rows = rows.assign(region=rows["region"].astype("category"))
    test = rows.sample(frac=0.4, random_state=0)
    train = rows.drop(test.index)
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def train(train: pd.DataFrame, family: str, task: str, features: list):
    X, y = train[features], train["label"]
    if family == "sklearn":
        from sklearn import ensemble
        kind = "Regressor" if task == "regression" else "Classifier"
        return getattr(ensemble, "HistGradientBoosting" + kind)(max_iter=30).fit(X, y)
    if family == "xgboost":
        import xgboost as xgb
        if task == "regression":
            return xgb.XGBRegressor(n_estimators=30, max_depth=3).fit(X, y)
        return xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X, y)
    import lightgbm as lgb
    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    return cls(n_estimators=30, num_leaves=8, verbose=-1).fit(X, y)
"""

CONFIG = """
project: families
data:
  rows: data/rows.csv
pipeline:
  prepare: {{run: fam:prepare, inputs: [data.rows], params: {{category: {category}}}}}
  train:
    run: fam:train
    inputs: [prepare.train]
    params: {{family: {family}, task: {task}, features: {features}}}
  evaluate: {{run: conveyor.evaluate:{evaluator}, inputs: [train, prepare.test]}}
model:
  name: {family}-{task}
  from: train
  holdout: prepare.test
  target: label
{extra}gates:
  - {gate}
"""


def _project(project, family: str, task: str, *, category: bool = False, extra: str = ""):
    kind, gate = TASKS[task]
    # XGBoost classifiers take class indices only; the others get string labels
    labels = "int" if family == "xgboost" else "str"
    features = ["x1", "x2", "x3"] + (["region"] if category else [])
    project.write("fam.py", STEPS)
    project.write(
        "conveyor.yaml",
        CONFIG.format(
            family=family,
            task=task,
            evaluator=kind,
            category=str(category).lower(),
            features=features,
            extra=extra,
            gate=gate,
        ),
    )
    path = project.root / "data" / "rows.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _rows(task, labels).to_csv(path, index=False)
    backdate(path)
    return project.config()


def _loaded(config, version: int):
    """The registered version, its model loaded by Registry.load, its holdout, and the model
    the pipeline trained (the step output the gates judged)."""
    from conveyor.actions.models import open_registry
    from conveyor.pipeline.outputs import WHOLE, load_output

    with open_registry(config) as registry:
        record = registry.version(config.model.name, version)
        model = registry.load(record, allow_pickle=False)
        holdout = load_output(record.holdout, registry.artifacts)
        steps = {r.step: r.outputs for r in registry.store.step_runs(record.run_id)}
        in_process = load_output(steps["train"][WHOLE], registry.artifacts)
    return record, model, holdout, in_process


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sklearn", "xgboost", "lightgbm"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_family_registers_and_loads_like_in_process(project, family: str, task: str) -> None:
    extra = "  positive_class: 'Yes'\n" if task == "binary" and family != "xgboost" else ""
    config = _project(project, family, task, extra=extra)
    outcome = run_ci(config, jobs=1)
    verdicts = {g["name"]: g["verdict"] for g in outcome.report["gates"]}
    assert outcome.passed and outcome.version == 1, outcome.report["gates"]
    assert verdicts["servable"] == "pass"
    record, model, holdout, in_process = _loaded(config, 1)
    expected_format = {"sklearn": "skops", "xgboost": "xgboost-json", "lightgbm": "lightgbm-text"}
    assert record.file.format == expected_format[family]
    features = holdout[["x1", "x2", "x3"]]
    if task == "regression":
        np.testing.assert_allclose(model.predict(features), in_process.predict(features), 1e-6)
    else:
        np.testing.assert_allclose(
            model.predict_proba(features), in_process.predict_proba(features), atol=1e-6
        )
        assert list(model.classes_) == list(in_process.classes_)
    onnx = record.onnx or {}
    assert onnx.get("supported") or onnx.get("reason"), onnx
    if task == "multiclass":
        assert record.metrics["f1_weighted"] > 0.5
        assert len(record.card["confusion_matrix"]["labels"]) == 3
    if task == "binary" and family != "xgboost":
        assert record.card["positive_class"] == "Yes"
    _served_like_in_process(config, record, in_process, features.head(40), task)


def _served_like_in_process(config, record, in_process, rows, task: str) -> None:
    """`conveyor serve` (a separate process) answers over JSON and v2 as the model trained in
    process does, and the card renders."""
    from conveyor.actions.models import open_registry, render_card
    from tests.gateway.servers import spawn

    with open_registry(config) as registry:
        registry.set_alias(config.model.name, "production", record.version)
    with spawn(config.root) as gateway:
        r = gateway.predict(config.model.name, rows.to_dict(orient="records"))
        assert r.status_code == 200, r.text
        body = r.json()
        v2 = v2_outputs(gateway, config.model.name, rows.to_numpy(np.float64))
    onnx = record.onnx or {}
    # ONNX Runtime computes in float32: the registration checked the copy within its tolerance
    atol = max(1e-5, onnx.get("tolerance") or 0) if onnx.get("supported") else 1e-9
    if task == "regression":
        want = in_process.predict(rows)
        np.testing.assert_allclose(body["predictions"], want, rtol=1e-5, atol=atol)
        values = next(v for k, v in v2.items() if k != "probabilities")
        np.testing.assert_allclose(values.reshape(-1), want, rtol=1e-5, atol=atol)
    else:
        want = in_process.predict_proba(rows)
        np.testing.assert_allclose(body["probabilities"], want, atol=atol)
        np.testing.assert_allclose(v2["probabilities"], want, atol=atol)
        assert [str(p) for p in body["predictions"]] == [str(c) for c in in_process.predict(rows)]
    markdown, written = render_card(config, None, str(record.version), config.root / "cards")
    assert config.model.name in markdown and len(written) == 2


def test_lightgbm_category_column_is_refused_with_the_gateways_error(project) -> None:
    config = _project(project, "lightgbm", "binary", category=True)
    outcome = run_ci(config, jobs=1)
    servable = next(g for g in outcome.report["gates"] if g["name"] == "servable")
    assert not outcome.passed and outcome.version is None
    assert servable["verdict"] == "fail" and servable["blocks"]
    assert "failed its warm-up predict" in servable["summary"]
    assert "categorical_feature do not match" in servable["summary"]
    from conveyor.actions.models import open_registry
    from conveyor.exceptions import ModelNotFound

    with open_registry(config) as registry, pytest.raises(ModelNotFound):
        registry.versions("lightgbm-binary")


@pytest.mark.slow
def test_multiclass_string_labels_through_comparison_fairness_and_compare(project) -> None:
    """A second LightGBM version judged against production on K string classes: McNemar on
    correctness, a paired bootstrap on log loss, demographic parity of one class, and
    `models compare` over both versions."""
    from conveyor.actions.models import compare_versions, open_registry

    extra = "  positive_class: high\n"
    config = _project(project, "lightgbm", "multiclass", extra=extra)
    assert run_ci(config, jobs=1).version == 1
    with open_registry(config) as registry:
        registry.set_alias("lightgbm-multiclass", "production", 1)
    text = (project.root / "conveyor.yaml").read_text()
    text = text.replace(
        "  - accuracy >= 0.6\n",
        "  - accuracy >= 0.6\n"
        "  - accuracy >= production.accuracy - 0.05\n"
        "  - log_loss <= production.log_loss + 0.05\n"
        "  - fairness: {group: region, metric: selection_rate, max_gap: 0.25}\n",
    )
    project.write("conveyor.yaml", text)
    project.write("fam.py", STEPS.replace("num_leaves=8", "num_leaves=6"))  # a new candidate
    outcome = run_ci(project.config(), jobs=1)
    verdicts = {
        g["name"]: (g["verdict"], g["evidence"].get("method")) for g in outcome.report["gates"]
    }
    assert outcome.passed and outcome.version == 2, outcome.report["gates"]
    assert verdicts["accuracy >= production.accuracy - 0.05"][1].startswith("mcnemar")
    assert verdicts["log_loss <= production.log_loss + 0.05"][1].startswith("paired-bootstrap")
    fairness = next(g for g in outcome.report["gates"] if g["kind"] == "fairness")
    assert fairness["verdict"] == "pass" and set(fairness["evidence"]["groups"]) == {
        "east",
        "north",
        "south",
    }
    result = compare_versions(project.config(), None, "1", "2")
    assert {c["metric"] for c in result["comparisons"]} >= {"accuracy", "log_loss", "roc_auc"}
    assert all(c["ci_low"] <= c["diff"] <= c["ci_high"] for c in result["comparisons"])
    assert result["not_compared"] == {}
