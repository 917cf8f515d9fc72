"""The Open Inference Protocol (KServe v2) as a real client speaks it, and as a careless one does.

``tritonclient`` is what Triton and KServe users already have: if it can read the metadata and
run ``infer`` in both of its encodings (JSON and binary tensors), so can their code. Malformed
requests go raw over httpx, since the client refuses to build them; each must be a 4xx in the
pinned error shape naming the tensor, never a 5xx.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from tests.gateway.servers import NUM_FIELDS, Running, gateway_project, running, trained

ERROR_KEYS = {"status", "code", "message", "field", "row", "request_id"}
MIXED_TYPES = {"grade": "BYTES", "years": "INT64", "amount": "FP64"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("v2") / "p", serve="  max_rows: 500\n")
    with running(config) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Running):
    c = triton.InferenceServerClient(url=gw.url.removeprefix("http://"))
    yield c
    c.close()


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The gateway's detail of an error, after checking the status and the protocol's shape:
    ``error`` is the message as a string, the detail sits beside it under ``details``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "details"} and isinstance(body["error"], str), body
    detail = body["details"]
    assert set(detail) == ERROR_KEYS and detail["message"] == body["error"], body
    assert detail["status"] == status
    assert detail["request_id"] == response.headers["x-request-id"]
    return detail


def tensor(name: str, values: np.ndarray, datatype: str, *, binary: bool) -> triton.InferInput:
    t = triton.InferInput(name, list(values.shape), datatype)
    t.set_data_from_numpy(values, binary_data=binary)
    return t


def outputs(binary: bool) -> list[triton.InferRequestedOutput]:
    return [
        triton.InferRequestedOutput("predictions", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]


def mixed_inputs(frame: pd.DataFrame, *, binary: bool) -> list[triton.InferInput]:
    return [
        tensor("grade", frame["grade"].to_numpy(dtype=object), "BYTES", binary=binary),
        tensor("years", frame["years"].to_numpy(dtype=np.int64), "INT64", binary=binary),
        tensor("amount", frame["amount"].to_numpy(dtype=np.float64), "FP64", binary=binary),
    ]


# -- health and metadata ---------------------------------------------------------------------


def test_server_and_models_are_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("num")
    assert client.is_model_ready("mixed")
    assert client.is_model_ready("num", model_version="2")  # staging's version
    assert not client.is_model_ready("num", model_version="3")
    assert not client.is_model_ready("no-such-model")


def test_server_metadata(gw: Running, client: triton.InferenceServerClient) -> None:
    assert gw.get("/v2").status_code == 200
    meta = client.get_server_metadata()
    assert meta["name"] == "conveyor"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_has_one_input_per_field_with_its_datatype(
    client: triton.InferenceServerClient,
) -> None:
    mixed = client.get_model_metadata("mixed")
    assert (mixed["name"], mixed["versions"]) == ("mixed", ["1"])
    assert {i["name"]: i["datatype"] for i in mixed["inputs"]} == MIXED_TYPES
    assert [i["name"] for i in mixed["inputs"]] == list(MIXED_TYPES)  # signature order
    assert {o["name"]: (o["datatype"], o["shape"]) for o in mixed["outputs"]} == {
        "predictions": ("INT64", [-1]),
        "probabilities": ("FP64", [-1, 2]),
    }
    num = client.get_model_metadata("num")
    assert [(i["name"], i["datatype"]) for i in num["inputs"]] == [(f, "FP64") for f in NUM_FIELDS]
    assert num["versions"] == ["1"]  # production, the default environment
    assert client.get_model_metadata("num", model_version="2")["versions"] == ["2"]


# -- infer -----------------------------------------------------------------------------------

ENCODINGS = pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(True, True), (False, False), (True, False), (False, True)],
    ids=["binary", "json", "binary-in-json-out", "json-in-binary-out"],
)


@ENCODINGS
def test_mixed_model_one_tensor_per_field(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    t = trained()
    frame = t["mixed_holdout"].head(120)
    if not binary_in:
        frame = frame.dropna()  # JSON has no NaN; a missing amount travels only as binary FP64
    else:
        assert frame["amount"].isna().any()  # the binary encoding carries the nulls
    result = client.infer(
        "mixed", mixed_inputs(frame, binary=binary_in), outputs=outputs(binary_out)
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("mixed", "1")
    for out in response["outputs"]:
        assert ("binary_data_size" in out.get("parameters", {})) is binary_out
    model = t["mixed"]
    np.testing.assert_array_equal(result.as_numpy("predictions"), model.predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), model.predict_proba(frame), rtol=1e-12, atol=0
    )


@ENCODINGS
def test_numeric_model_one_fp32_matrix_tensor(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    t = trained()
    X = t["num_holdout"].head(200).to_numpy(dtype=np.float32)
    result = client.infer(
        "num", [tensor("input", X, "FP32", binary=binary_in)], outputs=outputs(binary_out)
    )
    assert result.get_response()["model_version"] == "1"
    # The client sent float32: the model in process gets the same rounded values.
    frame = pd.DataFrame(X.astype(np.float64), columns=NUM_FIELDS)
    np.testing.assert_array_equal(result.as_numpy("predictions"), t["num_v1"].predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), t["num_v1"].predict_proba(frame), rtol=0, atol=1e-5
    )


def test_numeric_model_one_fp64_tensor_per_field(client: triton.InferenceServerClient) -> None:
    t = trained()
    frame = t["num_holdout"].head(50)
    inputs = [tensor(f, frame[f].to_numpy(np.float64), "FP64", binary=True) for f in NUM_FIELDS]
    result = client.infer("num", inputs)  # no outputs named: every output, binary by default
    np.testing.assert_array_equal(result.as_numpy("predictions"), t["num_v1"].predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), t["num_v1"].predict_proba(frame), rtol=0, atol=1e-5
    )


def test_versioned_path_answers_from_that_version(
    gw: Running, client: triton.InferenceServerClient
) -> None:
    t = trained()
    frame = t["num_holdout"].head(60)
    X = frame.to_numpy(np.float32)
    exact = pd.DataFrame(X.astype(np.float64), columns=NUM_FIELDS)
    for version, model in (("2", t["num_v2"]), ("1", t["num_v1"])):
        result = client.infer(
            "num", [tensor("input", X, "FP32", binary=True)], model_version=version
        )
        assert result.get_response()["model_version"] == version
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), model.predict_proba(exact), rtol=0, atol=1e-5
        )
    raw = gw.post(
        "/v2/models/num/versions/2/infer",
        json={"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [0.0] * 5}]},
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["model_version"] == "2"
    assert raw.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v2/models/num/versions/3/infer", "version_not_found"),
        ("/v2/models/num/versions/0/infer", "version_not_found"),
        ("/v2/models/num/versions/one/infer", "version_not_found"),
        ("/v2/models/no-such-model/infer", "model_not_found"),
    ],
)
def test_a_version_or_model_not_served_is_404(gw: Running, path: str, code: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [0.0] * 5}]}
    error = error_of(gw.post(path, json=body), 404)
    assert error["code"] == code


def test_tritonclient_sees_a_404_for_a_version_not_served(
    client: triton.InferenceServerClient,
) -> None:
    X = np.zeros((1, 5), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("num", [tensor("input", X, "FP32", binary=True)], model_version="3")
    assert caught.value.status() == "404"
    assert "Version 3 of 'num' is not served" in str(caught.value)


# -- malformed requests, raw -----------------------------------------------------------------


def mixed_body(**replace: dict[str, Any] | None) -> dict[str, Any]:
    """A valid two-row JSON request for ``mixed``; ``replace`` swaps (or drops) tensors."""
    tensors: dict[str, dict[str, Any] | None] = {
        "grade": {"name": "grade", "shape": [2], "datatype": "BYTES", "data": ["A", "C"]},
        "years": {"name": "years", "shape": [2], "datatype": "INT64", "data": [3, 12]},
        "amount": {"name": "amount", "shape": [2], "datatype": "FP64", "data": [900.0, 1.5e4]},
    }
    tensors.update(replace)
    return {"inputs": [t for t in tensors.values() if t is not None]}


def binary_request(
    inputs: list[dict[str, Any]], blobs: list[bytes], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: the JSON header, then the tensors' bytes."""
    head = json.dumps({"inputs": inputs, **extra}).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return head + b"".join(blobs), headers


