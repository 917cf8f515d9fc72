"""What a window reads back equals what callers sent: every signature type, records and arrays,
nulls, rows that do not fit, and several rows per request."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from conveyor.gateway.logtables import write_requests
from conveyor.monitor.windows import read_window
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import attach

SIGNATURE = {
    "inputs": [
        {"name": "amount", "type": "number", "nullable": True},
        {"name": "count", "type": "integer", "nullable": False},
        {"name": "grade", "type": "string", "nullable": True},
        {"name": "member", "type": "boolean", "nullable": False},
        {"name": "opened", "type": "datetime", "nullable": True},
    ],
    "output": {"task": "classification", "classes": ["no", "yes"], "returns": "probability"},
}


class Project:
    """Stands in for the metadata store: only the log is attached to it."""


def test_a_window_reads_back_what_was_sent(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    now = time.time()
    sent = [
        [[1.5, 3, "A", True, "2026-01-02T03:04:05Z"], [None, 0, None, False, None]],
        [{"amount": -2.25, "count": 7, "grade": "B", "member": False,
          "opened": "2026-05-06T07:08:09+02:00"}],
        [[0.1, 2.5, "C", True, None]],  # 2.5 is not an integer: kept as sent, then skipped
    ]  # fmt: skip
    answers = [["yes", "no"], ["no"], ["yes"]]
    entries = [
        (f"r{i}", now - 10 + i, "m", 1, "production", "serve", 200, 2.0, len(rows),
         orjson.dumps(rows).decode(),
         orjson.dumps({"predictions": answers[i], "probabilities": [[0.5, 0.5]] * len(rows)})
         .decode())
        for i, rows in enumerate(sent)
    ]  # fmt: skip
    write_requests(files, entries, lambda _m, _v: SIGNATURE, "t")
    project = Project()
    attach(project, files.root)
    window = read_window(project, "m", "production", seconds=60, signature=SIGNATURE)
    frame = window.inputs
    assert window.request_ids == ["r0", "r0", "r1"] and window.positions == [0, 1, 0]
    assert window.predictions == ["yes", "no", "no"]
    assert window.skipped == 1 and "r2 row 0" in window.problems[0]
    assert frame["amount"].tolist()[0] == 1.5 and np.isnan(frame["amount"].tolist()[1])
    assert frame["amount"].tolist()[2] == -2.25
    assert frame["count"].tolist() == [3.0, 0.0, 7.0]
    assert frame["grade"].tolist()[::2] == ["A", "B"] and frame["grade"].isna().tolist()[1]
    assert frame["member"].tolist() == [True, False, False]
    opened = frame["opened"].tolist()
    assert opened[0] == datetime(2026, 1, 2, 3, 4, 5) and frame["opened"].isna().tolist()[1]
    assert opened[2] == datetime(2026, 5, 6, 5, 8, 9)  # UTC wall time, as the gateway reads it
    assert window.request_rows == {"r0": 2, "r1": 1, "r2": 1}
    assert window.served_at["r1"] == datetime.fromtimestamp(round((now - 9) * 1e6) / 1e6, UTC)
    assert window.requests == 3 and window.statuses.tolist() == [200, 200, 200]
