"""A writer process for the prediction log's tests: records one-row requests through the real
``RequestLog`` writer thread until told to stop (or killed), into the log root it is given.

``python -m tests.store.predictionlog.writer_child ROOT NAME COUNT FLUSH_SECONDS`` records COUNT
requests (0: until killed) at about 2,000 a second, each with id ``NAME-<n>``, and closes the log
(a graceful stop flushes) unless it was killed first. It prints ``started`` once the writer runs.
"""

from __future__ import annotations

import sys
import time

import orjson

from conveyor.gateway.requestlog import RequestLog

SIGNATURE = {
    "inputs": [
        {"name": "x", "type": "number", "nullable": False},
        {"name": "n", "type": "integer", "nullable": False},
        {"name": "s", "type": "string", "nullable": True},
    ],
    "output": {"task": "classification", "classes": [0, 1], "returns": "probability"},
}


def main() -> None:
    root, name, count, flush_seconds = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    log = RequestLog(object(), gateway=name, flush_seconds=flush_seconds, log_url=root)
    log._signatures[("m", 1)] = SIGNATURE  # no metadata store here: the signature is known
    log.start()
    print("started", flush=True)
    i = 0
    while count == 0 or i < count:
        inputs = orjson.dumps([[i * 0.5, i, f"s{i % 7}"]]).decode()
        outputs = orjson.dumps({"predictions": [i % 2], "probabilities": [[0.25, 0.75]]}).decode()
        log.record(f"{name}-{i}", "m", 1, "production", "serve", 200, 1.0, 1, inputs, outputs)
        i += 1
        if i % 20 == 0:
            time.sleep(0.01)
    log.close()
    print(f"done {i}", flush=True)


if __name__ == "__main__":
    main()
