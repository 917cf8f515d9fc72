"""Conveyor: continuous integration and delivery for machine-learning models.

Inside a pipeline step::

    import conveyor
    conveyor.log_metric("roc_auc", 0.83)
"""

from __future__ import annotations

from conveyor.exceptions import ConveyorError
from conveyor.pipeline.tracking import log_artifact, log_metric, log_metrics, log_param

__version__ = "0.1.0"

__all__ = [
    "ConveyorError",
    "__version__",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
]
