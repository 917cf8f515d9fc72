"""docs/configuration.md, generated from the models so that it cannot drift from them.

Every key with its type, default, allowed values and description (the models'
``Field(description=...)``), and one YAML example per section (the models' ``yaml_example``).
A test compares the file with :func:`reference`; regenerate it with::

    python -m conveyor.config.reference > docs/configuration.md
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, WithJsonSchema
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from conveyor.config.base import ConfigModel
from conveyor.config.deploy import DURATION_SCHEMA
from conveyor.config.project import ProjectConfig

REGENERATE = "python -m conveyor.config.reference > docs/configuration.md"

_INTRO = f"""\
# Configuration reference

<!-- Generated from the models in src/conveyor/config/ by conveyor.config.reference; do not
edit. Regenerate with: {REGENERATE} -->

Everything Conveyor does is set in one file, `conveyor.yaml`, at the root of the project. This
page lists every key it accepts, section by section, with its type, default and allowed values.

- A key written with nothing after it (`batch:`) means its default; where `null` is listed as
  allowed, writing `null` turns that setting off instead.
- Durations are `30s`, `5m`, `1.5h`, `2d`, `250ms` or a number of seconds.
- Top-level keys starting with `x-` are ignored, so they can hold YAML anchors
  (`x-defaults: &defaults {{...}}`) that steps merge with `<<: *defaults`.
- `CONVEYOR_STORE_URL`, `CONVEYOR_ARTIFACTS`, `CONVEYOR_EXECUTOR` and `CONVEYOR_JOBS` override
  the file.
- `conveyor config check` reports every problem of a file at once, with its line;
  `conveyor config schema` prints the JSON Schema for editors.
"""


def reference() -> str:
    """The whole of docs/configuration.md."""
    parts = [_INTRO]
    for key, field in ProjectConfig.model_fields.items():
        name = field.alias or key
        parts.append(f"\n## `{name}`\n\n{_sentence(field)}\n")
        model = _model_in(field.annotation)
        example = model.yaml_example if model is not None else ""
        if key == "project":
            example = ProjectConfig.yaml_example
        if model is not None:
            parts.append(_tables(model, _path_of(name, field.annotation)))
        else:
            parts.append(_table([(name, field)]))
        if example:
            parts.append(f"\n```yaml\n{example.strip()}\n```\n")
    return "".join(parts)


def _path_of(name: str, annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is dict:
        return f"{name}.NAME"
    if origin is list:
        return f"{name}[]"
    return name


def _tables(model: type[BaseModel], path: str) -> str:
    """The table of ``model``'s keys, then one for each model nested in it."""
    out = [f"\n`{path}`: {_doc(model)}\n", _table(_fields(model))]
    for key, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None:
            out.append(_tables(nested, f"{path}.{_path_of(field.alias or key, field.annotation)}"))
    return "".join(out)


def _fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    return [(field.alias or key, field) for key, field in model.model_fields.items()]


def _table(rows: list[tuple[str, FieldInfo]]) -> str:
    lines = [
        "",
        "| Key | Type | Default | Allowed | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in rows:
        cells = [f"`{name}`", _type(field), _default(field), _allowed(field), _sentence(field)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of the model's docstring, on one line, without reST markup."""
    text = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split()).replace("``", "`")


def _sentence(field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"a key has no description: {field!r}; add Field(description=...)")
    return " ".join(field.description.split())


def _model_in(annotation: Any) -> type[ConfigModel] | None:
    origin = typing.get_origin(annotation)
    if origin is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return annotation
    return None


def _type(field: FieldInfo) -> str:
    for meta in field.metadata:
        if isinstance(meta, WithJsonSchema) and meta.json_schema is not None:
            if meta.json_schema is DURATION_SCHEMA:
                return "duration"
            return _json_type(meta.json_schema)
    return _annotation_type(field.annotation)


def _json_type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_json_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_plural(_json_type(schema.get('items', {})))}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return f"mapping of {_plural(_json_type(values))}"
        return "mapping"
    return {"string": "string", "number": "number", "integer": "integer"}.get(str(kind), "value")


_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _annotation_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _annotation_type(args[0])
    if origin in (Union, types.UnionType):
        named = [_annotation_type(arg) for arg in args if arg is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "string"
    if origin is list:
        return f"list of {_plural(_annotation_type(args[0]))}"
    if origin is dict:
        return f"mapping of name to {_annotation_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        shorthand = getattr(annotation, "shorthand_schema", None)
        if shorthand is DURATION_SCHEMA:
            return "duration or mapping"
        return f"{_json_type(shorthand)} or mapping" if shorthand else "mapping"
    if annotation is Any:
        return "any"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text: str) -> str:
    return {"string": "strings", "number": "numbers", "integer": "integers"}.get(text, text)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
        return _value(value)
    return _value(field.default)


def _value(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int):
        return f"`{value:_}`".replace("_", ",")
    if isinstance(value, list | dict):
        return f"`{value}`" if value else ("`[]`" if isinstance(value, list) else "`{}`")
    if value is PydanticUndefined:
        return "required"
    return f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    literal = _literal(field.annotation)
    parts: list[str] = []
    if literal:
        parts.append(", ".join(f"`{v}`" for v in literal))
    bounds = []
    for meta in field.metadata:
        if isinstance(meta, Ge):
            bounds.append(f"≥ {meta.ge:g}")
        elif isinstance(meta, Gt):
            bounds.append(f"> {meta.gt:g}")
        elif isinstance(meta, Le):
            bounds.append(f"≤ {meta.le:g}")
        elif isinstance(meta, Lt):
            bounds.append(f"< {meta.lt:g}")
    if bounds:
        parts.append(", ".join(bounds))
    if _nullable(field.annotation) and field.default is not None and not field.is_required():
        parts.append("`null` turns it off")
    return "; ".join(parts)


def _literal(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return tuple(v for arg in typing.get_args(annotation) for v in _literal(arg))
    return ()


def _nullable(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference())
