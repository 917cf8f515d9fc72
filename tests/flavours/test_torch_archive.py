"""The PyTorch and custom Python flavours on their own: round trips with the same answers, ONNX
copies that match, what a module must declare, archives refused before torch reads them, and
the error that names the extra when PyTorch is not installed."""

from __future__ import annotations

import io
import json
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from conveyor.exceptions import ModelTampered, RegistryError, UnsafeModelFile
from conveyor.registry.flavours import flavour_of, for_format
from conveyor.registry.modelfile import load_model, save_model
from conveyor.store.artifacts import ArtifactStore

torch = pytest.importorskip("torch")


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts")).open()


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])


def _net(outputs: int, classes: list | None) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, outputs))
    net.feature_names_in_ = ["a", "b", "c"]
    if classes is not None:
        net.classes_ = classes
    return net


CASES = [
    ("binary, one logit", 1, ["No", "Yes"]),
    ("binary, two logits", 2, [0, 1]),
    ("multi-class", 3, ["low", "mid", "high"]),
    ("regression", 1, None),
]


@pytest.mark.parametrize(("case", "outputs", "classes"), CASES, ids=[c[0] for c in CASES])
def test_round_trip_answers_like_the_module(store, case, outputs, classes) -> None:
    net = _net(outputs, classes)
    X = _frame()
    file = save_model(net, store)
    assert file.format == "torch-export" and flavour_of(net).name == "torch"
    loaded = load_model(store, file, what="m", allow_pickle=False)
    with torch.no_grad():
        raw = net(torch.tensor(X.to_numpy(np.float32))).numpy().astype(np.float64)
    if classes is None:
        np.testing.assert_allclose(loaded.predict(X), raw[:, 0], rtol=1e-6)
        return
    if outputs == 1:
        p = 1 / (1 + np.exp(-raw[:, 0]))
        expected = np.column_stack([1 - p, p])
    else:
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        expected = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.predict_proba(X), expected, atol=1e-6)
    assert list(loaded.predict(X)) == list(np.asarray(classes)[expected.argmax(axis=1)])
    assert save_model(loaded, store).digest == file.digest  # registered as stored, no re-export


@pytest.mark.parametrize(("case", "outputs", "classes"), CASES, ids=[c[0] for c in CASES])
def test_onnx_copy_matches_the_program(store, case, outputs, classes) -> None:
    loaded = load_model(
        store, save_model(_net(outputs, classes), store), what="m", allow_pickle=False
    )
    task = "regression" if classes is None else "classification"
    data, report = flavour_of(loaded).export_onnx(loaded, _frame(100), task)
    assert data is not None and report["supported"], report
    assert report["max_abs_diff"] <= report["tolerance"]


def test_what_a_module_must_declare(store) -> None:
    net = _net(2, [0, 1])
    del net.feature_names_in_
    with pytest.raises(RegistryError, match="has no feature_names_in_: set it to the columns"):
        save_model(net, store)
    net = _net(2, ["only"])
    with pytest.raises(RegistryError, match="needs two or more distinct classes"):
        save_model(net, store)
    net = _net(3, ["a", "b", "c"])
    net.output_ = "scores"
    with pytest.raises(RegistryError, match="use 'logits'"):
        save_model(net, store)


class _Branchy(torch.nn.Module):
    feature_names_in_ = ["a", "b", "c"]

    def forward(self, x):
        if x.sum() > 0:  # control flow on the values: torch.export cannot trace it
            return x[:, :1]
        return -x[:, :1]


def test_a_module_torch_export_cannot_trace_is_refused_with_the_reason(store) -> None:
    with pytest.raises(RegistryError, match="torch.export cannot export the .*_Branchy"):
        save_model(_Branchy(), store)


def _rewrite(data: bytes, change) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            content = change(name, source.read(name))
            if content is not None:
                target.writestr(name, content)
        extra = change("<extra>", b"")
        if extra:
            target.writestr(*extra)
    return out.getvalue()


