"""The strongest hand-written reference: FastAPI + ONNX Runtime, one async endpoint.

Served by ``uvicorn fastapi_onnx_app:app`` from ``benchmarks/.venv-fastapi`` (uvloop and
httptools, default access log), as the reference kit did. The ONNX file named by
``BENCH_ONNX_MODEL`` has one float input ``[None, 20]``; ONNX Runtime runs on one thread.

    POST /predict  {"instances": [[20 floats], ...]}  ->  {"predictions": [label, ...]}
    GET  /health
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel


def _session() -> ort.InferenceSession:
    path = os.environ.get("BENCH_ONNX_MODEL")
    if not path:
        raise RuntimeError("Set BENCH_ONNX_MODEL to the ONNX file to serve.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


_SESSION = _session()
_INPUT = _SESSION.get_inputs()[0].name
_LABEL = _SESSION.get_outputs()[0].name

app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
async def predict(request: PredictRequest) -> dict:
    rows = np.asarray(request.instances, dtype=np.float32)
    labels = _SESSION.run([_LABEL], {_INPUT: rows})[0]
    return {"predictions": labels.reshape(-1).tolist()}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
