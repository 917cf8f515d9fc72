"""What the Open Inference Protocol's spec and its real clients expect of the gateway.

Errors are ``{"error": "<message>"}`` (the gateway's detail beside it under ``details``), so
``tritonclient``'s ``InferenceServerException`` prints the server's message on every error path
instead of failing in ``str()``. Health answers are 200 (true) or a 4xx (false), to GET and
HEAD alike. Requests Triton and KServe refuse are refused here too: JSON tensors nested deeper
than 100 lists, FP16 in JSON, an output asked for twice.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.gateway.servers import Running, gateway_project, running

MIXED = {"grade": ["A", "C"], "years": [3, 12], "amount": [1000.0, 2500.0]}
TYPES = {"grade": "BYTES", "years": "INT64", "amount": "FP64"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("v2c") / "p", serve="  max_rows: 10\n")
    with running(config) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Running):
    c = triton.InferenceServerClient(url=gw.url.removeprefix("http://"))
    yield c
    c.close()


def body(**replace: Any) -> dict[str, Any]:
    inputs = []
    for name, data in MIXED.items():
        spec = {"name": name, "shape": [2], "datatype": TYPES[name], "data": data}
        inputs.append(replace.get(name, spec))
    return {"inputs": inputs}


def message_of(response: Any, status: int) -> str:
    """The protocol's error string, after checking the status and the shape."""
    assert response.status_code == status, response.text
    error = response.json()
    assert isinstance(error["error"], str) and set(error) == {"error", "details"}, error
    assert error["details"]["message"] == error["error"]
    return str(error["error"])


def _num_input(rows: int, datatype: str = "FP32", binary: bool = True) -> triton.InferInput:
    t = triton.InferInput("input", [rows, 5], datatype)
    t.set_data_from_numpy(np.zeros((rows, 5), dtype=np.float32), binary_data=binary)
    return t


def _mixed_inputs(years: np.ndarray, binary: bool = True) -> list[triton.InferInput]:
    out = []
    for name, values in (
        ("grade", np.array(["A", "B"], dtype=object)),
        ("years", years),
        ("amount", np.array([1.0, 2.0])),
    ):
        datatype = {"grade": "BYTES", "years": str(triton.np_to_triton_dtype(years.dtype))}.get(
            name, "FP64"
        )
        t = triton.InferInput(name, list(values.shape), datatype)
        t.set_data_from_numpy(values, binary_data=binary)
        out.append(t)
    return out


# Each error path a tritonclient user can reach, with words the server's message must carry.
CLIENT_ERRORS = [
    pytest.param(lambda c: c.infer("nope", [_num_input(1)]), "404", "No model 'nope'", id="model"),
    pytest.param(
        lambda c: c.infer("num", [_num_input(1)], model_version="7"),
        "404",
        "Version 7 of 'num' is not served",
        id="version",
    ),
    pytest.param(
        lambda c: c.infer("num", [_num_input(11)]), "413", "at most 10", id="too-many-rows"
    ),
    pytest.param(
        lambda c: c.infer("mixed", [_num_input(1)]),
        "400",
        "'input'",
        id="unknown-input",
    ),
    pytest.param(
        lambda c: c.infer("mixed", _mixed_inputs(np.array([True, False]))),
        "422",
        "years",
        id="bools-for-an-integer",
    ),
    pytest.param(
        lambda c: c.infer(
            "num",
            [_num_input(1)],
            outputs=[triton.InferRequestedOutput("predictions")] * 2,
        ),
        "400",
        "asked for twice",
        id="output-twice",
    ),
    pytest.param(
        lambda c: c.infer("num", [_num_input(1)], outputs=[triton.InferRequestedOutput("x")]),
        "400",
        "The output 'x' does not exist",
        id="unknown-output",
    ),
    pytest.param(lambda c: c.get_model_metadata("nope"), "404", "No model 'nope'", id="metadata"),
    pytest.param(
        lambda c: c.get_model_metadata("num", model_version="one"),
        "404",
        "Versions are positive integers",
        id="metadata-version",
    ),
]