def _refused(store, data: bytes) -> str:
    artifact = store.put_bytes(data)
    from conveyor.registry.modelfile import ModelFile

    file = ModelFile("torch-export", artifact.digest, artifact.size, (), "torch.nn.Sequential")
    with pytest.raises(UnsafeModelFile) as caught:
        load_model(store, file, what="model 'm' version 1", allow_pickle=False)
    return str(caught.value)


def test_archives_torch_would_unpickle_from_are_refused_before_it_reads_them(store) -> None:
    _, data = for_format("torch-export").save(_net(1, None))

    def pickled(name: str, content: bytes):
        if name.endswith("model_weights_config.json"):
            config = json.loads(content)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        return None if name == "<extra>" else content

    assert "marks '0.weight' as pickled" in _refused(store, _rewrite(data, pickled))

    def legacy(name: str, content: bytes):
        if name == "<extra>":
            return ("archive/data/weights/model.pt", b"not a tensor")
        return content

    assert "holds 'archive/data/weights/model.pt'" in _refused(store, _rewrite(data, legacy))

    class Boom:
        def __reduce__(self):
            return (print, ("this would run",))

    def sample(name: str, content: bytes):
        if name.endswith("sample_inputs/model.pt"):
            buffer = io.BytesIO()
            torch.save({"x": Boom()}, buffer)
            return buffer.getvalue()
        return None if name == "<extra>" else content

    assert "sample inputs that are not plain tensors" in _refused(store, _rewrite(data, sample))


def test_missing_pytorch_names_the_extra(store, monkeypatch) -> None:
    file = save_model(_net(1, None), store)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if it were not installed
    with pytest.raises(RegistryError, match=r"pip install 'conveyor-ml\[torch\]'"):
        load_model(store, file, what="model 'm' version 1", allow_pickle=False)


class Doubler:
    """A custom model of the smallest kind: its one file holds the factor."""

    feature_names_in_ = ["a", "b", "c"]

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def predict(self, frame):
        return frame[self.feature_names_in_].sum(axis=1).to_numpy() * self.factor

    def save(self, folder) -> None:
        (folder / "factor.txt").write_text(str(self.factor))

    @classmethod
    def load(cls, folder):
        return cls(float((folder / "factor.txt").read_text()))


def test_custom_model_round_trip_and_a_changed_file_is_refused(store) -> None:
    name = f"{__name__}.Doubler"
    file = save_model(Doubler(3.0), store)
    assert file.format == "python-model" and flavour_of(Doubler()).name == "python"
    X = _frame(5)
    loaded = load_model(store, file, what="m", allow_pickle=False, trusted_extra=[name])
    np.testing.assert_allclose(loaded.predict(X), X.sum(axis=1) * 3.0)
    np.testing.assert_allclose(loaded.predict(X.to_numpy()), X.sum(axis=1) * 3.0)
    _, report = flavour_of(loaded).export_onnx(loaded, X, "regression")
    assert report["supported"] is False and "no converter reads" in report["reason"]

    data = store.read_bytes(file.digest)

    def changed(n: str, content: bytes):
        return b"1000" if n == "files/factor.txt" else (None if n == "<extra>" else content)

    bad = store.put_bytes(_rewrite(data, changed))
    from conveyor.registry.modelfile import ModelFile

    tampered = ModelFile("python-model", bad.digest, bad.size, (), name)
    with pytest.raises(ModelTampered, match="'factor.txt' of m does not match the sha256"):
        load_model(store, tampered, what="m", allow_pickle=False, trusted_extra=[name])


def test_a_double_precision_module_in_training_mode_is_saved_as_served(store) -> None:
    net = _net(1, None).double().train()
    net.insert(1, torch.nn.Dropout(0.5))
    file = save_model(net, store)
    assert net.training and next(net.parameters()).dtype == torch.float64  # left as it was
    loaded = load_model(store, file, what="m", allow_pickle=False)
    X = _frame(50)
    first, second = loaded.predict(X), loaded.predict(X)
    np.testing.assert_array_equal(first, second)  # no dropout when predicting
    with torch.no_grad():
        expected = net.eval()(torch.tensor(X.to_numpy())).numpy()[:, 0]
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-5)
