"""PyTorch and custom Python models through `conveyor ci` on projects of their own: a binary
classifier (string labels), a multi-class one and a regressor each. The registered version
loads like the model the pipeline trained, `conveyor serve` (a separate process started from
another folder, with no PYTHONPATH) answers over JSON and the Open Inference Protocol as the
model does in process, and the card renders with the ONNX copy or the reason there is none."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from conveyor.actions.ci import run_ci
from conveyor.exceptions import RegistryError
from tests.churn_project import backdate
from tests.flavours.matrix import TASKS, v2_outputs
from tests.flavours.matrix import rows as _rows

STEPS = """
import numpy as np
import pandas as pd

FEATURES = ["x1", "x2", "x3"]


def prepare(rows: pd.DataFrame) -> dict:
    test = rows.sample(frac=0.4, random_state=0)
    train = rows.drop(test.index)
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def train_torch(train: pd.DataFrame, task: str):
    import torch

    from {package}.nets import MLP

    torch.manual_seed(0)
    X = torch.tensor(train[FEATURES].to_numpy(np.float32))
    if task == "regression":
        y = torch.tensor(train["label"].to_numpy(np.float32)).reshape(-1, 1)
        net, loss_fn, classes = MLP(3, 1), torch.nn.MSELoss(), None
    else:
        classes = sorted(train["label"].unique())
        index = train["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        if len(classes) == 2:
            y = torch.tensor(index, dtype=torch.float32).reshape(-1, 1)
            net, loss_fn = MLP(3, 1), torch.nn.BCEWithLogitsLoss()
        else:
            y = torch.tensor(index, dtype=torch.long)
            net, loss_fn = MLP(3, len(classes)), torch.nn.CrossEntropyLoss()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        optimiser.zero_grad()
        loss_fn(net(X), y).backward()
        optimiser.step()
    net.feature_names_in_ = FEATURES
    if classes is not None:
        net.classes_ = classes
    return net


def train_python(train: pd.DataFrame, task: str):
    from {package}.custom import Centroids, LeastSquares

    model = LeastSquares() if task == "regression" else Centroids()
    return model.fit(train[FEATURES], train["label"])
"""

NETS = """
import torch


class MLP(torch.nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(inputs, 16)
        self.out = torch.nn.Linear(16, outputs)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))
"""

CUSTOM = """
import json

import numpy as np


