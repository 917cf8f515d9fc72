"""Evaluation: metrics, paired comparisons and plots, computed from arrays with no IO.

``classification`` and ``regression`` are the built-in pipeline steps
(``run: conveyor.evaluate:classification``); they import scikit-learn only when called.
"""

from __future__ import annotations

from typing import Any


def classification(model: Any, holdout: Any, **params: Any) -> dict[str, Any]:
    """Built-in step: see :func:`conveyor.evaluate.steps.classification`."""
    from conveyor.evaluate.steps import classification as run

    return run(model, holdout, **params)


def regression(model: Any, holdout: Any, **params: Any) -> dict[str, Any]:
    """Built-in step: see :func:`conveyor.evaluate.steps.regression`."""
    from conveyor.evaluate.steps import regression as run

    return run(model, holdout, **params)
