"""The monitoring report on real registered models and a real store: drift, prediction drift,
live quality from feedback, the Prometheus text and the errors that say what is missing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from conveyor.exceptions import MonitorError
from conveyor.monitor import (
    Window,
    clear_references,
    monitor_report,
    observe,
    prometheus_text,
    reference_for,
)
from conveyor.monitor.report import LiveQuality, MonitorReport, PredictionDrift, WindowSpan
from tests.gateway.servers import NUM_FIELDS, gateway_project, load, trained
from tests.monitor.logs import NOW, entry, feedback, records, registry_of, served_rows, write


@pytest.fixture
def config(tmp_path: Path):
    return gateway_project(tmp_path / "p")


def num_labels() -> np.ndarray:
    """The true classes of ``num_holdout`` (the same make_classification call)."""
    from sklearn.datasets import make_classification

    _X, y = make_classification(n_samples=3000, n_features=5, random_state=0)
    return y[2000:]


def log_frame(
    frame: pd.DataFrame, model, *, name="num", version=1, prefix="q", per=5, as_records=False
):
    """One request per ``per`` rows, answered by ``model``, a second apart ending at NOW."""
    predictions = model.predict(frame).tolist()
    sent = records(frame) if as_records else served_rows(frame)
    out = []
    for k, i in enumerate(range(0, len(frame), per)):
        out.append(
            entry(
                f"{prefix}{k}",
                sent[i : i + per],
                predictions[i : i + per],
                model=name,
                version=version,
                ago=len(frame) - i,
            )
        )
    return out


def report_for(config, **kwargs):
    with registry_of(config) as registry:
        return monitor_report(config, registry, now=NOW, **kwargs)


def test_a_shifted_numeric_feature_drifts_and_the_rest_do_not(config) -> None:
    t = trained()
    reference, served = t["num_holdout"][:500], t["num_holdout"][500:].copy()
    served["f0"] += 3 * reference["f0"].std()
    write(config, log_frame(served, t["num_v1"]))
    report = report_for(config, model="num", reference=reference)
    drift = report["drift"]
    assert drift["drifted"] == ["f0"] and drift["share_drifted"] == pytest.approx(0.2)
    assert drift["drifted_overall"]  # monitor.drift.share defaults to 0.2
    f0 = drift["columns"]["f0"]
    assert f0["kind"] == "numeric" and f0["stats"]["ks"]["p_adjusted"] < 1e-10
    assert f0["stats"]["psi"]["statistic"] > 1.0
    assert (report["rows"], report["requests"], report["enough"]) == (500, 100, True)
    assert report["version"] == 1 and report["window"]["seconds"] == 3600.0
    assert report["window"]["end"] == NOW.isoformat()
    assert report["prediction_drift"]["psi"] >= 0.0
    assert json.loads(json.dumps(report))["drift"]["drifted"] == ["f0"]  # JSON-safe
    # the typed contract the alerts, the CLI, the page and the controller read, key for key
    assert set(report) == MonitorReport.__required_keys__
    assert set(report["window"]) == WindowSpan.__required_keys__
    assert set(report["quality"]) == LiveQuality.__required_keys__
    assert set(report["prediction_drift"]) == PredictionDrift.__required_keys__


def test_unshifted_held_out_rows_do_not_drift(config) -> None:
    t = trained()
    reference, served = t["num_holdout"][:500], t["num_holdout"][500:]
    write(config, log_frame(served, t["num_v1"]))
    report = report_for(config, model="num", reference=reference)
    assert report["drift"]["drifted"] == [] and not report["drift"]["drifted_overall"]
    assert set(report["drift"]["columns"]) == set(NUM_FIELDS)
    assert report["prediction_drift"]["drifted"] is False
    assert report["prediction_drift"]["p_value"] > 0.05
    assert report["error_rate"] == 0.0 and report["p99_ms"] == pytest.approx(2.0)


def test_a_changed_category_mix_drifts(config) -> None:
    t = trained()
    reference, served = t["mixed_holdout"][:250], t["mixed_holdout"][250:].copy()
    served["grade"] = np.where(np.arange(len(served)) % 10 == 0, "B", "A")  # 90% A, 10% B
    write(config, log_frame(served, t["mixed"], name="mixed", as_records=True))
    report = report_for(config, model="mixed", reference=reference)
    grade = report["drift"]["columns"]["grade"]
    assert report["drift"]["drifted"] == ["grade"]
    assert grade["kind"] == "categorical" and grade["categories"]["gone"] == ["C"]
    assert report["drift"]["columns"]["amount"]["null_share"]["current"] > 0  # nulls were sent
    # the model's answers follow the grade: fewer C, fewer positives
    assert report["prediction_drift"]["drifted"] is True


def test_live_quality_joins_feedback_by_request_and_row(config) -> None:
    t = trained()
    holdout, y = t["num_holdout"], num_labels()
    stable, canary = holdout[:600], holdout[600:800]
    logged = log_frame(stable, t["num_v1"], per=4) + log_frame(
        canary, t["num_v2"], version=2, prefix="c", per=4
    )
    write(config, logged)
    labels = []
    expected = {1: ([], []), 2: ([], [])}
    for row in logged:
        k = int(row["request_id"][1:])
        start = k * 4 + (600 if row["version"] == 2 else 0)
        truth = y[start : start + 4].tolist()
        if k % 2 == 0:  # half the requests get their labels, at NOW
            labels.append(feedback(row["request_id"], truth))
            answers = t["num_v1" if row["version"] == 1 else "num_v2"].predict(
                holdout[start : start + 4]
            )
            expected[row["version"]][0].extend(truth)
            expected[row["version"]][1].extend(answers.tolist())
    labels.append(feedback("q1", [1, 0]))  # two labels for four rows: not used
    write(config, [], labels)
    quality = report_for(config, model="num", reference=holdout[:500])["quality"]
    truth = expected[1][0] + expected[2][0]
    answers = expected[1][1] + expected[2][1]
    assert quality["labelled"] == len(truth) == 400
    assert quality["labelled_share"] == pytest.approx(400 / 800)
    assert quality["metrics"] == pytest.approx(
        {
            "accuracy": skm.accuracy_score(truth, answers),
            "precision": skm.precision_score(truth, answers),
            "recall": skm.recall_score(truth, answers),
            "f1": skm.f1_score(truth, answers),
        }
    )
    assert set(quality["by_version"]) == {1, 2}
    assert quality["by_version"][2]["labelled"] == 100
    assert quality["by_version"][2]["accuracy"] == pytest.approx(skm.accuracy_score(*expected[2]))
    # requests went out 1..800 s before NOW (4 rows a second), labels came at NOW
    delays = sorted(
        (NOW - r["at"]).total_seconds() for r in logged if int(r["request_id"][1:]) % 2 == 0
    )
    assert quality["label_delay_s_p50"] == pytest.approx(float(np.median(delays)))


def test_regression_quality_and_prediction_drift(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    from conveyor.actions.models import register_fitted

    config = gateway_project(tmp_path / "p")
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"size": rng.normal(80, 20, 1200), "rooms": rng.integers(1, 6, 1200)})
    y = 3 * X["size"] + 10 * X["rooms"] + rng.normal(0, 5, 1200)
    model = LinearRegression().fit(X[:600], y[:600])
    register_fitted(
        config, model, X[600:], name="price", task="regression", aliases=("production",)
    )
    served = X[900:].copy()
    served["size"] += 60  # bigger homes: higher prices predicted
    logged = log_frame(served, model, name="price", per=3)
    write(config, logged)
    truth = (3 * served["size"] + 10 * served["rooms"]).to_numpy()
    write(
        config,
        [],
        [
            feedback(r["request_id"], truth[k * 3 : k * 3 + 3].tolist())
            for k, r in enumerate(logged)
        ],
    )
    report = report_for(config, model="price", reference=X[600:900])
    answers = model.predict(served)
    assert report["drift"]["drifted"] == ["size"]
    assert report["prediction_drift"]["drifted"] is True and report["prediction_drift"]["psi"] > 1
    assert report["quality"]["metrics"] == pytest.approx(
        {
            "mae": skm.mean_absolute_error(truth, answers),
            "rmse": float(np.sqrt(skm.mean_squared_error(truth, answers))),
        }
    )
    assert report["quality"]["labelled_share"] == 1.0


def test_errors_latency_and_the_monitor_section(config) -> None:
    path = config.file
    path.write_text(path.read_text() + "monitor:\n  window: {last: 50}\n  min_rows: 1000\n")
    config = load(path.parent)
    t = trained()
    logged = log_frame(t["num_holdout"][:80], t["num_v1"], per=1)
    for k, row in enumerate(logged[-10:]):
        row.update(status=500 if k < 4 else 422, latency_ms=100.0 + k, outputs="")
    write(config, logged)
    report = report_for(config, model="num", reference=t["num_holdout"][500:])
    assert report["window"] == {
        "seconds": None,
        "last": 50,
        "start": (NOW - timedelta(seconds=50)).isoformat(),
        "end": NOW.isoformat(),
    }
    assert (report["requests"], report["rows"], report["enough"]) == (50, 40, False)
    assert report["error_rate"] == pytest.approx(4 / 50)
    # p99 over the 46 answered requests (5xx excluded): 40 at 2 ms, six 4xx at 104..109 ms
    assert report["p99_ms"] == pytest.approx(np.percentile([2.0] * 40 + list(range(104, 110)), 99))


def test_a_pipeline_registered_version_uses_its_stored_holdout(project) -> None:
    from conveyor.actions.ci import run_ci
    from conveyor.actions.models import set_alias
    from tests.churn_project import STEPS, rows

    project.write("shop.py", STEPS)
    project.write(
        "conveyor.yaml",
        """
        project: shop
        data:
          rows: data/rows.csv
        pipeline:
          prepare: {run: shop:prepare, inputs: [data.rows]}
          train:
            run: shop:train
            inputs: [prepare.train]
            params: {features: [tenure, spend, region], C: 1.0}
          evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
        model: {name: churn, from: train, holdout: prepare.test, target: churned}
        gates: [roc_auc >= 0.55]
        monitor: {window: 10m, min_rows: 100}
        """,
    )
    (project.root / "data").mkdir()
    rows().to_csv(project.root / "data" / "rows.csv", index=False)
    config = project.config()
    assert run_ci(config, jobs=1).version == 1
    set_alias(config, None, 1, "production")
    clear_references()
    with registry_of(config) as registry:
        version = registry.version("churn", 1)
        reference = reference_for(registry, version)
        assert reference_for(registry, version) is reference  # cached per version
        model = registry.load(version, allow_pickle=False)
    assert list(reference.features.columns) == ["tenure", "spend", "region"]
    assert reference.rows == 1200 and reference.source == "the holdout stored at registration"
    assert set(reference.predictions.tolist()) <= {0, 1} and reference.target is not None
    shifted = rows(400, seed=5, shift=1.0)  # tenure 30 months longer
    features = shifted[["tenure", "spend", "region"]]
    logged = log_frame(features, model, name="churn", as_records=True, per=4)
    write(
        config,
        logged,
        [
            feedback(r["request_id"], shifted["churned"][k * 4 : k * 4 + 4].tolist())
            for k, r in enumerate(logged)
        ],
    )
    with registry_of(config) as registry:
        seen = observe(config, registry, now=NOW)  # model, environment and window from config
    report = seen.report
    assert (report["model"], report["environment"], report["version"]) == ("churn", "production", 1)
    assert report["drift"]["drifted"] == ["tenure"] and report["enough"]
    assert report["quality"]["labelled"] == 400
    assert report["quality"]["metrics"]["accuracy"] == pytest.approx(
        skm.accuracy_score(shifted["churned"], model.predict(features))
    )
    assert isinstance(seen.window, Window) and seen.reference is reference


def test_what_cannot_be_monitored_is_named(config) -> None:
    with pytest.raises(MonitorError, match="environment 'canary'.*--to canary"):
        report_for(config, model="num", environment="canary")
    # a model registered with register_fitted keeps its features as its holdout: no reference
    # needs passing
    assert report_for(config, model="num")["version"] == 1
    with pytest.raises(MonitorError, match="Name the model"):
        report_for(config)
    with pytest.raises(MonitorError, match="lack the input column.*'f4'"):
        report_for(config, model="num", reference=trained()["num_holdout"].drop(columns="f4"))


def test_prometheus_text_parses_with_every_gauge(config) -> None:
    t = trained()
    served = t["num_holdout"][500:].copy()
    served["f2"] -= 4
    logged = log_frame(served, t["num_v1"])
    write(config, logged, [feedback(r["request_id"], [0, 1, 0, 1, 0]) for r in logged[:10]])
    report = report_for(config, model="num", reference=t["num_holdout"][:500])
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(report))}
    assert set(families) == {
        "conveyor_monitor_rows",
        "conveyor_drift_share",
        "conveyor_feature_drift",
        "conveyor_feature_psi",
        "conveyor_prediction_psi",
        "conveyor_live_metric",
        "conveyor_labelled_share",
    }
    assert all(f.type == "gauge" for f in families.values())
    where = {"model": "num", "environment": "production"}
    drift = {s.labels["feature"]: s.value for s in families["conveyor_feature_drift"].samples}
    assert drift == {"f0": 0.0, "f1": 0.0, "f2": 1.0, "f3": 0.0, "f4": 0.0}
    assert families["conveyor_drift_share"].samples[0].value == pytest.approx(0.2)
    assert families["conveyor_monitor_rows"].samples[0].labels == where
    assert families["conveyor_monitor_rows"].samples[0].value == 500
    metrics = {s.labels["metric"] for s in families["conveyor_live_metric"].samples}
    assert metrics == {"accuracy", "precision", "recall", "f1"}
    assert families["conveyor_labelled_share"].samples[0].value == pytest.approx(50 / 500)


def test_prometheus_text_of_an_empty_window_leaves_drift_out(config) -> None:
    report = report_for(config, model="num", reference=trained()["num_holdout"])
    assert report["drift"] is None and report["prediction_drift"] is None
    assert report["quality"]["metrics"] == {} and not report["enough"]
    names = {f.name for f in text_string_to_metric_families(prometheus_text(report))}
    assert names == {"conveyor_monitor_rows", "conveyor_labelled_share"}


@pytest.mark.parametrize(
    ("truth", "predicted", "classes"),
    [
        ([0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0], [0, 1]),  # binary, positive class 1
        ([1, 1, 1], [1, 1, 1], [0, 1]),  # one class seen
        ([0, 0, 0], [0, 0, 0], [0, 1]),  # the positive class never seen: 0 by zero_division
        (["a", "b", "c", "a"], ["a", "c", "c", "b"], ["a", "b", "c"]),  # macro
        ([0, 1, 2, 1], [0, 1, 1, 1], [0, 1]),  # a label outside the classes: macro
        ([1.0, True, 0, 2], [1, 1, 0.0, 0], None),  # canonical labels, no classes
        (["no", "yes", "yes", "no", "yes"], ["yes", "yes", "no", "no", "no"], ["no", "yes"]),
    ],
)
def test_live_metrics_equal_scikit_learn(truth: list, predicted: list, classes) -> None:
    from conveyor.monitor.report import _metrics, canon

    got = _metrics(truth, predicted, classes, regression=False)
    y, p = [canon(v) for v in truth], [canon(v) for v in predicted]
    seen = set(y) | set(p)
    known = [canon(c) for c in classes] if classes else []
    if len(known) == 2 and seen <= set(known):
        average: dict = {"average": "binary", "pos_label": known[1]}
    else:
        average = {"average": "macro", "labels": sorted(seen)}
    want = {
        "accuracy": skm.accuracy_score(y, p),
        "precision": skm.precision_score(y, p, zero_division=0.0, **average),
        "recall": skm.recall_score(y, p, zero_division=0.0, **average),
        "f1": skm.f1_score(y, p, zero_division=0.0, **average),
    }
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_live_regression_metrics_equal_scikit_learn() -> None:
    from conveyor.monitor.report import _metrics

    rng = np.random.default_rng(3)
    truth = rng.normal(10, 3, 500).tolist() + [None, "x", float("nan")]
    predicted = (np.asarray(truth[:500]) + rng.normal(0, 1, 500)).tolist() + [1.0, 2.0, 3.0]
    got = _metrics(truth, predicted, None, regression=True)
    y, q = np.asarray(truth[:500]), np.asarray(predicted[:500])
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, q), rel=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, q)), rel=1e-12)
    assert _metrics([], [], None, regression=True) == {}
    assert _metrics([], [], [0, 1], regression=False) == {}


def test_labels_made_canonical_once_per_value_are_those_of_each_value() -> None:
    from conveyor.monitor.report import canon, canon_all

    values = [1, 1.0, True, np.int64(1), "1", 0, -0.0, False, 2.5, float("nan"), None, [1, 2]]
    values = values + values[::-1]
    assert canon_all(values) == [canon(v) for v in values]
