"""Log the benchmark's model with MLflow and lay it out for ``mlflow models serve -m``.

Runs inside ``benchmarks/.venv-mlflow`` (``gateway_bench.py`` starts it), so the project's
code never imports MLflow. The model arrives as a skops file written by the bench; it is logged
with ``mlflow.sklearn.log_model`` into a throwaway SQLite tracking store, and the logged model
folder is copied to ``--out``.

    python export_mlflow.py --model model.skops --sample sample.npy --store DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

# MLflow 3 writes sklearn models with skops and refuses HistGradientBoosting's tree objects
# unless they are trusted by name.
TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="skops file of the estimator")
    parser.add_argument("--sample", type=Path, required=True, help=".npy of input rows")
    parser.add_argument("--store", type=Path, required=True, help="scratch tracking store")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import mlflow
    import mlflow.sklearn
    import numpy as np
    import skops.io
    from mlflow.models import infer_signature

    untrusted = skops.io.get_untrusted_types(file=args.model)
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise SystemExit(f"{args.model} holds types this script does not trust: {unexpected}")
    model = skops.io.load(args.model, trusted=untrusted)
    sample = np.load(args.sample)

    shutil.rmtree(args.store, ignore_errors=True)
    args.store.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{args.store.resolve() / 'mlflow.db'}")
    experiment = mlflow.create_experiment(
        "gateway-bench", artifact_location=(args.store.resolve() / "artifacts").as_uri()
    )
    signature = infer_signature(sample[:5], model.predict(sample[:5]))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=sample[:2],
            skops_trusted_types=TRUSTED_TYPES,
        )
    local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(local, args.out)
    print(json.dumps({"mlflow": mlflow.__version__, "model_uri": info.model_uri}))


if __name__ == "__main__":
    main()
