"""Read conveyor.yaml into plain values while remembering the line of every key and list item.

PyYAML's loaders drop line numbers and silently keep the last of two equal keys. Composing the
node tree and building the values ourselves keeps both, so every error can point at a line; the
same paths then turn pydantic's validation errors into one-line issues at those lines.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from conveyor.config.base import AT, keys_of, model_at
from conveyor.exceptions import ConfigError, ConfigIssue, ProjectError

YamlPath = tuple[str | int, ...]

# libyaml is several times faster; the pure-Python loader gives the same nodes.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# YAML 1.1 (PyYAML) reads an unquoted 1e-3 as a string; YAML 1.2 and every user read a number.
_FLOAT_12 = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_AT = AT
# Values built at most, aliases expanded: a few hundred bytes of nested aliases (a "billion
# laughs") would otherwise expand without limit. A real conveyor.yaml has a few hundred.
MAX_VALUES = 100_000
_EXPECTED_TYPE = {
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
}


def format_location(path: YamlPath) -> str:
    """Render a path as ``pipeline.train.inputs[1]``; odd keys are quoted: ``params['a.b']``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass
class YamlDocument:
    """The top-level mapping (None when there is none), the line of each path, and problems."""

    data: dict[str, Any] | None
    lines: dict[YamlPath, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    # Paths whose value could not be read at all: validation would only repeat the problem.
    unreadable: set[YamlPath] = field(default_factory=set)

    def line_of(self, path: YamlPath) -> int | None:
        """Line of ``path``, or of its nearest ancestor that was written in the file."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def read_yaml_file(path: Path) -> YamlDocument:
    """Read ``path`` and parse it; the document's ``data`` is always a mapping.

    Raises:
        ProjectError: the file does not exist or cannot be read.
        ConfigError: the file is not UTF-8, not YAML, empty, or not a mapping at the top.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProjectError(
            f"No {path.name} at {path.parent}. Run 'conveyor init' to create a project."
        ) from None
    except OSError as exc:
        raise ProjectError(f"Cannot read {path}: {exc.strerror}.") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8"
        raise ConfigError(path.name, [ConfigIssue("", message)]) from None
    doc = parse_yaml(text)
    if doc.data is None:
        raise ConfigError(path.name, doc.issues)
    return doc


def parse_yaml(text: str) -> YamlDocument:
    """Compose ``text`` and build its values, collecting every problem instead of raising.

    Args:
        text: the whole file.

    Returns:
        A document whose ``data`` is None when the text is not YAML, is empty, or is not a
        mapping at the top level; ``issues`` then says why.
    """
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        return YamlDocument(None, issues=[ConfigIssue("", _syntax_message(exc))])
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"line {line}, column {column}: character #x{char:04x}: {exc.reason}"
        return YamlDocument(None, issues=[ConfigIssue("", message)])
    except yaml.YAMLError as exc:
        return YamlDocument(None, issues=[ConfigIssue("", " ".join(str(exc).split()))])
    builder = _Builder()
    try:
        value = None if root is None else builder.build(root, ())
    except _TooLarge as exc:
        message = (
            f"the document expands to more than {MAX_VALUES:,} values through its aliases "
            "(*name); write the values out or nest fewer aliases"
        )
        # The line of the top-level key being built: an anchor's own line would point at the
        # harmless definition rather than at the use that multiplies it.
        top = builder.lines.get(exc.path[:1])
        return YamlDocument(None, issues=[ConfigIssue(format_location(exc.path[:1]), message, top)])
    if value is None and builder.issues:  # e.g. a lone `!tag value`
        return YamlDocument(None, issues=builder.issues)
    if value is None:
        issue = ConfigIssue("", "the file is empty; start it with a line such as 'project: loans'")
        return YamlDocument(None, issues=[issue])
    if not isinstance(value, dict):
        message = (
            "expected a mapping of keys such as 'project:' and 'pipeline:' at the top level, "
            f"got {_kind(value)}"
        )
        return YamlDocument(None, issues=[ConfigIssue("", message, root.start_mark.line + 1)])
    return YamlDocument(value, builder.lines, builder.issues, builder.unreadable)


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "not valid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if exc.context and problem.startswith("but "):  # "expected a single document ..."
        return f"{where}{exc.context} {problem}"
    message = f"{where}{problem}"
    # The context often names the real culprit, e.g. the unclosed quote two lines above.
    if exc.context and exc.problem and exc.context_mark:
        message += f" ({exc.context} on line {exc.context_mark.line + 1})"
    return message


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return f"the value {value!r}"


class _TooLarge(Exception):
    """The document expands to more than MAX_VALUES values; ``path`` is where it went over."""

    def __init__(self, path: YamlPath) -> None:
        self.path = path


class _Builder:
    """Turns nodes into dicts, lists and scalars; records lines and problems on the way."""

    def __init__(self) -> None:
        self.lines: dict[YamlPath, int] = {}
        self.issues: list[ConfigIssue] = []
        self.unreadable: set[YamlPath] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self._built = 0

    def _problem(
        self, path: YamlPath, message: str, node: yaml.Node, unreadable: bool = False
    ) -> None:
        self.issues.append(ConfigIssue(format_location(path), message, node.start_mark.line + 1))
        if unreadable:
            self.unreadable.add(path)

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        self._built += 1
        if self._built > MAX_VALUES:
            raise _TooLarge(path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:  # an alias inside its own anchor
            self._problem(path, "an alias refers to the node that contains it", node)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                if node.tag != _MAP_TAG:
                    self._problem(path, f"the tag {node.tag!r} is not supported here", node)
                return self._mapping(node, path)
            if node.tag != _SEQ_TAG:
                self._problem(path, f"the tag {node.tag!r} is not supported here", node)
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: YamlPath) -> Any:
        if node.tag == _STR_TAG and not node.style and _FLOAT_12.fullmatch(node.value):
            return float(node.value)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            self._problem(path, f"cannot read this value: {problem}", node, unreadable=True)
            return None

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, path, merged)
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                message = (
                    f"key {key!r} appears twice, on lines {first_line[key]} and {line}; "
                    "keep only one"
                )
                self.issues.append(ConfigIssue(format_location(path), message, line))
            else:
                first_line[key] = line
            self.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        # Explicit keys win over merged ones, as in YAML's merge-key spec.
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merge(self, node: yaml.Node, path: YamlPath, into: dict[str, Any]) -> None:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._problem(path, "'<<' needs a mapping or a list of mappings", source)
                continue
            for key, value in self.build(source, path).items():
                into.setdefault(key, value)  # earlier mappings in the list take precedence

    def _key(self, node: yaml.Node, path: YamlPath) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self._problem(path, "a key must be a plain name, not a list or mapping", node)
            return None
        value = self._scalar(node, path)
        if isinstance(value, str):
            return value
        # YAML 1.1 reads `on:` as true and `1:` as a number; keep going with the text as written.
        text = str(node.value)
        self._problem(
            (*path, text),
            f"key {text!r} is read as {_kind(value)}; "
            f'write it in quotes ("{text}") to use it as a name',
            node,
            unreadable=True,
        )
        return text


