"""``conveyor.yaml`` → ``ProjectConfig``: one module per section, read with the line of every key.

The only package that imports pydantic. ``load_config()`` and ``ProjectConfig`` are what the rest
of Conveyor uses; each section's model lives in its own module (``store``, ``data``,
``pipeline``, ``model``, ``validate``, ``gates``, ``serve``, ``deploy``, ``monitor``), all on
the one base in ``base.py``.
"""

from __future__ import annotations

from conveyor.config.data import SourceConfig
from conveyor.config.gates import GateConfig
from conveyor.config.model import ModelConfig
from conveyor.config.pipeline import ExecutorConfig, StepConfig
from conveyor.config.project import ProjectConfig, load_config, load_project
from conveyor.config.store import (
    DEFAULT_ARTIFACTS,
    DEFAULT_STORE_URL,
    ENV_ARTIFACTS,
    ENV_STORE_URL,
    StoreConfig,
    resolve_sqlite_url,
)

__all__ = [
    "DEFAULT_ARTIFACTS",
    "DEFAULT_STORE_URL",
    "ENV_ARTIFACTS",
    "ENV_STORE_URL",
    "ExecutorConfig",
    "GateConfig",
    "ModelConfig",
    "ProjectConfig",
    "SourceConfig",
    "StepConfig",
    "StoreConfig",
    "load_config",
    "load_project",
    "resolve_sqlite_url",
]
