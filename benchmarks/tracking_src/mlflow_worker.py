"""MLflow's side of the tracking benchmark, run by the MLflow venv's interpreter.

Usage: ``python mlflow_worker.py N DIR``. In DIR it makes the default store (sqlite:///mlflow.db
in MLflow 3), starts one run, calls ``mlflow.log_metric`` N times, reads the series back to prove
every value landed, and prints one line of JSON with the timings.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(n: int, folder: str) -> None:
    os.chdir(folder)
    started = time.perf_counter()
    import mlflow
    from mlflow import MlflowClient

    imported = time.perf_counter()
    mlflow.set_experiment("bench")
    ready = time.perf_counter()
    with mlflow.start_run() as run:
        loop_start = time.perf_counter()
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        loop_s = time.perf_counter() - loop_start
    history = MlflowClient().get_metric_history(run.info.run_id, "loss")
    result = {
        "version": mlflow.__version__,
        "tracking_uri": mlflow.get_tracking_uri().replace(os.getcwd() + os.sep, ""),
        "n": n,
        "import_s": imported - started,
        "set_experiment_s": ready - imported,
        "loop_s": loop_s,
        "per_call_ms": loop_s / n * 1e3 if n else None,
        "stored_values": len(history),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