class Centroids:
    \"\"\"Nearest centroid, probabilities by a softmax of minus the squared distances.\"\"\"

    def fit(self, frame, labels):
        self.feature_names_in_ = list(frame.columns)
        self.classes_ = sorted(labels.unique())
        self.centres = [frame[labels == c].mean().tolist() for c in self.classes_]
        return self

    def predict_proba(self, frame):
        X = frame[self.feature_names_in_].to_numpy(float)
        d = ((X[:, None, :] - np.asarray(self.centres)[None]) ** 2).sum(axis=2)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, frame):
        return np.asarray(self.classes_)[self.predict_proba(frame).argmax(axis=1)]

    def save(self, folder):
        state = {"features": self.feature_names_in_, "classes": self.classes_,
                 "centres": self.centres}
        (folder / "centroids.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, folder):
        state = json.loads((folder / "centroids.json").read_text())
        model = cls()
        model.feature_names_in_ = state["features"]
        model.classes_ = state["classes"]
        model.centres = state["centres"]
        return model


class LeastSquares:
    def fit(self, frame, values):
        self.feature_names_in_ = list(frame.columns)
        X = np.column_stack([frame.to_numpy(float), np.ones(len(frame))])
        self.coef = np.linalg.lstsq(X, values.to_numpy(float), rcond=None)[0]
        return self

    def predict(self, frame):
        X = frame[self.feature_names_in_].to_numpy(float)
        return X @ self.coef[:-1] + self.coef[-1]

    def save(self, folder):
        np.save(folder / "coef.npy", self.coef, allow_pickle=False)
        (folder / "features.json").write_text(json.dumps(self.feature_names_in_))

    @classmethod
    def load(cls, folder):
        model = cls()
        model.coef = np.load(folder / "coef.npy", allow_pickle=False)
        model.feature_names_in_ = json.loads((folder / "features.json").read_text())
        return model
"""

CONFIG = """
project: {family}
data:
  rows: data/rows.csv
pipeline:
  prepare: {{run: {package}.steps:prepare, inputs: [data.rows]}}
  train:
    run: {package}.steps:train_{family}
    inputs: [prepare.train]
    params: {{task: {task}}}
  evaluate: {{run: conveyor.evaluate:{evaluator}, inputs: [train, prepare.test]}}
model:
  name: {family}-{task}
  from: train
  holdout: prepare.test
  target: label
{extra}gates:
  - {gate}
"""

EXPECTED_FORMAT = {"torch": "torch-export", "python": "python-model"}


@pytest.fixture
def isolated_imports(monkeypatch):
    """The project's package imported in this process is forgotten afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("CONVEYOR_PROJECT_ROOT", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0].startswith(("proj_", "projlib")):
            del sys.modules[name]


def _project(project, family: str, task: str):
    kind, gate = TASKS[task]
    package = f"proj_{family}_{task}"  # a package of the project's own, unique per test
    extra = "  positive_class: 'Yes'\n" if task == "binary" else ""
    if family == "python":
        cls = "LeastSquares" if task == "regression" else "Centroids"
        extra += f"  trusted_types: [{package}.custom.{cls}]\n"
    project.write(f"src/{package}/__init__.py", "")
    project.write(f"src/{package}/steps.py", STEPS.replace("{package}", package))
    project.write(f"src/{package}/nets.py", NETS)
    project.write(f"src/{package}/custom.py", CUSTOM)
    text = CONFIG.format(
        family=family, task=task, package=package, evaluator=kind, gate=gate, extra=extra
    )
    project.write("conveyor.yaml", text)
    path = project.root / "data" / "rows.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _rows(task, "str", n=900).to_csv(path, index=False)
    backdate(path)
    return project.config()


def _loaded(config, version: int):
    """The registered version, its model loaded by Registry.load, its holdout, and the model
    the pipeline trained (the step output the gates judged)."""
    from conveyor.actions.models import open_registry
    from conveyor.pipeline.outputs import WHOLE, load_output

    trusted = tuple(config.model.trusted_types)
    with open_registry(config) as registry:
        record = registry.version(config.model.name, version)
        model = registry.load(record, allow_pickle=False, trusted_extra=trusted)
        holdout = load_output(record.holdout, registry.artifacts)
        steps = {r.step: r.outputs for r in registry.store.step_runs(record.run_id)}
        in_process = load_output(steps["train"][WHOLE], registry.artifacts, trusted_extra=trusted)
    return record, model, holdout, in_process


@pytest.mark.slow
@pytest.mark.parametrize("family", ["torch", "python"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_family_registers_serves_and_renders_its_card(
    project, isolated_imports, family: str, task: str
) -> None:
    if family == "torch":
        pytest.importorskip("torch")
    from conveyor.actions.models import open_registry, render_card
    from tests.gateway.servers import spawn

    config = _project(project, family, task)
    outcome = run_ci(config, jobs=1)
    assert outcome.passed and outcome.version == 1, outcome.report["gates"]
    servable = next(g for g in outcome.report["gates"] if g["name"] == "servable")
    assert servable["verdict"] == "pass", servable

    record, model, holdout, in_process = _loaded(config, 1)
    assert record.file.format == EXPECTED_FORMAT[family]
    features = holdout[["x1", "x2", "x3"]]
    classification = task != "regression"
    if classification:
        expected = in_process.predict_proba(features)
        np.testing.assert_allclose(model.predict_proba(features), expected, atol=1e-9)
        assert list(model.classes_) == list(in_process.classes_)
    else:
        expected = in_process.predict(features)
        np.testing.assert_allclose(model.predict(features), expected, rtol=1e-9)
    onnx = record.onnx or {}
    if family == "torch":
        assert onnx["supported"] and onnx["max_abs_diff"] <= onnx["tolerance"], onnx
    else:
        assert not onnx["supported"] and "no converter reads" in onnx["reason"]

    with open_registry(config) as registry:
        registry.set_alias(config.model.name, "production", 1)
    rows = features.head(40)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONVEYOR_PROJECT_ROOT")}
    os.environ.pop("CONVEYOR_PROJECT_ROOT", None)
    with spawn(project.root, env=env) as gateway:  # `conveyor serve -C ROOT` from elsewhere
        r = gateway.predict(config.model.name, rows.to_dict(orient="records"))
        assert r.status_code == 200, r.text
        body = r.json()
        v2 = v2_outputs(gateway, config.model.name, rows.to_numpy(np.float64))
    served_by = record.onnx.get("supported") and "onnx" or "native"
    atol = 1e-5 if served_by == "onnx" else 1e-9  # ONNX Runtime computes in float32
    if classification:
        want = in_process.predict_proba(rows)
        np.testing.assert_allclose(body["probabilities"], want, atol=atol)
        np.testing.assert_allclose(v2["probabilities"], want, atol=atol)
        assert body["predictions"] == [str(c) for c in in_process.predict(rows)]
        assert body["classes"] == [str(c) for c in in_process.classes_]
    else:
        want = in_process.predict(rows)
        np.testing.assert_allclose(body["predictions"], want, rtol=1e-5, atol=atol)
        values = next(v for k, v in v2.items() if k != "probabilities")
        np.testing.assert_allclose(values.reshape(-1), want, rtol=1e-5, atol=atol)

    markdown, written = render_card(config, None, "1", project.root / "cards")
    assert config.model.name in markdown and len(written) == 2
    if family == "python":
        assert "no converter reads" in markdown
    if task == "multiclass":
        assert len(record.card["confusion_matrix"]["labels"]) == 3
    if task == "binary":
        assert record.card["positive_class"] == "Yes"


def test_the_project_root_variable_is_the_one_conveyor_project_sets() -> None:
    from conveyor.project import ROOT_ENV
    from conveyor.registry.flavours.base import PROJECT_ROOT_ENV

    assert ROOT_ENV == PROJECT_ROOT_ENV


@pytest.mark.slow
def test_a_custom_model_whose_module_is_missing_names_it_and_the_project(
    project, isolated_imports, tmp_path
) -> None:
    """Served from a folder where the project's code is gone: the error names the module and the
    project folder, not a traceback or the skops versions."""
    config = _project(project, "python", "regression")
    assert run_ci(config, jobs=1).version == 1
    from conveyor.actions.models import open_registry

    package = "proj_python_regression"
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]
    (project.root / "src" / package).rename(tmp_path / "moved")
    with open_registry(config) as registry, pytest.raises(RegistryError) as caught:
        registry.load(
            registry.version(config.model.name, 1),
            allow_pickle=False,
            trusted_extra=tuple(config.model.trusted_types),
        )
    message = str(caught.value)
    assert f"needs the module '{package}'" in message
    assert f"the project folder {project.root.resolve()}" in message


@pytest.mark.slow
def test_a_custom_model_loads_only_when_conveyor_yaml_names_its_class(
    project, isolated_imports
) -> None:
    from conveyor.actions.models import open_registry
    from conveyor.exceptions import UnsafeModelFile

    config = _project(project, "python", "multiclass")
    assert run_ci(config, jobs=1).version == 1
    with open_registry(config) as registry, pytest.raises(UnsafeModelFile) as caught:
        registry.load(registry.version(config.model.name, 1), allow_pickle=False)
    assert "trusted_types: [proj_python_multiclass.custom.Centroids]" in str(caught.value)


@pytest.mark.slow
def test_frames_and_matrices_give_a_custom_model_the_same_answer(project, isolated_imports):
    from conveyor.actions.models import open_registry

    config = _project(project, "python", "binary")
    assert run_ci(config, jobs=1).version == 1
    with open_registry(config) as registry:
        model = registry.load(
            registry.version(config.model.name, 1),
            allow_pickle=False,
            trusted_extra=tuple(config.model.trusted_types),
        )
    frame = pd.DataFrame(np.eye(3), columns=["x1", "x2", "x3"])
    np.testing.assert_allclose(model.predict_proba(frame), model.predict_proba(frame.to_numpy()))


TRANSFORMER = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Clip(TransformerMixin, BaseEstimator):
    def __init__(self, bound: float = 2.0) -> None:
        self.bound = bound

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), -self.bound, self.bound)
"""

PIPELINE_STEPS = """
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from projlib.features import Clip