def validation_issues(
    exc: ValidationError,
    doc: YamlDocument,
    root: type[BaseModel],
    env_paths: Mapping[YamlPath, str],
) -> list[ConfigIssue]:
    """Turn pydantic's errors into one-line issues at the key's path and line.

    Args:
        exc: the error from validating ``doc.data``.
        doc: the parsed file, for line numbers.
        root: the model the whole file was validated with; the keys allowed at any path (for
            did-you-mean) and the shape of each model (for "expected ...") are read from it.
        env_paths: paths whose value came from an environment variable, and its name.
    """
    issues = []
    for error in exc.errors():
        loc = (*error["loc"], *(error.get("ctx") or {}).get(_AT, ()))
        if not any(loc[:end] in doc.unreadable for end in range(1, len(loc) + 1)):
            issues.append(_issue(error, doc, root, env_paths))
    return issues


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_key_message(key: str, known: list[str]) -> str:
    """``unknown key 'x'; did you mean 'y'?``, or the keys allowed when none is close."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; expected one of: {', '.join(known) or '(none)'}"


def _issue(
    error: Any,
    doc: YamlDocument,
    root: type[BaseModel],
    env_paths: Mapping[YamlPath, str],
) -> ConfigIssue:
    loc: YamlPath = tuple(error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    line_at = loc
    if kind == "conveyor":
        loc = line_at = (*loc, *ctx.get(_AT, ()))
        message = error["msg"]
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind == "extra_forbidden":
        key, loc = str(loc[-1]), loc[:-1]
        model = model_at(root, loc)
        message = unknown_key_message(key, keys_of(model) if model is not None else [])
    elif kind == "missing":
        key, loc = str(loc[-1]), loc[:-1]
        line_at = loc
        example = " such as 'project: loans'" if key == "project" and loc == () else ""
        message = f"missing required key {key!r}; add it{example}"
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected')}, got {_describe(value)}"
    elif kind in ("model_type", "model_attributes_type"):
        model = model_at(root, loc)
        expected = str(getattr(model, "shape", "a mapping"))
        message = f"expected {expected}, got {_describe(value)}"
    elif kind in _EXPECTED_TYPE:
        message = f"expected {_EXPECTED_TYPE[kind]}, got {_describe(value)}"
    else:  # pydantic's own text is one sentence for the remaining simple types
        text = str(error["msg"]).splitlines()[0]
        message = f"{text[:1].lower()}{text[1:]}, got {_describe(value)}"
    var = env_paths.get(loc)
    if var:
        return ConfigIssue(format_location(loc), f"{message} (from environment variable {var})")
    return ConfigIssue(format_location(loc), message, doc.line_of(line_at))
