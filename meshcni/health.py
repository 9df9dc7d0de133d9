# SPDX-License-Identifier: MIT OR Apache-2.0
"""/healthz, /readyz, /metrics (and JSON views) of a meshcni process, on one small HTTP server.

Shared by ``meshcni agent`` and ``meshcni controller``: liveness is "the
process serves", readiness is an Event the process sets, metrics are its own
prometheus-client registry (each process has one, so tests can run several).
"""
from __future__ import annotations

import http.server
import json
import logging
import threading
from typing import Callable, Dict, Optional

log = logging.getLogger("meshcni.health")


class HealthServer:
    def __init__(self, address: str, ready: threading.Event, registry,
                 before_metrics: Optional[Callable[[], None]] = None,
                 views: Optional[Dict[str, Callable[[], object]]] = None, name: str = "meshcni"):
        host, _, port = address.rpartition(":")
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/healthz":
                    code, body, ct = 200, b"ok", "text/plain"
                elif self.path == "/readyz":
                    ok = ready.is_set()
                    code, body, ct = (200 if ok else 503), (b"ok" if ok else b"not ready"), "text/plain"
                elif self.path == "/metrics":
                    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
                    if before_metrics is not None:
                        before_metrics()  # gauges read from the kernel at scrape time
                    code, body, ct = 200, generate_latest(registry), CONTENT_TYPE_LATEST
                elif self.path in srv.views:
                    code, body, ct = 200, json.dumps(srv.views[self.path]()).encode(), "application/json"
                else:
                    code, body, ct = 404, b"not found", "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ct)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.views = dict(views or {})
        self._httpd = http.server.ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name=f"{name}-http",
                         daemon=True).start()
        log.info("%s: health and metrics on http://%s:%d/", name, host or "127.0.0.1", self.port)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
