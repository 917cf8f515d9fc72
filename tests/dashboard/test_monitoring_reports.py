"""The dashboard's kept monitoring reports: what is kept, for how long, computed once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pandas as pd
import pytest

from conveyor.dashboard import monitoring
from conveyor.dashboard.monitoring import Kept, Reports
from conveyor.monitor.html import TOP_CATEGORIES


def test_a_report_asked_for_twice_while_queued_is_computed_once() -> None:
    reports = Reports()
    gate, calls = threading.Event(), []

    def work() -> Kept:
        gate.wait(10)
        calls.append(1)
        return Kept(at=datetime.now(UTC), problem="computed")

    try:
        reports.schedule(("now", "m", "production", 1), work)
        reports.schedule(("now", "m", "production", 1), work)  # already queued: ignored
        assert reports.pending(("now", "m", "production", 1))
        gate.set()
        reports.wait(10)
        assert calls == [1]
        kept = reports.get(("now", "m", "production", 1))
        assert kept is not None and kept.problem == "computed"
        assert not reports.pending(("now", "m", "production", 1))
    finally:
        reports.close()


def test_the_least_recently_used_report_goes_first() -> None:
    reports = Reports(size=2)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    reports.put(("a",), Kept(at=at))
    reports.put(("b",), Kept(at=at))
    assert reports.get(("a",)) is not None  # a is now the more recent
    reports.put(("c",), Kept(at=at))
    assert reports.get(("b",)) is None
    assert reports.get(("a",)) is not None and reports.get(("c",)) is not None


def test_age_counts_from_the_window_end_and_staleness_from_the_computation() -> None:
    end = datetime(2026, 1, 1, 12, tzinfo=UTC)
    kept = Kept(at=end)
    assert kept.age_s(datetime(2026, 1, 1, 12, 0, 45, tzinfo=UTC)) == 45.0
    assert not kept.older_than(30.0)  # computed just now, whatever window it covers
    assert monitoring.age_text(45.0) == "45 s"
    assert monitoring.age_text(600.0) == "10 min"
    assert monitoring.age_text(7200.0) == "2.0 h"


def test_history_windows_end_on_boundaries_that_repeat_between_requests() -> None:
    now = datetime(2026, 1, 1, 12, 34, 56, tzinfo=UTC)
    ends = monitoring.history_ends(now, 3600.0)
    assert len(ends) == monitoring.HISTORY
    assert ends[-1] == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert ends[0] == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    later = datetime(2026, 1, 1, 12, 59, 59, tzinfo=UTC)
    assert monitoring.history_ends(later, 3600.0) == ends


def test_distributions_are_shares_on_shared_bins_and_the_commonest_categories() -> None:
    numbers = monitoring._histogram(pd.Series(range(100)), pd.Series(range(50, 150)))
    assert numbers is not None and len(numbers["edges"]) == monitoring.BINS + 1
    assert sum(numbers["reference"]) == pytest.approx(1.0)
    assert sum(numbers["live"]) == pytest.approx(1.0)
    assert numbers["n_reference"] == numbers["n_live"] == 100
    labels = [f"c{i}" for i in range(12)]
    cats = monitoring._categories(pd.Series(labels * 2), pd.Series(["c0"] * 5))
    assert cats is not None and len(cats["categories"]) == TOP_CATEGORIES
    assert cats["categories"][-1] == "(other)"
    assert cats["live"][cats["categories"].index("c0")] == 1.0
    assert sum(cats["reference"]) == pytest.approx(1.0)
    assert monitoring._histogram(pd.Series([], dtype=float), pd.Series([], dtype=float)) is None


def test_a_report_that_breaks_in_the_worker_is_kept_as_its_problem() -> None:
    reports = Reports()

    def work() -> Kept:
        raise RuntimeError("the log's folder vanished")

    try:
        reports.schedule(("now", "m", "eu", 3), work)
        reports.wait(10)
        kept = reports.get(("now", "m", "eu", 3))
        assert kept is not None and kept.report is None
        assert kept.problem == (
            "The report could not be computed (RuntimeError: the log's folder vanished); the "
            "dashboard's log has the traceback."
        )
        assert not reports.pending(("now", "m", "eu", 3))  # the page stops waiting for it
    finally:
        reports.close()
