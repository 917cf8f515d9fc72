from __future__ import annotations

import json
import os
import random
import sqlite3
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conveyor.config import (
    ExecutorConfig,
    ProjectConfig,
    SourceConfig,
    StepConfig,
    StoreConfig,
    load_config,
    load_project,
)
from conveyor.exceptions import ConfigError, ConfigIssue, ProjectError, StepNotFound
from conveyor.project import find_root

NO_ENV: dict[str, str] = {}
DEFAULT_URL = "sqlite:///.conveyor/conveyor.db"


def write(folder: Path, text: str) -> Path:
    path = folder / "conveyor.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(folder: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The lines of the ConfigError that loading ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(write(folder, text), env=NO_ENV if env is None else env)
    assert info.value.file == "conveyor.yaml"
    assert all(isinstance(issue, ConfigIssue) for issue in info.value.issues)
    return str(info.value).splitlines()


DESIGN_EXAMPLE = """
# conveyor.yaml
project: loans
data:
  loans: {source: data/loans/*.parquet}
pipeline:
  prepare:  {run: loans.steps:prepare, inputs: [data.loans], params: {test_size: 0.2}}
  train:    {run: loans.steps:train, inputs: [prepare], params: {max_depth: 6}}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare]}
"""


def test_design_example_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE), env=NO_ENV)

    assert config.project == "loans"
    assert list(config.pipeline) == ["prepare", "train", "evaluate"]
    assert config.data["loans"] == SourceConfig(source="data/loans/*.parquet")
    assert config.pipeline["prepare"].params == {"test_size": 0.2}
    assert config.pipeline["evaluate"].input_refs() == [(None, "train"), (None, "prepare")]
    assert config.store == StoreConfig()
    assert config.executor == ExecutorConfig(kind="local", jobs=None, address=None)
    assert config.executor.workers() == (os.cpu_count() or 1)
    assert config.root == tmp_path.resolve()
    assert config.file == tmp_path.resolve() / "conveyor.yaml"
    assert config.upstream("evaluate") == ["prepare", "train"]
    assert config.sources_of("prepare") == ["loans"]
    assert config.topological_order() == ["prepare", "train", "evaluate"]


