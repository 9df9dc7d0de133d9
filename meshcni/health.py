# SPDX-License-Identifier: MIT OR Apache-2.0
"""/healthz, /readyz, /metrics (and JSON views) of a meshcni process, on one small HTTP server.

Shared by ``meshcni agent`` and ``meshcni controller``: readiness is an Event
the process sets, metrics are its own prometheus-client registry (each process
has one, so tests can run several).

Liveness (``/healthz``) is :class:`Liveness`: a set of named checks the process
registers once its loops run. With none registered it is "the process serves";
the agent registers its work queue (a reconcile stuck for longer than the bound,
or work that waits that long for a worker, fails it), its informers' threads and
the pinned datapath, so the kubelet restarts an agent that is alive but stuck.
A check returns None when healthy, else a short reason; ``/healthz`` answers 503
naming every failing check. Checks must be cheap: the kubelet calls every 10 s.
"""
from __future__ import annotations

import http.server
import json
import logging
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

log = logging.getLogger("meshcni.health")

Check = Callable[[], Optional[str]]


class Liveness:
    """Named liveness checks; :meth:`failures` runs them all (an exception is a failure)."""

    def __init__(self):
        self._checks: Dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def failures(self) -> List[Tuple[str, str]]:
        with self._lock:
            checks = list(self._checks.items())
        out = []
        for name, check in checks:
            try:
                why = check()
            except Exception as e:  # a check that cannot tell is not a healthy answer
                why = f"check raised {type(e).__name__}: {e}"
            if why:
                out.append((name, why))
        return out


def queue_progress(queue, max_seconds: float) -> Check:
    """The work queue's worker makes progress: no key held (one reconcile running)
    and no ready key left waiting for longer than ``max_seconds``.

    An idle queue is healthy: nothing waits. Retries with backoff are not
    stuck either: a delayed key is neither held nor ready until it is due.
    """
    def check() -> Optional[str]:
        held, waiting = queue.oldest()
        if held > max_seconds:
            return f"a reconcile has run for {held:.0f} s (bound {max_seconds:.0f} s)"
        if waiting > max_seconds:
            return f"work has waited {waiting:.0f} s for a worker (bound {max_seconds:.0f} s)"
        return None
    return check


def threads_alive(informers: Iterable) -> Check:
    """Every started informer's list/watch thread still runs (a dead one never updates its cache)."""
    informers = list(informers)

    def check() -> Optional[str]:
        dead = [getattr(i, "name", "?") for i in informers
                if getattr(i, "_thread", None) is not None and not i._thread.is_alive()]
        return f"informer threads ended: {', '.join(dead)}" if dead else None
    return check


def paths_exist(paths: Iterable[str], what: str) -> Check:
    """The pins the datapath keeps (programs, links) are still there (bpffs not unmounted under us)."""
    import os
    paths = list(paths)

    def check() -> Optional[str]:
        gone = [p for p in paths if not os.path.exists(p)]
        return f"{what} gone: {', '.join(gone)}" if gone else None
    return check


STUCK_AFTER = 120.0  # s: far above any reconcile seen (10k Services: < 1 s), far below "forever"


def watch(liveness: Liveness, *, queue=None, informers: Iterable = (), pins: Iterable[str] = (),
          stuck_after: float = STUCK_AFTER) -> Liveness:
    """Register the checks of a controller process in one call (the agent's wiring is this line)."""
    if queue is not None:
        liveness.add("workqueue", queue_progress(queue, stuck_after))
    informers = list(informers)
    if informers:
        liveness.add("informers", threads_alive(informers))
    pins = list(pins)
    if pins:
        liveness.add("datapath", paths_exist(pins, "pins"))
    return liveness


class HealthServer:
    def __init__(self, address: str, ready: threading.Event, registry,
                 before_metrics: Optional[Callable[[], None]] = None,
                 views: Optional[Dict[str, Callable[[], object]]] = None, name: str = "meshcni",
                 liveness: Optional[Liveness] = None):
        host, _, port = address.rpartition(":")
        srv = self
        self.liveness = liveness if liveness is not None else Liveness()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/healthz":
                    bad = srv.liveness.failures()
                    if bad:
                        log.warning("%s: liveness failing: %s", name, "; ".join(f"{n}: {w}" for n, w in bad))
                        code, ct = 503, "text/plain"
                        body = "".join(f"{n}: {why}\n" for n, why in bad).encode()
                    else:
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
