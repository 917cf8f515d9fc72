"""KServe's own Python client (``kserve.InferenceRESTClient``, protocol v2) against a real gateway.

A team moving from KServe keeps its client code: it must read liveness and readiness, run
``infer`` with JSON and with binary tensors, and, on every error path, raise an error whose text
carries the gateway's message (the client reads ``error`` from a JSON body, so this holds only
while errors are ``{"error": "<string>"}``). The client has no metadata call; the metadata
answers are checked against KServe's own pydantic models of the protocol instead.

``kserve`` and ``mlserver`` register the same protobuf symbols and cannot be imported in one
process, so MLServer's types are checked in a subprocess (test_mlserver_types.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, InferResponse
from kserve.inference_client import RESTConfig
from kserve.protocol.rest.v2_datamodels import (
    InferenceResponse,
    ModelMetadataResponse,
    ServerMetadataResponse,
)

from tests.gateway.servers import NUM_FIELDS, Running, gateway_project, running, trained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("kserve") / "p", serve="  max_rows: 10\n")
    with running(config) as gateway:
        yield gateway


def call(method: Callable[[InferenceRESTClient], Awaitable[Any]]) -> Any:
    """Run one call of a fresh v2 client, as a script using the client would."""

    async def run() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            return await method(client)
        finally:
            await client.close()

    return asyncio.run(run())


def num_request(rows: int, *, binary: bool) -> InferRequest:
    values = trained()["num_holdout"].head(rows)[NUM_FIELDS].to_numpy(dtype=np.float32)
    tensor = InferInput("input", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=binary)
    return InferRequest("num", [tensor])


def mixed_request(**replace: InferInput) -> InferRequest:
    columns = {
        "grade": (np.array(["A", "C"], dtype=object), "BYTES"),
        "years": (np.array([3, 12], dtype=np.int64), "INT64"),
        "amount": (np.array([900.0, 15_000.0]), "FP64"),
    }
    inputs = []
    for name, (values, datatype) in columns.items():
        tensor = InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(replace.get(name, tensor))
    return InferRequest("mixed", inputs)


def test_liveness_and_readiness(gw: Running) -> None:
    assert call(lambda c: c.is_server_live(gw.url)) is True
    assert call(lambda c: c.is_server_ready(gw.url)) is True
    assert call(lambda c: c.is_model_ready(gw.url, "num")) is True
    assert call(lambda c: c.is_model_ready(gw.url, "no-such-model")) is False


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_the_model_served(gw: Running, binary: bool) -> None:
    result = call(lambda c: c.infer(gw.url, num_request(4, binary=binary), model_name="num"))
    assert isinstance(result, InferResponse) and result.model_name == "num"
    outputs = {output.name: output for output in result.outputs}
    frame = trained()["num_holdout"].head(4)
    expected = trained()["num_v1"].predict(frame)
    assert outputs["predictions"].as_numpy().tolist() == expected.tolist()
    probabilities = outputs["probabilities"].as_numpy()
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_infer_with_one_tensor_per_field_of_mixed_types(gw: Running) -> None:
    result = call(lambda c: c.infer(gw.url, mixed_request(), model_name="mixed"))
    outputs = {output.name: output.as_numpy() for output in result.outputs}
    assert outputs["predictions"].shape == (2,)


def test_metadata_answers_are_kserves_models(gw: Running) -> None:
    server = ServerMetadataResponse.model_validate(gw.get("/v2").json())
    assert server.name and server.version
    model = ModelMetadataResponse.model_validate(gw.get("/v2/models/mixed").json())
    assert model.name == "mixed"
    assert {t.name: t.datatype for t in model.inputs} == {
        "grade": "BYTES",
        "years": "INT64",
        "amount": "FP64",
    }
    raw = gw.post("/v2/models/mixed/infer", json=mixed_request().to_rest()[0])
    InferenceResponse.model_validate(raw.json())


def _unknown_model(c: InferenceRESTClient, url: str) -> Awaitable[Any]:
    return c.infer(url, num_request(1, binary=False), model_name="no-such-model")


FP16_TENSOR = {"name": "input", "shape": [1, 5], "datatype": "FP16", "data": [0.5] * 5}

# Each error path a KServe client user can reach: the status, and words of the server's message.
ERRORS = [
    pytest.param(_unknown_model, 404, "No model 'no-such-model'", id="unknown-model"),
    pytest.param(
        lambda c, url: c.infer(url, num_request(11, binary=True), model_name="num"),
        413,
        "at most 10",
        id="too-many-rows",
    ),
    pytest.param(
        # The client refuses to build FP16 in JSON itself; a dict is sent as it is.
        lambda c, url: c.infer(url, {"inputs": [FP16_TENSOR]}, model_name="num"),
        400,
        "FP16",
        id="fp16-in-json",
    ),
    pytest.param(
        lambda c, url: c.infer(
            url, InferRequest("num", [InferInput("input", [1, 4], "FP64", [0.0] * 4)]), "num"
        ),
        400,
        "must hold 5 numbers per row",
        id="bad-shape",
    ),
    pytest.param(
        lambda c, url: c.infer(
            url,
            mixed_request(years=InferInput("years", [2], "BOOL", [True, False])),
            "mixed",
        ),
        422,
        "years",
        id="bad-datatype",
    ),
    pytest.param(
        lambda c, url: c.infer(url, mixed_request(), model_name="num"),
        400,
        "'grade'",
        id="unknown-input",
    ),
]


@pytest.mark.parametrize(("method", "status", "words"), ERRORS)
def test_the_client_raises_with_the_servers_message(
    gw: Running, method: Any, status: int, words: str
) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        call(lambda c: method(c, gw.url))
    assert caught.value.response.status_code == status
    text = str(caught.value)
    # The client writes "<the body's error>, '<status> <reason>' for url ..." when it could
    # read the error string; with the old error object it wrote the whole dict instead.
    message = caught.value.response.json()["error"]
    assert text.startswith(f"{message}, '{status} "), text
    assert words in message, message
