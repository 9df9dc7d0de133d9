# SPDX-License-Identifier: MIT OR Apache-2.0
"""Multi-cluster mesh: remote Services + EndpointSlices -> MeshEndpoints, Cluster status (pure).

The controller (:mod:`meshcni.controller.clustermesh`) feeds these functions
plain dicts from its informers on the local cluster and on each remote
cluster, and does the API writes they decide. Nothing here does I/O or reads
a clock: ``now`` is passed in.

Decisions (CONTRACT.md, issue 17):

- a local Service is meshed when annotated ``mesh-cni.dev/multi-cluster: "true"``;
- a remote cluster contributes backends for ``ns/name`` when it has a Service
  of that namespace and name, unless that remote Service or its remote
  Namespace is annotated ``mesh-cni.dev/export: "false"`` (opt-out: exporting
  needs no annotation, so meshing two clusters is one annotation per Service
  in the consuming cluster, and a producer can still refuse);
- ports: each LOCAL Service port is matched to a remote Service port by name
  (equal names, "" included), then by number, with the same protocol; the
  remote EndpointSlice port carrying that remote Service port's name gives
  ``backend_port``. ``service_port`` is always the local port: agents merge
  the mappings into the local Service's frontends;
- endpoints: ready (a nil ready counts as ready, as kube says) and not
  terminating, IPv4 and IPv6 slices (FQDN slices are not addresses);
- output order is canonical (port, protocol, family, address), so an
  unchanged remote gives byte-identical specs and the controller writes
  nothing.

Bad input never raises: the object and field are reported as a
:class:`MeshProblem` and only that port / endpoint / node is left out.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import copy
import functools
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .identity import API_VERSION, MANAGED_BY, MANAGER
from .model import Problem

MULTI_CLUSTER = "mesh-cni.dev/multi-cluster"
EXPORT = "mesh-cni.dev/export"
AFFINITY = "mesh-cni.dev/affinity"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CLUSTER_OWNER = "mesh-cni.dev/cluster-owner"
FINALIZER = "mesh-cni.dev/cluster-cleanup"
DEFAULT_SECRET_KEY = "config"
DEFAULT_STALE_GRACE = 300.0  # seconds

READY = "Ready"
SECRET_RESOLVED = "SecretResolved"
API_REACHABLE = "APIServerReachable"
INITIAL_SYNC = "InitialSyncComplete"
CIDR_CONFLICT = "CIDRConflict"
# the order conditions are written in: Ready first (the printer column), then the causes
CONDITION_TYPES = (READY, SECRET_RESOLVED, API_REACHABLE, INITIAL_SYNC, CIDR_CONFLICT)

# reasons of a Cluster on its way to Ready: not failures, so no Warning Event
TRANSIENT = frozenset({"Connecting", "Syncing", "NotSynced"})

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_NAME = 253
_pton, _ntop, _AF4, _AF6 = socket.inet_pton, socket.inet_ntop, socket.AF_INET, socket.AF_INET6


@dataclass(frozen=True)
class MeshProblem(Problem):
    """A :class:`Problem` that may live in a remote cluster (``cluster`` = its Cluster name, "" = local).

    ``key``, when set, identifies the problem for once-per-problem reporting
    instead of its text (a condition's message may change while it lasts).
    """
    cluster: str = ""
    key: str = ""

    def __str__(self) -> str:
        where = f"cluster {self.cluster}: " if self.cluster else ""
        return f"{where}{self.kind} {self.namespace}/{self.name}: {self.field}: {self.message}" if self.namespace \
            else f"{where}{self.kind} {self.name}: {self.field}: {self.message}"


def _meta(obj: Mapping) -> Mapping:
    m = obj.get("metadata") if isinstance(obj, dict) else None
    return m if isinstance(m, dict) else {}


def _annotations(obj: Mapping) -> Mapping:
    a = _meta(obj).get("annotations")
    return a if isinstance(a, dict) else {}


def _labels(obj: Mapping) -> Mapping:
    a = _meta(obj).get("labels")
    return a if isinstance(a, dict) else {}


def _key(obj: Mapping) -> str:
    m = _meta(obj)
    return f"{m.get('namespace')}/{m.get('name')}" if m.get("namespace") else str(m.get("name", ""))


def is_meshed(svc: Mapping) -> bool:
    """True when the local Service asks for remote backends."""
    return str(_annotations(svc).get(MULTI_CLUSTER, "")).strip().lower() == "true"


def opted_out(obj: Optional[Mapping]) -> bool:
    """True when a remote Service or Namespace refuses to export (``mesh-cni.dev/export: "false"``)."""
    return obj is not None and str(_annotations(obj).get(EXPORT, "")).strip().lower() == "false"


def is_managed(obj: Mapping) -> bool:
    return _labels(obj).get(MANAGED_BY) == MANAGER


def meshendpoint_name(service: str, cluster: str) -> str:
    return f"{service}-{cluster}"


# ---------------------------------------------------------------- ports and endpoints

@dataclass(frozen=True)
class Port:
    name: str
    port: int
    protocol: str
    index: int  # position in spec.ports / ports, for reports


def service_ports(svc: Mapping, problems: list, cluster: str = "") -> List[Port]:
    """The valid ports of a Service; each bad one is reported (``spec.ports[i]...``) and left out."""
    m = _meta(svc)
    spec = svc.get("spec")
    ports = spec.get("ports") if isinstance(spec, dict) else None
    if ports is None:
        return []
    if not isinstance(ports, list):
        problems.append(MeshProblem("Service", m.get("namespace", ""), m.get("name", ""), "spec.ports",
                                    "not a list", cluster))
        return []
    out = []
    for i, p in enumerate(ports):
        port = _parse_port(p, f"spec.ports[{i}]", "Service", m, problems, cluster, i)
        if port is not None:
            out.append(port)
    return out


def _parse_port(p, where: str, kind: str, m: Mapping, problems: list, cluster: str, i: int) -> Optional[Port]:
    ns, name = m.get("namespace", ""), m.get("name", "")
    if not isinstance(p, dict):
        problems.append(MeshProblem(kind, ns, name, where, "not an object", cluster))
        return None
    num = p.get("port")
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 65535:
        problems.append(MeshProblem(kind, ns, name, f"{where}.port", f"{num!r} is not a port number (1-65535)",
                                    cluster))
        return None
    proto = p.get("protocol") or "TCP"
    if proto not in PROTOCOLS:
        problems.append(MeshProblem(kind, ns, name, f"{where}.protocol", f"{proto!r} is not one of TCP, UDP, SCTP",
                                    cluster))
        return None
    pname = p.get("name") or ""
    if not isinstance(pname, str):
        problems.append(MeshProblem(kind, ns, name, f"{where}.name", f"{pname!r} is not a string", cluster))
        return None
    return Port(pname, num, proto, i)


def match_port(local: Port, remote: Sequence[Port]) -> Optional[Port]:
    """The remote Service port serving ``local``: same protocol, same name, else same number."""
    same = [r for r in remote if r.protocol == local.protocol]
    for r in same:
        if r.name == local.name:
            return r
    for r in same:
        if r.port == local.port:
            return r
    return None


def _ip(s, family: str) -> Optional[Tuple[str, bytes]]:
    """(canonical text, packed) of address ``s`` of ``family`` ("IPv4"/"IPv6"), else None.

    inet_pton (10x faster than ipaddress at 10k endpoints a reconcile): for
    IPv4 it accepts only the canonical dotted quad, so the text is kept; IPv6
    is re-printed by inet_ntop (RFC 5952 text).
    """
    try:
        if family == "IPv4":
            return s, _pton(_AF4, s)
        b = _pton(_AF6, s)
        return _ntop(_AF6, b), b
    except (OSError, TypeError, ValueError):
        return None


def slice_backends(slices: Iterable[Mapping], problems: list, cluster: str = ""
                   ) -> Dict[Tuple[str, str], List[Tuple[str, bytes, int]]]:
    """(slice port name, protocol) -> [(address, packed, backend port)] of ready, not terminating endpoints.

    FQDN slices are skipped (not addresses); a bad port, address or endpoint
    is reported naming the slice and the field, and only it is left out.
    """
    out: Dict[Tuple[str, str], List[Tuple[str, bytes, int]]] = {}
    for s in slices:
        m = _meta(s)
        ns, name = m.get("namespace", ""), m.get("name", "")
        family = s.get("addressType")
        if family == "FQDN":
            continue
        if family not in ("IPv4", "IPv6"):
            problems.append(MeshProblem("EndpointSlice", ns, name, "addressType",
                                        f"{family!r} is not IPv4, IPv6 or FQDN", cluster))
            continue
        ports_raw = s.get("ports") or []
        if not isinstance(ports_raw, list):
            problems.append(MeshProblem("EndpointSlice", ns, name, "ports", "not a list", cluster))
            continue
        ports = [p for i, raw in enumerate(ports_raw)
                 if (p := _parse_port(raw, f"ports[{i}]", "EndpointSlice", m, problems, cluster, i)) is not None]
        if not ports:
            continue
        endpoints = s.get("endpoints") or []
        if not isinstance(endpoints, list):
            problems.append(MeshProblem("EndpointSlice", ns, name, "endpoints", "not a list", cluster))
            continue
        addrs: List[Tuple[str, bytes]] = []
        for i, e in enumerate(endpoints):
            if not isinstance(e, dict):
                problems.append(MeshProblem("EndpointSlice", ns, name, f"endpoints[{i}]", "not an object", cluster))
                continue
            cond = e.get("conditions")
            cond = cond if isinstance(cond, dict) else {}
            # kube: a nil ready counts as ready; terminating endpoints are never new targets
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            raw = e.get("addresses") or []
            if not isinstance(raw, list):
                problems.append(MeshProblem("EndpointSlice", ns, name, f"endpoints[{i}].addresses", "not a list",
                                            cluster))
                continue
            for j, a in enumerate(raw):
                ip = _ip(a, family)
                if ip is None:
                    problems.append(MeshProblem("EndpointSlice", ns, name, f"endpoints[{i}].addresses[{j}]",
                                                f"{a!r} is not an {family} address", cluster))
                    continue
                addrs.append(ip)
        for p in ports:
            out.setdefault((p.name, p.protocol), []).extend((ip, packed, p.port) for ip, packed in addrs)
    return out


def backend_port_mappings(local_svc: Mapping, remote_svc: Mapping, remote_slices: Iterable[Mapping],
                          problems: list, cluster: str = "") -> List[dict]:
    """``spec.backend_port_mappings`` of the MeshEndpoint of ``local_svc`` from one remote cluster.

    Sorted by (service_port, protocol, family, address, backend_port);
    one entry per (ip, service_port, protocol) — the CRD's list-map key —
    keeping the lowest backend port when two slices disagree (a rollout).
    """
    local = service_ports(local_svc, problems)
    remote = service_ports(remote_svc, problems, cluster)
    backends = slice_backends(remote_slices, problems, cluster)
    lm = _meta(local_svc)
    rows = []
    for lp in local:
        rp = match_port(lp, remote)
        if rp is None:
            want = f"named {lp.name!r} or " if lp.name else ""
            problems.append(MeshProblem("Service", lm.get("namespace", ""), lm.get("name", ""),
                                        f"spec.ports[{lp.index}]",
                                        f"cluster {cluster}: the remote Service has no {lp.protocol} port "
                                        f"{want}numbered {lp.port}; no remote backends for it"))
            continue
        for ip, packed, bport in backends.get((rp.name, rp.protocol), ()):
            # packed length orders IPv4 (4 bytes) before IPv6 (16), then numerically
            rows.append((lp.port, lp.protocol, len(packed), packed, bport, ip))
    rows.sort()
    unique, seen = [], set()
    for sport, proto, _, packed, bport, ip in rows:
        k = (packed, sport, proto)
        if k not in seen:
            seen.add(k)
            unique.append({"ip": ip, "service_port": sport, "backend_port": bport, "protocol": proto})
    return unique


# ---------------------------------------------------------------- MeshEndpoints

def meshendpoint_body(cluster: str, local_svc: Mapping, mappings: List[dict]) -> dict:
    """The complete MeshEndpoint ``{service}-{cluster}`` (labels, ownerReference, spec)."""
    m = _meta(local_svc)
    svc = m.get("name", "")
    return {
        "apiVersion": API_VERSION, "kind": "MeshEndpoint",
        "metadata": {
            "name": meshendpoint_name(svc, cluster), "namespace": m.get("namespace", ""),
            "labels": {SERVICE_NAME_LABEL: svc, CLUSTER_OWNER: cluster, MANAGED_BY: MANAGER},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": m.get("uid", ""),
                                 "controller": True}],
        },
        "spec": {"backend_port_mappings": mappings},
    }


def _index_slices(slices: Iterable[Mapping]) -> Dict[Tuple[str, str], List[Mapping]]:
    out: Dict[Tuple[str, str], List[Mapping]] = {}
    for s in slices:
        svc = _labels(s).get(SERVICE_NAME_LABEL)
        if svc:
            out.setdefault((_meta(s).get("namespace", ""), svc), []).append(s)
    return out


@dataclass
class MeshEndpointsResult:
    desired: Dict[str, dict]          # "ns/name" -> complete MeshEndpoint body
    problems: List[MeshProblem]
    meshed_services: int              # local meshed Services this cluster contributes to
    remote_endpoints: int             # distinct remote backend addresses in them


def _rvs(*objs) -> Optional[tuple]:
    out = []
    for o in objs:
        rv = _meta(o).get("resourceVersion") if o is not None else "-"
        if not rv:
            return None
        out.append(rv)
    return tuple(out)


def desired_meshendpoints(cluster: str, local_services: Iterable[Mapping], remote_services: Iterable[Mapping],
                          remote_namespaces: Iterable[Mapping], remote_slices: Iterable[Mapping],
                          memo: Optional[dict] = None) -> MeshEndpointsResult:
    """Every MeshEndpoint remote cluster ``cluster`` should have in the local cluster.

    ``memo`` (a dict the caller keeps per cluster, optional) caches each
    Service's result under the resourceVersions of every object it was
    computed from, so a reconcile after one EndpointSlice changed recomputes
    one Service, not all (objects without resourceVersion are never cached).
    """
    problems: List[MeshProblem] = []
    rsvc = {_key(s): s for s in remote_services}
    rns = {_meta(n).get("name"): n for n in remote_namespaces}
    slices = _index_slices(remote_slices)
    desired: Dict[str, dict] = {}
    endpoints = 0
    seen: set = set()
    for svc in local_services:
        if not is_meshed(svc):
            continue
        m = _meta(svc)
        ns, name = m.get("namespace", ""), m.get("name", "")
        spec = svc.get("spec") if isinstance(svc.get("spec"), dict) else {}
        if spec.get("type") == "ExternalName":
            problems.append(MeshProblem("Service", ns, name, "spec.type",
                                        "an ExternalName Service has no backends to mesh"))
            continue
        remote = rsvc.get(f"{ns}/{name}")
        if remote is None or opted_out(remote) or opted_out(rns.get(ns)):
            continue
        mep = meshendpoint_name(name, cluster)
        if len(mep) > MAX_NAME:
            problems.append(MeshProblem("Service", ns, name, "metadata.name",
                                        f"MeshEndpoint name {mep[:40]}... for cluster {cluster} is longer than "
                                        f"{MAX_NAME} characters"))
            continue
        own = slices.get((ns, name), ())
        sig = _rvs(svc, remote, *own) if memo is not None else None
        if sig is not None:
            sig += (m.get("uid"),)
            hit = memo.get((ns, name))
            if hit is not None and hit[0] == sig:
                _, body, probs, n = hit
                desired[f"{ns}/{mep}"] = body
                problems += probs
                endpoints += n
                seen.add((ns, name))
                continue
        probs: List[MeshProblem] = []
        mappings = backend_port_mappings(svc, remote, own, probs, cluster)
        body = meshendpoint_body(cluster, svc, mappings)
        n = len({mp["ip"] for mp in mappings})
        desired[f"{ns}/{mep}"] = body
        problems += probs
        endpoints += n
        if sig is not None:
            memo[(ns, name)] = (sig, body, probs, n)
            seen.add((ns, name))
    if memo is not None:
        for k in [k for k in memo if k not in seen]:
            del memo[k]  # bounded by the meshed Services that exist
    return MeshEndpointsResult(desired, problems, len(desired), endpoints)


def _same(existing: Mapping, body: Mapping) -> bool:
    em, bm = _meta(existing), body["metadata"]
    labels = _labels(existing)
    return (all(labels.get(k) == v for k, v in bm["labels"].items())
            and (em.get("ownerReferences") or []) == bm["ownerReferences"]
            and ((existing.get("spec") or {}).get("backend_port_mappings") or [])
            == body["spec"]["backend_port_mappings"])


@dataclass
class MeshEndpointPlan:
    create: List[dict] = field(default_factory=list)                # bodies
    replace: List[Tuple[dict, dict]] = field(default_factory=list)  # (existing, new body with its resourceVersion)
    delete: List[dict] = field(default_factory=list)                # existing objects (uid for the precondition)
    problems: List[MeshProblem] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.create) + len(self.replace) + len(self.delete)


def plan_meshendpoints(cluster: str, desired: Mapping[str, dict], existing: Iterable[Mapping]) -> MeshEndpointPlan:
    """Create / replace / delete to bring ``cluster``'s MeshEndpoints to ``desired``.

    ``existing`` may hold every MeshEndpoint of the local cluster: only the
    managed ones owned by ``cluster`` are changed. A hand-made object at a
    desired name is reported and left alone (the desired one is not made);
    hand-made objects elsewhere are :func:`handmade_problems`' business.
    A replacement keeps the object's other labels, annotations and finalizers.
    """
    plan = MeshEndpointPlan()
    by_key = {_key(o): o for o in existing}
    for k, body in desired.items():
        cur = by_key.get(k)
        if cur is None:
            plan.create.append(body)
            continue
        if not is_managed(cur):
            m = _meta(cur)
            plan.problems.append(MeshProblem("MeshEndpoint", m.get("namespace", ""), m.get("name", ""),
                                             f"metadata.labels[{MANAGED_BY}]",
                                             f"hand-made object where cluster {cluster}'s MeshEndpoint belongs; "
                                             "not touched, and its backends are not used"))
            continue
        if _same(cur, body):
            continue
        cm = _meta(cur)
        meta = dict(body["metadata"])
        meta["labels"] = {**_labels(cur), **body["metadata"]["labels"]}
        for k2 in ("resourceVersion", "uid", "annotations", "finalizers"):
            if cm.get(k2):
                meta[k2] = cm[k2]
        plan.replace.append((cur, {**body, "metadata": meta}))
    for k, cur in by_key.items():
        if k not in desired and is_managed(cur) and _labels(cur).get(CLUSTER_OWNER) == cluster:
            plan.delete.append(cur)
    plan.create.sort(key=_key)
    plan.replace.sort(key=lambda p: _key(p[0]))
    plan.delete.sort(key=_key)
    return plan


def handmade_problems(existing: Iterable[Mapping]) -> List[MeshProblem]:
    """Each MeshEndpoint without the managed-by label: reported, never used by agents, never touched."""
    out = []
    for o in existing:
        if not is_managed(o):
            m = _meta(o)
            out.append(MeshProblem("MeshEndpoint", m.get("namespace", ""), m.get("name", ""),
                                   f"metadata.labels[{MANAGED_BY}]",
                                   f"hand-made (not {MANAGER}); agents ignore it and the controller never "
                                   "touches it"))
    return sorted(out, key=str)


def stale_status(existing: Mapping, stale_since: Optional[str]) -> Optional[dict]:
    """The status merge patch that marks ``existing`` stale since ``stale_since`` (None: fresh), or None.

    A MeshEndpoint without status counts as fresh, so fresh objects cost no write.
    A stale object keeps its first ``staleSince``.
    """
    st = existing.get("status") if isinstance(existing.get("status"), dict) else {}
    if stale_since is None:
        if not st.get("stale") and "staleSince" not in st:
            return None
        return {"status": {"stale": False, "staleSince": None}}
    if st.get("stale") is True and st.get("staleSince"):
        return None
    return {"status": {"stale": True, "staleSince": stale_since}}


# ---------------------------------------------------------------- nodes, CIDRs

def node_pod_cidrs(node: Mapping, problems: list, cluster: str = "") -> List[ipaddress._BaseNetwork]:
    """``spec.podCIDRs`` (else ``spec.podCIDR``) as networks; bad ones reported and skipped."""
    spec = node.get("spec") if isinstance(node.get("spec"), dict) else {}
    raw = spec.get("podCIDRs")
    where = "spec.podCIDRs"
    if not raw:
        raw = [spec["podCIDR"]] if spec.get("podCIDR") else []
        where = "spec.podCIDR"
    name = _meta(node).get("name", "")
    if not isinstance(raw, list):
        problems.append(MeshProblem("Node", "", name, where, "not a list", cluster))
        return []
    out = []
    for i, c in enumerate(raw):
        f = f"{where}[{i}]" if where.endswith("s") else where
        try:
            out.append(ipaddress.ip_network(c))
        except (TypeError, ValueError) as e:
            problems.append(MeshProblem("Node", "", name, f, f"{c!r} is not a CIDR ({e})", cluster))
    return out


def remote_nodes(nodes: Iterable[Mapping], cluster: str, problems: list) -> List[dict]:
    """``status.nodes`` of a Cluster: ``[{name, addresses: [InternalIP...], podCIDRs: [...]}]`` by name.

    Nodes without a usable InternalIP are left out (nothing can route via them).
    """
    out = []
    for n in nodes:
        name = _meta(n).get("name", "")
        cidrs = [str(c) for c in node_pod_cidrs(n, problems, cluster)]
        st = n.get("status") if isinstance(n.get("status"), dict) else {}
        addrs = []
        raw = st.get("addresses") or []
        for i, a in enumerate(raw if isinstance(raw, list) else ()):
            if not isinstance(a, dict) or a.get("type") != "InternalIP":
                continue
            try:
                addrs.append(str(ipaddress.ip_address(a.get("address"))))
            except (TypeError, ValueError):
                problems.append(MeshProblem("Node", "", name, f"status.addresses[{i}].address",
                                            f"{a.get('address')!r} is not an IP address", cluster))
        if not addrs:
            problems.append(MeshProblem("Node", "", name, "status.addresses",
                                        "no InternalIP address; its pod CIDRs cannot be routed", cluster))
            continue
        out.append({"name": name, "addresses": addrs, "podCIDRs": cidrs})
    out.sort(key=lambda d: d["name"])
    return out


def cidr_conflicts(cluster: str, remote: Iterable[Mapping], local: Iterable[Mapping],
                   service_cidrs: Sequence[str] = (), problems: Optional[list] = None) -> List[str]:
    """Messages, one per remote pod CIDR overlapping a local pod CIDR or a local service CIDR.

    O((r + l) log l): local ranges are sorted with a running maximum of their
    ends, so each remote CIDR is one bisection (thousand-node clusters).
    """
    problems = problems if problems is not None else []
    spans: Dict[int, List[Tuple[int, int, str]]] = {4: [], 6: []}
    for n in local:
        for c in node_pod_cidrs(n, problems):
            spans[c.version].append((int(c.network_address), int(c.broadcast_address),
                                     f"local node {_meta(n).get('name', '')} podCIDR {c}"))
    for i, s in enumerate(service_cidrs):
        try:
            c = ipaddress.ip_network(s, strict=False)
        except ValueError as e:
            problems.append(MeshProblem("Cluster", "", cluster, "--service-cidr", f"{s!r} is not a CIDR ({e})"))
            continue
        spans[c.version].append((int(c.network_address), int(c.broadcast_address), f"local service CIDR {c}"))
    index = {}
    for v, lst in spans.items():
        lst.sort()
        starts, best = [], []
        top = None
        for span in lst:
            starts.append(span[0])
            if top is None or span[1] > top[1]:
                top = span
            best.append(top)
        index[v] = (starts, best)
    out = []
    for n in remote:
        for c in node_pod_cidrs(n, problems, cluster):
            starts, best = index[c.version]
            lo, hi = int(c.network_address), int(c.broadcast_address)
            i = bisect.bisect_right(starts, hi) - 1
            if i >= 0 and best[i][1] >= lo:
                out.append(f"remote node {_meta(n).get('name', '')} podCIDR {c} overlaps {best[i][2]}")
    return sorted(out)


# ---------------------------------------------------------------- Secret -> kubeconfig

class SecretError(ValueError):
    """The Cluster's kubeconfig cannot be had: ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def secret_ref(cluster: Mapping) -> Tuple[str, str]:
    """(Secret name, key) of a Cluster; key defaults to "config". Raises :class:`SecretError`."""
    spec = cluster.get("spec") if isinstance(cluster.get("spec"), dict) else {}
    ref = spec.get("secret")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref.get("name"):
        raise SecretError("InvalidSpec", f"Cluster {_meta(cluster).get('name', '')}: spec.secret.name is missing")
    key = ref.get("key") or DEFAULT_SECRET_KEY
    if not isinstance(key, str):
        raise SecretError("InvalidSpec", f"Cluster {_meta(cluster).get('name', '')}: spec.secret.key is not a string")
    return ref["name"], key


def kubeconfig_from_secret(cluster: Mapping, secret: Optional[Mapping], namespace: str) -> dict:
    """The parsed kubeconfig the Cluster's Secret holds. Raises :class:`SecretError` with a reason:
    ``SecretNotFound``, ``KeyNotFound``, ``InvalidKubeconfig`` (or ``InvalidSpec``)."""
    name, key = secret_ref(cluster)
    if secret is None:
        raise SecretError("SecretNotFound", f"Secret {namespace}/{name} not found")
    data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
    sdata = secret.get("stringData") if isinstance(secret.get("stringData"), dict) else {}
    if key in data:
        try:
            raw = base64.b64decode(data[key] or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise SecretError("InvalidKubeconfig", f"Secret {namespace}/{name}: data.{key} is not base64") from None
    elif key in sdata:
        raw = str(sdata[key]).encode()
    else:
        have = ", ".join(sorted(data)) or "none"
        raise SecretError("KeyNotFound", f"Secret {namespace}/{name}: no key {key!r} in data (keys: {have})")
    return _parse_kubeconfig(raw, f"Secret {namespace}/{name}: data.{key}")


@functools.lru_cache(maxsize=64)
def _parse_kubeconfig_cached(raw: bytes, where: str):
    import yaml
    try:
        cfg = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        # the parser's text quotes the document (a tag, a scalar, a snippet): never put Secret bytes
        # in a status, an Event or a log; where it broke is enough to find it
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return SecretError("InvalidKubeconfig", f"{where} is not YAML{at}: {type(e).__name__}")
    try:
        return check_kubeconfig(cfg, where)
    except SecretError as e:
        return e


def _parse_kubeconfig(raw: bytes, where: str) -> dict:
    # every reconcile of a Cluster reads its Secret: YAML parsing once per distinct content (7 ms each)
    out = _parse_kubeconfig_cached(raw, where)
    if isinstance(out, SecretError):
        raise SecretError(out.reason, str(out))
    return copy.deepcopy(out)


def check_kubeconfig(cfg, where: str) -> dict:
    """``cfg`` if it names a server through its current context, else :class:`SecretError`."""
    if not isinstance(cfg, dict):
        raise SecretError("InvalidKubeconfig", f"{where}: not a kubeconfig (a YAML mapping is expected)")
    contexts = {c.get("name"): c.get("context") or {} for c in cfg.get("contexts") or () if isinstance(c, dict)}
    clusters = {c.get("name"): c.get("cluster") or {} for c in cfg.get("clusters") or () if isinstance(c, dict)}
    cur = cfg.get("current-context")
    if not cur and len(contexts) == 1:
        cur = next(iter(contexts))
    if cur not in contexts:
        raise SecretError("InvalidKubeconfig", f"{where}: current-context {cur!r} is not among the contexts")
    ctx = contexts[cur]
    server = (clusters.get(ctx.get("cluster")) or {}).get("server") if isinstance(ctx, dict) else None
    if not server:
        raise SecretError("InvalidKubeconfig", f"{where}: context {cur!r} names no cluster with a server")
    users = {u.get("name"): u.get("user") for u in cfg.get("users") or () if isinstance(u, dict)}
    user = users.get(ctx.get("user"))
    for fld in HEADER_CREDENTIALS:
        v = user.get(fld) if isinstance(user, dict) else None
        if isinstance(v, str) and any(c < " " or c == "\x7f" for c in v):
            # sent as an HTTP header, where the client's error would quote it whole (the usual cause:
            # a trailing newline from `echo` or a file); the field is named, the value never
            raise SecretError("InvalidKubeconfig", f"{where}: user {ctx.get('user')!r}: {fld} has a control "
                                                   "character (a trailing newline?)")
    return cfg


# user fields a client sends in an HTTP header
HEADER_CREDENTIALS = ("token", "username", "password")


def credentials(cfg) -> List[str]:
    """Every credential string of a kubeconfig (tokens, passwords, key and certificate data, auth-provider
    config and exec env values), longest first: what :func:`redact` takes out of an error message."""
    out = set()
    for u in (cfg.get("users") or ()) if isinstance(cfg, dict) else ():
        user = u.get("user") if isinstance(u, dict) else None
        if not isinstance(user, dict):
            continue
        vals = [user.get(k) for k in ("token", "password", "client-key-data", "client-certificate-data")]
        ap = user.get("auth-provider")
        if isinstance(ap, dict) and isinstance(ap.get("config"), dict):
            vals += list(ap["config"].values())
        ex = user.get("exec")
        if isinstance(ex, dict):
            vals += [e.get("value") for e in ex.get("env") or () if isinstance(e, dict)]
        for v in vals:
            if isinstance(v, str) and len(v.strip()) >= 4:
                out.update({v, v.strip()})
    return sorted(out, key=len, reverse=True)


def redact(message: str, secrets: Sequence[str]) -> str:
    for v in secrets:
        message = message.replace(v, "<redacted>")
    return message


# ---------------------------------------------------------------- Cluster status

@dataclass(frozen=True)
class Cond:
    status: str   # "True" / "False" / "Unknown"
    reason: str
    message: str = ""


@dataclass
class ClusterObservation:
    """What the runtime saw of one remote cluster, as the status will say it."""
    secret: Cond
    reachable: Cond
    synced: Cond
    conflict: Cond
    ready: Optional[Cond] = None       # None: derived from the four above
    meshed_services: int = 0
    remote_endpoints: int = 0
    last_sync_time: Optional[str] = None
    nodes: List[dict] = field(default_factory=list)


def derive_ready(obs: ClusterObservation) -> Cond:
    """Ready = Secret resolved, API reachable, initial sync done, no CIDR conflict; else the first cause."""
    if obs.ready is not None:
        return obs.ready
    for c, want in ((obs.secret, "True"), (obs.reachable, "True"), (obs.synced, "True"), (obs.conflict, "False")):
        if c.status != want:
            return Cond("False", c.reason, c.message)
    return Cond("True", "Ready", f"{obs.meshed_services} meshed Services, {obs.remote_endpoints} remote endpoints")


def cluster_status(prev: Optional[Mapping], generation: int, obs: ClusterObservation, now: str) -> dict:
    """The Cluster's whole ``status``; a condition keeps its lastTransitionTime while its status holds.

    Deterministic for equal inputs (and ``now`` is only used on a transition),
    so an unchanged cluster yields a status equal to ``prev`` and no write.
    """
    prev = prev if isinstance(prev, dict) else {}
    before = {c.get("type"): c for c in prev.get("conditions") or () if isinstance(c, dict)}
    conds = []
    for typ, c in zip(CONDITION_TYPES, (derive_ready(obs), obs.secret, obs.reachable, obs.synced, obs.conflict)):
        old = before.get(typ) or {}
        since = old.get("lastTransitionTime") if old.get("status") == c.status and old.get("lastTransitionTime") \
            else now
        conds.append({"type": typ, "status": c.status, "reason": c.reason, "message": c.message[:32768],
                      "lastTransitionTime": since, "observedGeneration": generation})
    st = {"observedGeneration": generation, "conditions": conds, "meshedServices": obs.meshed_services,
          "remoteEndpoints": obs.remote_endpoints, "nodes": obs.nodes}
    last = obs.last_sync_time or prev.get("lastSyncTime")
    if last:
        st["lastSyncTime"] = last
    return st


def condition_problems(cluster: str, status: Mapping) -> List[MeshProblem]:
    """One report per failing cause (Ready itself is their sum): what a Warning Event says.

    InitialSyncComplete False is a phase, not a failure (APIServerReachable says
    why a sync does not finish), so a normal start-up sends no Warning.
    """
    out = []
    for c in status.get("conditions") or ():
        typ = c.get("type")
        if typ == INITIAL_SYNC:
            continue
        bad = (c.get("status") == "True") if typ == CIDR_CONFLICT else (c.get("status") == "False")
        if typ != READY and bad:
            out.append(MeshProblem("Cluster", "", cluster, f"status.conditions[{typ}]",
                                   f"{c.get('reason')}: {c.get('message')}", key=f"{cluster}/{typ}/{c.get('reason')}"))
    ready = next((c for c in status.get("conditions") or () if c.get("type") == READY), None)
    if ready and ready.get("status") == "False" and not out and ready.get("reason") not in TRANSIENT:
        out.append(MeshProblem("Cluster", "", cluster, f"status.conditions[{READY}]",
                               f"{ready.get('reason')}: {ready.get('message')}",
                               key=f"{cluster}/{READY}/{ready.get('reason')}"))
    return out
