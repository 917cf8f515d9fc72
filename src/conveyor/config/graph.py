"""Conveyor's one graph module: the pipeline's steps and the deploy environments as graphs.

Ordering and cycle finding are the standard library's ``graphlib``; this module adds what it
lacks: a stable order (ties keep file order), every cycle named from its first member in file
order, and the closure upstream or downstream of a set of nodes. A graph is a plain mapping
``node -> the nodes it depends on``, so nothing here knows the pydantic models (no import cycle
with ``project.py``): a step is anything with ``input_refs()``, ``deps`` and ``outs``.

The pipeline is checked once when conveyor.yaml is loaded, so that every problem is reported
with its line before any step runs.
"""

from __future__ import annotations

import graphlib
import heapq
import keyword
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

YamlPath = tuple[str | int, ...]
Graph = Mapping[str, Sequence[str]]  # node -> the nodes it depends on (its upstream)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
REF_HELP = "write 'data.NAME', 'STEP' or 'STEP.OUTPUT'"


class StepLinks(Protocol):
    """What the graph reads of a step (``StepConfig`` has it)."""

    @property
    def deps(self) -> list[str]: ...

    @property
    def outs(self) -> list[str]: ...

    @property
    def cmd(self) -> str | None: ...

    def input_refs(self) -> list[tuple[str | None, str]]: ...


class CycleFound(ValueError):
    """The graph has a cycle; ``cycle`` lists it from its first node back to that node."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"cycle {' -> '.join(cycle)}")


# ---------------------------------------------------------------------------------------------
# Any graph


def order(graph: Graph, rank: Sequence[str] | None = None) -> list[str]:
    """Every node after all of its upstream nodes; of the nodes ready together, the first in
    ``rank`` (default: the graph's own order) goes first, so the order is stable.

    Raises:
        CycleFound: the graph has a cycle, named as :func:`cycles` names it.
    """
    position = {node: i for i, node in enumerate(rank if rank is not None else graph)}
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        raise CycleFound(cycles(graph, rank)[0]) from None
    ready: list[tuple[int, str]] = []
    result: list[str] = []
    while sorter.is_active():
        for node in sorter.get_ready():
            heapq.heappush(ready, (position.get(node, len(position)), node))
        _, node = heapq.heappop(ready)
        result.append(node)
        sorter.done(node)
    return result


def cycles(graph: Graph, rank: Sequence[str] | None = None) -> list[list[str]]:
    """Cycles of the graph, each following the edges downstream from its first node in
    ``rank`` back to it, e.g. ``[prepare, train, prepare]``; [] when there are none.

    After each cycle graphlib finds, its nodes are set aside and the rest searched again, so
    every separate knot is named once.
    """
    position = {node: i for i, node in enumerate(rank if rank is not None else graph)}
    remaining = {node: list(ups) for node, ups in graph.items()}
    found: list[list[str]] = []
    while True:
        try:
            graphlib.TopologicalSorter(remaining).prepare()
        except graphlib.CycleError as exc:
            loop: list[str] = list(exc.args[1])[:-1]  # graphlib repeats the first node last
        else:
            break
        start = min(range(len(loop)), key=lambda i: position.get(loop[i], len(position)))
        loop = loop[start:] + loop[:start]
        found.append([*loop, loop[0]])
        removed = set(loop)
        remaining = {
            node: [up for up in ups if up not in removed]
            for node, ups in remaining.items()
            if node not in removed
        }
    found.sort(key=lambda loop: position.get(loop[0], len(position)))
    return found


def upstream_closure(graph: Graph, nodes: Iterable[str]) -> set[str]:
    """``nodes`` and every node they depend on, directly or through others."""
    found: set[str] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, ()))
    return found


def downstream_closure(graph: Graph, nodes: Iterable[str]) -> set[str]:
    """Every node that depends on one of ``nodes``, directly or through others (``nodes``
    themselves excluded unless a cycle leads back to them)."""
    down: dict[str, list[str]] = {}
    for node, ups in graph.items():
        for up in ups:
            down.setdefault(up, []).append(node)
    found: set[str] = set()
    todo = list(nodes)
    while todo:
        for child in down.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# ---------------------------------------------------------------------------------------------
# The pipeline


def _norm(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def upstream_of(steps: Mapping[str, StepLinks], name: str) -> list[str]:
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


def upstream_map(steps: Mapping[str, StepLinks]) -> dict[str, list[str]]:
    """The pipeline as a graph: each step and the steps it depends on directly."""
    return {name: upstream_of(steps, name) for name in steps}


def _ref_problem(
    ref: str, step: str, steps: list[str], sources: list[str], outs: Mapping[str, list[str]]
) -> str | None:
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
    if dot and head in outs and tail not in outs[head]:
        # A cmd step's outputs are its declared outs; a run step's are only known once its
        # function returns, so those are checked when the pipeline runs.
        known = ", ".join(outs[head]) or "none"
        return f"cmd step {head!r} has no out {tail!r}; its outs are {known}"
    return None


def graph_problems(
    steps: Mapping[str, StepLinks], step_names: list[str], source_names: list[str]
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
    # Stored under each out exactly as written, which is the name another step gives.
    cmd_outs = {name: list(s.outs) for name, s in steps.items() if s.cmd is not None}
    owners: dict[str, str] = {}
    for name, step in steps.items():
        for index, (kw, ref) in enumerate(step.input_refs()):
            at: YamlPath = ("pipeline", name, "inputs", index if kw is None else kw)
            if kw is not None and (not kw.isidentifier() or keyword.iskeyword(kw)):
                message = f"keyword {kw!r} must be a Python identifier, such as 'frame'"
                problems.append((at, message, at))
            problem = _ref_problem(ref, name, step_names, source_names, cmd_outs)
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
