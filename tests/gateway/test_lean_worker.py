"""A version served through its ONNX copy never deserialises its native model: a worker then
imports neither scikit-learn nor what it pulls in (SciPy, pandas), which was three quarters of
its memory; the native file is still checked, so a changed one is still refused. Logging its
requests to the Parquet prediction log imports neither pandas nor PyArrow: a writer process
writes the files (in the worker PyArrow took 50 MB and its pandas shim imported pandas, +46 MB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.servers import gateway_project

_LOAD = """
import json, sys
from conveyor.actions.models import open_registry
from conveyor.config import load_config
from conveyor.gateway.requestlog import RequestLog
from conveyor.gateway.runtime import load_served
from conveyor.store.predictionlog.layout import log_url
config = load_config(sys.argv[1])
rows = json.loads(sys.argv[4])
with open_registry(config) as registry:
    served = load_served(registry, sys.argv[2], int(sys.argv[3]), allow_pickle=False)
    block, n = served.prepare(rows, max_rows=10)
    answer = served.predict([block])[0]
    values = [v.item() if hasattr(v, "item") else v for v in answer.values]
    # what the gateway does with each served request: buffer it, then write a Parquet file
    request_log = RequestLog(
        registry.store, gateway="lean", log_url=log_url(config.artifacts_url())
    )
    request_log.record("r1", sys.argv[2], int(sys.argv[3]), "production", "serve", 200, 1.0,
                       n, json.dumps(rows), json.dumps({"predictions": values}))
    logged = request_log.flush()
    request_log.close()
print(json.dumps({
    "runtime": "onnx" if served._onnx is not None else "native",
    "native_loaded": served._native is not None,
    "heavy": sorted(
        {m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy", "skops", "pandas", "pyarrow"}
    ),
    "values": values,
    "logged": logged,
}))
"""


def _load(root: Path, model: str, version: int, rows: list[list[object]]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(root / "conveyor.yaml"), model, str(version),
         json.dumps(rows)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(gateway_project(tmp_path_factory.mktemp("lean") / "p").root)


def test_an_onnx_version_is_served_without_its_framework(project: Path) -> None:
    from tests.gateway.servers import trained

    holdout = trained()["num_holdout"]
    rows = holdout.head(5).values.tolist()
    seen = _load(project, "num", 1, rows)
    assert seen["runtime"] == "onnx"
    assert not seen["native_loaded"]
    assert seen["heavy"] == []  # nor pandas or PyArrow: the log is written by a child process
    assert seen["values"] == [int(v) for v in trained()["num_v1"].predict(holdout.head(5))]
    assert seen["logged"] == 1  # one request (of five rows) written


def test_a_version_without_onnx_still_loads_its_native_model(project: Path) -> None:
    seen = _load(project, "mixed", 1, [["A", 3, 1200.0]])
    assert seen["runtime"] == "native"
    assert seen["native_loaded"]
    assert "sklearn" in seen["heavy"]
