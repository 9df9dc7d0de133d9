# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni sim mesh A B [C ...]``: every cluster gets a ``Cluster`` for each other one.

For every ordered pair (cluster, other) this writes, in ``cluster``:

- Secret ``meshcni-system/mesh-remote-<other>-kubeconfig``, key ``config``: the other
  cluster's *node* kubeconfig (its API server on the underlay bridge, 172.30.0.1:<port>),
  the address its own controller and agents use, which every controller namespace on the
  bridge reaches; the loopback kubeconfig would point a controller at itself;
- ``Cluster <other>`` with ``spec.secret {name, key}`` (and ``staleGracePeriodSeconds`` when
  asked).

Objects are compared before they are written, so a second run writes nothing; both carry
``app.kubernetes.io/managed-by: meshcni-sim``, and ``sim unmesh`` removes only those.
"""
from __future__ import annotations

import base64
import os
import time
from typing import Callable, Dict, List, Optional

from .ops import Client
from .topology import SimError

NAMESPACE = "meshcni-system"   # the controller's namespace in the simulator (CONTROLLER_NS)
KEY = "config"
MANAGED = {"app.kubernetes.io/managed-by": "meshcni-sim"}
CLUSTERS = "/apis/mesh-cni.dev/v1alpha1/clusters"


def secret_name(other: str) -> str:
    return f"mesh-remote-{other}-kubeconfig"


def _check(root: str, names: List[str]) -> List[str]:
    from .cluster import daemon_pid
    if len(names) < 2:
        raise SimError("name at least two clusters to mesh: meshcni sim mesh A B [C ...]")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SimError(f"cluster {dup[0]} is named twice")
    for n in names:
        if not daemon_pid(root, n):
            raise SimError(f"cluster {n} is not up (meshcni sim up --name {n})")
    return list(names)


def _get(c: Client, path: str) -> Optional[dict]:
    try:
        return c.request("GET", path)
    except SimError as e:
        if "not found" in str(e).lower():
            return None
        raise


def _apply(c: Client, path: str, body: dict, same: Callable[[dict], bool]) -> bool:
    """Server-side apply unless the object already says the same; True if written."""
    cur = _get(c, path)
    if cur is not None and same(cur):
        return False
    c.request("PATCH", path, body, "application/apply-patch+yaml", [("fieldManager", "meshcni-sim"),
                                                                     ("force", "true")])
    return True


def mesh(root: str, names: List[str], stale_grace: Optional[int] = None,
         say: Callable[[str], None] = print) -> Dict[str, int]:
    """Mesh every pair of ``names`` both ways (idempotent); returns {"written": n, "unchanged": m}."""
    from .cluster import cluster_dir
    names = _check(root, names)
    clients = {n: Client(root, n) for n in names}
    kubeconfigs = {}
    for n in names:
        with open(os.path.join(cluster_dir(root, n), "kubeconfig-node"), "rb") as f:
            kubeconfigs[n] = f.read()
    counts = {"written": 0, "unchanged": 0}
    for n in names:
        c = clients[n]
        _apply(c, f"/api/v1/namespaces/{NAMESPACE}",
               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, lambda cur: True)
        for other in names:
            if other == n:
                continue
            data = base64.b64encode(kubeconfigs[other]).decode()
            sname = secret_name(other)
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": sname, "namespace": NAMESPACE,
                                   "labels": dict(MANAGED, **{"mesh-cni.dev/remote-cluster": other})},
                      "data": {KEY: data}}
            spec = {"secret": {"name": sname, "key": KEY}}
            if stale_grace is not None:
                spec["staleGracePeriodSeconds"] = int(stale_grace)
            cluster = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster",
                       "metadata": {"name": other, "labels": dict(MANAGED)}, "spec": spec}
            wrote = [
                _apply(c, f"/api/v1/namespaces/{NAMESPACE}/secrets/{sname}", secret,
                       lambda cur: (cur.get("data") or {}).get(KEY) == data),
                # a grace not asked for is left as it is (a test or a user may have set one)
                _apply(c, f"{CLUSTERS}/{other}", cluster,
                       lambda cur: (cur.get("spec") or {}).get("secret") == spec["secret"] and
                       (stale_grace is None or (cur.get("spec") or {}).get("staleGracePeriodSeconds") == stale_grace)
                       and not (cur.get("metadata") or {}).get("deletionTimestamp")),
            ]
            counts["written"] += sum(wrote)
            counts["unchanged"] += len(wrote) - sum(wrote)
            server = kubeconfigs[other].decode(errors="replace").split("server:", 1)[-1].split()[0]
            say(f"{n}: Cluster {other} -> Secret {NAMESPACE}/{sname} (API {server})"
                + ("" if any(wrote) else ", unchanged"))
    return counts


def unmesh(root: str, names: List[str], timeout: float = 30.0, say: Callable[[str], None] = print) -> int:
    """Delete, in each of ``names``, the Clusters (and then the Secrets) ``mesh`` made for the
    others; waits up to ``timeout`` for the controller's finalizer to finish. Returns the count deleted."""
    names = _check(root, names)
    clients = {n: Client(root, n) for n in names}
    deleted = 0
    pending = []
    for n in names:
        c = clients[n]
        for other in names:
            if other == n:
                continue
            cur = _get(c, f"{CLUSTERS}/{other}")
            if cur is None:
                pass
            elif ((cur.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by") != "meshcni-sim":
                say(f"{n}: Cluster {other} was not made by sim mesh; left alone")
                continue
            else:
                c.request("DELETE", f"{CLUSTERS}/{other}")
                deleted += 1
                pending.append((n, other))
    end = time.monotonic() + timeout
    for n, other in pending:
        # the controller's finalizer first removes every MeshEndpoint the Cluster made
        while _get(clients[n], f"{CLUSTERS}/{other}") is not None:
            if time.monotonic() > end:
                fin = ((_get(clients[n], f"{CLUSTERS}/{other}") or {}).get("metadata") or {}).get("finalizers")
                raise SimError(f"{n}: Cluster {other} still terminating after {int(timeout)} s (finalizers: {fin})")
            time.sleep(0.2)
        say(f"{n}: Cluster {other} deleted")
    for n in names:
        for other in names:
            if other == n:
                continue
            path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret_name(other)}"
            cur = _get(clients[n], path)
            if cur is not None and ((cur.get("metadata") or {}).get("labels") or {}).get(
                    "app.kubernetes.io/managed-by") == "meshcni-sim":
                clients[n].request("DELETE", path)
                deleted += 1
    return deleted
