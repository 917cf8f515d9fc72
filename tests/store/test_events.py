"""The event catalogue is the only source of event kinds: the code writes and reads only kinds it
declares, it declares none that nothing writes, and docs/architecture.md carries it verbatim."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.exceptions import StoreError
from conveyor.store import events as ev
from conveyor.store.events import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "conveyor"
EVENTS_PY = SRC / "store" / "events.py"
ARCHITECTURE_MD = REPO / "docs" / "architecture.md"

#: ``family.what``, the shape of every kind.
SHAPE = re.compile(r"^[a-z]+\.[a-z_]+$")
#: Strings of that shape, in a family that has events, that are not events.
NOT_EVENTS = {
    "run.lock": "the run lock's file name (project.py)",
    "model.from": "a conveyor.yaml key quoted in a message (actions/ci.py)",
    "model.holdout": "a conveyor.yaml key quoted in a message (actions/ci.py)",
    "model.skops": "the name of an MLflow model's skops file (actions/mlflow_bridge.py)",
}
#: Modules whose f-strings start like an event family but build something else.
BUILT_NOT_EVENTS = {
    "actions/mlflow_bridge.py": "f'model.{format}', a file name in an MLflow model's folder",
}
#: The catalogue's constants, by name (``RUN_STARTED`` -> ``run.started``).
CONSTANTS = {
    name: value
    for name, value in vars(ev).items()
    if name.isupper() and isinstance(value, str) and SHAPE.match(value)
}


def _modules() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(SRC.rglob("*.py")):
        yield str(path.relative_to(SRC)), ast.parse(path.read_text(), filename=str(path))


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _kind_positions(tree: ast.AST) -> Iterator[ast.expr]:
    """Every expression the code passes or compares as an event kind."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name == "add_event":  # add_event(session, kind, entity, entity_id, ...)
                yield from node.args[1:2]
                yield from (k.value for k in node.keywords if k.arg == "kind")
            elif name in ("_event", "_last_event"):  # the release's and controller's helpers
                yield from node.args
            elif name == "in_" and isinstance(node.func, ast.Attribute):
                if _name(node.func.value) == "kind":  # Event.kind.in_((...))
                    for arg in node.args:
                        yield from getattr(arg, "elts", [arg])
        elif isinstance(node, ast.Compare) and _name(node.left) == "kind":
            for right in node.comparators:
                yield from getattr(right, "elts", [right])


def test_every_kind_the_code_writes_or_reads_is_in_the_catalogue() -> None:
    families = {kind.split(".")[0] for kind in CATALOGUE}
    unknown, built, checked = [], [], 0
    for where, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if SHAPE.match(value) and value.split(".")[0] in families:
                    checked += 1
                    if value not in CATALOGUE and value not in NOT_EVENTS:
                        unknown.append(f"{where}:{node.lineno} {value!r}")
            elif isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if isinstance(first, ast.Constant) and str(first.value).rstrip(".") in families:
                    if str(first.value).endswith(".") and where not in BUILT_NOT_EVENTS:
                        built.append(f"{where}:{node.lineno}")
        for expr in _kind_positions(tree):
            checked += 1
            if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
                if "." in expr.value and expr.value not in CATALOGUE:
                    unknown.append(f"{where}:{expr.lineno} {expr.value!r}")
            elif isinstance(expr, ast.Attribute) and _name(expr.value) == "ev":
                if expr.attr not in CONSTANTS:
                    unknown.append(f"{where}:{expr.lineno} ev.{expr.attr}")

    assert checked >= 60, "the scan found too few event kinds: has the code moved?"
    unknown = sorted(set(unknown))
    assert not unknown, (
        f"event kinds that conveyor/store/events.py does not declare: {unknown}; declare them "
        "there (or, if a string is not an event kind, add it to NOT_EVENTS here)"
    )
    assert not built, f"event kinds built at run time, which no scan can check: {built}"


def test_every_kind_in_the_catalogue_is_written_or_read_somewhere() -> None:
    used: set[str] = set()
    for where, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)  # in events.py: the run and step maps
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and where != "store/events.py"
            ):
                used.add(node.value)

    unused = sorted(
        kind
        for name, kind in CONSTANTS.items()
        if name not in used and kind not in used and kind in CATALOGUE
    )
    assert not unused, f"the catalogue declares kinds that nothing writes: {unused}"


def test_the_catalogue_declares_each_constant_once_with_its_entity_and_description() -> None:
    assert sorted(CONSTANTS.values()) == sorted(CATALOGUE)
    assert len(CATALOGUE) >= 35
    for kind, spec in CATALOGUE.items():
        assert spec.kind == kind and SHAPE.match(kind), kind
        assert spec.entity in {"run", "snapshot", "model", "release", "alert", "project"}, kind
        assert spec.when and not spec.when.endswith("."), kind
        assert len(set(spec.payload)) == len(spec.payload), kind
    assert set(ev.RUN_ENDED.values()) | set(ev.STEP_ENDED.values()) <= set(CATALOGUE)


def test_declaring_a_kind_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'run.started' is declared twice"):
        ev._declare("run.started", "run", "again")
    assert CATALOGUE["run.started"].payload == ("steps",)


def test_check_names_the_kind_and_the_catalogue() -> None:
    ev.check(ev.ALIAS_MOVED, "model")
    with pytest.raises(StoreError) as info:
        ev.check("alias.deleted", "model")
    assert str(info.value).startswith(
        "Unknown event kind 'alias.deleted': every kind the audit log holds is declared in the "
        "catalogue conveyor/store/events.py (CATALOGUE)"
    )
    with pytest.raises(StoreError, match=r"^Event kind 'alias\.moved' is written against"):
        ev.check(ev.ALIAS_MOVED, "release")


def test_architecture_md_carries_the_catalogue_in_its_events_section() -> None:
    text = ARCHITECTURE_MD.read_text()
    sections = re.split(r"^(## .*)$", text, flags=re.M)
    headings = sections[1::2]
    assert "## Events" in headings, "docs/architecture.md has no '## Events' section"
    assert headings.index("## Events") < headings.index("## Not built yet")
    body = sections[2 * headings.index("## Events") + 2]
    table = "".join(line + "\n" for line in body.splitlines() if line.startswith("|"))

    assert table == ev.markdown_table(), (
        "the table in docs/architecture.md '## Events' differs from the catalogue; replace it "
        "with the output of: python -m conveyor.store.events"
    )
