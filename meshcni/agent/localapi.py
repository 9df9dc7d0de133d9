# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's local API on a unix socket (for the CNI plugin and the CLI).

    GET    /healthz                              200 "ok" once the agent serves
    GET    /v1/status                            the agent's status (JSON)
    GET    /v1/endpoints                         local endpoints (JSON list)
    GET    /v1/services                          the Services the agent programmed (JSON list)
    GET    /v1/ips                               pod IP -> "namespace/name" (for monitors)
    GET    /v1/policy                            what the policy compiler produced (sizes)
    GET    /v1/identities                        id -> labels, when the agent passes :func:`identities_view`
    PUT    /v1/endpoints/{containerID}/{ifname}  register (the CNI plugin's ADD)
    DELETE /v1/endpoints/{containerID}/{ifname}  deregister (DEL); unknown is fine
    POST   /v1/cni                               run a CNI call for the compiled shim

``POST /v1/cni`` takes ``{"env": {CNI_* variables}, "stdin": "<network
config>", "hostNetns": "dev:ino", "netns": "dev:ino"}`` (what
``csrc/cni_shim.c`` sends) and runs :func:`meshcni.cni.plugin.run` in this
request's thread. 200: the body is exactly what the plugin prints, header
``Meshcni-Exit-Code`` its exit status. 409: this agent will not run the call
(the shim runs in another network namespace than the agent, the agent cannot
see ``CNI_NETNS``, or the config delegates IPAM to an executable); the shim
then runs the Python plugin itself. Calls for one container run one at a
time, in arrival order; calls for different containers run concurrently; GC
runs alone.

Only root (and the agent's own user) may call it: the socket is mode 0600 and
every connection's peer credentials (SO_PEERCRED) are checked; anyone else
gets a 403 and a warning is logged.

The endpoint table is also rebuilt from the plugin's on-disk records at
start (``meshcni.cni.endpoints``), so pods added while the agent was down
are known; the socket only makes it immediate.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Callable, Dict, Iterator, List, Optional, Tuple

log = logging.getLogger("meshcni.agent.localapi")
CNI_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
EXIT_HEADER = "Meshcni-Exit-Code"


def _ns_id(path: str) -> str:
    """dev:ino of a namespace file (as the shim reports it), "" if it cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ""
    return f"{st.st_dev}:{st.st_ino}"


class CNILocks:
    """Calls for one container in order, different containers concurrently, GC alone.

    A per-container mutex (kept while anyone holds or waits for it) inside a
    readers/writer gate: ADD/CHECK/DEL are readers, GC (which deletes whatever
    is not listed as valid) is the writer, and a waiting GC lets no new call in.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._locks: Dict[str, List] = {}  # container id -> [Lock, holders + waiters]
        self._active = 0
        self._exclusive = False

    @contextlib.contextmanager
    def container(self, cid: str) -> Iterator[None]:
        with self._cv:
            while self._exclusive:
                self._cv.wait()
            self._active += 1
            slot = self._locks.setdefault(cid, [threading.Lock(), 0])
            slot[1] += 1
        try:
            with slot[0]:
                yield
        finally:
            with self._cv:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._locks[cid]
                self._active -= 1
                self._cv.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cv:
            while self._exclusive:
                self._cv.wait()
            self._exclusive = True
            while self._active:
                self._cv.wait()
        try:
            yield
        finally:
            with self._cv:
                self._exclusive = False
                self._cv.notify_all()


class _InProcessAgent:
    """What the plugin calls its agent, when it runs inside the agent: no HTTP to ourselves."""

    def __init__(self, api: "LocalAPI") -> None:
        self.api = api

    def healthy(self) -> Optional[str]:
        return None  # we are serving this very call

    def put_endpoint(self, record: Dict) -> Dict:
        return self.api.register(record)

    def delete_endpoint(self, container_id: str, ifname: str) -> Dict:
        return self.api.deregister(f"{container_id}/{ifname}")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def peer_credentials(conn) -> Tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    import socket
    import struct
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def allowed_uids() -> frozenset:
    """Who may call the local API: root, and the agent's own user (an agent run with
    capabilities instead of as root). The API registers endpoints and runs CNI calls,
    so it is as privileged as the agent itself."""
    return frozenset({0, os.geteuid()})


class LocalAPI:
    def __init__(self, path: str, status: Callable[[], dict], on_change: Optional[Callable[[], None]] = None,
                 views: Optional[Dict[str, Callable[[], object]]] = None):
        self.path, self.status, self.on_change = path, status, on_change
        self.views = dict(views or {})  # more read-only GET paths (e.g. /v1/services)
        self.endpoints: Dict[str, dict] = {}
        self.lock = threading.Lock()
        self.cni_locks = CNILocks()
        self._srv: Optional[_Server] = None

    def load(self, records) -> None:
        with self.lock:
            for r in records:
                self.endpoints[f"{r['containerID']}/{r['ifname']}"] = r

    def register(self, rec: Dict) -> Dict:
        k = f"{rec['containerID']}/{rec['ifname']}"
        with self.lock:
            self.endpoints[k] = rec
        log.info("endpoint %s registered (%s/%s, %s)", k, rec.get("podNamespace"), rec.get("podName"),
                 ",".join(rec.get("ips", [])))
        if self.on_change:
            self.on_change()
        return {"registered": k}

    def deregister(self, k: str) -> Dict:
        with self.lock:
            gone = self.endpoints.pop(k, None)
        if gone and self.on_change:
            self.on_change()
        return {"deleted": k, "existed": gone is not None}

    def run_cni(self, req) -> Tuple[int, int, bytes]:
        """One shim call: (HTTP status, plugin exit status, plugin stdout). Runs in the caller's thread."""
        if not isinstance(req, dict) or not isinstance(req.get("env"), dict) \
                or not isinstance(req.get("stdin"), str):
            return 400, 0, json.dumps({"error": "want {env: {...}, stdin: string}"}).encode()
        env = {k: v for k, v in req["env"].items() if k in CNI_ENV and isinstance(v, str)}
        stdin = req["stdin"].encode("utf-8", "surrogateescape")
        cmd, cid = env.get("CNI_COMMAND", ""), env.get("CNI_CONTAINERID", "")
        why = None
        host, mine = req.get("hostNetns") or "", _ns_id("/proc/thread-self/ns/net")
        if host and host != mine:
            why = f"the plugin runs in network namespace {host}, this agent in {mine}"
        elif req.get("netns") and _ns_id(env.get("CNI_NETNS", "")) != req["netns"]:
            why = f"CNI_NETNS {env.get('CNI_NETNS')} is not the same namespace here (is it mounted into the agent?)"
        else:
            from ..cni import plugin
            try:
                raw = json.loads(stdin)
            except ValueError:
                raw = None  # the plugin answers the decode error
            why = plugin.in_process_refusal(raw)
        if why:
            log.info("CNI %s %s: run by the plugin, not here: %s", cmd, cid, why)
            return 409, 0, json.dumps({"error": why}).encode()
        from ..cni import plugin
        gate = self.cni_locks.exclusive() if cmd == "GC" else \
            self.cni_locks.container(cid) if cid else contextlib.nullcontext()
        with gate:
            rc, out = plugin.run(env, stdin, agent=_InProcessAgent(self))
        return 200, rc, (json.dumps(out) + "\n").encode() if out is not None else b""

    def start(self, netns: Optional[str] = None) -> "LocalAPI":
        """Serve. ``netns``: from that network namespace (a node's, in tests and
        benchmarks): started from a thread inside it, the server threads, which
        inherit it, create pod links there as an agent on that node would."""
        if netns is not None:
            from ..cni.link import entered
            err: List[BaseException] = []

            def inside():
                try:
                    with entered(netns):
                        self.start()
                except BaseException as e:
                    err.append(e)
            t = threading.Thread(target=inside, name="localapi-start")
            t.start()
            t.join()
            if err:
                raise err[0]
            return self
        api = self
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a socket left by a previous agent

        allowed = allowed_uids()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self):
                # the socket is 0600, but a mode can be changed and a path bind-mounted:
                # the peer's credentials are checked on every connection as well
                try:
                    pid, uid, _gid = peer_credentials(self.connection)
                except OSError as e:
                    log.warning("local API: peer credentials unreadable (%s): refused", e)
                    return
                if uid not in allowed:
                    log.warning("local API: refused a connection from pid %d uid %d (allowed uids: %s)",
                                pid, uid, ",".join(map(str, sorted(allowed))))
                    body = json.dumps({"error": f"uid {uid} may not use the meshcni agent's local API"}).encode()
                    try:
                        # read the request head first: closing on unread bytes would reset the
                        # connection and the caller would never see why it was refused
                        self.connection.settimeout(1.0)
                        for _ in range(100):
                            if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                                break
                        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    except OSError:
                        pass
                    return
                super().handle()

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
                self._send(200, api.register(rec))

            def do_DELETE(self):
                k = self._ep_key()
                if k is None:
                    return self._send(404, {"error": f"no such path {self.path}"})
                self._send(200, api.deregister(k))

            def do_POST(self):
                if self.path != "/v1/cni":
                    return self._send(404, {"error": f"no such path {self.path}"})
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    req = json.loads(self.rfile.read(n).decode("utf-8", "surrogateescape"))
                except (ValueError, TypeError) as e:
                    return self._send(400, {"error": f"bad CNI call: {e}"})
                try:
                    status, rc, body = api.run_cni(req)
                except Exception as e:  # plugin.run answers its own errors; this is a bug here
                    log.exception("CNI call failed")
                    return self._send(500, {"error": f"{type(e).__name__}: {e}"})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 200:
                    self.send_header(EXIT_HEADER, str(rc))
                self.end_headers()
                self.wfile.write(body)

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


def identities_view(identities, cidr_identities, remote_identities=(), cluster=None) -> dict:
    """GET /v1/identities: id (as text, JSON keys are strings) -> the labels it stands for.

    The agent serves this from its Identity and CIDRIdentity informers
    (``views={"/v1/identities": lambda: identities_view(...)}``); ``meshcni
    identity list`` reads it, or builds the same from the API server.
    """
    from ..bpf.decode import identity_labels
    return {str(k): v for k, v in sorted(identity_labels(identities, cidr_identities, remote_identities,
                                                         cluster).items())}