@pytest.mark.parametrize(("call", "status", "words"), CLIENT_ERRORS)
def test_tritonclient_prints_the_servers_message_on_every_error_path(
    client: triton.InferenceServerClient, call: Any, status: str, words: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(client)
    assert caught.value.status() == status
    text = str(caught.value)  # raised TypeError with the old error object
    assert words in text, text
    assert isinstance(caught.value.message(), str)


def test_json_tensors_nested_deeper_than_100_lists_are_refused(gw: Running) -> None:
    def nested(values: list[float], depth: int) -> Any:
        data: Any = values
        for _ in range(depth - 1):
            data = [data]
        return data

    ok = {"name": "amount", "shape": [2], "datatype": "FP64", "data": nested([1.0, 2.0], 100)}
    assert gw.post("/v2/models/mixed/infer", json=body(amount=ok)).status_code == 200
    deep = dict(ok, data=nested([1.0, 2.0], 120))
    text = message_of(gw.post("/v2/models/mixed/infer", json=body(amount=deep)), 400)
    assert "'amount'" in text and "deeper than 100" in text


def test_fp16_in_json_is_refused_and_fp16_as_binary_is_served(
    gw: Running, client: triton.InferenceServerClient
) -> None:
    half = {"name": "input", "shape": [1, 5], "datatype": "FP16", "data": [0.5] * 5}
    text = message_of(gw.post("/v2/models/num/infer", json={"inputs": [half]}), 400)
    assert "FP16" in text and "binary" in text
    t = triton.InferInput("input", [2, 5], "FP16")
    t.set_data_from_numpy(np.full((2, 5), 0.5, dtype=np.float16), binary_data=True)
    result = client.infer("num", [t])
    assert result.as_numpy("predictions").shape == (2,)


def test_an_output_asked_for_twice_is_refused_raw(gw: Running) -> None:
    request = body()
    request["outputs"] = [{"name": "probabilities"}, {"name": "probabilities"}]
    text = message_of(gw.post("/v2/models/mixed/infer", json=request), 400)
    assert "'probabilities' is asked for twice" in text


@pytest.mark.parametrize(
    "path",
    [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/num/ready",
        "/v2/models/num/versions/1/ready",
    ],
)
def test_health_routes_answer_head_like_get(gw: Running, path: str) -> None:
    get = gw.get(path)
    head = gw.client.head(gw.url + path)
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-length"] == str(len(get.content))


def test_while_nothing_is_loaded_readiness_is_a_4xx_and_liveness_200(tmp_path: Path) -> None:
    """The spec: a health answer is 200 for true and a 4xx for false (Kubernetes probes treat
    both 4xx and 5xx as failure; Triton answers 400). Here the models cannot load (their files
    are gone), so they stay routed and not ready."""
    config = gateway_project(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / ".conveyor" / "artifacts")
    with running(config, ready=False) as gw:
        deadline = time.monotonic() + 30
        while not gw.gateway.router.failed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.gateway.router.failed
        assert gw.get("/v2/health/live").status_code == 200
        assert gw.client.head(gw.url + "/v2/health/live").status_code == 200
        assert "Not ready" in message_of(gw.get("/v2/health/ready"), 400)
        assert gw.client.head(gw.url + "/v2/health/ready").status_code == 400
        assert "not loaded" in message_of(gw.get("/v2/models/num/ready"), 400)
        assert gw.get("/readyz").status_code == 503  # the gateway's own probe keeps its 503
        c = triton.InferenceServerClient(url=gw.url.removeprefix("http://"))
        try:
            assert c.is_server_live() and not c.is_server_ready()
            assert not c.is_model_ready("num")
        finally:
            c.close()


def test_errors_of_paths_outside_the_table_under_v2_are_the_protocols(gw: Running) -> None:
    assert "No endpoint" in message_of(gw.get("/v2/nothing/here"), 404)
    r = gw.client.delete(gw.url + "/v2/health/live")
    assert "use GET or HEAD" in message_of(r, 405)
