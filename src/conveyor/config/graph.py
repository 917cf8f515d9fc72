"""The pipeline as a graph: who depends on whom, bad references, shared outputs, cycles.

Checked once when conveyor.yaml is loaded, so that every problem is reported with its line
before any step runs.
"""

from __future__ import annotations

import keyword
import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from conveyor.config.reader import YamlPath

if TYPE_CHECKING:
    from conveyor.config.project import StepConfig

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
REF_HELP = "write 'data.NAME', 'STEP' or 'STEP.OUTPUT'"


def _norm(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def upstream_of(steps: Mapping[str, StepConfig], name: str) -> list[str]:
    """The steps that ``name`` depends on directly, in file order; unknown names are ignored."""
    step = steps[name]
    ups: set[str] = set()
    for _, ref in step.input_refs():
        head = ref.partition(".")[0]
        if head != "data" and head in steps:
            ups.add(head)
    for dep in map(_norm, step.deps):
        for owner, other in steps.items():
            for out in map(_norm, other.outs):
                # A dep on a produced file, on a file inside a produced folder, or on a folder
                # holding a produced file all have to wait for the producer.
                if dep == out or dep.startswith(out + "/") or out.startswith(dep + "/"):
                    ups.add(owner)
    ups.discard(name)
    return [other for other in steps if other in ups]


def upstream_map(steps: Mapping[str, StepConfig]) -> dict[str, list[str]]:
    return {name: upstream_of(steps, name) for name in steps}


def _ref_problem(ref: str, step: str, steps: list[str], sources: list[str]) -> str | None:
    head, dot, tail = ref.partition(".")
    if head == "data":
        if not dot:
            example = sources[0] if sources else "loans"
            return f"'data' alone is not a reference; name a source, such as 'data.{example}'"
        if not _NAME.fullmatch(tail):
            return f"{REF_HELP}, got {ref!r}"
        if tail not in sources:
            known = f"known sources: {', '.join(sources)}" if sources else "'data:' declares none"
            return f"unknown data source {tail!r}; {known}"
        return None
    if not _NAME.fullmatch(head) or (dot and not _NAME.fullmatch(tail)):
        return f"{REF_HELP}, got {ref!r}"
    if head == step:
        return f"step {step!r} cannot take its own output as input"
    if head not in steps:
        others = [s for s in steps if s != step]
        known = f"known steps: {', '.join(others)}" if others else "there are no other steps"
        return f"unknown step {head!r}; {known}"
    return None


def cycles(ups: Mapping[str, list[str]]) -> list[list[str]]:
    """One cycle per knot of mutually dependent steps, from its first step in file order and
    following the data downstream, e.g. ``[prepare, train, prepare]``."""
    down: dict[str, list[str]] = {name: [] for name in ups}
    for name, parents in ups.items():
        for parent in parents:
            down[parent].append(name)
    # Peel off every step that is not on or behind a cycle (Kahn); usually that is all of them.
    waiting = {name: len(parents) for name, parents in ups.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        for child in down[ready.pop()]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    tangled = [name for name in ups if waiting[name] > 0]
    reach: dict[str, set[str]] = {}
    for name in tangled:
        seen: set[str] = set()
        todo = [name]
        while todo:
            for child in down[todo.pop()]:
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        reach[name] = seen
    cycles: list[list[str]] = []
    placed: set[str] = set()
    for start in tangled:
        if start in placed or start not in reach[start]:
            continue
        knot = {name for name in reach[start] if start in reach[name]}
        placed |= knot
        # Breadth-first inside the knot: the first way back to start is the shortest cycle.
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            later = []
            for node in frontier:
                for child in down[node]:
                    if child in knot and child not in came_from:
                        came_from[child] = node
                        later.append(child)
            frontier = later
        cycle = [start, came_from[start]]
        while cycle[-1] != start:
            cycle.append(came_from[cycle[-1]])
        cycles.append(cycle[::-1])
    return cycles


def graph_problems(
    steps: Mapping[str, StepConfig], step_names: list[str], source_names: list[str]
) -> list[tuple[YamlPath, str, YamlPath]]:
    """Problems that span steps: names, references, shared outputs and cycles, each as
    (location, message, path whose line to show)."""
    problems: list[tuple[YamlPath, str, YamlPath]] = []
    for name in source_names:
        if not _NAME.fullmatch(name):
            problems.append((("data", name), _bad_name("source", name), ("data", name)))
    for name in step_names:
        if name == "data":
            message = (
                "a step cannot be named 'data', which refers to sources in 'inputs'; rename it"
            )
            problems.append((("pipeline", name), message, ("pipeline", name)))
        elif not _NAME.fullmatch(name):
            problems.append((("pipeline", name), _bad_name("step", name), ("pipeline", name)))
    owners: dict[str, str] = {}
    for name, step in steps.items():
        for index, (kw, ref) in enumerate(step.input_refs()):
            at: YamlPath = ("pipeline", name, "inputs", index if kw is None else kw)
            if kw is not None and (not kw.isidentifier() or keyword.iskeyword(kw)):
                message = f"keyword {kw!r} must be a Python identifier, such as 'frame'"
                problems.append((at, message, at))
            problem = _ref_problem(ref, name, step_names, source_names)
            if problem:
                problems.append((at, problem, at))
        for index, out in enumerate(step.outs):
            owner = owners.setdefault(_norm(out), name)
            if owner != name:
                message = (
                    f"{out!r} is also an output of step {owner!r}; only one step may write a path"
                )
                at = ("pipeline", name, "outs", index)
                problems.append((at, message, at))
    for cycle in cycles(upstream_map(steps)):
        # Said of the whole pipeline, at the line of the first step in the cycle.
        problems.append((("pipeline",), f"cycle {' -> '.join(cycle)}", ("pipeline", cycle[0])))
    return problems


def _bad_name(what: str, name: str) -> str:
    return (
        f"{what} name {name!r} is not valid; use letters, digits, '_' and '-', "
        "starting with a letter or '_'"
    )