def test_the_brief_example_with_every_form_loads(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            project: loans
            store:
              url: sqlite:///.conveyor/conveyor.db
              artifacts: .conveyor/artifacts
            executor: {kind: ray, jobs: 4, address: "ray://head:10001"}
            data:
              loans: data/loans/*.parquet
              raw: {source: data/raw/*.csv, format: csv, options: {sep: ";"}}
              accounts: {sql: "SELECT * FROM accounts", url: "postgresql+psycopg://db/x"}
            pipeline:
              prepare: {run: loans.steps:prepare, inputs: [data.loans], params: {test_size: 0.2}}
              train: {run: loans.steps:train, inputs: {frame: prepare.train}, params: {depth: 6}}
              report:
                cmd: python src/report.py out/metrics.json out/report.md
                deps: [src/report.py, out/metrics.json]
                outs: [out/report.md]
                metrics: out/metrics.json
                params: {}
            """,
        ),
        env=NO_ENV,
    )
    assert config.executor == ExecutorConfig(kind="ray", jobs=4, address="ray://head:10001")
    assert config.data["loans"].source == "data/loans/*.parquet"
    assert config.data["raw"].options == {"sep": ";"}
    assert config.data["accounts"].sql == "SELECT * FROM accounts"
    assert config.pipeline["train"].input_refs() == [("frame", "prepare.train")]
    assert config.upstream("train") == ["prepare"]
    assert config.pipeline["report"].metrics == "out/metrics.json"


def test_shorthand_and_empty_forms(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            project: p1
            executor: ray://head:10001
            data:
              loans: data/loans.csv
            pipeline:
              prepare:
                run: steps:prepare
                inputs: data.loans
                params:
              report:
                cmd: make report
                deps: out/x.json
                outs: out/report.md
            """,
        ),
        env=NO_ENV,
    )
    assert config.executor == ExecutorConfig(kind="ray", address="ray://head:10001")
    assert config.data["loans"] == SourceConfig(source="data/loans.csv")
    assert config.pipeline["prepare"].inputs == ["data.loans"]
    assert config.pipeline["prepare"].params == {}
    assert config.pipeline["report"].deps == ["out/x.json"]
    assert config.pipeline["report"].outs == ["out/report.md"]

    bare = load_config(write(tmp_path, "project: p2\ndata:\npipeline:\nexecutor: local\n"), env={})
    assert (bare.data, bare.pipeline, bare.executor.kind) == ({}, {}, "local")


def test_yaml_12_exponent_is_a_number_not_a_string(tmp_path: Path) -> None:
    # PyYAML alone reads an unquoted 1e-3 as the string "1e-3".
    config = load_config(
        write(
            tmp_path,
            """
            project: p
            pipeline:
              train: {run: m:f, params: {lr: 1e-3, tag: "1e-3", n: 3}}
            """,
        ),
        env=NO_ENV,
    )
    assert config.pipeline["train"].params == {"lr": 0.001, "tag": "1e-3", "n": 3}


def test_anchors_under_x_keys_merge_into_steps(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            project: p
            x-fit: &fit
              run: m:fit
              params: {depth: 3, seed: 7}
            pipeline:
              small: {<<: *fit, description: small tree}
              large:
                <<: *fit
                params: {depth: 12}
            """,
        ),
        env=NO_ENV,
    )
    assert config.pipeline["small"] == StepConfig(
        run="m:fit", params={"depth": 3, "seed": 7}, description="small tree"
    )
    assert config.pipeline["large"].params == {"depth": 12}  # explicit keys win over merged
    assert "x-fit" not in config.to_json()


def test_environment_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        project: p
        store: {url: "sqlite:///file.db"}
        executor: {kind: ray, address: "ray://head:10001", jobs: 2}
        """,
    )
    from_file = load_config(path, env=NO_ENV)
    assert from_file.store.url == "sqlite:///file.db"
    assert from_file.store.artifacts == ".conveyor/artifacts"
    assert from_file.executor.jobs == 2

    env = {
        "CONVEYOR_STORE_URL": "postgresql+psycopg://ci@db/conveyor",
        "CONVEYOR_ARTIFACTS": "s3://bucket/artifacts",
        "CONVEYOR_EXECUTOR": "local",
        "CONVEYOR_JOBS": "8",
    }
    config = load_config(path, env=env)
    assert config.store == StoreConfig(
        url="postgresql+psycopg://ci@db/conveyor", artifacts="s3://bucket/artifacts"
    )
    # Switching to local drops the file's Ray address rather than failing on it.
    assert config.executor == ExecutorConfig(kind="local", jobs=8, address=None)
    assert config.store_url() == "postgresql+psycopg://ci@db/conveyor"
    assert config.artifacts_url() == "s3://bucket/artifacts"


def test_environment_is_read_from_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_EXECUTOR", "ray://cluster:10001")
    monkeypatch.setenv("CONVEYOR_JOBS", "3")
    config = load_config(write(tmp_path, "project: p\nexecutor: local\n"))
    assert config.executor == ExecutorConfig(kind="ray", jobs=3, address="ray://cluster:10001")


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, "project: p\n", env={"CONVEYOR_JOBS": "many"})
    assert lines == [
        "conveyor.yaml: executor.jobs: expected an integer ≥ 1, got 'many' "
        "(from environment variable CONVEYOR_JOBS)"
    ]
    lines = errors_of(tmp_path, "project: p\n", env={"CONVEYOR_EXECUTOR": "dask"})
    assert lines == [
        "conveyor.yaml: executor.kind: expected 'local' or 'ray', got 'dask' "
        "(from environment variable CONVEYOR_EXECUTOR)"
    ]


DIAMOND = """
project: p
pipeline:
  report: {run: m:report, inputs: [left, right]}
  right: {run: m:right, inputs: [top]}
  left: {run: m:left, inputs: {frame: top.train}}
  top: {run: m:top}
  lonely: {run: m:lonely}
"""


def test_topological_order_and_downstream_on_a_diamond(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DIAMOND), env=NO_ENV)

    # Ties are broken by file order: right before left, and lonely, ready from the start,
    # still waits for its turn in the file.
    assert config.topological_order() == ["top", "right", "left", "report", "lonely"]
    assert config.upstream("report") == ["right", "left"]
    assert config.upstream("top") == []
    assert config.downstream("top") == {"left", "right", "report"}
    assert config.downstream("left") == {"report"}
    assert config.downstream("report") == set()
    with pytest.raises(StepNotFound, match="No step 'nope' in .*; known steps: report, right"):
        config.downstream("nope")


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=12), st.randoms(use_true_random=False))
def test_topological_order_respects_every_edge(size: int, rng: random.Random) -> None:
    names = [f"s{i}" for i in range(size)]
    inputs = {name: rng.sample(names[:i], k=rng.randint(0, i)) for i, name in enumerate(names)}
    file_order = names[:]
    rng.shuffle(file_order)
    config = ProjectConfig(
        project="p",
        pipeline={name: StepConfig(run="m:f", inputs=inputs[name]) for name in file_order},
    )
    order = config.topological_order()
    assert sorted(order) == sorted(names)
    for name in names:
        assert all(order.index(up) < order.index(name) for up in inputs[name])
        assert set(config.upstream(name)) == set(inputs[name])


def test_cmd_deps_on_another_steps_outs_make_edges(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            project: p
            pipeline:
              report:
                cmd: python report.py
                deps: [report.py, ./out/metrics.json, models/]
              metrics: {cmd: python eval.py, deps: [eval.py], outs: [out/metrics.json]}
              models: {cmd: python fit.py, outs: [models/big]}
              plots: {cmd: python plot.py, deps: [figures/a/b.png]}
              figures: {cmd: python figs.py, outs: [figures]}
            """,
        ),
        env=NO_ENV,
    )
    assert config.upstream("report") == ["metrics", "models"]
    assert config.upstream("plots") == ["figures"]
    assert config.topological_order() == ["metrics", "models", "report", "figures", "plots"]
    assert config.downstream("metrics") == {"report"}


def test_to_json_is_canonical_whatever_the_key_order(tmp_path: Path) -> None:
    one = tmp_path / "one"
    two = tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = load_config(
        write(
            one,
            """
            project: p
            data: {loans: data/l.csv}
            pipeline:
              prepare: {run: m:prepare, inputs: [data.loans], params: {b: 1, a: [1, 2]}}
              train: {run: m:train, inputs: [prepare]}
            """,
        ),
        env=NO_ENV,
    )
    second = load_config(
        write(
            two,
            """
            pipeline:
              train: {inputs: [prepare], run: m:train}
              prepare: {params: {a: [1, 2], b: 1}, inputs: [data.loans], run: m:prepare}
            data:
              loans: {source: data/l.csv}
            project: p
            """,
        ),
        env=NO_ENV,
    )
    assert first.to_json() == second.to_json()
    decoded = json.loads(first.to_json())
    assert decoded["pipeline"]["prepare"]["params"] == {"a": [1, 2], "b": 1}
    assert decoded["store"] == {"artifacts": ".conveyor/artifacts", "url": DEFAULT_URL}
    assert list(decoded) == sorted(decoded)


def test_store_and_artifacts_resolve_against_the_root(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    config = load_config(write(tmp_path, "project: p\n"), env=NO_ENV)
    assert config.store_url() == f"sqlite:///{root}/.conveyor/conveyor.db"
    assert config.artifacts_url() == f"{root}/.conveyor/artifacts"

    def resolved(url: str) -> str:
        return load_config(write(tmp_path, "project: p\n"), env={"CONVEYOR_STORE_URL": url})

    assert resolved("sqlite:///../meta.db?timeout=5").store_url() == (
        f"sqlite:///{root.parent}/meta.db?timeout=5"
    )
    assert resolved("sqlite+pysqlite:///x.db").store_url() == f"sqlite+pysqlite:///{root}/x.db"
    for unchanged in ("sqlite:////abs/meta.db", "sqlite://", "sqlite:///:memory:"):
        assert resolved(unchanged).store_url() == unchanged

    # A real SQLite database opens at the resolved path, wherever the process runs from.
    db = config.store_url().removeprefix("sqlite:///")
    Path(db).parent.mkdir(parents=True)
    sqlite3.connect(db).close()
    assert (tmp_path / ".conveyor" / "conveyor.db").is_file()


def test_find_project_root_walks_up_from_a_subdirectory(tmp_path: Path) -> None:
    write(tmp_path, "project: p\n")
    deep = tmp_path / "src" / "loans"
    deep.mkdir(parents=True)
    (deep / "steps.py").write_text("")
    assert find_root(deep) == tmp_path.resolve()
    assert find_root(deep / "steps.py") == tmp_path.resolve()
    assert load_project(deep, env=NO_ENV).root == tmp_path.resolve()


def test_find_project_root_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as info:
        find_root(tmp_path)
    assert str(info.value) == (
        f"No conveyor.yaml in {tmp_path.resolve()} or any parent directory. "
        "Run 'conveyor init' to create a project."
    )
    with pytest.raises(ProjectError, match="No conveyor.yaml at .*Run 'conveyor init'"):
        load_config(tmp_path / "conveyor.yaml")


# ---------------------------------------------------------------------------------------------
# Errors: the exact text a user reads.


def test_unknown_step_lists_the_known_ones(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          prepare: {run: m:prepare}
          train:
            run: m:train
            inputs:
              - prepare
              - prep
          evaluate: {run: m:evaluate, inputs: [train]}
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline.train.inputs[1]: unknown step 'prep'; "
        "known steps: prepare, evaluate (line 8)"
    ]


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          train:
            run: m:train
            parms: {max_depth: 6}
        gats: [auc > 0.8]
        wibble: 1
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline.train: unknown key 'parms'; did you mean 'params'? (line 5)",
        "conveyor.yaml: unknown key 'gats'; did you mean 'gates'? (line 6)",
        "conveyor.yaml: unknown key 'wibble'; expected one of: "
        "project, store, executor, data, pipeline, model, registry, validate, gates, serve, "
        "deploy, monitor (line 7)",
    ]


def test_run_must_be_module_colon_function(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          train:
            run: loans.steps.train
          other: {run: "loans.class:fit"}
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline.train.run: expected 'module:function' such as "
        "'loans.steps:train', got 'loans.steps.train' (line 4)",
        "conveyor.yaml: pipeline.other.run: expected 'module:function' such as "
        "'loans.steps:train', got 'loans.class:fit' (line 5)",
    ]


def test_cycle_names_every_step_in_it(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          start: {run: m:start}
          prepare: {run: m:prepare, inputs: [start, evaluate]}
          train: {run: m:train, inputs: [prepare]}
          evaluate: {run: m:evaluate, inputs: {model: train.model}}
          a: {cmd: make a, deps: [b.txt], outs: [a.txt]}
          b: {cmd: make b, deps: [a.txt], outs: [b.txt]}
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline: cycle prepare -> train -> evaluate -> prepare (line 4)",
        "conveyor.yaml: pipeline: cycle a -> b -> a (line 7)",
    ]


def test_self_reference_is_not_a_cycle_but_an_error(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, "project: p\npipeline:\n  t: {run: m:t, inputs: [t.x]}\n")
    assert lines == [
        "conveyor.yaml: pipeline.t.inputs[0]: step 't' cannot take its own output as input (line 3)"
    ]


def test_source_takes_source_or_sql_not_both(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        data:
          raw: data/raw.csv
          loans: {source: data/l.parquet, sql: "SELECT 1", url: "sqlite:///x.db"}
          accounts: {sql: "SELECT * FROM accounts"}
          nothing: {format: csv}
        """,
    )
    assert lines == [
        "conveyor.yaml: data.loans: give either 'source' (a file or glob) or 'sql' with 'url', "
        "not both (line 4)",
        "conveyor.yaml: data.accounts: 'sql' needs 'url', the SQLAlchemy URL of the database "
        "to query (line 5)",
        "conveyor.yaml: data.nothing: give either 'source' (a file or glob) or 'sql' with 'url' "
        "(line 6)",
    ]


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          train:
            run: m:train
          inputs: x: y
        """,
    )
    # libyaml and pure-Python PyYAML word this one differently.
    assert lines[0] in (
        "conveyor.yaml: line 5, column 12: mapping values are not allowed in this context",
        "conveyor.yaml: line 5, column 12: mapping values are not allowed here",
    )
    assert len(lines) == 1

    lines = errors_of(tmp_path, 'project: "p\npipeline: {}\n')
    assert len(lines) == 1
    assert lines[0].startswith("conveyor.yaml: line 3, column 1: found unexpected end of stream")
    assert "(while scanning a quoted scalar on line 1)" in lines[0]

    lines = errors_of(tmp_path, "project: p\n---\nproject: q\n")
    assert lines == [
        "conveyor.yaml: line 2, column 1: expected a single document in the stream "
        "but found another document"
    ]


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          train: {run: m:train}
          evaluate: {run: m:evaluate}
          train: {run: m:train2}
        project: q
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline: key 'train' appears twice, on lines 3 and 5; keep only one "
        "(line 5)",
        "conveyor.yaml: key 'project' appears twice, on lines 1 and 6; keep only one (line 6)",
    ]


def test_wrong_types_say_what_was_expected(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        executor:
          jobs: many
        store: {url: 5}
        pipeline:
          train: {run: m:train, deps: [a, 3], cmd: null, description: [x]}
          step2: just a string
        """,
    )
    assert lines == [
        "conveyor.yaml: executor.jobs: expected an integer ≥ 1, got 'many' (line 3)",
        "conveyor.yaml: store.url: expected a string, got 5 (line 4)",
        "conveyor.yaml: pipeline.train.deps[1]: expected a string, got 3 (line 6)",
        "conveyor.yaml: pipeline.train.description: expected a string, got a list (line 6)",
        "conveyor.yaml: pipeline.step2: expected a mapping with 'run' (a Python function) "
        "or 'cmd' (a shell command), got 'just a string' (line 7)",
    ]
    for jobs in ("0", "-2", "1.5", "true"):
        lines = errors_of(tmp_path, f"project: p\nexecutor: {{jobs: {jobs}}}\n")
        assert lines[0].startswith("conveyor.yaml: executor.jobs: expected an integer ≥ 1, got")


def test_two_steps_writing_the_same_out(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: p
        pipeline:
          fit: {cmd: python fit.py, outs: [models/model.skops, out/log.txt]}
          refit:
            cmd: python refit.py
            outs:
              - ./models/model.skops
        """,
    )
    assert lines == [
        "conveyor.yaml: pipeline.refit.outs[0]: './models/model.skops' is also an output of "
        "step 'fit'; only one step may write a path (line 7)"
    ]


def test_empty_file_and_non_mapping_top_level(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "# nothing yet\n") == [
        "conveyor.yaml: the file is empty; start it with a line such as 'project: loans'"
    ]
    assert errors_of(tmp_path, "- project: p\n") == [
        "conveyor.yaml: expected a mapping of keys such as 'project:' and 'pipeline:' at the "
        "top level, got a list (line 1)"
    ]
    assert errors_of(tmp_path, "loans\n") == [
        "conveyor.yaml: expected a mapping of keys such as 'project:' and 'pipeline:' at the "
        "top level, got the value 'loans' (line 1)"
    ]


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        executor: dask
        data:
          loans: {source: a.csv, fromat: csv}
        pipeline:
          data: {run: m:data}
          prepare: {run: m:prepare, inputs: [data.loan], params: {when: 2024-01-01}}
          train: {run: loans.steps.train, inputs: [prepare, evaluate]}
          evaluate: {run: m:evaluate, inputs: [train], deps: [x]}
          on: {run: m:f}
        """,
    )
    assert lines == [
        "conveyor.yaml: missing required key 'project'; add it such as 'project: loans'",
        "conveyor.yaml: executor: expected 'local', 'ray' or a mapping such as "
        "{kind: ray, jobs: 4}, got 'dask' (line 1)",
        "conveyor.yaml: data.loans: unknown key 'fromat'; did you mean 'format'? (line 3)",
        "conveyor.yaml: pipeline.data: a step cannot be named 'data', which refers to sources "
        "in 'inputs'; rename it (line 5)",
        "conveyor.yaml: pipeline.prepare.params.when: expected a string, number, boolean, null, "
        "list or mapping, got datetime.date(2024, 1, 1) (date); put it in quotes to keep it as "
        "text (line 6)",
        "conveyor.yaml: pipeline.prepare.inputs[0]: unknown data source 'loan'; "
        "known sources: loans (line 6)",
        "conveyor.yaml: pipeline.train.run: expected 'module:function' such as "
        "'loans.steps:train', got 'loans.steps.train' (line 7)",
        "conveyor.yaml: pipeline: cycle train -> evaluate -> train (line 7)",
        "conveyor.yaml: pipeline.evaluate.deps: 'deps' applies only to 'cmd' steps; a 'run' "
        "step gets its inputs from 'inputs' and returns its outputs (line 8)",
        "conveyor.yaml: pipeline.on: key 'on' is read as the boolean true; write it in quotes "
        '("on") to use it as a name (line 9)',
    ]


def test_reference_and_step_shape_errors(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        """
        project: My Project
        pipeline:
          a: {run: m:a, inputs: [data, "b c", 7]}
          b: {run: m:b, cmd: make}
          c: {description: nothing to do}
          "d e": {cmd: make d, inputs: {"not-id": a}}
        """,
    )
    assert lines == [
        "conveyor.yaml: project: expected a slug such as 'loans' (lowercase letters, digits, "
        "'_' and '-', starting with a letter or digit), got 'My Project' (line 1)",
        "conveyor.yaml: pipeline.a.inputs[2]: expected a reference (write 'data.NAME', 'STEP' "
        "or 'STEP.OUTPUT'), got 7 (line 3)",
        "conveyor.yaml: pipeline.b: give either 'run' (a Python function 'module:function') or "
        "'cmd' (a shell command), not both (line 4)",
        "conveyor.yaml: pipeline.c: give either 'run' (a Python function 'module:function') or "
        "'cmd' (a shell command) (line 5)",
        "conveyor.yaml: pipeline['d e']: step name 'd e' is not valid; use letters, digits, "
        "'_' and '-', starting with a letter or '_' (line 6)",
        "conveyor.yaml: pipeline['d e'].inputs.not-id: keyword 'not-id' must be a Python "
        "identifier, such as 'frame' (line 6)",
    ]
    lines = errors_of(
        tmp_path,
        "project: p\ndata: {x: a.csv}\npipeline:\n  a: {run: m:a, inputs: [data, 'b c']}\n",
    )
    assert lines == [
        "conveyor.yaml: pipeline.a.inputs[0]: 'data' alone is not a reference; name a source, "
        "such as 'data.x' (line 4)",
        "conveyor.yaml: pipeline.a.inputs[1]: write 'data.NAME', 'STEP' or 'STEP.OUTPUT', "
        "got 'b c' (line 4)",
    ]


def test_pydantic_text_never_leaks(tmp_path: Path) -> None:
    broken = [
        "project: [1]\n",
        "project: p\nstore: here\n",
        "project: p\nexecutor: {kind: [ray]}\n",
        "project: p\ndata: [a, b]\n",
        "project: p\ndata: {a: 5}\n",
        "project: p\npipeline: {a: {run: m:a, params: [1]}}\n",
        "project: p\npipeline: {a: {run: m:a, inputs: 5}}\n",
        "project: p\npipeline: {a: {cmd: x, outs: {a: b}}}\n",
        "project: p\npipeline: {a: {cmd: x, params: {x: .nan}}}\n",
        "project: p\n? [a, b]\n: c\n",
        "project: !env X\n",
    ]
    for text in broken:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), env=NO_ENV)
        message = str(info.value)
        assert info.value.issues, text
        assert len(message.splitlines()) == len(info.value.issues), text
        for banned in ("validation error", "pydantic", "Input should", "For further information"):
            assert banned not in message, (text, message)


def test_unreadable_values_are_reported_once(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "project: !env NAME\n") == [
        "conveyor.yaml: project: cannot read this value: could not determine a constructor "
        "for the tag '!env' (line 1)"
    ]
    assert errors_of(tmp_path, "project: p\n1: x\n") == [
        "conveyor.yaml: 1: key '1' is read as the value 1; write it in quotes (\"1\") to use it "
        "as a name (line 2)"
    ]
    assert errors_of(tmp_path, "project: p\npipeline:\n  a: {run: m:a\x07}\n") == [
        "conveyor.yaml: line 3, column 15: character #x0007: control characters are not allowed"
    ]
    (tmp_path / "conveyor.yaml").write_bytes(b"project: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "conveyor.yaml", env=NO_ENV)
    assert str(info.value) == (
        "conveyor.yaml: not UTF-8 text (bad byte at offset 9); save the file as UTF-8"
    )


def test_topological_order_refuses_a_cycle_that_skipped_validation() -> None:
    config = ProjectConfig.model_construct(
        project="p",
        pipeline={
            "a": StepConfig(run="m:a", inputs=["b"]),
            "b": StepConfig(run="m:b", inputs=["a"]),
        },
    )
    with pytest.raises(ConfigError, match="conveyor.yaml: pipeline: cycle a -> b -> a"):
        config.topological_order()


def test_programmatic_config_is_checked_too() -> None:
    with pytest.raises(ValidationError, match="pipeline: cycle a -> b -> a"):
        ProjectConfig(
            project="p",
            pipeline={
                "a": StepConfig(run="m:a", inputs=["b"]),
                "b": StepConfig(run="m:b", inputs=["a"]),
            },
        )
    config = ProjectConfig(project="p")
    assert config.root == Path.cwd()
    assert config.store_url() == f"sqlite:///{Path.cwd()}/.conveyor/conveyor.db"