def test_the_valid_request_the_malformed_ones_are_built_from(gw: Running) -> None:
    r = gw.post("/v2/models/mixed/infer", json=mixed_body())
    assert r.status_code == 200, r.text
    assert [o["shape"] for o in r.json()["outputs"]] == [[2], [2, 2]]


MALFORMED_JSON = [
    pytest.param(
        {"years": {"name": "years", "shape": [2], "datatype": "INT65", "data": [3, 12]}},
        400,
        "years",
        id="unknown-datatype",
    ),
    pytest.param(
        {"years": {"name": "years", "shape": [2], "datatype": "INT64", "data": [3, 1.5]}},
        400,
        "years",
        id="float-in-int64",
    ),
    pytest.param(
        {"years": {"name": "years", "shape": [2], "datatype": "INT64", "data": ["3", "12"]}},
        400,
        "years",
        id="strings-in-int64",
    ),
    pytest.param(
        {"grade": {"name": "grade", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}},
        422,
        "grade",
        id="numbers-for-a-string-field",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [2], "datatype": "BOOL", "data": [True, False]}},
        422,
        "amount",
        id="bools-for-a-number-field",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0]}},
        400,
        "amount",
        id="shape-says-3-data-has-2",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.0]}},
        400,
        "amount",
        id="fewer-rows-than-the-others",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [-2], "datatype": "FP64", "data": [1.0, 2.0]}},
        400,
        "amount",
        id="negative-shape",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [2], "datatype": "FP64", "data": "1.0, 2.0"}},
        400,
        "amount",
        id="data-not-an-array",
    ),
    pytest.param(
        {"amount": {"name": "amount", "shape": [2], "datatype": "FP64"}},
        400,
        "amount",
        id="no-data",
    ),
    pytest.param(
        {"bonus": {"name": "bonus", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}},
        400,
        "bonus",
        id="unknown-input",
    ),
    pytest.param({"years": None}, 400, "years", id="missing-input"),
    pytest.param(
        {"grade": {"name": "grade", "shape": [2], "datatype": "BYTES", "data": ["A", 7]}},
        400,
        "grade",
        id="number-in-bytes",
    ),
]


