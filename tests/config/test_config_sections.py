"""The sections on their one base: did-you-mean at every depth, null as the default, the graph
module, deploy cycles, references to a cmd step's outs, and the bound on YAML aliases."""

from __future__ import annotations

import ast
import textwrap
import time
from pathlib import Path

import pytest

from conveyor.config import ProjectConfig, load_config
from conveyor.config.base import ConfigModel, all_models, keys_of, model_at
from conveyor.config.graph import (
    CycleFound,
    cycles,
    downstream_closure,
    order,
    upstream_closure,
)
from conveyor.config.reader import MAX_VALUES
from conveyor.exceptions import ConfigError

NO_ENV: dict[str, str] = {}

# Every section and sub-section, with a misspelt key, the key it should suggest, and the
# location the message names.
TYPOS = [
    ("", "stor: {}", "stor", "store"),
    ("store", "store: {urll: x}", "urll", "url"),
    ("executor", "executor: {jobz: 2}", "jobz", "jobs"),
    ("data.loans", "data:\n  loans: {sorce: a.csv}", "sorce", "source"),
    ("pipeline.fit", "pipeline:\n  fit: {run: m:f, parms: {}}", "parms", "params"),
    (
        "model",
        "pipeline: {fit: {run: m:f}}\nmodel: {name: m, from: fit, holdout: fit, target: y, "
        "slics: []}",
        "slics",
        "slices",
    ),
    ("registry", "registry: {allow_pikle: false}", "allow_pikle", "allow_pickle"),
    (
        "validate.loans",
        "data: {loans: a.csv}\nvalidate:\n  loans: {schema: s.yaml, drfit: {}}",
        "drfit",
        "drift",
    ),
    (
        "validate.loans.drift",
        "data: {loans: a.csv}\nvalidate:\n  loans: {schema: s.yaml, drift: {max_shar: 0.1}}",
        "max_shar",
        "max_share",
    ),
    (
        "gates[0]",
        "gates:\n  - {check: a > 1, on_inconclusiv: pass}",
        "on_inconclusiv",
        "on_inconclusive",
    ),
    (
        "gates[0].fairness",
        "gates:\n  - fairness: {group: g, metric: recall, max_gap: 0.1, min_row: 5}",
        "min_row",
        "min_rows",
    ),
    ("gates[0].latency", "gates:\n  - latency: {p99_ms: 5, row: 9}", "row", "rows"),
    ("gates[0].size", "gates:\n  - size: {max_mb: 5, maxmb: 9}", "maxmb", "max_mb"),
    ("serve", "serve: {thread: 2}", "thread", "threads"),
    ("serve.batch", "serve:\n  batch: {max_row: 3}", "max_row", "max_rows"),
    ("serve.log", "serve:\n  log: {sampel: 0.1}", "sampel", "sample"),
    ("deploy.staging", "deploy:\n  staging: {stratgy: direct}", "stratgy", "strategy"),
    (
        "deploy.staging.analysis",
        "deploy:\n  staging: {analysis: {min_agreemnt: 0.5}}",
        "min_agreemnt",
        "min_agreement",
    ),
    (
        "deploy.prod.steps[0]",
        "deploy:\n  prod: {strategy: canary, steps: [{weight: 10, for: 5m, wieght: 3}]}",
        "wieght",
        "weight",
    ),
    ("monitor", "monitor: {enviroment: prod}", "enviroment", "environment"),
    ("monitor.window", "monitor:\n  window: {lst: 4}", "lst", "last"),
    ("monitor.drift", "monitor:\n  drift: {shar: 0.1}", "shar", "share"),
    (
        "monitor.alerts[0]",
        "monitor:\n  alerts:\n    - {name: a, when: {column: x}, webhok: 'http://x'}",
        "webhok",
        "webhook",
    ),
    (
        "monitor.alerts[0].when",
        "monitor:\n  alerts:\n    - {name: a, when: {drift_share: 0.1, colum: x}}",
        "colum",
        "column",
    ),
    ("monitor.retrain", "monitor:\n  retrain: {cooldwn: 1h}", "cooldwn", "cooldown"),
]


def _write(folder: Path, text: str) -> Path:
    path = folder / "conveyor.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _errors(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(folder, text), env=NO_ENV)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("where", "body", "typo", "right"), TYPOS, ids=[t[0] or "top" for t in TYPOS]
)
def test_a_typo_in_any_section_suggests_the_key_with_its_line(
    tmp_path: Path, where: str, body: str, typo: str, right: str
) -> None:
    text = "project: p\n" + body + "\n"
    line = next(i for i, row in enumerate(text.splitlines(), 1) if typo in row)
    at = f"{where}: " if where else ""
    assert _errors(tmp_path, text) == [
        f"conveyor.yaml: {at}unknown key {typo!r}; did you mean {right!r}? (line {line})"
    ]


def test_every_model_in_the_file_is_covered_by_a_typo_test() -> None:
    covered = {model_at(ProjectConfig, _path(where)) for where, *_ in TYPOS}
    models = set(all_models(ProjectConfig).values())
    assert models - covered == set()


