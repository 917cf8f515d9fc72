"""The protocol's own OpenAPI document, KServe's ``rest_predict_v2.yaml``, run against the gateway.

The document (vendored in ``tests/gateway/data/`` with its attribution) writes its path
parameters as ``${MODEL_NAME}``; OpenAPI templating is ``{MODEL_NAME}``, so the test reads it
with the ``$`` dropped and the parameters limited to what the gateway serves, then lets
schemathesis send requests from it (schema-valid and schema-violating, a bounded number per
operation). Every answer must be no 5xx, match the document's response schema where it has one,
and every error must be the protocol's ``{"error": "<string>"}``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.gateway.servers import gateway_project, running

DOCUMENT = Path(__file__).parent / "data" / "kserve_rest_predict_v2.yaml"
EXAMPLES = 40  # per operation and mode
PARAMETERS = {"MODEL_NAME": ["mixed", "num"], "MODEL_VERSION": ["1", "2"]}


def adapted() -> dict[str, Any]:
    """The document with OpenAPI path templates and the served names and versions."""
    spec = yaml.safe_load(DOCUMENT.read_text())
    out = copy.deepcopy(spec)
    out["paths"] = {}
    for path, item in spec["paths"].items():
        item = copy.deepcopy(item)
        for param in item.get("parameters", []):
            param["schema"] = {"type": "string", "enum": PARAMETERS[param["name"]]}
        out["paths"][path.replace("${", "{")] = item
    return out


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("kserve") / "p", serve="  max_rows: 50\n")
    with running(config) as gateway:
        yield gateway


def test_the_vendored_document_is_kserves_with_its_attribution() -> None:
    text = DOCUMENT.read_text()
    assert "github.com/kserve/kserve" in text.splitlines()[1] and "Apache" in text
    spec = yaml.safe_load(text)
    assert spec["info"]["license"]["name"] == "Apache 2.0"
    assert set(spec["paths"]) == {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/",
        "/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}",
        "/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}/ready",
        "/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}/infer",
    }


def test_the_gateway_answers_kserves_document(gw: Any) -> None:
    schema = schemathesis.openapi.from_dict(adapted())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    statuses: dict[tuple[str, int], int] = {}
    failures: list[str] = []
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
    with requests.Session() as session:
        for operation in operations:
            modes = [schemathesis.GenerationMode.POSITIVE]
            if operation.method.lower() == "post":
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            for mode in modes:

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    label = case.operation.label
                    response = case.call(base_url=gw.url, session=session, timeout=30)
                    key = (label, response.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    try:
                        case.validate_response(response, checks=checks)
                    except (Failure, FailureGroup) as exc:
                        failures.append(f"{label}: {str(exc)[:600]}")
                    if response.status_code >= 400:
                        body = response.json()
                        if not isinstance(body.get("error"), str):
                            failures.append(f"{label}: error body {body!r}")
                        if response.status_code >= 500:
                            failures.append(f"{label}: {response.status_code} {response.text}")

                run()
    assert not failures, "\n".join(failures[:10])
    infer = "POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
    assert statuses.get((infer, 400), 0) > 0  # random tensors are refused, as 400
    assert statuses.get(("GET /v2/health/ready", 200), 0) > 0
    ready = "GET /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/ready"
    assert statuses.get((ready, 200), 0) > 0 and statuses.get((ready, 404), 0) > 0
