# SPDX-License-Identifier: MIT OR Apache-2.0
"""The processes a simulated cluster runs (its controller, an agent per node): started,
restarted when they exit (what the Deployment/DaemonSet and kubelet do), and their health.

A component is *ready* when its process runs, its ``/readyz`` answers 200 inside its own
network namespace, any extra check passes (an agent's CNI config is installed), and it is not
crash-looping: :data:`CRASH_LOOP` exits within :data:`CRASH_WINDOW` seconds make it not ready
until it has stayed up for :data:`STABLE_AFTER` seconds. A restart waits longer after each
quick exit (as kubelet's CrashLoopBackOff), so a component that cannot start costs little CPU.

The daemon writes every component's state to ``<cluster>/components.json`` about once a
second; ``sim status`` reads it (a file older than :data:`STALE_AFTER` s means the daemon no
longer reports, which is not ready either).
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

from .topology import SimError

log = logging.getLogger("meshcni.sim")
HEALTH_FILE = "components.json"
CRASH_LOOP = 3        # exits ...
CRASH_WINDOW = 60.0   # ... within this many seconds = a restart loop
STABLE_AFTER = 10.0   # seconds up (and serving) after which a former loop counts as over
STALE_AFTER = 10.0    # seconds without a health report from the daemon
BACKOFF_MAX = 10.0


_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|^[\w.]*(Error|Exception|Exit)\b")


def last_log_line(path: str) -> str:
    """The line that says why: the last error line among the log's last 40 (for a Python crash,
    the exception, not the "stopped" logged on the way out), else the last line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            lines = [x.strip() for x in f.read().decode(errors="replace").splitlines() if x.strip()][-40:]
    except OSError:
        return "(no log)"
    if not lines:
        return "(log empty)"
    return next((x for x in reversed(lines) if _ERROR_LINE.search(x)), lines[-1])


def probe(netns_path: str, host: str, port: int, path: str = "/readyz", timeout: float = 1.0) -> Optional[int]:
    """HTTP status of GET ``path`` on host:port inside a network namespace; None if nothing answers."""
    from ..cni.link import entered
    try:
        with entered(netns_path):
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()
    except Exception:  # refused, timed out, netns gone: not serving, whatever the reason
        return None


def probe_tcp(netns_path: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts a TCP connection on host:port inside a network namespace."""
    import socket
    from ..cni.link import entered
    try:
        with entered(netns_path):
            socket.create_connection((host, port), timeout=timeout).close()
        return True
    except Exception:
        return False


def listen_address(argv: List[str], default: str) -> tuple:
    """(host to probe, port) from a process's ``--metrics-address``; 0.0.0.0 is probed on loopback."""
    addr = default
    for i, a in enumerate(argv):
        if a.startswith("--metrics-address="):
            addr = a.split("=", 1)[1]
        elif a == "--metrics-address" and i + 1 < len(argv):
            addr = argv[i + 1]
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host), int(port)


