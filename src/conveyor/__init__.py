"""Conveyor: continuous integration and delivery for machine-learning models.

Inside a pipeline step::

    import conveyor
    conveyor.log_metric("roc_auc", 0.83)

From a notebook or a script (``docs/python.md``)::

    model = conveyor.load_model("loans-risk@production")
    model.predict(frame)

    with conveyor.start_run("tuning") as run:
        run.log_param("max_depth", 6)
        conveyor.register(fitted, name="loans-risk", data=(X_test, y_test))

The names below ``log_param`` are resolved on first use (module ``__getattr__``): a step that
only logs metrics imports neither pandas nor the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError, RegistrationRefused
from conveyor.pipeline.tracking import log_artifact, log_metric, log_metrics, log_param

if TYPE_CHECKING:
    from conveyor.actions.python_api import (
        LoadedModel,
        Project,
        Run,
        load_model,
        open_project,
        register,
        start_run,
    )

__version__ = "0.1.0"

__all__ = [
    "ConveyorError",
    "LoadedModel",
    "Project",
    "RegistrationRefused",
    "Run",
    "__version__",
    "load_model",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "open_project",
    "register",
    "start_run",
]

# The public names that live in conveyor.actions, by module, imported when first asked for.
_LAZY = {
    "LoadedModel": "python_api",
    "Project": "python_api",
    "Run": "python_api",
    "load_model": "python_api",
    "open_project": "python_api",
    "register": "python_api",
    "start_run": "python_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"conveyor.actions.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
