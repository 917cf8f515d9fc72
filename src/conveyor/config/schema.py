"""The JSON Schema of conveyor.yaml, for editors (YAML language servers) and CI checks.

Generated from ``ProjectConfig`` and then widened to accept what the loader accepts beyond the
models' own types: the shorthands (``executor: local``, a source or a gate as one string), null
for a key that then takes its default, and ``x-`` keys at the top for YAML anchors.
"""

from __future__ import annotations

import copy
from typing import Any

from conveyor.config.base import all_models, null_means_default
from conveyor.config.project import ProjectConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that a valid conveyor.yaml satisfies.

    It checks shapes, keys, types and bounds; what spans sections (references between steps,
    cycles, gate metrics) only ``conveyor config check`` knows.
    """
    schema = ProjectConfig.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.get("$defs", {})
    for name, model in all_models(ProjectConfig).items():
        target = schema if model is ProjectConfig else defs[name]
        properties = target.get("properties", {})
        for key, prop in properties.items():
            if null_means_default(model, key) and not _accepts_null(prop):
                properties[key] = _or_null(prop)
        shorthand = getattr(model, "shorthand_schema", None)
        if shorthand is not None and model is not ProjectConfig:
            description = target.pop("description", None)
            title = target.pop("title", name)
            defs[name] = {
                "title": title,
                **({"description": description} if description else {}),
                "anyOf": [copy.deepcopy(shorthand), target],
            }
    # Compose-style extension keys hold anchors (x-defaults: &defaults {...}).
    schema["patternProperties"] = {"^x-": {}}
    schema["title"] = "conveyor.yaml"
    return {"$schema": SCHEMA_DIALECT, **schema}


def _accepts_null(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "null" or any(_accepts_null(p) for p in prop.get("anyOf", ()))


def _or_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``prop`` that also accepts null, its notes (title, description, default) kept outside."""
    notes: dict[str, Any] = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    rest = {k: v for k, v in prop.items() if k not in notes}
    return {**notes, "anyOf": [rest, {"type": "null"}]}
