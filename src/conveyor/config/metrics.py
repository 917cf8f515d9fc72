"""Every metric Conveyor's evaluations report, and which way is better: the one table that the
gates' validation (``model.py``), the paired comparisons (``evaluate/compare.py``) and the
reports' arrows and order (``reports/format.py``) read, so a metric added here is known to all
three at once.

No pydantic here: the comparisons and the reports import this module without the config models.
"""

from __future__ import annotations

__all__ = ["COMPARABLE", "HIGHER_IS_BETTER", "LOWER_IS_BETTER", "METRICS", "METRIC_ORDER"]

#: name -> whether a higher value is better (None: neither; a rate compared between groups).
#: In the order reports list them: ranking, then threshold metrics, losses, regression.
METRICS: dict[str, bool | None] = {
    "roc_auc": True,
    "pr_auc": True,
    "average_precision": True,
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "mae": False,
    "rmse": False,
    "r2": True,
    "mape": False,
    "balanced_accuracy": True,
    "f1_weighted": True,
    "precision_weighted": True,
    "recall_weighted": True,
    "selection_rate": None,
}

METRIC_ORDER = tuple(METRICS)
HIGHER_IS_BETTER = frozenset(name for name, higher in METRICS.items() if higher is True)
LOWER_IS_BETTER = frozenset(name for name, higher in METRICS.items() if higher is False)

#: The metrics a comparison gate judges with a paired test (``evaluate/compare.py`` has one
#: for each: DeLong for roc_auc, McNemar or a paired bootstrap for the rest).
COMPARABLE = (
    "roc_auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "log_loss",
    "brier",
    "mae",
    "rmse",
    "r2",
)
