"""MLServer's types and codecs against a real gateway: what an MLServer user's code sends and
parses works unchanged, and each error answer parses as MLServer's error type with the message.

The client side runs in a subprocess (mlserver_types_client.py): ``mlserver`` and ``kserve``
register the same protobuf symbols, and test_kserve_client.py imports ``kserve`` in this
process. So this module never imports ``mlserver``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.servers import gateway_project, running, trained

pytestmark = pytest.mark.slow
CLIENT = Path(__file__).with_name("mlserver_types_client.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = gateway_project(tmp_path_factory.mktemp("mlserver") / "p")
    with running(config) as gw:
        done = subprocess.run(
            [sys.executable, str(CLIENT), gw.url],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_server_and_model_metadata_parse_as_mlservers_types(found: dict[str, Any]) -> None:
    assert found["server"]["name"] and found["server"]["version"]
    assert found["model"]["name"] == "mixed"
    assert found["model"]["inputs"] == {"grade": "BYTES", "years": "INT64", "amount": "FP64"}
    assert "predictions" in found["model"]["outputs"]


def test_a_dataframe_from_pandas_codec_is_predicted_and_decoded(found: dict[str, Any]) -> None:
    pandas = found["pandas"]
    assert pandas["status"] == 200 and pandas["model_name"] == "mixed"
    assert pandas["columns"] == ["predictions"]
    import pandas as pd

    frame = pd.DataFrame({"grade": ["A", "C"], "years": [3, 12], "amount": [900.0, 15_000.0]})
    assert pandas["predictions"] == trained()["mixed"].predict(frame).tolist()


def test_a_matrix_from_numpy_codec_with_one_output_asked_for(found: dict[str, Any]) -> None:
    assert found["numpy"] == {"status": 200, "outputs": ["probabilities"], "shape": [3, 2]}


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("unknown-model", 404, "No model 'no-such-model'"),
        ("bad-datatype", 422, "years"),
        ("bad-shape", 400, "must hold 5 numbers per row"),
        ("metadata", 404, "No model 'no-such-model'"),
        ("ready", 404, "No model 'no-such-model'"),
    ],
)
def test_each_error_parses_as_mlservers_error_type_with_the_message(
    found: dict[str, Any], case: str, status: int, words: str
) -> None:
    error = found["errors"][case]
    assert error["status"] == status
    assert isinstance(error["error"], str) and words in error["error"], error
