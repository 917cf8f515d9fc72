"""A crafted ONNX artifact must not read files from the gateway's working directory.

ONNX Runtime refuses an absolute external-data location or one with ``..``, but reads a
relative one from the process's working directory. Each model here keeps one tensor's data in
``secret.bin`` (written into the cwd, the way a gateway's own files sit beside it) and must be
refused before a session exists, wherever the tensor hides in the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from conveyor.exceptions import RegistryError
from conveyor.registry.onnx import OnnxModel, export_onnx

SECRET = b"SECRET-0123456789abcdef-TOKEN-VALUE!"  # 36 bytes = 9 float32
OPSET = [helper.make_opsetid("", 17)]


def _external(name: str, dims: list[int], location: str = "secret.bin") -> TensorProto:
    """A float tensor whose data ONNX Runtime would read from ``location``."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    size = int(np.prod(dims))
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _io() -> tuple[list, list]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 9])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9])
    return [x], [y]


def _initializer() -> onnx.ModelProto:
    inputs, outputs = _io()
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        inputs,
        outputs,
        initializer=[_external("w", [1, 9])],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _constant_attribute() -> onnx.ModelProto:
    inputs, outputs = _io()
    nodes = [
        helper.make_node("Constant", [], ["w"], value=_external("w", [1, 9])),
        helper.make_node("Add", ["x", "w"], ["y"]),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=OPSET)


def _if_subgraph() -> onnx.ModelProto:
    """The external tensor sits in the then-branch of an If: only a recursive walk finds it."""
    inputs, outputs = _io()
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 9])
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=_external("b", [1, 9]))],
        "then",
        [],
        [out],
    )
    other = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["b"],
                value=numpy_helper.from_array(np.zeros((1, 9), np.float32), "z"),
            )
        ],
        "else",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 9])],
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "t")),
        helper.make_node("If", ["c"], ["w"], then_branch=branch, else_branch=other),
        helper.make_node("Add", ["x", "w"], ["y"]),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=OPSET)


def _sparse_initializer() -> onnx.ModelProto:
    """onnx's own walk skips sparse initializers; ours must not."""
    inputs, outputs = _io()
    values = _external("w_values", [9])
    indices = numpy_helper.from_array(np.arange(9, dtype=np.int64), "w_indices")
    sparse = helper.make_sparse_tensor(values, indices, [1, 9])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", inputs, outputs)
    graph.sparse_initializer.append(sparse)
    return helper.make_model(graph, opset_imports=OPSET)


def _local_function() -> onnx.ModelProto:
    inputs, outputs = _io()
    function = helper.make_function(
        "local",
        "AddSecret",
        ["a"],
        ["o"],
        [
            helper.make_node("Constant", [], ["s"], value=_external("s", [1, 9])),
            helper.make_node("Add", ["a", "s"], ["o"]),
        ],
        OPSET,
    )
    graph = helper.make_graph(
        [helper.make_node("AddSecret", ["x"], ["y"], domain="local")], "g", inputs, outputs
    )
    return helper.make_model(
        graph,
        opset_imports=[*OPSET, helper.make_opsetid("local", 1)],
        functions=[function],
    )


@pytest.mark.parametrize(
    "build",
    [_initializer, _constant_attribute, _if_subgraph, _sparse_initializer, _local_function],
    ids=["initializer", "constant-attribute", "if-subgraph", "sparse-initializer", "function"],
)
def test_a_model_reading_a_file_in_the_cwd_is_refused(
    build: Callable[[], onnx.ModelProto],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "secret.bin").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    data = build().SerializeToString()

    with pytest.raises(RegistryError) as caught:
        OnnxModel(data, what="model 'num' version 7")

    message = str(caught.value)
    assert "model 'num' version 7" in message and "external file" in message
    out, err = capfd.readouterr()
    for text in (message, out, err):
        assert "SECRET" not in text and "TOKEN-VALUE" not in text


def test_the_crafted_model_is_real_runtime_would_read_the_file(tmp_path: Path) -> None:
    """Without our check, ONNX Runtime does load the secret into the tensor: the test models
    above are an attack, not a malformed file that fails anyway."""
    import onnxruntime as ort

    (tmp_path / "secret.bin").write_bytes(SECRET)
    path = tmp_path / "model.onnx"
    path.write_bytes(_initializer().SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(["y"], {"x": np.zeros((1, 9), np.float32)})
    assert y.astype(np.float32).tobytes() == SECRET


def test_an_ordinary_export_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    (tmp_path / "secret.bin").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    target = (frame["a"] > 0).astype(int)
    model = LogisticRegression().fit(frame, target)

    data, report = export_onnx(model, frame, task="classification")

    assert data is not None, report
    onnx_model = OnnxModel(data, what="model 'lr' version 1")
    np.testing.assert_allclose(
        onnx_model.predict_proba(frame), model.predict_proba(frame), atol=1e-5
    )
