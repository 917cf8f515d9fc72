"""The OpenAPI document is valid, spells out each model's fields, and tells the truth.

The document is generated from the served signatures, so it is checked twice: statically
(valid OpenAPI 3.1, one predict path per model, the fields and their types) and against the
live gateway with schemathesis. The fuzz sends schema-valid requests (which must be accepted)
and schema-violating ones (which must be refused), and every answer must be documented, match
its response schema and never be a 5xx.
"""

from __future__ import annotations

import collections
import copy
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway.servers import (
    NUM_FIELDS,
    TOKEN,
    Running,
    gateway_project,
    running,
    spawn,
    trained,
)

MIXED_FIELDS = ["grade", "years", "amount"]
EXAMPLES_PER_MODE = 200  # per operation with a body: 3 of them x 2 modes
EXAMPLES_WITHOUT_BODY = 40  # per mode for the ~30 others: a path or query parameter at most
MIN_CASES = 1_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("openapi") / "p")
    with running(config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def document(gw: Running) -> dict[str, Any]:
    r = gw.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (the document only uses ``#/components/schemas/...``)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def body_validator(document: dict[str, Any], path: str, method: str) -> jsonschema.Validator:
    """A JSON Schema validator for an operation's request body, its refs resolvable."""
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return jsonschema.Draft202012Validator({**body["schema"], "components": document["components"]})


# -- the document ----------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    # The validator is not a no-op: a response without its required description fails it.
    broken = copy.deepcopy(document)
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(ValueError, match="description"):
        schemathesis.openapi.from_dict(broken).validate()


@pytest.mark.parametrize(
    ("model", "fields", "envs"),
    [("num", NUM_FIELDS, ["production", "staging"]), ("mixed", MIXED_FIELDS, ["production"])],
)
def test_each_served_model_has_a_predict_path_listing_its_fields(
    document: dict[str, Any], model: str, fields: list[str], envs: list[str]
) -> None:
    op = document["paths"][f"/v1/models/{model}/predict"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["env"]["schema"]["enum"] == envs
    assert params["x-conveyor-env"]["schema"]["enum"] == envs
    request = resolve(document, op["requestBody"]["content"]["application/json"]["schema"])
    records, arrays = (rows["items"] for rows in request["properties"]["instances"]["oneOf"])
    assert list(records["properties"]) == fields
    assert records["required"] == fields and records["additionalProperties"] is False
    assert len(arrays["prefixItems"]) == arrays["minItems"] == arrays["maxItems"] == len(fields)
    assert set(op["responses"]) >= {"200", "400", "404", "413", "422"}
    assert f"/v1/models/{model}" in document["paths"]


def test_field_schemas_follow_the_signature(document: dict[str, Any]) -> None:
    request = document["components"]["schemas"]["MixedRequest"]
    record = request["properties"]["instances"]["oneOf"][0]["items"]["properties"]
    assert record["grade"] == {"type": "string", "examples": ["A", "B", "C"]}
    assert record["years"] == {"type": "integer"}
    assert record["amount"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}  # nullable
    num = document["components"]["schemas"]["NumRequest"]
    assert all(
        s == {"type": "number"}
        for s in num["properties"]["instances"]["oneOf"][0]["items"]["properties"].values()
    )


@pytest.mark.parametrize(
    ("instances", "valid", "status"),
    [
        ([{"grade": "A", "years": 3, "amount": None}], True, 200),
        ([["B", 3, 1200.5], ["C", 0, None]], True, 200),
        ([{"grade": "A", "years": 3, "amount": 1.0}, ["B", 3, 1.0]], False, 422),  # mixed forms
        ([{"grade": "A", "years": 3}], False, 422),  # a field missing
        ([{"grade": "A", "years": 3, "amount": 1.0, "extra": 1}], False, 422),
        ([["A", 3]], False, 422),  # an array one value short
        ([{"grade": 3, "years": 3, "amount": 1.0}], False, 422),
        ([{"grade": "A", "years": 2.5, "amount": 1.0}], False, 422),
        ([], False, 422),
    ],
)
def test_the_request_schema_agrees_with_the_gateway(
    gw: Running, document: dict[str, Any], instances: list[Any], valid: bool, status: int
) -> None:
    validator = body_validator(document, "/v1/models/mixed/predict", "post")
    assert validator.is_valid({"instances": instances}) is valid
    assert gw.predict("mixed", instances).status_code == status


def test_the_feedback_schema_describes_one_label_or_a_list(document: dict[str, Any]) -> None:
    validator = body_validator(document, "/v1/feedback", "post")
    assert validator.is_valid({"request_id": "ab12", "label": 1})
    assert validator.is_valid({"request_id": "ab12", "labels": [1, 0]})
    assert validator.is_valid({"feedback": [{"request_id": "ab12", "label": "yes"}]})
    assert not validator.is_valid({"request_id": "ab12", "label": 1, "labels": [1]})
    assert not validator.is_valid({"request_id": "ab12"})
    assert not validator.is_valid({"request_id": "ab12", "label": None})
    assert not validator.is_valid({"feedback": []})


def test_docs_page_names_every_model_and_field(gw: Running) -> None:
    r = gw.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    for path in ("/v1/models/num/predict", "/v1/models/mixed/predict", "/openapi.json"):
        assert path in page
    for field in [*NUM_FIELDS, *MIXED_FIELDS]:
        assert f"<code>{field}</code>" in page
    assert "e.g. A, B, C" in page and "or null" in page


def test_a_number_beyond_float32_answers_like_the_model(gw: Running) -> None:
    row = [1e300, 0.0, -1e300, 0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = gw.predict("num", [row])
    assert r.status_code == 200, r.text
    model = trained()["num_v1"]
    assert (
        r.json()["predictions"] == model.predict(pd.DataFrame([row], columns=NUM_FIELDS)).tolist()
    )


# -- the fuzz --------------------------------------------------------------------------------


class Findings:
    """What the fuzz saw: cases per operation and mode, statuses, and distinct failures."""

    def __init__(self) -> None:
        self.cases: collections.Counter[tuple[str, str]] = collections.Counter()
        self.statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.failures: dict[tuple[str, str, str], str] = {}

    def fail(self, label: str, mode: str, text: str) -> None:
        key = (label, mode, text.splitlines()[0] if text else "")
        self.failures.setdefault(key, text[:1500])


def _positive_feedback_refused_only_as_unknown(response: Any) -> str | None:
    """Schema-valid labels for ids the log has never seen: the one refusal allowed."""
    if response.status_code < 400:
        return None
    code = response.json().get("error", {}).get("code")
    if (response.status_code, code) != (422, "unknown_request"):
        return f"valid feedback refused with {response.status_code} {code}: {response.text}"
    return None


def _fuzz_operation(
    gw: Running,
    operation: Any,
    mode: schemathesis.GenerationMode,
    document: dict[str, Any],
    session: requests.Session,
    findings: Findings,
) -> None:
    path, method = operation.path, operation.method.lower()
    label, negative = operation.label, mode == schemathesis.GenerationMode.NEGATIVE
    has_body = "requestBody" in document["paths"][path][method]
    validator = body_validator(document, path, method) if has_body else None
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if not negative and path.endswith("/predict"):
        checks.append(positive_data_acceptance)

    @settings(
        max_examples=EXAMPLES_PER_MODE if has_body else EXAMPLES_WITHOUT_BODY,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        findings.cases[label, mode.value] += 1
        response = case.call(
            base_url=gw.url,
            session=session,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        findings.statuses[label, mode.value, response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except (Failure, FailureGroup) as exc:
            findings.fail(label, mode.value, str(exc))
        if validator is not None and negative and response.status_code < 400:
            # A body the schema forbids must be refused (query and header mutations may be
            # ignored: unknown parameters are, and ?env= wins over the header).
            if case.body is NOT_SET or not validator.is_valid(case.body):
                findings.fail(label, mode.value, f"schema-invalid body accepted: {case.body!r}")
        if path == "/v1/feedback" and not negative:
            problem = _positive_feedback_refused_only_as_unknown(response)
            if problem:
                findings.fail(label, mode.value, problem)

    run()


@pytest.mark.slow
@pytest.mark.timeout(900)  # every route of the document now, under parallel workers
def test_schemathesis_fuzz_finds_no_server_error_and_no_mismatch(tmp_path: Path) -> None:
    gateway_project(tmp_path / "p")
    with spawn(tmp_path / "p") as gw:
        document = gw.get("/openapi.json").json()
        schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {
            "POST /v1/models/num/predict",
            "POST /v1/models/mixed/predict",
            "POST /v1/feedback",
            "GET /v1/models",
            "GET /readyz",
        }
        findings = Findings()
        with requests.Session() as session:
            for operation in operations:
                spec = document["paths"][operation.path][operation.method.lower()]
                modes = [schemathesis.GenerationMode.POSITIVE]
                if "requestBody" in spec or spec.get("parameters"):
                    modes.append(schemathesis.GenerationMode.NEGATIVE)  # something to break
                for mode in modes:
                    _fuzz_operation(gw, operation, mode, document, session, findings)
    total = sum(findings.cases.values())
    assert total >= MIN_CASES, findings.cases
    for label in ("POST /v1/models/num/predict", "POST /v1/models/mixed/predict"):
        assert findings.statuses[label, "positive", 200] > 0  # the fuzz reached the models
        assert sum(n for (op, m, s), n in findings.statuses.items() if op == label and s >= 400)
    assert not findings.failures, "\n\n".join(
        f"{label} [{mode}]:\n{text}" for (label, mode, _), text in findings.failures.items()
    )
    assert not any(status >= 500 for _, _, status in findings.statuses), findings.statuses
