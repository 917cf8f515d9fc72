"""The one base of every conveyor.yaml model, and what is derived from the models themselves.

One rule for every section: a key written with nothing after it (YAML null) means its default,
unless null is a value of its own for that key, one that differs from the default
(``max_p99_ratio: null`` turns that bound off).
So ``serve.batch:`` and ``deploy.staging.analysis:`` both mean "the defaults".

The keys allowed at any path of the file, the shape of each section for "expected ..." and the
did-you-mean suggestions are read from the models here, never from a table kept by hand.
"""

from __future__ import annotations

import re
import types
import typing
from functools import cache
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
AT = "conveyor_at"  # error ctx key carrying the sub-path of a problem found inside a field


def invalid(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error for a validator to raise; ``at`` continues its location below the
    field, so the issue points at the exact item (``params.grid[2]``) and its line."""
    return PydanticCustomError("conveyor", message, {AT: list(at)})


class ConfigModel(BaseModel):
    """Every section of conveyor.yaml: unknown keys refused, aliases and names both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # What a value of this model looks like, for "expected ..., got ..." when one is not a
    # mapping, and the example that docs/configuration.md shows for the section.
    shape: ClassVar[str] = "a mapping"
    yaml_example: ClassVar[str] = ""
    # The JSON Schema of a non-mapping form the model also accepts (`executor: local`), if any.
    shorthand_schema: ClassVar[dict[str, Any] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaulted = _null_means_default(cls)
        return {k: v for k, v in data.items() if not (v is None and k in defaulted)}


def _accepts_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _accepts_none(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_accepts_none(arg) for arg in typing.get_args(annotation))
    return False


@cache
def _null_means_default(model: type[BaseModel]) -> frozenset[str]:
    """The keys (names and aliases) of ``model`` for which null means "use the default"."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        if field.get_default(call_default_factory=False) is None or not _accepts_none(
            field.annotation
        ):
            keys.update({name, field.alias or name})
    return frozenset(keys)


def null_means_default(model: type[BaseModel], key: str) -> bool:
    """Whether ``key: null`` in ``model`` stands for the key's default (for the JSON Schema)."""
    return key in _null_means_default(model)


def keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a user writes for ``model``, in declaration order (aliases such as ``from``)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def _step(annotation: Any, part: str | int) -> list[Any]:
    """The types a value at ``part`` below a value of ``annotation`` may have."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _step(typing.get_args(annotation)[0], part)
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _step(arg, part)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found = _field(annotation, str(part))
        return [] if found is None else [found]
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2 and isinstance(part, str):
        return [args[1]]
    if origin is list and args and isinstance(part, int):
        return [args[0]]
    return []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def model_at(root: type[BaseModel], path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path`` of a file validated by ``root``.

    Follows fields (by key or alias), dict values (``deploy.staging``, ``pipeline.train``) and
    list items (``gates[0]``, ``monitor.alerts[1].when``); None where no model applies.
    """
    current: list[Any] = [root]
    for part in path:
        current = [t for annotation in current for t in _step(annotation, part)]
        if not current:
            return None
    models = [m for annotation in current for m in _models_in(annotation)]
    return models[0] if models else None


def all_models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``, by class name, in the order they are first met."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        origin = typing.get_origin(annotation)
        if origin is not None:
            for arg in typing.get_args(annotation):
                visit(arg)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for field in annotation.model_fields.values():
                    visit(field.annotation)

    visit(root)
    return found


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# A list of strings that may be written as one string: `outs: model.pkl`.
StrList = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]
