"""The metadata store, one contract for every backend: a SQLite file and a real PostgreSQL."""

from __future__ import annotations

import multiprocessing
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.exceptions import RunNotFound, StoreError
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.metadata import StepRecord, Store
from conveyor.store.records import HEAD_REVISION


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
        return
    from tests.pg_server import drop_database, fresh_database, require_postgres

    url = fresh_database(require_postgres())
    yield url
    drop_database(url)


@pytest.fixture
def store(store_url: str):
    with Store(store_url) as opened:
        yield opened


def _run(store: Store, workspace: str = "/w", steps: dict | None = None) -> str:
    return store.start_run(
        project="p",
        workspace=workspace,
        env_hash="e" * 64,
        config_hash="c" * 64,
        args={},
        git_commit=None,
        git_dirty=None,
        steps=steps if steps is not None else {"a": "", "b": ""},
    )


def test_head_revision_constant_matches_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from conveyor.store.metadata import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_the_alembic_migrations_build_the_schema_a_new_database_gets(store_url: str) -> None:
    """A new database is created from the models and stamped; an old one is upgraded by
    Alembic. Both must give the same tables, columns, types and indexes."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from conveyor.store.metadata import MIGRATIONS

    engine = create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), m.Base.metadata) == []
    engine.dispose()
    with Store(store_url) as store:  # opening a migrated database leaves it as it is
        assert store._revision() == HEAD_REVISION


def test_a_new_database_is_stamped_at_head_with_the_models_schema(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert store._revision() == HEAD_REVISION
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), m.Base.metadata) == []


def test_every_state_change_is_an_event(store: Store) -> None:
    run_id = _run(store)
    store.step_started(run_id, "a", "never ran")
    store.record_step(
        StepRecord(
            run_id=run_id,
            step="a",
            status="ran",
            cache_key="k1",
            cacheable=True,
            outputs={"return": {"digest": "d" * 64, "format": "json", "size": 2}},
            metrics=[("auc", 0.9, 0, 1.0)],
        )
    )
    store.record_step(StepRecord(run_id=run_id, step="b", status="blocked", cache_key=""))
    store.finish_run(run_id, "failed", "b: blocked")
    kinds = [e.kind for e in store.events(entity_id=run_id)]
    assert kinds == ["run.started", "step.started", "step.ran", "step.blocked", "run.failed"]
    assert all(e.actor.endswith("@" + socket.gethostname()) for e in store.events())
    assert store.cached(["k1"])["k1"].metrics == {"auc": 0.9}
    assert store.referenced_digests() == {"d" * 64}


def test_run_lookup_by_prefix_latest_and_clear_errors(store: Store) -> None:
    first = _run(store)
    second = _run(store)
    assert store.run(first).id == first
    assert store.run(second[:-2]).id == second
    assert store.run("latest").id == second
    with pytest.raises(RunNotFound, match=r"^No run matches 'zzz'\. Run 'conveyor runs'"):
        store.run("zzz")
    prefix = first[:4]
    with pytest.raises(RunNotFound, match=f"^Run id prefix '{prefix}' is ambiguous"):
        store.run(prefix)


def test_interrupted_runs_are_only_those_of_this_workspace(store: Store) -> None:
    mine = _run(store, "/here")
    other = _run(store, "/elsewhere")
    assert store.mark_interrupted("/here") == [mine]
    assert store.run(mine).status == "interrupted"
    assert store.run(other).status == "running"
    assert {s.status for s in store.step_runs(mine)} == {"interrupted"}
    assert "run.interrupted" in [e.kind for e in store.events(entity_id=mine)]


def test_a_failed_write_is_a_store_error_and_leaves_nothing_half_written(store: Store) -> None:
    run_id = _run(store)
    before = store.count(m.Event)
    with pytest.raises(StoreError, match="refused a write"):
        with store.session() as s:
            store.add_event(s, ev.RUN_DELETED, "run", run_id, {"reason": "test"})
            s.add(m.StepRun(run_id="no-such-run", step="a", status="ran", cache_key=""))
    assert store.count(m.Event) == before


def test_an_event_kind_outside_the_catalogue_is_refused_and_nothing_is_written(
    store: Store,
) -> None:
    run_id = _run(store)
    before = store.count(m.Event)
    with pytest.raises(StoreError, match=r"^Unknown event kind 'run\.renamed': .*events\.py"):
        with store.session() as s:
            s.add(m.StepRun(run_id=run_id, step="c", status="pending", cache_key=""))
            store.add_event(s, "run.renamed", "run", run_id)
    with pytest.raises(StoreError, match="written against entity 'model'.*not 'run'"):
        with store.session() as s:
            store.add_event(s, ev.ALIAS_MOVED, "run", run_id)
    assert store.count(m.Event) == before
    assert [s.step for s in store.step_runs(run_id)] == ["a", "b"]


def test_a_status_no_event_records_is_refused_before_anything_is_written(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(StoreError, match=r"^A run ends as 'succeeded' or 'failed' or 'inter"):
        store.finish_run(run_id, "done")
    with pytest.raises(StoreError, match=r"^A step ends as 'ran' or .*not 'skipped'"):
        store.record_step(StepRecord(run_id=run_id, step="a", status="skipped", cache_key=""))
    assert store.run(run_id).status == "running"
    assert {s.status for s in store.step_runs(run_id)} == {"pending"}
    assert [e.kind for e in store.events(entity_id=run_id)] == [ev.RUN_STARTED]


def test_unreachable_database_is_a_store_error_without_the_password() -> None:
    url = "postgresql+psycopg://bob:secret@127.0.0.1:1/nothere"
    with pytest.raises(StoreError) as info:
        Store(url).open()
    assert "secret" not in str(info.value)
    assert str(info.value).startswith(
        "Cannot open the metadata store postgresql+psycopg://bob:***@127.0.0.1:1/nothere"
    )
    assert not type(info.value).__module__.startswith("sqlalchemy")


def _open_and_write(url: str) -> None:
    with Store(url) as store:
        _run(store)


def test_two_processes_opening_a_fresh_database_both_succeed(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_write, args=(store_url,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(store_url) as store:
        assert len(store.runs()) == 2


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    metrics=st.lists(
        st.tuples(st.text(min_size=1, max_size=30), st.floats(allow_nan=False, width=64)),
        max_size=20,
    ),
    params=st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.none()),
        max_size=8,
    ),
)
def test_metrics_and_params_round_trip(store: Store, metrics, params) -> None:
    run_id = _run(store, steps={"s": ""})
    rows = [(key.replace("\x00", ""), value, i, 1.0) for i, (key, value) in enumerate(metrics)]
    rows = [r for r in rows if r[0]]
    clean = {
        k.replace("\x00", ""): (v.replace("\x00", "") if isinstance(v, str) else v)
        for k, v in params.items()
    }
    clean = {k: v for k, v in clean.items() if k}
    store.record_step(
        StepRecord(run_id=run_id, step="s", status="ran", cache_key="", metrics=rows, params=clean)
    )
    got = [(x.key, x.value, x.index) for x in store.metrics(run_id)]
    assert got == [(k, v, i) for k, v, i, _ in rows]
    import json

    assert {p.key: json.loads(p.value) for p in store.params(run_id)} == clean


def test_deleting_runs_takes_their_records_and_unused_cache_entries_only(store: Store) -> None:
    from datetime import timedelta

    from conveyor.store.records import utcnow

    old = _run(store, steps={"a": ""})
    store.record_step(
        StepRecord(
            run_id=old,
            step="a",
            status="ran",
            cache_key="k-old",
            cacheable=True,
            outputs={"return": {"digest": "1" * 64, "format": "json", "size": 1}},
            metrics=[("m", 1.0, 0, 1.0)],
            params={"p": 1},
            artifacts=[("plot.svg", "2" * 64, 3)],
        )
    )
    store.finish_run(old, "succeeded")
    new = _run(store, steps={"a": ""})
    store.record_step(StepRecord(run_id=new, step="a", status="cached", cache_key="k-new"))
    store.record_step(
        StepRecord(
            run_id=new,
            step="a",
            status="ran",
            cache_key="k-new",
            cacheable=True,
            outputs={"return": {"digest": "3" * 64, "format": "json", "size": 1}},
        )
    )
    store.finish_run(new, "succeeded")

    later = utcnow() + timedelta(seconds=1)
    assert store.prunable_runs("p", later) == [old]  # never the newest
    assert store.referenced_digests(exclude_runs=[old]) == {"3" * 64}
    store.delete_runs([old])
    assert [r.id for r in store.runs()] == [new]
    assert store.metrics(old) == [] and store.params(old) == []
    assert store.logged_artifacts(old) == []
    assert set(store.cached(["k-old", "k-new"])) == {"k-new"}
    assert store.referenced_digests() == {"3" * 64}
    assert [e.kind for e in store.events(entity_id=old)][-1] == "run.deleted"
