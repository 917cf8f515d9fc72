"""One webhook receiver for the alert tests: a real HTTP server on 127.0.0.1.

It records every call (path, headers, raw body). With a ``secret`` it checks each call's
signature as a receiver would (``verify_signature``, fresh timestamp) and answers 401 to one
that fails; scripted ``statuses`` are answered first, in order; otherwise 200.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conveyor.monitor.alerts import SIGNATURE_HEADER, verify_signature


@dataclass
class Receiver:
    """What the receiver saw; ``statuses`` may be set before the calls come."""

    url: str = ""
    secret: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order, then the default
    verdicts: list[bool] = field(default_factory=list)  # one per call, when a secret is set

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(call["body"]) for call in self.calls]


@contextmanager
def serve_receiver(secret: str | None = None) -> Iterator[Receiver]:
    """A running receiver at ``Receiver.url`` (``/hook``), stopped when the block ends."""
    state = Receiver(secret=secret)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ok = True
            if secret is not None:
                ok = verify_signature(body, self.headers.get(SIGNATURE_HEADER, ""), secret)
            with lock:
                state.calls.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                if secret is not None:
                    state.verdicts.append(ok)
                status = state.statuses.pop(0) if state.statuses else (200 if ok else 401)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