@pytest.mark.parametrize(("replace", "status", "field"), MALFORMED_JSON)
def test_malformed_json_tensors_are_4xx_naming_the_tensor(
    gw: Running, replace: dict[str, Any], status: int, field: str
) -> None:
    error = error_of(gw.post("/v2/models/mixed/infer", json=mixed_body(**replace)), status)
    assert error["field"] == field
    assert field in error["message"]


def test_a_tensor_sent_twice_or_an_unknown_output_is_named(gw: Running) -> None:
    body = mixed_body()
    body["inputs"].append(dict(body["inputs"][0]))
    error = error_of(gw.post("/v2/models/mixed/infer", json=body), 400)
    assert error["field"] == "grade" and "twice" in error["message"]
    body = {**mixed_body(), "outputs": [{"name": "logits"}]}
    error = error_of(gw.post("/v2/models/mixed/infer", json=body), 400)
    assert error["field"] == "logits" and "predictions" in error["message"]
    body = {**mixed_body(), "outputs": [{"name": ["predictions"]}]}  # was a 500
    error_of(gw.post("/v2/models/mixed/infer", json=body), 400)


def test_one_matrix_tensor_must_have_one_column_per_field(gw: Running) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [0.0] * 6}]}
    error = error_of(gw.post("/v2/models/num/infer", json=body), 400)
    assert error["field"] == "x" and "f0, f1, f2, f3, f4" in error["message"]


def test_more_rows_than_serve_max_rows_is_413(gw: Running) -> None:
    n = 501
    body = {"inputs": [{"name": "x", "shape": [n, 5], "datatype": "FP64", "data": [0.0] * n * 5}]}
    error = error_of(gw.post("/v2/models/num/infer", json=body), 413)
    assert error["code"] == "too_many_rows"


def _years_binary(values: list[int]) -> bytes:
    return np.asarray(values, dtype="<i8").tobytes()


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_a_valid_binary_request_by_hand(gw: Running) -> None:
    grade = _bytes_tensor([b"A", b"C"])
    years = _years_binary([3, 12])
    amount = np.asarray([900.0, np.nan], dtype="<f8").tobytes()
    inputs = [
        {
            "name": "grade",
            "shape": [2],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(grade)},
        },
        {
            "name": "years",
            "shape": [2],
            "datatype": "INT64",
            "parameters": {"binary_data_size": 16},
        },
        {
            "name": "amount",
            "shape": [2],
            "datatype": "FP64",
            "parameters": {"binary_data_size": 16},
        },
    ]
    body, headers = binary_request(inputs, [grade, years, amount])
    r = gw.post("/v2/models/mixed/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    frame = pd.DataFrame({"grade": ["A", "C"], "years": [3, 12], "amount": [900.0, np.nan]})
    data = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert data["predictions"] == trained()["mixed"].predict(frame).tolist()


def _binary_case(
    *, grade: bytes | None = None, grade_size: int | None = None, years: bytes | None = None
) -> tuple[bytes, dict[str, str]]:
    grade = _bytes_tensor([b"A", b"C"]) if grade is None else grade
    years = _years_binary([3, 12]) if years is None else years
    inputs = [
        {
            "name": "grade",
            "shape": [2],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(grade) if grade_size is None else grade_size},
        },
        {
            "name": "years",
            "shape": [2],
            "datatype": "INT64",
            "parameters": {"binary_data_size": len(years)},
        },
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
    ]
    return binary_request(inputs, [grade, years])


