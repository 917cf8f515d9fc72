"""What an MLServer user's code does against a gateway, run as its own process.

``python tests/gateway/mlserver_types_client.py URL`` builds requests with MLServer's types and
codecs (``mlserver.types``, ``mlserver.codecs``), sends them over HTTP, parses every answer with
the type MLServer's own server would answer with, and prints one JSON object of what it found for
test_mlserver_types.py to check. A separate process because ``mlserver`` and ``kserve`` register
the same protobuf symbols ('inference.ServerLiveRequest') and cannot be imported in one process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import numpy as np
import pandas as pd
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, PandasCodec
from mlserver.types import (
    InferenceErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataModelErrorResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    RequestInput,
    RequestOutput,
)

MIXED = pd.DataFrame({"grade": ["A", "C"], "years": [3, 12], "amount": [900.0, 15_000.0]})


def _post(client: httpx.Client, path: str, request: InferenceRequest) -> httpx.Response:
    return client.post(path, content=request.model_dump_json(exclude_none=True))


def _error(response: httpx.Response) -> dict[str, Any]:
    """An error answer as MLServer's client reads one: the status and the parsed message."""
    parsed = InferenceErrorResponse.model_validate_json(response.content)
    return {"status": response.status_code, "error": parsed.error}


def main(url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        server = MetadataServerResponse.model_validate_json(client.get("/v2").content)
        found["server"] = {"name": server.name, "version": server.version}
        model = MetadataModelResponse.model_validate_json(client.get("/v2/models/mixed").content)
        found["model"] = {
            "name": model.name,
            "inputs": {t.name: t.datatype for t in model.inputs or []},
            "outputs": [t.name for t in model.outputs or []],
        }

        # A DataFrame encoded as MLServer's PandasCodec does: one [rows, 1] tensor per column;
        # one output asked for, as PandasCodec decodes an output per column, row by row.
        request = PandasCodec.encode_request(MIXED)
        request.outputs = [RequestOutput(name="predictions")]
        answer = _post(client, "/v2/models/mixed/infer", request)
        response = InferenceResponse.model_validate_json(answer.content)
        decoded = PandasCodec.decode_response(response)
        found["pandas"] = {
            "status": answer.status_code,
            "model_name": response.model_name,
            "columns": list(decoded.columns),
            "predictions": decoded["predictions"].tolist(),
        }

        # A NumPy matrix with NumpyCodec, and one output asked for by name.
        matrix = np.zeros((3, 5), dtype=np.float32)
        request = NumpyRequestCodec.encode_request(matrix)
        request.outputs = [RequestOutput(name="probabilities")]
        answer = _post(client, "/v2/models/num/infer", request)
        response = InferenceResponse.model_validate_json(answer.content)
        found["numpy"] = {
            "status": answer.status_code,
            "outputs": [o.name for o in response.outputs],
            "shape": list(NumpyCodec.decode_output(response.outputs[0]).shape),
        }

        matrix_request = NumpyRequestCodec.encode_request(matrix)
        bools = RequestInput(name="years", shape=[2], datatype="BOOL", data=[True, False])
        columns = [i for i in PandasCodec.encode_request(MIXED).inputs if i.name != "years"]
        wrong_shape = RequestInput(name="input", shape=[1, 4], datatype="FP64", data=[0.0] * 4)
        found["errors"] = {
            "unknown-model": _error(
                _post(client, "/v2/models/no-such-model/infer", matrix_request)
            ),
            "bad-datatype": _error(
                _post(client, "/v2/models/mixed/infer", InferenceRequest(inputs=[*columns, bools]))
            ),
            "bad-shape": _error(
                _post(client, "/v2/models/num/infer", InferenceRequest(inputs=[wrong_shape]))
            ),
        }
        missing = client.get("/v2/models/no-such-model")
        found["errors"]["metadata"] = {
            "status": missing.status_code,
            "error": MetadataModelErrorResponse.model_validate_json(missing.content).error,
        }
        ready = client.get("/v2/models/no-such-model/ready")
        found["errors"]["ready"] = _error(ready)
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
