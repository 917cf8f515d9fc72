"""Predict whether a loan is graded high-risk (D to G) from what the applicant declared.

Each function is a pipeline step: its inputs arrive as arguments (DataFrames, models), its params
as keyword arguments, and what it returns is stored and handed to the next step.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import conveyor

TARGET = "high_risk"
NUMERIC = [
    "emp_length",
    "annual_income",
    "debt_to_income",
    "delinq_2y",
    "months_since_last_delinq",
    "earliest_credit_line",
    "inquiries_last_12m",
    "total_credit_lines",
    "open_credit_lines",
    "total_credit_limit",
    "total_credit_utilized",
    "num_historical_failed_to_pay",
    "accounts_opened_24m",
    "num_satisfactory_accounts",
    "account_never_delinq_percent",
    "public_record_bankrupt",
    "loan_amount",
    "term",
]
CATEGORICAL = ["homeownership", "verified_income", "loan_purpose", "application_type"]


def prepare(loans: pd.DataFrame, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Select the applicant's features, derive the label, and split in time: the test set is
    the most recent loans (random within their month). A later model is then compared with
    production on loans that neither was trained on, however the data grew in between."""
    frame = loans[NUMERIC + CATEGORICAL].copy()
    frame[TARGET] = loans["grade"].isin(["D", "E", "F", "G"]).astype(int)
    issued = pd.to_datetime(loans["issue_month"], format="%b-%Y")
    frame["_issued"] = issued.to_numpy()
    frame = frame.sample(frac=1.0, random_state=seed).sort_values("_issued", kind="stable")
    frame = frame.drop(columns="_issued")
    n_test = max(1, round(len(frame) * test_size))
    train, test = frame.iloc[:-n_test], frame.iloc[-n_test:]
    conveyor.log_metric("rows_train", len(train))
    conveyor.log_metric("rows_test", len(test))
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def train(train: pd.DataFrame, max_depth: int, learning_rate: float, max_iter: int) -> Pipeline:
    """Gradient-boosted trees behind a one-hot encoder, as one pipeline: the registered model
    takes the applicant's raw fields, so serving needs no code of ours."""
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
        sparse_threshold=0.0,
    )
    model = Pipeline(
        [
            ("encode", encode),
            (
                "trees",
                HistGradientBoostingClassifier(
                    max_depth=max_depth,
                    learning_rate=learning_rate,
                    max_iter=max_iter,
                    random_state=0,
                ),
            ),
        ]
    )
    model.fit(train[NUMERIC + CATEGORICAL], train[TARGET])
    conveyor.log_param("n_features", len(NUMERIC) + len(CATEGORICAL))
    return model


def report(evaluation: dict) -> Path:
    """A Markdown summary of the built-in evaluation, stored as a file artifact."""
    lines = ["# Loans model", "", "| metric | value |", "|---|---|"]
    names = ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "ece"]
    lines += [f"| {name} | {evaluation[name]:.4f} |" for name in names if evaluation.get(name)]
    path = Path("report.md")
    path.write_text("\n".join(lines) + "\n")
    return path
