"""featurize: standardise the numeric columns, one-hot the categoricals, add binned copies."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import stageparams

source, target = sys.argv[1], sys.argv[2]
bins = int(stageparams.load("featurize")["n_bins"])
frame = pd.read_csv(source)
numeric = frame[[f"f{j}" for j in range(8)]].to_numpy(np.float32)
numeric = (numeric - numeric.mean(axis=0)) / (numeric.std(axis=0) + 1e-9)
binned = np.clip(((numeric + 3.0) / 6.0 * bins).astype(np.int64), 0, bins - 1)
onehot = pd.get_dummies(frame[["city", "segment"]]).to_numpy(np.float32)
features = np.hstack([numeric, onehot, binned.astype(np.float32) / bins])
np.savez(target, X=features, y=frame["label"].to_numpy(np.float32))
print(f"featurize: {features.shape[0]} rows x {features.shape[1]} features")
