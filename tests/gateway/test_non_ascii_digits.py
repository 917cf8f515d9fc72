"""Version numbers in paths and query strings are ASCII digits only.

``"²".isdigit()`` is true in Python while ``int("²")`` raises, so a check with ``isdigit``
alone let a superscript version reach ``int()`` and answer 500 (found by the KServe document's
schemathesis run). Every such parse now asks for ASCII digits first.
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.servers import TOKEN, gateway_project, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v2/models/num/versions/%C2%B2/infer"),
        ("GET", "/v2/models/num/versions/%C2%B2"),
        ("GET", "/v2/models/num/versions/%C2%B2/ready"),
        ("POST", "/v1/models/num/predict?version=%C2%B2"),
        ("POST", "/v1/models/num/versions/%C2%B2:predict"),
    ],
)
def test_a_superscript_version_is_a_client_error(tmp_path, method: str, path: str) -> None:
    config = gateway_project(tmp_path / "p")
    with running(config) as gw:
        answer = httpx.request(method, gw.url + path, headers=AUTH, json={"instances": [[0] * 5]})
    assert 400 <= answer.status_code < 500, answer.text


def test_the_registry_reads_a_superscript_version_as_a_missing_alias(tmp_path) -> None:
    from conveyor.actions.models import open_registry
    from conveyor.exceptions import ModelNotFound

    config = gateway_project(tmp_path / "p")
    with open_registry(config) as registry:
        assert registry.version("num", "1").version == 1
        with pytest.raises(ModelNotFound):
            registry.version("num", "²")
