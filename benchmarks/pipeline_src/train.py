"""train: logistic regression by full-batch gradient descent, numpy only."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import stageparams

source, target = sys.argv[1], sys.argv[2]
params = stageparams.load("train")
data = np.load(source)
x, y = data["X"], data["y"]
n_train = int(len(y) * 0.8)
x_train, y_train = x[:n_train], y[:n_train]
weights = np.zeros(x.shape[1], np.float32)
bias = 0.0
for _ in range(int(params["epochs"])):
    error = 1.0 / (1.0 + np.exp(-(x_train @ weights + bias))) - y_train
    weights -= params["lr"] * (x_train.T @ error) / len(y_train)
    bias -= params["lr"] * float(error.mean())
with open(target, "wb") as f:
    pickle.dump({"w": weights, "b": bias, "n_train": n_train}, f)
print(f"train: {params['epochs']} epochs on {n_train} rows")
