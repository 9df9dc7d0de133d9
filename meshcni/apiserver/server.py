# SPDX-License-Identifier: MIT OR Apache-2.0
"""``APIServer``: the store and the HTTP server, started and stopped together."""
from __future__ import annotations

import json
import logging
import os
import threading

import yaml

from . import resources as res
from .admission import parse_port_range
from .errors import APIError
from .http import Server
from .store import Store

log = logging.getLogger("meshcni.apiserver")


class APIServer:
    """A Kubernetes-compatible API server on plain HTTP (meant for loopback).

    ``port=0`` picks a free port (read it back from :attr:`url`). ``crd_dir``
    is a directory (or a list of them) of CRD YAML files, created at start.
    ``data_file``, when given, is loaded at start if it exists and written on
    stop (JSON, atomically). ``history`` is the number of events kept for
    watch resumption; an older resourceVersion answers 410 Gone.
    ``bookmark_interval`` is in seconds.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, crd_dir=None, data_file: str | None = None,
                 history: int = 1000, bookmark_interval: float = 1.0, watch_queue: int = 10000,
                 service_cidr: str = "10.96.0.0/12", node_port_range: str = "30000-32767"):
        self.host = host
        self.port = port
        if crd_dir is None:
            self.crd_dirs = []
        elif isinstance(crd_dir, (str, os.PathLike)):
            self.crd_dirs = [os.fspath(crd_dir)]
        else:
            self.crd_dirs = [os.fspath(d) for d in crd_dir]
        self.data_file = data_file
        self.store = Store(history=history, watch_queue=watch_queue, service_cidr=service_cidr,
                           node_port_range=parse_port_range(node_port_range))
        self.bookmark_interval = bookmark_interval
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("APIServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> APIServer:
        """Load the snapshot and the CRDs, listen, serve in a daemon thread; returns once listening."""
        if self.data_file and os.path.exists(self.data_file):
            with open(self.data_file) as f:
                self.store.load(json.load(f))
            log.info("loaded %s at resourceVersion %s", self.data_file, self.store.rv)
        for d in self.crd_dirs:
            for crd in load_crd_dir(d):
                self.ensure_crd(crd)
        self._httpd = Server((self.host, self.port), self.store, self.bookmark_interval)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"apiserver-{self._httpd.server_address[1]}", daemon=True)
        self._thread.start()
        log.info("API server listening on %s", self.url)
        return self

    def ensure_crd(self, crd: dict):
        """Create ``crd`` or, if one with that name exists, replace its spec."""
        rt = self.store.types[res.CRD_KEY]
        name = (crd.get("metadata") or {}).get("name", "")
        try:
            cur = self.store.get(rt, "", name)
        except APIError:
            self.store.create(rt, "", crd)
            return
        body = dict(crd, metadata=dict(crd.get("metadata") or {}, resourceVersion=cur["metadata"]["resourceVersion"]))
        self.store.update(rt, "", name, body)

    def stop(self):
        """Stop serving, end every watch stream and connection, write the snapshot."""
        if self._httpd is not None:
            self._httpd.stopping = True
            self._httpd.shutdown()
            self._httpd.server_close()
            with self.store.lock:
                for ws in self.store.watchers.values():
                    for w in ws:
                        w.wake()
            self._httpd.close_connections()
            self._httpd = None
        if self.data_file:
            self.store.save(self.data_file)
            log.info("saved %s at resourceVersion %s", self.data_file, self.store.rv)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def write_kubeconfig(self, path: str, context: str = "meshcni") -> str:
        return write_kubeconfig(path, self.url, context)


def write_kubeconfig(path: str, server: str, context: str = "meshcni") -> str:
    """Write a kubeconfig whose current context points at ``server`` (no auth); returns path."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
    }
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)
    return path


def load_crd_dir(directory: str) -> list[dict]:
    """Every CustomResourceDefinition document in ``directory``'s *.yaml / *.yml files."""
    try:
        from .schema import load_crds
        return [c for c in load_crds(directory) if c and c.get("kind") == "CustomResourceDefinition"]
    except ImportError:
        pass
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(directory, name)) as f:
                out += [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition"]
    return out


def serve(host: str = "127.0.0.1", port: int = 6443, crd_dir=None, data_file: str | None = None,
          kubeconfig: str | None = None, history: int = 1000, stop_event: threading.Event | None = None,
          service_cidr: str = "10.96.0.0/12", node_port_range: str = "30000-32767") -> int:
    """Run an API server in the foreground until SIGINT/SIGTERM (or ``stop_event``); snapshot on exit."""
    import signal
    stop = stop_event or threading.Event()
    old = {}
    # handlers first: a SIGTERM right after the "listening" line must still snapshot
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
    srv = APIServer(host, port, crd_dir=crd_dir, data_file=data_file, history=history, service_cidr=service_cidr,
                    node_port_range=node_port_range)
    try:
        srv.start()
    except BaseException:
        for sig, h in old.items():
            signal.signal(sig, h)
        raise
    if kubeconfig:
        srv.write_kubeconfig(kubeconfig)
        log.info("kubeconfig written to %s", kubeconfig)
    print(f"meshcni apiserver listening on {srv.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        srv.stop()
    return 0
