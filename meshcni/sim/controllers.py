# SPDX-License-Identifier: MIT OR Apache-2.0
"""What kube-scheduler and kube-controller-manager do, as far as a CNI needs.

Pure desired-state functions (tested without a cluster) and level-based
loops around them: each loop wakes on a watch event (or every few seconds),
lists what it needs and converges — so a missed event costs latency, never
correctness.

- scheduling: a Pod without spec.nodeName is bound round-robin over Ready nodes;
- EndpointSlices for every Service with a selector, labelled
  ``kubernetes.io/service-name``, ready / serving / terminating conditions,
  ports resolved per pod (a named targetPort may map to different numbers on
  different pods: those get separate slices, as upstream does).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from ..k8s.informer import Informer
from ..k8s.rest import get_json, send_json

log = logging.getLogger("meshcni.sim.controllers")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.sim.mesh-cni.dev"
NOT_READY_ANNOTATION = "sim.mesh-cni.dev/not-ready"


def key(obj: dict) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


# ---- scheduling ---------------------------------------------------------------

def node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def schedule(pods: Iterable[dict], nodes: Iterable[dict], cursor: int = 0) -> Tuple[List[Tuple[str, str]], int]:
    """([(pod key, node name)], new cursor) for unbound pods, round-robin over ready, untainted nodes."""
    ready = sorted(n["metadata"]["name"] for n in nodes if node_ready(n) and not any(
        t.get("effect") == "NoSchedule" for t in (n.get("spec") or {}).get("taints") or []))
    out = []
    if not ready:
        return out, cursor
    for p in sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp", ""), key(p))):
        spec = p.get("spec") or {}
        if spec.get("nodeName") or p["metadata"].get("deletionTimestamp"):
            continue
        out.append((key(p), ready[cursor % len(ready)]))
        cursor += 1
    return out, cursor


# ---- EndpointSlices -------------------------------------------------------------

def selector_matches(selector: Dict[str, str], labels: Optional[Dict[str, str]]) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def resolve_port(pod: dict, target, protocol: str) -> Optional[int]:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return p.get("containerPort")
    return None


def slice_name(svc: dict, family: str, ports: tuple) -> str:
    h = hashlib.sha256(json.dumps([svc["metadata"].get("uid", ""), family, ports]).encode()).hexdigest()[:5]
    return f"{svc['metadata']['name'][:56]}-{h}"


def desired_slices(svc: dict, pods: Iterable[dict]) -> List[dict]:
    """The EndpointSlices of one Service (empty if it has no selector)."""
    spec = svc.get("spec") or {}
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return []
    ns = svc["metadata"]["namespace"]
    sports = spec.get("ports") or []
    groups: Dict[Tuple[str, tuple], List[dict]] = {}
    for p in pods:
        if p["metadata"].get("namespace") != ns or not selector_matches(selector, p["metadata"].get("labels")):
            continue
        st = p.get("status") or {}
        if st.get("phase") in ("Succeeded", "Failed"):
            continue
        ips = [x.get("ip") for x in st.get("podIPs") or []] or ([st["podIP"]] if st.get("podIP") else [])
        if not ips:
            continue
        resolved = []
        for sp in sports:
            proto = sp.get("protocol", "TCP")
            port = resolve_port(p, sp.get("targetPort", sp.get("port")), proto)
            resolved.append((sp.get("name", ""), proto, port))
        ports = tuple(resolved)
        terminating = bool(p["metadata"].get("deletionTimestamp"))
        ready = pod_ready(p) and not terminating
        for ip in ips:
            fam = "IPv6" if ":" in ip else "IPv4"
            groups.setdefault((fam, ports), []).append({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": pod_ready(p), "terminating": terminating},
                "nodeName": (p.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                              "uid": p["metadata"].get("uid", "")},
            })
    out = []
    for (fam, ports), eps in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name(svc, fam, ports), "namespace": ns,
                         "labels": {SERVICE_NAME_LABEL: svc["metadata"]["name"], MANAGED_BY_LABEL: MANAGED_BY},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc["metadata"]["name"],
                                              "uid": svc["metadata"].get("uid", ""), "controller": True}]},
            "addressType": fam,
            "endpoints": sorted(eps, key=lambda e: e["addresses"][0]),
            "ports": [dict({"name": n, "protocol": pr}, **({"port": po} if po is not None else {}))
                      for n, pr, po in ports],
        })
    return out


def slice_diff(current: Iterable[dict], desired: Iterable[dict]) -> Tuple[List[dict], List[dict], List[dict]]:
    """(create, update, delete) among slices managed by this controller."""
    cur = {key(s): s for s in current if (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY}
    want = {key(s): s for s in desired}
    create = [s for k, s in want.items() if k not in cur]
    update = []
    for k, s in want.items():
        if k in cur and (cur[k].get("endpoints") or []) != s["endpoints"] or \
                k in cur and (cur[k].get("ports") or []) != s["ports"]:
            body = dict(s)
            body["metadata"] = dict(s["metadata"], resourceVersion=cur[k]["metadata"]["resourceVersion"])
            update.append(body)
    delete = [s for k, s in cur.items() if k not in want]
    return create, update, delete


# ---- loops ----------------------------------------------------------------------

# the paths a Loop may watch -> the CoreV1Api list method of that resource
_LIST_METHODS = {"/api/v1/pods": "list_pod_for_all_namespaces", "/api/v1/nodes": "list_node",
                 "/api/v1/services": "list_service_for_all_namespaces"}


def _identity_only(obj: dict) -> dict:
    m = obj.get("metadata") or {}
    return {"metadata": {k: m[k] for k in ("name", "namespace", "resourceVersion") if k in m}}


def _doorbell(api, path: str, name: str) -> Informer:
    from kubernetes import client
    p, _, qs = path.partition("?")
    if p not in _LIST_METHODS:
        raise ValueError(f"loop {name}: cannot watch {path!r} (known: {', '.join(sorted(_LIST_METHODS))})")
    query = dict(x.split("=", 1) for x in qs.split("&") if x)
    unknown = set(query) - {"fieldSelector", "labelSelector"}
    if unknown:
        raise ValueError(f"loop {name}: watch {path!r}: unsupported query {', '.join(sorted(unknown))}")
    return Informer(getattr(client.CoreV1Api(api), _LIST_METHODS[p]), field_selector=query.get("fieldSelector"),
                    label_selector=query.get("labelSelector"), name=name, transform=_identity_only,
                    backoff=(0.2, 2.0))


class Loop:
    """Run ``sync()`` when a watched resource changes, and at least every ``period`` s.

    ``watched``: API paths (``/api/v1/pods``, ``/api/v1/nodes``,
    ``/api/v1/services``, with an optional ``?fieldSelector=...``), each
    watched by an :class:`~meshcni.k8s.Informer` used as a doorbell only: the
    sync lists what it needs, so the informers keep just each object's name and
    version, and a missed event costs latency, never correctness.
    """

    def __init__(self, name: str, api, watched: List[str], sync: Callable[[], None], period: float = 5.0):
        self.name, self.api, self.watched, self.sync, self.period = name, api, watched, sync, period
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: List[threading.Thread] = []
        self.informers: List[Informer] = []
        self.errors = 0

    def start(self) -> "Loop":
        ring = self.wake.set
        for path in self.watched:
            inf = _doorbell(self.api, path, f"{self.name}-watch")
            inf.add_handler(on_add=lambda _o: ring(), on_update=lambda _a, _b: ring(), on_delete=lambda _o: ring())
            self.informers.append(inf.start())
        t = threading.Thread(target=self._run, name=self.name, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for inf in self.informers:
            inf.stop(timeout=1.0)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.period)
            if self.stopping.is_set():
                return
            self.wake.clear()
            try:
                self.sync()
            except Exception:
                self.errors += 1
                log.exception("%s: sync failed", self.name)
                time.sleep(0.5)


class ControllerManager:
    """Scheduler + EndpointSlice controller for one cluster (ClusterIPs: the API server's allocator)."""

    def __init__(self, api):
        self.api = api
        self.cursor = 0
        self.loops = [
            Loop("scheduler", api, ["/api/v1/pods", "/api/v1/nodes"], self.sync_scheduling, 2.0),
            Loop("endpointslices", api, ["/api/v1/pods", "/api/v1/services"], self.sync_slices, 5.0),
        ]

    def start(self):
        for lp in self.loops:
            lp.start()
            lp.wake.set()
        return self

    def stop(self):
        for lp in self.loops:
            lp.stop()

    def sync_scheduling(self):
        pods = get_json(self.api, "/api/v1/pods")["items"]
        nodes = get_json(self.api, "/api/v1/nodes")["items"]
        binds, self.cursor = schedule(pods, nodes, self.cursor)
        for k, node in binds:
            ns, name = k.split("/", 1)
            send_json(self.api, "PATCH", f"/api/v1/namespaces/{ns}/pods/{name}", {"spec": {"nodeName": node}},
                      "application/merge-patch+json")
            log.info("scheduled pod %s on %s", k, node)

    def sync_slices(self):
        svcs = get_json(self.api, "/api/v1/services")["items"]
        pods = get_json(self.api, "/api/v1/pods")["items"]
        slices = get_json(self.api, "/apis/discovery.k8s.io/v1/endpointslices")["items"]
        by_ns: Dict[str, List[dict]] = {}
        for p in pods:
            by_ns.setdefault(p["metadata"].get("namespace", ""), []).append(p)
        desired = []
        for s in svcs:
            desired.extend(desired_slices(s, by_ns.get(s["metadata"]["namespace"], [])))
        create, update, delete = slice_diff(slices, desired)
        for s in create:
            send_json(self.api, "POST", f"/apis/discovery.k8s.io/v1/namespaces/{s['metadata']['namespace']}/endpointslices", s)
        for s in update:
            send_json(self.api, "PUT", f"/apis/discovery.k8s.io/v1/namespaces/{s['metadata']['namespace']}"
                      f"/endpointslices/{s['metadata']['name']}", s)
        for s in delete:
            send_json(self.api, "DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{s['metadata']['namespace']}"
                      f"/endpointslices/{s['metadata']['name']}", None)
