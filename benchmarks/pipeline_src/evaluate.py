"""evaluate: accuracy and log-loss on the last 20% of rows, written to metrics.json."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np

features, model_path, target = sys.argv[1], sys.argv[2], sys.argv[3]
data = np.load(features)
with open(model_path, "rb") as f:
    model = pickle.load(f)
x, y = data["X"][model["n_train"] :], data["y"][model["n_train"] :]
prob = 1.0 / (1.0 + np.exp(-(x @ model["w"] + model["b"])))
accuracy = float(((prob > 0.5) == y).mean())
logloss = float(-np.mean(y * np.log(prob + 1e-9) + (1 - y) * np.log(1 - prob + 1e-9)))
with open(target, "w") as f:
    json.dump({"accuracy": accuracy, "logloss": logloss, "n_eval": int(len(y))}, f, indent=2)
print(f"evaluate: accuracy {accuracy:.4f}, logloss {logloss:.4f}")
