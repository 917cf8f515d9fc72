"""The JSON predict endpoint on a real gateway: answers, validation, limits and the error shape."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import orjson
import pytest

from tests.gateway.servers import gateway_project, running, trained

ERROR_KEYS = {"status", "code", "message", "field", "row", "request_id"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(
        tmp_path_factory.mktemp("gw") / "p", serve="  max_rows: 50\n  max_body_mb: 0.05\n"
    )
    with running(config) as gateway:
        yield gateway


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["status"] == status
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


def test_numeric_model_answers_like_the_model_in_process(gw) -> None:
    t = trained()
    frame = t["num_holdout"].head(40)
    r = gw.predict("num", frame.values.tolist())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["environment"]) == ("num", 1, "production")
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["predictions"] == t["num_v1"].predict(frame).tolist()
    expected = t["num_v1"].predict_proba(frame)
    assert np.allclose(body["probabilities"], expected, atol=1e-5)  # ONNX runs in float32
    assert body["classes"] == [0, 1]


def test_records_and_arrays_give_the_same_answer(gw) -> None:
    frame = trained()["num_holdout"].head(5)
    as_rows = gw.predict("num", frame.values.tolist()).json()
    as_records = gw.predict("num", frame.to_dict(orient="records")).json()
    assert as_rows["predictions"] == as_records["predictions"]
    assert as_rows["probabilities"] == as_records["probabilities"]


def test_mixed_model_is_served_natively_with_nulls_where_allowed(gw) -> None:
    t = trained()
    frame = t["mixed_holdout"].head(30)
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    assert any(r["amount"] is None for r in records)
    body = gw.predict("mixed", records).json()
    assert body["predictions"] == t["mixed"].predict(frame).tolist()
    assert np.allclose(body["probabilities"], t["mixed"].predict_proba(frame), atol=1e-12)
    assert gw.get("/v1/models/mixed").json()["environments"]["production"]["runtime"] == "native"


def test_environment_by_query_or_header(gw) -> None:
    row = trained()["num_holdout"].head(1).values.tolist()
    assert gw.predict("num", row, params={"env": "staging"}).json()["version"] == 2
    assert gw.predict("num", row, headers={"x-conveyor-env": "staging"}).json()["version"] == 2
    error = error_of(gw.predict("num", row, params={"env": "canary"}), 404)
    assert error["code"] == "environment_not_found"
    assert "production, staging" in error["message"]


@pytest.mark.parametrize(
    ("rows", "field", "row", "words"),
    [
        ([{"f0": 1, "f1": 2, "f2": 3, "f3": 4}], "f4", 0, "missing the field 'f4'"),
        ([{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": 5, "zz": 1}], "zz", 0, "not in the model"),
        ([[1, 2, 3, 4, 5], [1, 2, "x", 4, 5]], "f2", 1, "should be a number"),
        ([[1, 2, 3, 4, 5], [1, 2, 3, None, 5]], "f3", 1, "not nullable"),
        ([[1, 2, 3, 4, 5], [1, 2, 3]], None, 1, "has 3 values"),
        ([[1, 2, 3, 4, True]], "f4", 0, "boolean"),
    ],
)
def test_bad_rows_name_the_field_and_row(gw, rows, field, row, words) -> None:
    error = error_of(gw.predict("num", rows), 422)
    assert error["code"] == "invalid_input"
    assert (error["field"], error["row"]) == (field, row)
    assert words in error["message"]


def test_bad_rows_of_the_mixed_model(gw) -> None:
    good = {"grade": "A", "years": 3, "amount": 100.0}
    error = error_of(gw.predict("mixed", [good, {**good, "years": 2.5}]), 422)
    assert (error["field"], error["row"]) == ("years", 1)
    error = error_of(gw.predict("mixed", [good, good, {**good, "grade": 7}]), 422)
    assert (error["field"], error["row"]) == ("grade", 2)
    # an unknown category is the model's business (the encoder ignores it), not an error
    assert gw.predict("mixed", [{**good, "grade": "Z"}]).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_request"),
        (b'{"rows": []}', 400, "invalid_request"),
        (b'{"instances": [], "extra": 1}', 400, "invalid_request"),
        (b'{"instances": []}', 422, "invalid_input"),
        (b'{"instances": 5}', 422, "invalid_input"),
        (b'{"instances": [5]}', 422, "invalid_input"),
        (b"", 400, "invalid_json"),
        (b'{"instances": [[1, 2, 3, 4, 1e400]]}', 400, "invalid_json"),
    ],
)
def test_malformed_bodies_are_4xx_with_the_error_shape(gw, body, status, code) -> None:
    r = gw.post("/v1/models/num/predict", content=body)
    assert error_of(r, status)["code"] == code


def test_limits_on_rows_and_body_size(gw) -> None:
    row = [0.0] * 5
    error = error_of(gw.predict("num", [row] * 51), 422)
    assert error["row"] == 50 and "at most 50" in error["message"]
    big = b'{"instances": [' + b",".join([b"[0.1,0.2,0.3,0.4,0.5]"] * 3000) + b"]}"
    assert len(big) > 0.05 * 1024 * 1024
    assert error_of(gw.post("/v1/models/num/predict", content=big), 413)["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(3000):
            yield b"[0.1,0.2,0.3,0.4,0.5],"

    r = gw.post("/v1/models/num/predict", content=chunks())
    assert error_of(r, 413)["code"] == "body_too_large"


def test_unknown_paths_models_and_methods(gw) -> None:
    error = error_of(gw.predict("nope", [[1]]), 404)
    assert error["code"] == "model_not_found" and "mixed, num" in error["message"]
    assert error_of(gw.get("/v1/models/num/predict"), 405)["code"] == "method_not_allowed"
    assert gw.get("/v1/models/num/predict").headers["allow"] == "POST"
    assert error_of(gw.get("/nothing/here"), 404)["code"] == "not_found"
    long_name = "x" * 5000
    message = error_of(gw.predict(long_name, [[1]]), 404)["message"]
    assert len(message) < 400  # request values are quoted cut short, never echoed whole
    assert error_of(gw.get("/v1/models/../../etc/passwd"), 404)["status"] == 404


def test_health_readiness_and_description(gw) -> None:
    assert gw.get("/healthz").json() == {"status": "ok"}
    ready = gw.get("/readyz").json()
    assert ready["ready"] and ready["routes"] == {
        "mixed@production": 1,
        "num@production": 1,
        "num@staging": 2,
    }
    models = {m["name"]: m for m in gw.get("/v1/models").json()["models"]}
    assert models["num"]["environments"]["staging"] == {"version": 2, "runtime": "onnx"}
    assert [f["name"] for f in models["num"]["signature"]["inputs"]] == [
        "f0",
        "f1",
        "f2",
        "f3",
        "f4",
    ]


def test_every_response_has_a_distinct_request_id(gw) -> None:
    ids = {gw.get("/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


def test_concurrent_requests_share_predict_calls_and_each_gets_its_own_rows(gw) -> None:
    """Drive the ASGI app directly: requests started in one loop turn form one batch."""
    frame = trained()["num_holdout"].head(16)
    gateway = gw.gateway
    before = _batch_count(gateway)

    async def call(rows):
        body = orjson.dumps({"instances": rows})
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/models/num/predict",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await gateway(scope, receive, send)
        return sent[0]["status"], orjson.loads(sent[1]["body"])

    async def main():
        return await asyncio.gather(*(call([row]) for row in frame.values.tolist()))

    results = asyncio.run_coroutine_threadsafe(main(), _loop_of(gateway)).result(30)
    assert [s for s, _ in results] == [200] * 16
    expected = trained()["num_v1"].predict(frame).tolist()
    assert [b["predictions"][0] for _s, b in results] == expected
    assert _batch_count(gateway) - before < 16  # fewer predict calls than requests


def test_past_the_queue_bound_requests_get_a_fast_503(gw) -> None:
    gateway = gw.gateway
    frame = trained()["num_holdout"].head(12)
    old = gateway.max_queue
    gateway.max_queue = 4

    async def main():
        async def one(rows):
            sent = []
            messages = [{"type": "http.request", "body": orjson.dumps({"instances": rows})}]

            async def receive():
                return messages.pop(0)

            async def send(message):
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/v1/models/num/predict",
                "query_string": b"",
                "headers": [],
            }
            await gateway(scope, receive, send)
            return sent[0]

        return await asyncio.gather(*(one([r]) for r in frame.values.tolist()))

    try:
        starts = asyncio.run_coroutine_threadsafe(main(), _loop_of(gateway)).result(30)
    finally:
        gateway.max_queue = old
    statuses = [s["status"] for s in starts]
    assert statuses.count(200) == 4 and statuses.count(503) == 8
    shed = next(s for s in starts if s["status"] == 503)
    assert (b"retry-after", b"1") in shed["headers"]


def _loop_of(gateway):
    return gateway.watcher.loop


def _batch_count(gateway) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = gateway.metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "conveyor_batch_rows":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_count") and s.labels["model"] == "num"
            )
    return 0.0
