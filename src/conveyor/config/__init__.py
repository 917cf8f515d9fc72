"""``conveyor.yaml`` → ``ProjectConfig``: one module per section, read with the line of every key.

The only package that imports pydantic. ``load_config()`` and ``ProjectConfig`` are what the rest
of Conveyor uses; the section models live beside it.
"""

from __future__ import annotations

from conveyor.config.project import (
    DEFAULT_ARTIFACTS,
    DEFAULT_STORE_URL,
    ENV_ARTIFACTS,
    ENV_STORE_URL,
    ExecutorConfig,
    GateConfig,
    ModelConfig,
    ProjectConfig,
    SourceConfig,
    StepConfig,
    StoreConfig,
    load_config,
    load_project,
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
