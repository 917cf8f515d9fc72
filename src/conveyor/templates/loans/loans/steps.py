"""Predict whether a loan is graded high-risk (D to G) from what the applicant declared.

Each function is a pipeline step: its inputs arrive as arguments (DataFrames, models), its params
as keyword arguments, and what it returns is stored and handed to the next step.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

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
    """Select the applicant's features, derive the label, and split train/test."""
    frame = loans[NUMERIC + CATEGORICAL].copy()
    frame[TARGET] = loans["grade"].isin(["D", "E", "F", "G"]).astype(int)
    train, test = train_test_split(
        frame, test_size=test_size, random_state=seed, stratify=frame[TARGET]
    )
    conveyor.log_metric("rows_train", len(train))
    conveyor.log_metric("rows_test", len(test))
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    features = frame[NUMERIC + CATEGORICAL].copy()
    for column in CATEGORICAL:
        features[column] = features[column].astype("category")
    return features


def train(
    train: pd.DataFrame, max_depth: int, learning_rate: float, max_iter: int
) -> HistGradientBoostingClassifier:
    """Gradient-boosted trees; categorical columns are handled natively."""
    model = HistGradientBoostingClassifier(
        max_depth=max_depth,
        learning_rate=learning_rate,
        max_iter=max_iter,
        categorical_features="from_dtype",
        random_state=0,
    )
    model.fit(_features(train), train[TARGET])
    conveyor.log_param("n_features", len(NUMERIC) + len(CATEGORICAL))
    return model


def evaluate(model: HistGradientBoostingClassifier, test: pd.DataFrame) -> dict[str, float]:
    """Metrics on the held-out split; a returned dict of numbers is recorded as metrics."""
    proba = model.predict_proba(_features(test))[:, 1]
    predicted = (proba >= 0.5).astype(int)
    return {
        "roc_auc": float(roc_auc_score(test[TARGET], proba)),
        "accuracy": float(accuracy_score(test[TARGET], predicted)),
        "f1": float(f1_score(test[TARGET], predicted)),
        "log_loss": float(log_loss(test[TARGET], proba)),
    }


def report(metrics: dict[str, float]) -> Path:
    """A Markdown summary, stored as a file artifact."""
    lines = ["# Loans model", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    path = Path("report.md")
    path.write_text("\n".join(lines) + "\n")
    return path