def _path(where: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in where.replace("[", ".[").split("."):
        if piece:
            parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return tuple(parts)


def test_a_far_off_key_lists_every_key_of_its_section(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "project: p\nserve:\n  batch: {zzz: 1}\n")
    assert lines == [
        "conveyor.yaml: serve.batch: unknown key 'zzz'; expected one of: max_rows, max_delay_ms "
        "(line 3)"
    ]


def test_every_model_has_one_base_and_keys() -> None:
    for name, model in all_models(ProjectConfig).items():
        assert issubclass(model, ConfigModel), name
        assert keys_of(model), name


def test_an_empty_section_means_its_defaults_at_every_depth(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """
            project: p
            serve:
              batch:
              log:
            deploy:
              staging:
                analysis:
              production:
                after: staging
                analysis: {max_p99_ratio: null, min_agreement: null}
            monitor:
              drift:
              retrain:
            """,
        ),
        env=NO_ENV,
    )
    assert config.serve.batch.max_rows == 256
    assert config.serve.log.sample == 1.0
    assert config.deploy["staging"].analysis.min_agreement == 0.8
    # null is a value of its own where it differs from the default: the bound is turned off.
    production = config.deploy["production"].analysis
    assert (production.max_p99_ratio, production.min_agreement) == (None, None)
    assert config.monitor is not None
    assert config.monitor.drift.psi == 0.2
    assert config.monitor.retrain.cooldown == 3600.0


def test_a_required_key_left_empty_is_still_missing(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "project: p\nmonitor:\n  alerts:\n    - {name: a, when: }\n")
    assert lines == [
        "conveyor.yaml: monitor.alerts[0].when: expected a mapping, got nothing (line 4)"
    ]


def test_a_cycle_of_deploy_environments_is_refused_by_name(tmp_path: Path) -> None:
    lines = _errors(
        tmp_path,
        """
        project: p
        deploy:
          dev: {}
          staging: {after: production}
          production: {after: staging}
          solo: {after: solo}
        """,
    )
    assert lines == [
        "conveyor.yaml: deploy.staging.after: 'after' makes a cycle staging -> production -> "
        "staging, so no version could ever reach these environments; remove one of these "
        "'after' keys (line 4)",
        "conveyor.yaml: deploy.solo.after: 'after' makes a cycle solo -> solo, so no version "
        "could ever reach these environments; remove one of these 'after' keys (line 6)",
    ]


def test_a_reference_to_a_cmd_steps_missing_out_is_caught_at_load(tmp_path: Path) -> None:
    text = """
        project: p
        pipeline:
          fit: {cmd: python fit.py, outs: [models, out/log.txt]}
          use: {run: m:use, inputs: {model: fit.modelz}}
          ok: {run: m:ok, inputs: [fit.models, fit, prepare.anything]}
          prepare: {run: m:prepare}
        """
    assert _errors(tmp_path, text) == [
        "conveyor.yaml: pipeline.use.inputs.model: cmd step 'fit' has no out 'modelz'; its "
        "outs are models, out/log.txt (line 4)"
    ]


def test_an_alias_bomb_is_refused_quickly_naming_the_file(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("project: [*h, *h]")
    text = "\n".join(lines) + "\n"
    assert len(text) < 500
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path, env=NO_ENV)
    assert time.perf_counter() - start < 5
    # 'f' is the first key whose expansion (9**6 values) passes the bound.
    assert str(info.value) == (
        f"bomb.yaml: f: the document expands to more than {MAX_VALUES:,} values through its "
        "aliases (*name); write the values out or nest fewer aliases (line 6)"
    )


def test_aliases_below_the_bound_still_expand(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """
            project: p
            x-params: &params {grid: [1, 2, 3], seed: 7}
            pipeline:
              a: {run: m:a, params: *params}
              b: {run: m:b, params: *params}
            """,
        ),
        env=NO_ENV,
    )
    assert config.pipeline["b"].params == {"grid": [1, 2, 3], "seed": 7}


# ---------------------------------------------------------------------------------------------
# The graph module, on plain mappings


def test_order_keeps_the_given_rank_among_ready_nodes() -> None:
    graph = {"report": ["left", "right"], "right": ["top"], "left": ["top"], "top": []}
    assert order(graph) == ["top", "right", "left", "report"]
    assert order(graph, rank=["top", "left", "right", "report"]) == [
        "top",
        "left",
        "right",
        "report",
    ]


def test_order_names_a_cycle_from_its_first_node() -> None:
    with pytest.raises(CycleFound, match=r"^cycle b -> c -> b$") as info:
        order({"a": [], "b": ["a", "c"], "c": ["b"]})
    assert info.value.cycle == ["b", "c", "b"]


def test_cycles_names_each_knot_once_following_the_data() -> None:
    graph = {"x": ["z"], "y": ["x"], "z": ["y"], "p": ["q"], "q": ["p"], "free": ["x"]}
    assert cycles(graph) == [["x", "y", "z", "x"], ["p", "q", "p"]]
    assert cycles({"a": [], "b": ["a"]}) == []


def test_closures_upstream_and_downstream() -> None:
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": []}
    assert upstream_closure(graph, ["c"]) == {"a", "b", "c"}
    assert upstream_closure(graph, ["c", "e"]) == {"a", "b", "c", "e"}
    assert downstream_closure(graph, ["a"]) == {"b", "c", "d"}
    assert downstream_closure(graph, ["e"]) == set()


def test_graph_module_imports_no_model() -> None:
    source = (Path(__file__).parents[2] / "src/conveyor/config/graph.py").read_text()
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {
        "__future__",
        "graphlib",
        "heapq",
        "keyword",
        "posixpath",
        "re",
        "collections.abc",
        "typing",
    }
