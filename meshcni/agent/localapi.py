# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's local API on a unix socket (for the CNI plugin and the CLI).

    GET    /healthz                              200 "ok" once the agent serves
    GET    /v1/status                            the agent's status (JSON)
    GET    /v1/endpoints                         local endpoints (JSON list)
    GET    /v1/services                          the Services the agent programmed (JSON list)
    PUT    /v1/endpoints/{containerID}/{ifname}  register (the CNI plugin's ADD)
    DELETE /v1/endpoints/{containerID}/{ifname}  deregister (DEL); unknown is fine

The endpoint table is also rebuilt from the plugin's on-disk records at
start (``meshcni.cni.endpoints``), so pods added while the agent was down
are known; the socket only makes it immediate.
"""
from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Callable, Dict, Optional

log = logging.getLogger("meshcni.agent.localapi")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class LocalAPI:
    def __init__(self, path: str, status: Callable[[], dict], on_change: Optional[Callable[[], None]] = None,
                 views: Optional[Dict[str, Callable[[], object]]] = None):
        self.path, self.status, self.on_change = path, status, on_change
        self.views = dict(views or {})  # more read-only GET paths (e.g. /v1/services)
        self.endpoints: Dict[str, dict] = {}
        self.lock = threading.Lock()
        self._srv: Optional[_Server] = None

    def load(self, records) -> None:
        with self.lock:
            for r in records:
                self.endpoints[f"{r['containerID']}/{r['ifname']}"] = r

    def start(self) -> "LocalAPI":
        api = self
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a socket left by a previous agent

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self):
                return "unix"

            def log_message(self, fmt, *args):
                log.debug("local API: " + fmt, *args)

            def _send(self, code: int, obj) -> None:
                body = (json.dumps(obj) if not isinstance(obj, str) else obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _ep_key(self):
                parts = self.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v1", "endpoints"]:
                    return f"{parts[2]}/{parts[3]}"
                return None

            def do_GET(self):
                if self.path == "/healthz":
                    return self._send(200, '"ok"')
                if self.path == "/v1/status":
                    return self._send(200, api.status())
                if self.path in api.views:
                    return self._send(200, api.views[self.path]())
                if self.path == "/v1/endpoints":
                    with api.lock:
                        return self._send(200, sorted(api.endpoints.values(), key=lambda r: r["containerID"]))
                self._send(404, {"error": f"no such path {self.path}"})

            def do_PUT(self):
                k = self._ep_key()
                if k is None:
                    return self._send(404, {"error": f"no such path {self.path}"})
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    rec = json.loads(self.rfile.read(n))
                    if not isinstance(rec, dict) or f"{rec.get('containerID')}/{rec.get('ifname')}" != k:
                        raise ValueError("record does not match the path")
                except (ValueError, TypeError) as e:
                    return self._send(400, {"error": f"bad endpoint record: {e}"})
                with api.lock:
                    api.endpoints[k] = rec
                log.info("endpoint %s registered (%s/%s, %s)", k, rec.get("podNamespace"), rec.get("podName"),
                         ",".join(rec.get("ips", [])))
                if api.on_change:
                    api.on_change()
                self._send(200, {"registered": k})

            def do_DELETE(self):
                k = self._ep_key()
                if k is None:
                    return self._send(404, {"error": f"no such path {self.path}"})
                with api.lock:
                    gone = api.endpoints.pop(k, None)
                if gone and api.on_change:
                    api.on_change()
                self._send(200, {"deleted": k, "existed": gone is not None})

        self._srv = _Server(self.path, Handler)
        os.chmod(self.path, 0o600)
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.2}, name="localapi",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
