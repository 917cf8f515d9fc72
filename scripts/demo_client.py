"""The demo's client: a few real loans sent to the running gateway, as JSON and through the
Open Inference Protocol with tritonclient, then labels as feedback, and what /metrics counted.

    python scripts/demo_client.py URL DATA_FILE TOKEN
"""

from __future__ import annotations

import sys

import httpx
import numpy as np
import pandas as pd


def main(url: str, data_file: str, token: str) -> None:
    model = httpx.get(f"{url}/v1/models/loans-risk").json()
    fields = [f["name"] for f in model["signature"]["inputs"]]
    print(f"loans-risk serves {model['environments']} and reads {len(fields)} fields")
    frame = pd.read_parquet(data_file).tail(3)
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame[fields].to_dict(orient="records")
    ]
    answer = httpx.post(f"{url}/v1/models/loans-risk/predict", json={"instances": records}).json()
    print(
        f"JSON  POST /v1/models/loans-risk/predict: predictions {answer['predictions']}, "
        f"P(high risk) {[round(p[1], 3) for p in answer['probabilities']]}, "
        f"version {answer['version']}, request {answer['request_id']}"
    )

    bad = httpx.post(
        f"{url}/v1/models/loans-risk/predict",
        json={"instances": [{**records[0], fields[0]: "lots"}]},
    )
    print(f"a wrong type answers {bad.status_code}: {bad.json()['error']['message']}")

    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    meta = client.get_model_metadata("loans-risk")
    inputs = []
    for spec in meta["inputs"]:
        column = frame[spec["name"]]
        if spec["datatype"] == "BYTES":
            values = np.array([[str(v)] for v in column], dtype=object)
        else:
            dtype = {"INT64": np.int64, "BOOL": np.bool_}.get(spec["datatype"], np.float64)
            values = column.to_numpy(dtype=dtype).reshape(-1, 1)
        tensor = triton.InferInput(spec["name"], list(values.shape), spec["datatype"])
        tensor.set_data_from_numpy(values)  # binary tensor data, tritonclient's default
        inputs.append(tensor)
    result = client.infer("loans-risk", inputs)
    proba = result.as_numpy("probabilities")[:, 1]
    print(
        f"v2    tritonclient infer (binary tensors): predictions "
        f"{result.as_numpy('predictions').tolist()}, P(high risk) {np.round(proba, 3).tolist()}"
    )

    labels = [int(v) for v in frame["high_risk"]] if "high_risk" in frame else None
    if labels is not None:
        r = httpx.post(
            f"{url}/v1/feedback",
            json={"request_id": answer["request_id"], "labels": labels},
            headers={"Authorization": f"Bearer {token}"},
        )
        print(f"feedback: the true labels {labels} for {answer['request_id']} -> {r.json()}")
    metrics = httpx.get(f"{url}/metrics").text
    print("metrics:")
    for line in metrics.splitlines():
        if line.startswith(("conveyor_requests_total", "conveyor_rows_total")):
            print("  " + line)


if __name__ == "__main__":
    main(*sys.argv[1:4])
