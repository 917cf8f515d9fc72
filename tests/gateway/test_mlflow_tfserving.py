"""MLflow's and TensorFlow Serving's clients work against the gateway unchanged.

MLflow: its own scoring-server client (``mlflow.pyfunc.scoring_server.client``) pings and
invokes ``/invocations`` with a DataFrame, a list of records and an array, as it would an MLflow
model server, and every documented body format answers ``{"predictions": [...]}``; errors are
MLflow's ``{"error_code": ..., "message": ...}``. TensorFlow Serving: the request and response
pairs of its REST API documentation (row and columnar formats, ``signature_name``) over our
models' signatures; errors are ``{"error": "<message>"}``. Both go through the same predict
path as the JSON API: the same answers, and the request log records them under role serve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.servers import (
    TOKEN,
    Running,
    gateway_project,
    load,
    running,
    trained,
    write_project,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("foreign") / "p", serve="  max_rows: 50\n")
    with running(config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory):
    """A gateway serving one model (mixed), so /invocations needs no ?model=."""
    from conveyor.actions.models import register_fitted

    root = write_project(tmp_path_factory.mktemp("single") / "p")
    config = load(root)
    t = trained()
    register_fitted(
        config,
        t["mixed"],
        t["mixed_holdout"],
        name="mixed",
        task="classification",
        aliases=("production",),
        onnx=False,
    )
    with running(config) as gateway:
        yield gateway


def mixed_frame(n: int = 6):
    return trained()["mixed_holdout"].head(n)


def as_json(frame: Any) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """A frame's rows as records and as columns, the same values in both (JSON's own)."""
    split = json.loads(frame.to_json(orient="split"))
    records = [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
    columns = {c: [r[c] for r in records] for c in split["columns"]}
    return records, columns


@pytest.fixture(scope="module")
def scoring_client() -> Any:
    """MLflow's own scoring-server client class (its import warns about its own type hints)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient
    return ScoringServerClient


def json_api(gw: Running, model: str, rows: Any) -> dict[str, Any]:
    r = gw.predict(model, rows)
    assert r.status_code == 200, r.text
    return r.json()


# -- MLflow ----------------------------------------------------------------------------------


def test_mlflow_scoring_client_pings_and_invokes(single: Running, scoring_client: Any) -> None:
    host, port = single.url.removeprefix("http://").split(":")
    client = scoring_client(host, int(port))
    client.wait_server_ready(timeout=10)
    frame = mixed_frame(40)
    assert frame["amount"].isna().any()  # MLflow's client writes the bare NaN token for it
    expected = json_api(single, "mixed", json.loads(frame.to_json(orient="records")))
    got = client.invoke(frame).get_predictions(predictions_format="ndarray")
    assert got.tolist() == expected["predictions"]
    records = client.invoke(json.loads(frame.to_json(orient="records")))
    assert records.get_predictions(predictions_format="ndarray").tolist() == expected["predictions"]
    params = client.invoke(frame, params={"threshold": 0.5})  # accepted, and ignored
    assert params.get_predictions(predictions_format="ndarray").tolist() == expected["predictions"]


def test_mlflow_client_sees_a_bad_request_with_the_servers_message(
    single: Running, scoring_client: Any
) -> None:
    host, port = single.url.removeprefix("http://").split(":")
    client = scoring_client(host, int(port))
    frame = mixed_frame(2).drop(columns=["years"])
    with pytest.raises(Exception, match="error code 400") as caught:
        client.invoke(frame)
    body = json.loads(str(caught.value).split("response: ", 1)[1].rstrip(")"))
    assert body["error_code"] == "BAD_REQUEST" and "years" in body["message"]


def _mlflow_bodies() -> dict[str, dict[str, Any]]:
    frame = mixed_frame(3).fillna({"amount": 0.0})
    records, columns = as_json(frame)
    split = json.loads(frame.to_json(orient="split"))
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_split_no_index": {
            "dataframe_split": {"columns": split["columns"], "data": split["data"]}
        },
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "instances_columns": {"instances": columns},
        "inputs_columns": {"inputs": columns},
        "inputs_rows": {"inputs": [list(r.values()) for r in records]},
        "with_params": {"dataframe_records": records, "params": {"k": 1}},
    }


