"""The flavour matrix's shared data: the tasks every family is run on, each with the gate it
clears, the rows of a small project (three numeric features, a region, a label), and how a
served model is asked over v2."""

from __future__ import annotations

import numpy as np
import pandas as pd

# (task, evaluator, the threshold every family clears on this data)
TASKS = {
    "binary": ("classification", "roc_auc >= 0.8"),
    "multiclass": ("classification", "accuracy >= 0.6"),
    "regression": ("regression", "r2 >= 0.6"),
}


def rows(task: str, labels: str, n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Rows whose label follows 1.5·x1 − x2 + 0.5·x3 plus noise: a value, Yes/No (or 1/0), or
    low/mid/high (or 0/1/2) by ``labels`` ("str" or "int")."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    signal = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2]
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3"])
    frame["region"] = rng.choice(["north", "south", "east"], n)
    noisy = signal + rng.normal(scale=0.5, size=n)
    if task == "regression":
        frame["label"] = noisy
    elif task == "binary":
        frame["label"] = np.where(noisy > 0, "Yes", "No") if labels == "str" else (noisy > 0) * 1
    else:
        grade = np.digitize(noisy, [-1.0, 1.0])
        frame["label"] = np.array(["low", "mid", "high"])[grade] if labels == "str" else grade
    return frame


def v2_outputs(gateway, name: str, X: np.ndarray) -> dict[str, np.ndarray]:
    """A served model's answer to rows sent as one FP64 tensor over v2, output by name."""
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(X.shape),
                "datatype": "FP64",
                "data": X.ravel().tolist(),
            }
        ]
    }
    r = gateway.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    out = {}
    for o in r.json()["outputs"]:
        out[o["name"]] = np.asarray(o["data"]).reshape(o["shape"])
    return out