@pytest.mark.parametrize(
    ("case", "field"),
    [
        pytest.param(lambda: _binary_case(grade_size=10_000), "grade", id="size-beyond-the-body"),
        pytest.param(
            lambda: _binary_case(years=_years_binary([3])), "years", id="8-bytes-for-2-int64"
        ),
        pytest.param(
            lambda: _binary_case(years=np.asarray([3, 12], "<i4").tobytes()),
            "years",
            id="int32-bytes-for-int64",
        ),
        pytest.param(
            lambda: _binary_case(grade=_bytes_tensor([b"A"]) + b"\x09\x00"),
            "grade",
            id="bytes-cut-in-a-length-prefix",
        ),
        pytest.param(
            lambda: _binary_case(grade=_bytes_tensor([b"A", b"\xff\xfe"])),
            "grade",
            id="bytes-not-utf8",
        ),
        pytest.param(
            lambda: _binary_case(grade=_bytes_tensor([b"A", b"B", b"C"])),
            "grade",
            id="three-strings-for-shape-2",
        ),
    ],
)
def test_malformed_binary_tensors_are_400_naming_the_tensor(
    gw: Running, case: Any, field: str
) -> None:
    body, headers = case()
    error = error_of(gw.post("/v2/models/mixed/infer", content=body, headers=headers), 400)
    assert error["field"] == field, error


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("twelve", id="not-a-number"),
        pytest.param("-1", id="negative"),
        pytest.param("999999", id="beyond-the-body"),
        pytest.param("7", id="cuts-the-json"),
    ],
)
def test_a_bad_inference_header_content_length_is_400(gw: Running, header: str) -> None:
    body, headers = _binary_case()
    headers["inference-header-content-length"] = header
    error = error_of(gw.post("/v2/models/mixed/infer", content=body, headers=headers), 400)
    assert error["code"] == "invalid_request"


def test_binary_bytes_no_input_claims_are_400(gw: Running) -> None:
    body, headers = _binary_case()
    error = error_of(
        gw.post("/v2/models/mixed/infer", content=body + b"\0" * 8, headers=headers), 400
    )
    assert "not claimed" in error["message"]


def test_json_with_nan_from_the_client_is_400(gw: Running) -> None:
    # tritonclient writes float('nan') as the bare token NaN with binary_data=False.
    text = json.dumps(
        mixed_body(
            amount={"name": "amount", "shape": [2], "datatype": "FP64", "data": [float("nan"), 1.0]}
        )
    )
    r = gw.post(
        "/v2/models/mixed/infer", content=text, headers={"content-type": "application/json"}
    )
    error_of(r, 400)


# -- never a 5xx -----------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_NAMES = st.sampled_from(["grade", "years", "amount", "predictions", "probabilities", ""])
_DTYPES = st.sampled_from(["BOOL", "INT8", "INT64", "UINT8", "FP16", "FP32", "FP64", "BYTES"])
_TENSOR = st.fixed_dictionaries(
    {"name": _NAMES | _JSON, "datatype": _DTYPES | _JSON},
    optional={
        "shape": st.lists(st.integers(-1, 4), max_size=3) | _JSON,
        "data": st.lists(_JSON, max_size=6) | _JSON,
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 40)}) | _JSON,
    },
)


def _mutated(i: int, key: str, value: Any) -> list[dict[str, Any]]:
    """The valid inputs with one key of one tensor replaced (or, for ``None``, dropped)."""
    inputs = mixed_body()["inputs"]
    if value is None:
        inputs[i].pop(key, None)
    else:
        inputs[i][key] = value
    return inputs


# Mostly near-valid requests: wholly random ones stop at the first check and never reach the
# later ones (row counts, the model, the outputs).
_INPUTS = st.one_of(
    st.just(mixed_body()["inputs"]),
    st.builds(
        _mutated,
        st.integers(0, 2),
        st.sampled_from(["name", "shape", "datatype", "data", "parameters"]),
        _JSON | _DTYPES | _NAMES,
    ),
    st.builds(lambda i, t: mixed_body()["inputs"][:i] + [t], st.integers(0, 3), _TENSOR),
    st.lists(_TENSOR, max_size=4),
    _JSON,
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": _INPUTS},
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": _NAMES | _JSON},
                optional={"parameters": _JSON | st.just({"binary_data": True})},
            ),
            max_size=3,
        )
        | _JSON,
        "parameters": _JSON | st.just({"binary_data_output": True}),
        "id": _JSON,
    },
)


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_REQUEST, tail=st.binary(max_size=40), split=st.none() | st.integers(-5, 400))
def test_arbitrary_v2_requests_never_get_a_5xx(
    gw: Running, request: dict[str, Any], tail: bytes, split: int | None
) -> None:
    """Hypothesis writes the requests; ``split`` sets Inference-Header-Content-Length."""
    head = json.dumps(request).encode()
    headers = {"content-type": "application/json"}
    body = head
    if split is not None:
        headers["inference-header-content-length"] = str(min(split, len(head)))
        body = head + tail
    r = gw.post("/v2/models/mixed/infer", content=body, headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        error_of(r, r.status_code)