def prepare(rows: pd.DataFrame) -> dict:
    rows = rows[["x1", "x2", "x3", "label"]]  # Clip keeps no feature names: numbers only
    test = rows.sample(frac=0.4, random_state=0)
    return {"train": rows.drop(test.index), "test": test}


def train(train: pd.DataFrame):
    X = train[["x1", "x2", "x3"]]
    return make_pipeline(Clip(), LogisticRegression()).fit(X, train["label"])
"""


@pytest.mark.slow
def test_a_pipeline_with_the_projects_own_transformer_needs_no_pythonpath(
    project, isolated_imports, tmp_path
) -> None:
    """`conveyor ci -C ROOT` from another folder, no PYTHONPATH: the project's class loads in
    the CI process, the steps and the servability check; when the module is gone, loading names
    it and the project folder instead of blaming the scikit-learn and skops versions."""
    import subprocess

    from conveyor.actions.models import open_registry

    project.write("src/projlib/__init__.py", "")
    project.write("src/projlib/features.py", TRANSFORMER)
    project.write("src/projlib/steps.py", PIPELINE_STEPS)
    project.write(
        "conveyor.yaml",
        """
        project: own-code
        data:
          rows: data/rows.csv
        pipeline:
          prepare: {run: projlib.steps:prepare, inputs: [data.rows]}
          train: {run: projlib.steps:train, inputs: [prepare.train]}
          evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
        model:
          name: own-code
          from: train
          holdout: prepare.test
          target: label
          trusted_types: [projlib.features.Clip]
        gates:
          - roc_auc >= 0.8
        """,
    )
    path = project.root / "data" / "rows.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _rows("binary", "int", n=600).to_csv(path, index=False)
    backdate(path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONVEYOR_PROJECT_ROOT")}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", "ci", "-C", str(project.root)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output and "servable" in output

    config = project.config()
    (project.root / "src" / "projlib").rename(tmp_path / "moved")
    for name in [m for m in sys.modules if m.startswith("projlib")]:
        del sys.modules[name]
    os.environ["CONVEYOR_PROJECT_ROOT"] = str(project.root)  # as conveyor serve -C sets it
    with open_registry(config) as registry, pytest.raises(RegistryError) as caught:
        registry.load(
            registry.version("own-code", 1),
            allow_pickle=False,
            trusted_extra=("projlib.features.Clip",),
        )
    message = str(caught.value)
    assert "needs the module 'projlib'" in message and str(project.root) in message
    assert "skops versions" not in message