@pytest.mark.parametrize("case", list(_mlflow_bodies()))
def test_every_mlflow_format_answers_like_the_json_api(single: Running, case: str) -> None:
    expected = json_api(single, "mixed", as_json(mixed_frame(3).fillna({"amount": 0.0}))[0])
    r = single.post("/invocations", json=_mlflow_bodies()[case])
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected["predictions"]}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param({"dataframe_records": [{"grade": "A", "years": 3}]}, 400, "amount", id="miss"),
        pytest.param({"dataframe_records": [], "instances": []}, 400, "exactly one", id="two"),
        pytest.param({"rows": []}, 400, "'rows'", id="unknown-key"),
        pytest.param(
            {"dataframe_split": {"columns": ["grade", "years", "amount"], "data": [["A", 1]]}},
            400,
            "row 0",
            id="short-row",
        ),
        pytest.param({"inputs": {"grade": ["A"], "years": [1, 2]}}, 400, "'years'", id="ragged"),
        pytest.param({"dataframe_records": [{"a": 1}], "params": [1]}, 400, "params", id="params"),
    ],
)
def test_mlflow_errors_are_mlflows_shape_naming_the_field(
    single: Running, body: dict[str, Any], status: int, words: str
) -> None:
    r = single.post("/invocations", json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"error_code", "message"} and error["error_code"] == "BAD_REQUEST"
    assert words in error["message"], error


