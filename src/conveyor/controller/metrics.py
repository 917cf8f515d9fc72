"""The controller's monitoring figures over HTTP, for Prometheus to scrape.

A thread of the controller's process rather than a part of the gateway: the figures are the
controller's last monitoring report, and the gateway may run elsewhere or not at all.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

__all__ = ["serve_metrics"]


class HasMetrics(Protocol):
    """Anything whose ``metrics_text`` is the Prometheus text to serve (the Controller)."""

    metrics_text: str


def serve_metrics(controller: HasMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the controller's last monitoring figures at ``http://HOST:PORT/metrics`` (a thread),
    so Prometheus scrapes what the alert rules and the Grafana dashboard read.

    Returns:
        The running server; ``shutdown()`` and ``server_close()`` stop it.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "Only /metrics is served here.")
                return
            body = controller.metrics_text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server
