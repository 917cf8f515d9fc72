"""A small churn project for the gates and registry tests: its steps, its data, and a writer
that dates the data file back so the stat cache trusts it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = """
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder


def prepare(rows: pd.DataFrame) -> dict:
    test = rows.sample(frac=0.4, random_state=0)
    train = rows.drop(test.index)
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def train(train: pd.DataFrame, features: list, C: float) -> Pipeline:
    cats = [f for f in features if f == "region"]
    encode = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats)],
                               remainder="passthrough", sparse_threshold=0.0)
    model = Pipeline([("encode", encode), ("fit", LogisticRegression(C=C, max_iter=500))])
    return model.fit(train[features], train["churned"])
"""

#: conveyor.yaml for the steps above, up to the model's target: tests add gates, deploy, ...
CONFIG_HEAD = """\
project: shop
data:
  rows: data/rows.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model:
  name: churn
  from: train
  holdout: prepare.test
  target: churned
"""


def rows(n: int = 3000, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """Customers whose churn depends on tenure, spend and region; ``shift`` moves tenure."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 60, n).astype(float) + shift * 30
    spend = rng.gamma(2.0, 30.0, n)
    region = rng.choice(["north", "south", "east"], n)
    logit = -0.08 * tenure + 0.02 * spend + np.where(region == "south", 0.5, 0.0)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"tenure": tenure, "spend": spend, "region": region, "churned": churned})


def backdate(path: Path) -> None:
    """10 s back, past the 2 s in which the stat cache refuses to trust an mtime."""
    stamp = time.time_ns() - 10_000_000_000
    os.utime(path, ns=(stamp, stamp))


def write_data(root: Path, frame: pd.DataFrame) -> None:
    """The project's data/rows.csv, dated back."""
    path = root / "data" / "rows.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    backdate(path)