def test_mlflow_refuses_csv_and_answers_ping_and_health(single: Running) -> None:
    r = single.post("/invocations", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "application/json" in r.json()["message"]
    for path in ("/ping", "/health"):
        assert single.get(path).status_code == 200
        assert single.client.head(single.url + path).status_code == 200
    assert single.get("/ping", params={"env": "nowhere"}).status_code == 404


def test_invocations_picks_the_model_by_query_when_several_are_served(gw: Running) -> None:
    rows = trained()["num_holdout"].head(4).values.tolist()
    r = gw.post("/invocations", json={"inputs": rows})
    assert r.status_code == 400 and "?model=" in r.json()["message"]
    r = gw.post("/invocations", params={"model": "num"}, json={"inputs": rows})
    assert r.json() == {"predictions": json_api(gw, "num", rows)["predictions"]}
    staging = gw.post(
        "/invocations", params={"model": "num", "env": "staging"}, json={"inputs": rows}
    )
    assert staging.status_code == 200
    pinned = gw.post("/invocations", params={"model": "num", "version": "2"}, json={"inputs": rows})
    assert pinned.status_code == 401 and pinned.json()["error_code"] == "UNAUTHENTICATED"


# -- TensorFlow Serving ----------------------------------------------------------------------


def test_tf_row_format_as_documented(gw: Running) -> None:
    # The docs' multi-input row format: one object per instance, keyed by input name.
    records = json.loads(mixed_frame(3).fillna({"amount": 1.0}).to_json(orient="records"))
    expected = json_api(gw, "mixed", records)
    r = gw.post("/v1/models/mixed:predict", json={"instances": records})
    assert r.status_code == 200, r.text
    # Two named outputs: "a list of objects instead", one per row.
    assert r.json() == {
        "predictions": [
            {"predictions": p, "probabilities": q}
            for p, q in zip(expected["predictions"], expected["probabilities"], strict=True)
        ]
    }


def test_tf_columnar_format_and_signature_name(gw: Running) -> None:
    records, columns = as_json(mixed_frame(3).fillna({"amount": 1.0}))
    expected = json_api(gw, "mixed", records)
    body = {"signature_name": "serving_default", "inputs": columns}
    r = gw.post("/v1/models/mixed:predict", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "outputs": {
            "predictions": expected["predictions"],
            "probabilities": expected["probabilities"],
        }
    }
    rows = trained()["num_holdout"].head(2).values.tolist()
    r = gw.post("/v1/models/num:predict", json={"inputs": rows})  # one [rows, fields] tensor
    assert r.json()["outputs"]["predictions"] == json_api(gw, "num", rows)["predictions"]


def test_tf_accepts_the_nan_token_its_json_allows(gw: Running) -> None:
    text = '{"instances": [{"grade": "A", "years": 3, "amount": NaN}]}'
    r = gw.post("/v1/models/mixed:predict", content=text)
    assert r.status_code == 200, r.text
    nan_row = [{"grade": "A", "years": 3, "amount": None}]
    assert (
        r.json()["predictions"][0]["predictions"]
        == json_api(gw, "mixed", nan_row)["predictions"][0]
    )


def test_tf_versioned_predict_is_pinned_and_needs_the_token(gw: Running) -> None:
    rows = trained()["num_holdout"].head(3).values.tolist()
    r = gw.post("/v1/models/num/versions/2:predict", json={"instances": rows})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    r = gw.post("/v1/models/num/versions/2:predict", json={"instances": rows}, headers=AUTH)
    assert r.status_code == 200, r.text
    v2 = gw.predict("num", rows, params={"version": 2}, headers=AUTH).json()
    assert [p["predictions"] for p in r.json()["predictions"]] == v2["predictions"]
    missing = gw.post("/v1/models/num/versions/9:predict", json={"instances": rows}, headers=AUTH)
    assert missing.status_code == 404 and "Version 9" in missing.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        # The docs' own error example: a model the server does not have.
        ("/v1/models/half:predict", {"instances": [1.0, 5.0]}, 404, "'half'"),
        ("/v1/models/num:predict", {"instances": [[1.0, 2.0]]}, 400, "Row 0"),
        ("/v1/models/mixed:predict", {"instances": [{"grade": "A", "years": 1}]}, 400, "amount"),
        ("/v1/models/num:predict", {"signature_name": "classify", "instances": []}, 400, "serving"),
        ("/v1/models/num:predict", {"instances": [], "inputs": []}, 400, "exactly one"),
        ("/v1/models/num:predict", {"examples": []}, 400, "'examples'"),
        ("/v1/models/num:predict", [1, 2], 400, "JSON object"),
        ("/v1/models/num:predict", {"inputs": {"f0": [1.0], "f1": [1.0, 2.0]}}, 400, "'f1'"),
        ("/v1/models/num:predict", {"instances": [[0.0] * 5] * 51}, 400, "51 rows"),
    ],
)
def test_tf_errors_are_tf_servings_shape(
    gw: Running, path: str, body: Any, status: int, words: str
) -> None:
    r = gw.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    assert words in r.json()["error"], r.json()


def test_get_on_predict_names_post_not_get(gw: Running) -> None:
    r = gw.get("/v1/models/num:predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "use POST" in r.json()["error"]


def test_every_format_is_logged_under_role_serve(tmp_path: Path) -> None:
    from tests.gateway.test_requestlog import logged

    config = gateway_project(tmp_path / "p")
    rows = trained()["num_holdout"].head(2).values.tolist()
    with running(config) as gw:
        assert gw.post("/v1/models/num:predict", json={"instances": rows}).status_code == 200
        r = gw.post("/invocations", params={"model": "num"}, json={"inputs": rows})
        assert r.status_code == 200
        assert gw.post("/v1/models/num:predict", json={"instances": [[1]]}).status_code == 400
    entries = logged(config)
    # The log keeps the gateway's own status (422: rows that do not fit), whatever the format
    # answered its client with (TF Serving's 400).
    assert [(e.role, e.status, e.rows, e.model) for e in entries] == [
        ("serve", 200, 2, "num"),
        ("serve", 200, 2, "num"),
        ("serve", 422, 0, "num"),
    ]
    assert json.loads(entries[0].inputs) == rows
