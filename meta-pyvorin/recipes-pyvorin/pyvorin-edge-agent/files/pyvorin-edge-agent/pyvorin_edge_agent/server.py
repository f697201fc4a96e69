"""The loopback HTTP endpoints: GET /health (JSON, monitoring), GET /ready
(JSON, what an update is confirmed on) and GET /metrics (Prometheus text).  Handlers only read the latest frozen snapshot, so a slow
client can never hold up sampling or the database."""

from __future__ import annotations

import errno
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pyvorin_edge_agent import prometheus
from pyvorin_edge_agent.errors import AgentError
from pyvorin_edge_agent.jsonlog import JsonLog

HealthSource = Callable[[], dict[str, Any]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib default (SO_REUSEADDR) is fine: it lets a restart rebind at once, and
    # Linux still refuses the bind while another socket listens on the port.
    health: HealthSource
    ready: HealthSource
    log: JsonLog


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pyv-edge-agent"
    sys_version = ""
    # A client that connects and sends nothing must not pin a thread forever.
    timeout = 10

    def do_GET(self) -> None:  # the name http.server dispatches to
        path = self.path.split("?", 1)[0]
        if path == "/health":
            doc = self.server.health()
            # 503 lets a plain `curl -f` (the OTA confirmation) act on the verdict.
            self._send(200 if doc["status"] == "healthy" else 503, "application/json",
                       json.dumps(doc, sort_keys=True).encode() + b"\n")
        elif path == "/ready":
            doc = self.server.ready()
            self._send(200 if doc["ready"] else 503, "application/json",
                       json.dumps(doc, sort_keys=True).encode() + b"\n")
        elif path == "/metrics":
            self._send(200, prometheus.CONTENT_TYPE, prometheus.render(self.server.health()).encode())
        else:
            self._send(404, "application/json", b'{"error": "not found"}\n')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        self.server.log.debug("http_request", client=self.client_address[0], request=format % args)


class HttpEndpoint:
    """Binds at construction (so "port in use" is a start-up error), serves in a thread."""

    def __init__(self, host: str, port: int, health: HealthSource, log: JsonLog,
                 ready: HealthSource | None = None) -> None:
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = cls((host, port), _Handler)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise AgentError(f"cannot listen on {host}:{port}: {reason}") from exc
        self._server.health = health
        self._server.ready = ready or (lambda: {"ready": False, "checks": {"agent": "no readiness source"}})
        self._server.log = log
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
