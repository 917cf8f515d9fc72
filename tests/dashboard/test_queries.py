"""The audit log's pages filtered by time, on a real SQLite store, with a late writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from conveyor.dashboard import queries
from conveyor.store import models as m
from conveyor.store.metadata import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _store(tmp_path: Path, stamps: list[datetime]) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}").open()
    with store.engine.begin() as conn:
        conn.execute(
            insert(m.Event.__table__),
            [
                {
                    "at": at,
                    "kind": "run.started",
                    "entity": "run",
                    "entity_id": f"r{i}",
                    "actor": "t@h",
                    "payload": {},
                }
                for i, at in enumerate(stamps)
            ],
        )
    return store


def test_until_finds_every_event_before_it_even_one_written_late(tmp_path: Path) -> None:
    # an hour apart, in order, except the 30th: written after the 40th, stamped 12 h earlier
    stamps = [T0 + timedelta(hours=h) for h in range(60)]
    stamps.insert(40, T0 + timedelta(hours=17, minutes=30))
    with _store(tmp_path, stamps) as store:
        until = T0 + timedelta(hours=20)
        page = queries.events_page(store, queries.EventFilter(until=until), cursor=None, limit=100)
        ats = [datetime.fromisoformat(e["at"]) for e in page.rows]
        assert all(at < until for at in ats)
        assert len(ats) == 21  # the 20 hours before, and the late one
        ids = [e["id"] for e in page.rows]
        assert ids == sorted(ids, reverse=True) and ids[0] == 41  # the late one, newest by id
        first = queries.events_page(store, queries.EventFilter(until=until), cursor=None, limit=5)
        second = queries.events_page(
            store,
            queries.EventFilter(until=until),
            cursor=int(first.next_cursor or 0),
            limit=5,
        )
        assert [e["id"] for e in first.rows + second.rows] == ids[:10]
        none = queries.events_page(store, queries.EventFilter(until=T0), cursor=None, limit=5)
        assert none.rows == [] and none.next_cursor is None
        every = queries.events_page(
            store, queries.EventFilter(until=T0 + timedelta(days=30)), cursor=None, limit=100
        )
        assert len(every.rows) == 61
