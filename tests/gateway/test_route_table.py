"""The one route table: the dispatcher routes by it, and /docs and /openapi.json list all of it.

Checked both ways on a real gateway: every route of the table is in the document (once per
served model for the model routes), and every operation in the document answers (never the
dispatcher's 404 or 405).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.gateway.app import Gateway
from conveyor.gateway.routes import ROUTES, Route, RouteTable
from tests.gateway.servers import TOKEN, Running, gateway_project, running, trained

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODELS = ("mixed", "num")
PREDICTS = ("_predict", "_tf_predict", "_mlflow_invocations")  # the token only to pin or mark


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("routes") / "p")
    with running(config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def document(gw: Running) -> dict[str, Any]:
    return gw.get("/openapi.json").json()


def test_every_handler_of_the_table_exists_and_every_route_is_distinct() -> None:
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    for route in ROUTES:
        assert callable(getattr(Gateway, route.handler, None)), route
    with pytest.raises(ValueError, match="Two routes for GET /healthz"):
        RouteTable((*ROUTES, Route("GET", "/healthz", "_healthz", "again")))


def test_the_table_matches_fixed_paths_patterns_and_nothing_else() -> None:
    table = RouteTable()
    methods, params = table.match("/healthz") or ({}, {})
    assert set(methods) == {"GET", "HEAD"} and params == {}
    methods, params = table.match("/v1/models/num/predict") or ({}, {})
    assert list(methods) == ["POST"] and params == {"model": "num"}
    assert table.match("/v1/models/num/predict") == (methods, params)  # remembered
    _, params = table.match("/v2/models/num/versions/3/infer") or ({}, {})
    assert params == {"model": "num", "version": "3"}
    assert table.match("/v2/") == table.match("/v2")
    for path in ("/", "/nope", "/v1/models//predict", "/v1/models/num/predict/x", "/v3/models"):
        assert table.match(path) is None, path


def test_remembered_matches_are_bounded() -> None:
    table = RouteTable()
    for i in range(5000):
        assert table.match(f"/v1/models/m{i}/predict") is not None
    assert len(table._cache) <= 4096
    assert table.match("/healthz") is not None  # fixed paths survive the bound


def operations(route: Route) -> list[str]:
    if not route.per_model:
        return [route.path]
    return [route.path.replace("{model}", model) for model in MODELS]


def test_every_route_of_the_table_is_in_the_document(document: dict[str, Any]) -> None:
    expected = {(path, r.method.lower()) for r in ROUTES for path in operations(r)}
    listed = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert listed == expected
    assert len(document["paths"]) >= 30  # 8 before the table
    for route in ROUTES:
        for path in operations(route):
            op = document["paths"][path][route.method.lower()]
            assert ("security" in op and {"bearer": []} in op["security"]) == (
                route.auth or route.handler in PREDICTS
            ), path
            assert set(op["responses"]) == {"200", *map(str, route.errors)}, path


def test_the_docs_page_lists_every_operation(gw: Running, document: dict[str, Any]) -> None:
    page = gw.get("/docs").text
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
    # feedback, status, reload, and TF Serving's pinned predict of each model
    assert page.count("admin token") == 3 + len(MODELS)


def _concrete(path: str, op: dict[str, Any]) -> str:
    for param in op.get("parameters", []):
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", str(param["schema"]["enum"][0]))
    return path


def _body(path: str) -> Any:
    row = trained()["num_holdout"].head(1).values.tolist()
    if path == "/v1/models/num/predict":
        return {"instances": row}
    if path == "/v1/models/mixed/predict":
        return {"instances": trained()["mixed_holdout"].head(1).to_dict(orient="records")}
    if path == "/v1/feedback":
        return {"request_id": "not-logged", "label": 1}
    if path.endswith("/infer"):
        return {"inputs": []}
    if path.endswith(":predict"):
        mixed = trained()["mixed_holdout"].head(1).to_dict(orient="records")
        return {"instances": row if "/num" in path else mixed}
    if path == "/invocations":
        return {"dataframe_records": trained()["mixed_holdout"].head(1).to_dict(orient="records")}
    return None


def test_every_operation_in_the_document_answers(gw: Running, document: dict[str, Any]) -> None:
    answered = {}
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            url = _concrete(path, op)
            r = gw.client.request(
                method.upper(),
                gw.url + url,
                headers=AUTH,
                json=_body(path) if method == "post" else None,
            )
            answered[f"{method.upper()} {url}"] = r.status_code
            assert str(r.status_code) in op["responses"], (url, r.status_code, r.text[:300])
            if r.status_code == 404 and isinstance(r.json()["error"], dict):
                assert r.json()["error"]["code"] != "not_found", url
    assert answered["POST /v1/models/num/predict"] == 200
    assert answered["GET /v2/models/num/versions/1/ready"] == 200
    assert answered["POST /v1/feedback"] == 422  # an id the log has never seen
    assert answered["POST /v2/models/mixed/infer"] == 400  # no tensors
    # MLflow's three routes ask for ?model= when two models are served and the project names none
    assert answered["POST /invocations"] == answered["GET /ping"] == 400
    assert sum(s == 200 for s in answered.values()) >= len(answered) - 8


def test_a_known_path_with_another_method_is_405_naming_the_allowed(gw: Running) -> None:
    r = gw.client.delete(gw.url + "/v1/models/num")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = gw.client.put(gw.url + "/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert gw.client.head(gw.url + "/readyz").status_code == 200


def test_a_gateway_serving_nothing_documents_the_model_routes_with_a_parameter(
    tmp_path: Path,
) -> None:
    from tests.gateway.servers import load, write_project

    root = write_project(tmp_path / "empty")
    with running(load(root), ready=False) as gw:
        document = gw.get("/openapi.json").json()
    for route in ROUTES:
        op = document["paths"][route.path][route.method.lower()]
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert names == set(route.params), route.path
