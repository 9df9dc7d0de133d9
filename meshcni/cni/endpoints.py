# SPDX-License-Identifier: MIT OR Apache-2.0
"""Endpoint records: what the plugin tells the node agent about each pod.

Every ADD writes ``<stateDir>/endpoints/<containerID>_<ifname>.json``
(atomically) and every DEL removes it, whether or not an agent runs: the
agent reads the directory when it starts (so pods created while it was down
are known — the restore lesson of Cilium's endpoint state directory), and
also gets a push over its local API when the config names ``agentSocket``.

The local API is HTTP over a unix socket:
``PUT /v1/endpoints/{containerID}/{ifname}`` (JSON record),
``DELETE /v1/endpoints/{containerID}/{ifname}``, ``GET /healthz``.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Dict, List, Optional

from .spec import IO_FAILURE, TRY_AGAIN_LATER, CNIError

DEFAULT_STATE_DIR = "/var/run/meshcni"


def _path(state_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(state_dir, "endpoints", f"{container_id}_{ifname}.json")


def write(state_dir: str, record: Dict) -> str:
    d = os.path.join(state_dir, "endpoints")
    path = _path(state_dir, record["containerID"], record["ifname"])
    tmp = os.path.join(d, f".ep.{os.getpid()}.{record['containerID']}")  # unique per writer
    try:
        os.makedirs(d, mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        # a full disk must not leave a half-written temporary behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CNIError(IO_FAILURE, f"endpoint record {path}: {e.strerror}") from None
    return path


def read(state_dir: str, container_id: str, ifname: str) -> Optional[Dict]:
    try:
        with open(_path(state_dir, container_id, ifname)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CNIError(IO_FAILURE, f"endpoint record {_path(state_dir, container_id, ifname)}: {e}") from None


def remove(state_dir: str, container_id: str, ifname: str) -> bool:
    try:
        os.unlink(_path(state_dir, container_id, ifname))
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise CNIError(IO_FAILURE, f"endpoint record {_path(state_dir, container_id, ifname)}: {e.strerror}") from None


def all_records(state_dir: str) -> List[Dict]:
    d = os.path.join(state_dir, "endpoints")
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(d)):
            if name.endswith(".json") and not name.startswith("."):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(d, name)) as f:
                    out.append(json.load(f))
    return out


class AgentClient:
    """The agent's local API, for the plugin (short timeouts: kubelet waits on us)."""

    def __init__(self, socket_path: str, timeout: float = 5.0):
        self.socket_path, self.timeout = socket_path, timeout

    @contextlib.contextmanager
    def _conn(self):
        c = _unix_connection_class()(self.socket_path, self.timeout)
        try:
            yield c
        finally:
            c.close()

    def _call(self, method: str, path: str, body: Optional[Dict] = None) -> Dict:
        import http.client
        data = json.dumps(body).encode() if body is not None else None
        try:
            with self._conn() as c:
                c.request(method, path, body=data, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                text = r.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            raise CNIError(TRY_AGAIN_LATER, f"meshcni agent at {self.socket_path} is not reachable: "
                           f"{getattr(e, 'strerror', None) or e}") from None
        if r.status >= 300:
            raise CNIError(TRY_AGAIN_LATER if r.status >= 500 else IO_FAILURE,
                           f"meshcni agent: {method} {path}: HTTP {r.status}: {text.strip()[:300]}")
        return json.loads(text) if text.strip() else {}

    def healthy(self) -> Optional[str]:
        """None if the agent answers healthy, else why not."""
        try:
            self._call("GET", "/healthz")
            return None
        except CNIError as e:
            return e.msg

    def put_endpoint(self, record: Dict) -> Dict:
        return self._call("PUT", f"/v1/endpoints/{record['containerID']}/{record['ifname']}", record)

    def delete_endpoint(self, container_id: str, ifname: str) -> Dict:
        return self._call("DELETE", f"/v1/endpoints/{container_id}/{ifname}")

    # read-only views, for ``meshcni status`` and friends (the agent's local API, see agent/localapi.py)

    def status(self) -> Dict:
        """GET /v1/status: node, readiness, informers, last reconciles."""
        return self._call("GET", "/v1/status")

    def endpoints(self) -> List[Dict]:
        """GET /v1/endpoints: the endpoint records of this node's pods."""
        return self._call("GET", "/v1/endpoints") or []

    def services(self) -> List[Dict]:
        """GET /v1/services: the Services the agent programmed (frontends, backends)."""
        return self._call("GET", "/v1/services") or []

    def pod_ips(self) -> Dict[str, str]:
        """GET /v1/ips: pod IP -> "namespace/name" for every pod the agent knows."""
        return self._call("GET", "/v1/ips") or {}

    def identities(self) -> Optional[Dict[str, Dict]]:
        """GET /v1/identities: id (as text) -> its labels, as ``meshcni.bpf.decode.identity_labels``
        makes them from the agent's informers; None when the agent does not serve that path (an
        older agent), so callers can ask the API server instead."""
        try:
            return self._call("GET", "/v1/identities")
        except CNIError as e:
            if " HTTP 404:" in e.msg:
                return None
            raise


def _unix_connection_class():
    # http.client costs ~15 ms to import: only plugins with an agentSocket pay it
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: str, timeout: float):
            super().__init__("localhost", timeout=timeout)
            self._path = path

        def connect(self):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self._path)
            except OSError:
                s.close()
                raise
            self.sock = s

    return UnixConnection
