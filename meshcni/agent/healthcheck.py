# SPDX-License-Identifier: MIT OR Apache-2.0
"""healthCheckNodePort, answered as kube-proxy answers it.

A cloud load balancer in front of a LoadBalancer Service with
``externalTrafficPolicy: Local`` probes every node on the Service's
``healthCheckNodePort`` and sends traffic only to the nodes that answer 200:
those with a ready local endpoint (the others drop external traffic to that
Service). The answer, on any path (``/healthz`` is what probes use), is
kube-proxy's::

    {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 1, "serviceProxyHealthy": true}

with 200 when ``localEndpoints`` > 0, else 503, and the count again in the
``X-Load-Balancing-Endpoints`` header. One listener per (node address,
port), on the addresses NodePorts answer on (``--nodeport-addresses``).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

from ..controllers.services import health_checks
from ..k8s.reconciler import Desired, Reconciler

log = logging.getLogger("meshcni.agent.healthcheck")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: str, port: int, answers: "HealthChecks"):
        self.address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.answers = answers
        self.hc_port = port
        super().__init__((addr, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self):  # noqa: N802 (http.server's name)
        got = self.server.answers.answer(self.server.hc_port)
        if got is None:
            body, code, n = b'{"error": "no such health check"}', 404, 0
        else:
            (ns, name), n = got
            body = json.dumps({"service": {"namespace": ns, "name": name}, "localEndpoints": n,
                               "serviceProxyHealthy": True}).encode()
            code = 200 if n > 0 else 503
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Load-Balancing-Endpoints", str(n))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # probes every few seconds: not worth a log line each
        pass


class HealthChecks(Reconciler):
    """LoadBalancer Services with eTP Local -> an HTTP listener per healthCheckNodePort on this node's
    NodePort addresses (``node_context(caches)``: the Services reconciler's, so both answer on the same)."""
    name = "healthchecks"
    watches = ("services", "endpointslices", "nodes")

    def __init__(self, node_name: str, node_context):
        self.node_name = node_name
        self.node_context = node_context
        self.lock = threading.Lock()
        self.ports: Dict[int, Tuple[Tuple[str, str], int]] = {}
        self.servers: Dict[Tuple[str, int], _Server] = {}
        self.failed: Dict[Tuple[str, int], str] = {}

    def desired(self, caches) -> Desired:
        checks, problems = health_checks(caches["services"].list(), caches["endpointslices"].list(), self.node_name)
        node, _ = self.node_context(caches)  # its errors are the Services reconciler's to report
        return Desired((checks, node.addresses), problems)

    def answer(self, port: int):
        with self.lock:
            return self.ports.get(port)

    def apply(self, state) -> dict:
        checks, addrs = state
        with self.lock:
            self.ports = {p: (tuple(svc.split("/", 1)), n) for p, (svc, n) in checks.items()}
        want = {(a, p) for a in addrs for p in checks}
        for k in [k for k in self.servers if k not in want]:
            srv = self.servers.pop(k)
            srv.shutdown()
            srv.server_close()
        self.failed = {k: v for k, v in self.failed.items() if k in want}
        for a, p in sorted(want - set(self.servers)):
            try:
                srv = _Server(a, p, self)
            except OSError as e:
                if self.failed.get((a, p)) != str(e):
                    log.warning("healthCheckNodePort %s on %s: cannot listen: %s", p, a, e)
                self.failed[(a, p)] = str(e)
                continue
            self.failed.pop((a, p), None)
            self.servers[(a, p)] = srv
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                             name=f"healthcheck-{p}", daemon=True).start()
        return {"healthChecks": len(checks), "listeners": len(self.servers), "failed": len(self.failed)}

    def view(self) -> List[dict]:
        with self.lock:
            return [{"port": p, "service": "/".join(svc), "localEndpoints": n}
                    for p, (svc, n) in sorted(self.ports.items())]

    def close(self) -> None:
        for srv in self.servers.values():
            srv.shutdown()
            srv.server_close()
        self.servers = {}