class Component:
    """One supervised process, run inside a network namespace, its output appended to a log."""

    def __init__(self, name: str, argv: List[str], netns: str, log_path: str, ledger, metrics_default: str,
                 env: Optional[Dict[str, str]] = None, extra_ready: Optional[Callable[[], Optional[str]]] = None,
                 before_spawn: Optional[Callable[[], None]] = None):
        self.name, self.argv, self.netns, self.log_path, self.ledger = name, argv, netns, log_path, ledger
        self.env = env or {}
        self.extra_ready = extra_ready
        self.before_spawn = before_spawn
        self.probe_host, self.probe_port = listen_address(argv, metrics_default)
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0
        self.exits: collections.deque = collections.deque(maxlen=50)  # (monotonic time, status)
        self.restarts = 0
        self.quick_exits = 0          # consecutive exits after a short run, for the backoff
        self.next_start = 0.0
        self.serving_since: Optional[float] = None
        self.exit_line = ""

    def spawn(self) -> None:
        if self.before_spawn is not None:
            self.before_spawn()
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns] + self.argv, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=dict(os.environ, **self.env))
        finally:
            logf.close()
        self.started = time.monotonic()
        self.serving_since = None
        self.ledger.add("pid", self.proc.pid)

    def reap(self) -> bool:
        """True if the process exited since the last look (and schedules its restart)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        now = time.monotonic()
        self.ledger.remove("pid", self.proc.pid)
        self.exits.append((now, self.proc.returncode))
        self.quick_exits = self.quick_exits + 1 if now - self.started < STABLE_AFTER else 1
        self.next_start = now + (0.0 if self.quick_exits <= 1 else min(0.5 * 2 ** (self.quick_exits - 2),
                                                                        BACKOFF_MAX))
        # what it said last before exiting: the line a restart loop is reported with, whatever
        # the next attempt has logged so far
        self.exit_line = last_log_line(self.log_path)
        log.warning("%s exited %s after %.1f s; restarting in %.1f s: %s", self.name, self.proc.returncode,
                    now - self.started, self.next_start - now, self.exit_line)
        self.proc = None
        return True

    def restart_if_due(self) -> None:
        if self.proc is None and time.monotonic() >= self.next_start:
            self.restarts += 1
            self.spawn()

    def state(self) -> dict:
        now = time.monotonic()
        running = self.proc is not None and self.proc.poll() is None
        code = probe(f"/run/netns/{self.netns}", self.probe_host, self.probe_port) if running else None
        serving = code == 200
        if serving and self.serving_since is None:
            self.serving_since = now
        elif not serving:
            self.serving_since = None
        extra = self.extra_ready() if serving and self.extra_ready is not None else None
        recent = [t for t, _ in self.exits if now - t <= CRASH_WINDOW]
        looping = len(recent) >= CRASH_LOOP and (self.serving_since is None or now - self.serving_since < STABLE_AFTER)
        if looping:
            why = f"restart loop ({len(recent)} exits in {int(CRASH_WINDOW)} s, last exit status {self.exits[-1][1]})"
        elif not running:
            why = (f"exited with status {self.exits[-1][1]}, restarting" if self.exits else "not started")
        elif not serving:
            why = (f"not serving: /readyz on {self.probe_host}:{self.probe_port} answered {code}" if code
                   else f"not serving: nothing answers on {self.probe_host}:{self.probe_port}")
        elif extra:
            why = extra
        else:
            why = ""
        return {"name": self.name, "pid": self.proc.pid if running else None, "netns": self.netns,
                "metricsPort": self.probe_port,
                "running": running, "serving": serving, "ready": not why, "reason": why, "restarts": self.restarts,
                "exitsLastWindow": len(recent), "log": self.log_path,
                "lastLog": "" if not why else self.exit_line if looping or not running else last_log_line(self.log_path)}

    def stop(self, timeout: float = 10.0) -> None:
        pr, self.proc = self.proc, None
        if pr is None:
            return
        if pr.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pr.pid, signal.SIGTERM)
        try:
            pr.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pr.pid, signal.SIGKILL)
            pr.wait()
        self.ledger.remove("pid", pr.pid)


class Supervisor:
    """Restarts components that exit and publishes their health to ``health_path``."""

    def __init__(self, health_path: str):
        self.health_path = health_path
        self.components: Dict[str, Component] = {}
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._wlock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.last: List[dict] = []

    def add(self, c: Component) -> Component:
        with self._lock:
            self.components[c.name] = c
            c.spawn()
        return c

    def remove(self, name: str) -> None:
        """Stop a component for good (its DaemonSet pod replaced, e.g. by the uninstall mode)."""
        with self._lock:
            c = self.components.pop(name)
        c.stop()

    def start(self) -> "Supervisor":
        self.write()
        self._thread = threading.Thread(target=self._run, name="sim-supervisor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_report = 0.0
        while not self.stopped.wait(0.2):
            with self._lock:
                for c in list(self.components.values()):
                    if self.stopped.is_set():
                        return
                    c.reap()
                    c.restart_if_due()
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 1.0
                with contextlib.suppress(Exception):  # a report is retried a second later
                    self.write()

    def snapshot(self) -> List[dict]:
        with self._lock:
            comps = list(self.components.values())
        self.last = [c.state() for c in comps]
        return self.last

    def write(self) -> None:
        # snapshot and rename under one lock: a report taken earlier never replaces a later one
        with self._wlock:
            states = self.snapshot()
            d = os.path.dirname(self.health_path)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".components.")
            with os.fdopen(fd, "w") as f:
                json.dump({"time": time.time(), "components": states}, f, indent=1)
            os.rename(tmp, self.health_path)

    def wait_ready(self, timeout: float, progress: Callable[[str], None]) -> None:
        """Until every component is ready; a restart loop or the timeout is a SimError with the log line."""
        deadline = time.monotonic() + timeout
        said = set()
        while True:
            states = self.snapshot()
            for s in states:
                if s["ready"] and s["name"] not in said:
                    said.add(s["name"])
                    progress(f"{s['name']}: ready (logs/{os.path.basename(s['log'])})")
            if all(s["ready"] for s in states):
                self.write()  # `sim status` right after `sim up` sees what up saw
                return
            for s in states:
                if s["exitsLastWindow"] >= CRASH_LOOP:
                    raise SimError(f"{s['name']} keeps exiting ({s['reason']}): {s['lastLog']}")
            if time.monotonic() > deadline:
                raise SimError(f"not ready after {int(timeout)} s: " + "; ".join(
                    f"{s['name']}: {s['reason']}: {s['lastLog']}" for s in states if not s["ready"]))
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            comps = list(self.components.values())
        # the controller first (as before), then every agent at once: SIGTERM to all, then wait
        for c in comps:
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        for c in comps:
            c.stop()


def read_health(cluster_dir: str) -> Optional[dict]:
    """What the daemon last reported, with ``age`` in seconds; None if it never did."""
    try:
        with open(os.path.join(cluster_dir, HEALTH_FILE)) as f:
            h = json.load(f)
    except (OSError, ValueError):
        return None
    h["age"] = max(0.0, time.time() - h.get("time", 0))
    return h


def cluster_readiness(cluster_dir: str) -> tuple:
    """(ready, [problem lines]) from the daemon's last report."""
    h = read_health(cluster_dir)
    if h is None:
        return False, ["the daemon has not reported component health yet"]
    if h["age"] > STALE_AFTER:
        return False, [f"the daemon has not reported for {int(h['age'])} s"]
    problems = [f"{c['name']}: {c['reason']}: {c['lastLog']}" for c in h.get("components", []) if not c.get("ready")]
    return not problems, problems
