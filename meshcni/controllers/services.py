# SPDX-License-Identifier: MIT OR Apache-2.0
"""Services + EndpointSlices -> the socket LB's desired Services (a pure function).

One datapath Service per (Kubernetes Service, port, IP family): its
frontends are the Service's clusterIPs of that family on that port, its
backends the ready endpoints (ready, hence serving and not terminating) of
the Service's EndpointSlices of that family whose slice port matches the
Service port by name and protocol. Headless and ExternalName Services are
skipped, not errors. Bad input is reported per object and field and only
that object (or port, or endpoint) is left out — everything else still
programs.

Multi-cluster: a Service annotated ``mesh-cni.dev/multi-cluster: "true"``
also gets the backends of its MeshEndpoints (:func:`remote_backends` turns
them into ``remote``, keyed by (namespace, Service, Service port number,
protocol), as the mappings carry the port number, not its name), filtered
by the Service's ``mesh-cni.dev/affinity`` (none | local | remote). Only
MeshEndpoints the controller made (``app.kubernetes.io/managed-by:
meshcni-controller``) are used: anyone may create a MeshEndpoint, and one
made by hand must not steer a Service's traffic. Every other Service never
looks at ``remote``, so it costs them one dict lookup.

Beyond ClusterIP (issue 20; the map contract is in docs/architecture.md,
"Service frontends and scopes"): a NodePort or LoadBalancer Service's
``nodePort`` becomes one NODEPORT frontend per address of this node that
answers (:func:`nodeport_addresses`) plus the family's wildcard address;
``externalIPs`` and ``status.loadBalancer.ingress[].ip`` become EXTERNAL
frontends on the Service port. ``externalTrafficPolicy: Local`` gives those
frontends two masters: scope EXT with this node's ready backends only
(endpoints whose ``nodeName`` is this node) and scope INT with every backend,
for in-cluster clients. ClusterIP with ``internalTrafficPolicy: Local`` has
both masters hold this node's backends. ``loadBalancerSourceRanges`` guards
the LoadBalancer ingress IPs (as kube-proxy does; NodePorts and externalIPs
are not filtered). Frontends with another backend set than the clusterIP's
are a second datapath Service (name suffix ``/local`` or ``/cluster``), as
one svc_id has one backend list. A nodePort two Services claim stays with
the older one; the other is reported (Event ``NodePortConflict``).
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .model import (F_ETP_LOCAL, F_EXTERNAL, F_ITP_LOCAL, F_NODEPORT, F_SRC_RANGES, F_TWO_SCOPES,  # noqa: F401
                    SCOPE_EXT, SCOPE_INT, Backend, Frontend, Problem, Service)

_inet_pton, _AF_INET = socket.inet_pton, socket.AF_INET

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}
DEFAULT_AFFINITY_TIMEOUT = 10800  # kube's default for ClientIP affinity

MULTI_CLUSTER_ANNOTATION = "mesh-cni.dev/multi-cluster"
AFFINITY_ANNOTATION = "mesh-cni.dev/affinity"
AFFINITIES = ("none", "local", "remote")
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_CONTROLLER = "meshcni-controller"
CLUSTER_OWNER_LABEL = "mesh-cni.dev/cluster-owner"

# (namespace, Service name, Service port number, protocol) -> [(backend, cluster name)]
RemoteKey = Tuple[str, str, int, str]
Remote = Dict[RemoteKey, List[Tuple[Backend, str]]]


NODEPORT_CONFLICT = "NodePortConflict"
FRONTEND_CONFLICT = "FrontendConflict"  # an address:port two Services claim otherwise (externalIPs, clusterIPs)
NOT_SERVED = "ServiceNotServed"
WILDCARD = {4: "0.0.0.0", 6: "::"}  # the NodePort frontend the socket LB retries for any node's address
NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


@dataclass(frozen=True)
class NodeContext:
    """What the desired Services of one node depend on: its name (which endpoints are local) and the
    addresses its NodePorts answer on (canonical text)."""
    name: str
    addresses: Tuple[str, ...] = ()


def nodeport_addresses(node: Optional[dict], cidrs: Optional[Sequence[str]] = None,
                       local_addresses: Iterable[str] = ()) -> Tuple[Tuple[str, ...], List[str]]:
    """(addresses this node's NodePorts answer on, errors).

    Without ``cidrs``: every InternalIP/ExternalIP of the Node object's
    ``status.addresses``. With ``cidrs`` (``--nodeport-addresses``): those
    and the node's own interface addresses (``local_addresses``) that fall in
    one of them. Errors name the bad CIDR or address; the rest is used.
    """
    errors: List[str] = []
    cand: List[str] = []
    st = (node or {}).get("status") or {}
    for a in st.get("addresses") or ():
        if isinstance(a, dict) and a.get("type") in NODE_ADDRESS_TYPES:
            c = _canon(a.get("address"))
            if c is None:
                errors.append(f"Node status.addresses: {a.get('address')!r} is not an IP address")
            else:
                cand.append(c[0])
    nets = None
    if cidrs:
        nets = []
        for c in cidrs:
            try:
                nets.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                errors.append(f"--nodeport-addresses: {c!r} is not a CIDR")
        for a in local_addresses:
            c = _canon(a)
            if c is not None:
                cand.append(c[0])
    out: List[str] = []
    for a in cand:
        if a in out:
            continue
        if nets is not None and not any(ipaddress.ip_address(a) in n for n in nets):
            continue
        out.append(a)
    return tuple(out), errors


def _ip(s) -> Optional[ipaddress._BaseAddress]:
    try:
        return ipaddress.ip_address(s)
    except (TypeError, ValueError):
        return None


def _canon(a) -> Optional[Tuple[str, int]]:
    """(canonical text, family) of an address, or None. A dotted quad that
    inet_pton takes is already canonical (no leading zeros, each octet
    <= 255: the same rule as ipaddress), so the common IPv4 endpoint costs
    one C call; anything else goes through ipaddress."""
    if type(a) is str:
        try:
            _inet_pton(_AF_INET, a)
            return a, 4
        except (OSError, ValueError):
            pass
    ip = _ip(a)
    return None if ip is None else (str(ip), ip.version)


def _port_ok(p) -> bool:
    return isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536


class ServiceIDs:
    """Stable svc_id per (Service, port, family), persisted so restarts keep them.

    The datapath's reverse NAT and affinity entries are keyed by svc_id, so an
    id must survive an agent restart; ids of vanished Services are freed.
    """

    def __init__(self, path: Optional[str] = None, first: int = 1):
        self.path, self.first = path, first
        self.ids: Dict[str, int] = {}
        self.lock = threading.Lock()
        if path and os.path.exists(path):
            with open(path) as f:
                self.ids = {k: int(v) for k, v in json.load(f).items()}

    def assign(self, keys: Iterable[str]) -> Dict[str, int]:
        with self.lock:
            keyset = set(keys)
            keys = sorted(keyset)
            changed = False
            for k in [k for k in self.ids if k not in keyset]:  # a set: this runs on every reconcile
                del self.ids[k]
                changed = True
            used = set(self.ids.values())
            nxt = self.first
            for k in keys:
                if k not in self.ids:
                    while nxt in used:
                        nxt += 1
                    self.ids[k] = nxt
                    used.add(nxt)
                    changed = True
            if changed:
                self._save()
            return dict(self.ids)

    def update(self, added: Iterable[str], removed: Iterable[str]) -> Dict[str, int]:
        """:meth:`assign` for a change known key by key: ``removed`` freed, then ``added`` numbered in sorted
        order from the lowest free id. The same ids as ``assign`` of the whole key set after that change,
        at the cost of the change (plus one pass over the ids when something is added). Returns the live
        mapping (not a copy)."""
        with self.lock:
            changed = False
            for k in removed:
                if self.ids.pop(k, None) is not None:
                    changed = True
            new = sorted(k for k in set(added) if k not in self.ids)
            if new:
                used = set(self.ids.values())
                nxt = self.first
                for k in new:
                    while nxt in used:
                        nxt += 1
                    self.ids[k] = nxt
                    used.add(nxt)
                changed = True
            if changed:
                self._save()
            return self.ids

    def _save(self) -> None:
        if not self.path:
            return
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".svcids.")
        with os.fdopen(fd, "w") as f:
            json.dump(self.ids, f, sort_keys=True)
        os.rename(tmp, self.path)


def _frontends(svc: dict) -> Tuple[List[ipaddress._BaseAddress], List[Problem]]:
    m, spec = svc["metadata"], svc.get("spec") or {}
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    out, bad = [], []
    for i, s in enumerate(ips):
        a = _ip(s)
        if a is None:
            f = "spec.clusterIP" if len(ips) == 1 else f"spec.clusterIPs[{i}]"
            bad.append(Problem("Service", m.get("namespace", ""), m["name"], f, f'"{s}" is not an IP address'))
        else:
            out.append(a)
    return out, bad


def remote_backends(meshendpoints: Iterable[dict]) -> Tuple[Remote, List[Problem]]:
    """MeshEndpoints -> (``remote`` for :func:`desired_services`, problems).

    Only MeshEndpoints labelled ``app.kubernetes.io/managed-by:
    meshcni-controller`` count; a hand-made one is reported and left out whole.
    A mapping with a bad ip, port or protocol is reported (object and field)
    and left out; the rest of that MeshEndpoint is used. SCTP mappings are
    skipped without a report, as SCTP Service ports are (the socket LB does not
    balance SCTP). Which Service a MeshEndpoint feeds, and whether that Service
    is meshed at all, is decided by :func:`desired_services`.
    """
    out: Remote = {}
    problems: List[Problem] = []
    for me in meshendpoints:
        m = me.get("metadata") or {}
        ns, name = m.get("namespace", ""), m.get("name", "?")
        labels = m.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_CONTROLLER:
            problems.append(Problem("MeshEndpoint", ns, name, f"metadata.labels[{MANAGED_BY_LABEL}]",
                                    f"not {MANAGED_BY_CONTROLLER}: made by hand, never used"))
            continue
        svc, cluster = labels.get(SERVICE_NAME_LABEL), labels.get(CLUSTER_OWNER_LABEL)
        if not svc or not cluster:
            label = SERVICE_NAME_LABEL if not svc else CLUSTER_OWNER_LABEL
            problems.append(Problem("MeshEndpoint", ns, name, f"metadata.labels[{label}]", "missing; not used"))
            continue
        spec = me.get("spec")
        mappings = spec.get("backend_port_mappings") if isinstance(spec, dict) else None
        if mappings is None:
            continue  # no backends (yet): nothing to add, nothing wrong
        if not isinstance(mappings, list):
            problems.append(Problem("MeshEndpoint", ns, name, "spec.backend_port_mappings", "not a list"))
            continue
        for i, bm in enumerate(mappings):
            # the common, valid mapping costs a few C calls; anything else takes the slow path that names the field
            try:
                ip, sp, bp, proto = bm["ip"], bm["service_port"], bm["backend_port"], bm.get("protocol", "TCP")
                ok = type(sp) is int and type(bp) is int and 0 < sp < 65536 and 0 < bp < 65536 and proto in PROTOCOLS
            except (TypeError, KeyError, AttributeError):
                ok = False
            if ok:
                c = _canon(ip)
                if c is not None:
                    k = (ns, svc, sp, proto)
                    lst = out.get(k)
                    if lst is None:
                        lst = out[k] = []
                    lst.append((Backend(c[0], bp), cluster))
                    continue
            _bad_mapping(bm, ns, name, f"spec.backend_port_mappings[{i}]", problems)
    return out, problems


def _bad_mapping(bm, ns: str, name: str, f: str, problems: List[Problem]) -> None:
    """Report every bad field of one mapping (SCTP is not bad: skipped like SCTP Service ports)."""
    if not isinstance(bm, dict):
        problems.append(Problem("MeshEndpoint", ns, name, f, "not an object"))
        return
    if _canon(bm.get("ip")) is None:
        problems.append(Problem("MeshEndpoint", ns, name, f"{f}.ip", f"{bm.get('ip')!r} is not an IP address"))
    for fld in ("service_port", "backend_port"):
        if not _port_ok(bm.get(fld)):
            problems.append(Problem("MeshEndpoint", ns, name, f"{f}.{fld}",
                                    f"{bm.get(fld)!r} must be between 1 and 65535"))
    proto = bm.get("protocol", "TCP")  # the CRD's default
    if proto not in PROTOCOLS and proto != "SCTP":
        problems.append(Problem("MeshEndpoint", ns, name, f"{f}.protocol", f"{proto!r} is not TCP, UDP or SCTP"))


def _bad_slice(sl: dict, ns: str) -> Problem:
    """The first field of a slice that is not the shape the API defines (the slow path of a malformed slice)."""
    name = (sl.get("metadata") or {}).get("name", "?")
    ports = sl.get("ports")
    if ports is not None and not isinstance(ports, list):
        return Problem("EndpointSlice", ns, name, "ports", "not a list; slice not used")
    for i, p in enumerate(ports or []):
        if not isinstance(p, dict):
            return Problem("EndpointSlice", ns, name, f"ports[{i}]", "not an object; slice not used")
    eps = sl.get("endpoints")
    if eps is not None and not isinstance(eps, list):
        return Problem("EndpointSlice", ns, name, "endpoints", "not a list; slice not used")
    for j, ep in enumerate(eps or []):
        if not isinstance(ep, dict):
            return Problem("EndpointSlice", ns, name, f"endpoints[{j}]", "not an object; slice not used")
        for fld, typ in (("conditions", dict), ("addresses", list)):
            if ep.get(fld) is not None and not isinstance(ep[fld], typ):
                return Problem("EndpointSlice", ns, name, f"endpoints[{j}].{fld}",
                               f"not {'an object' if typ is dict else 'a list'}; slice not used")
    return Problem("EndpointSlice", ns, name, "endpoints", "malformed; slice not used")


def _mesh_options(ann: dict, ns: str, name: str, problems: List[Problem]) -> Tuple[bool, str]:
    """(meshed, affinity) from a Service's annotations; bad values reported."""
    mc = ann.get(MULTI_CLUSTER_ANNOTATION)
    if mc != "true":
        if mc not in (None, "false"):
            problems.append(Problem("Service", ns, name, f"metadata.annotations[{MULTI_CLUSTER_ANNOTATION}]",
                                    f'"{mc}" is not "true" or "false"; not meshed'))
        return False, "none"
    aff = ann.get(AFFINITY_ANNOTATION, "none")
    if aff not in AFFINITIES:
        problems.append(Problem("Service", ns, name, f"metadata.annotations[{AFFINITY_ANNOTATION}]",
                                f'"{aff}" is not local, remote or none; none used'))
        aff = "none"
    return True, aff


@dataclass
class _Ext:
    """A Service's frontends beyond its clusterIPs, checked once per Service."""
    nodeports: Dict[int, int]                  # spec.ports index -> nodePort
    external: List[Tuple[str, int, bool, str]]  # (address, family, is a LoadBalancer ingress IP, field)
    etp_local: bool
    itp_local: bool
    src_ranges: Optional[list]                 # loadBalancerSourceRanges as networks; None: not set


def _external(spec: dict, status, ns: str, name: str, problems: List[Problem]) -> Optional[_Ext]:
    """The NodePort, externalIPs, LoadBalancer and traffic-policy part of a Service, or None when it is a
    plain ClusterIP Service (the common case costs a few dict lookups)."""
    stype = spec.get("type") or "ClusterIP"
    lb = (status.get("loadBalancer") or {}) if isinstance(status, dict) else {}
    ingress = lb.get("ingress") if isinstance(lb, dict) else None
    itp = spec.get("internalTrafficPolicy") == "Local"
    if stype == "ClusterIP" and not spec.get("externalIPs") and not itp:
        return None
    ext = _Ext({}, [], spec.get("externalTrafficPolicy") == "Local", itp, None)
    if stype in ("NodePort", "LoadBalancer"):
        for i, sp in enumerate(spec.get("ports") or []):
            if not isinstance(sp, dict):
                continue
            np_ = sp.get("nodePort")
            if np_ is None:
                if stype == "NodePort" or spec.get("allocateLoadBalancerNodePorts") is not False:
                    problems.append(Problem("Service", ns, name, f"spec.ports[{i}].nodePort",
                                            "not allocated: no NodePort frontend for this port", reason=NOT_SERVED))
                continue
            if not _port_ok(np_):
                problems.append(Problem("Service", ns, name, f"spec.ports[{i}].nodePort",
                                        f"{np_!r} must be between 1 and 65535: no NodePort frontend", reason=NOT_SERVED))
                continue
            ext.nodeports[i] = np_
    ips = spec.get("externalIPs") or []
    for i, a in enumerate(ips if isinstance(ips, list) else [ips]):
        c = _canon(a)
        if c is None:
            problems.append(Problem("Service", ns, name, f"spec.externalIPs[{i}]", f"{a!r} is not an IP address", reason=NOT_SERVED))
        else:
            ext.external.append((c[0], c[1], False, f"spec.externalIPs[{i}]"))
    if stype == "LoadBalancer":
        for i, ing in enumerate(ingress if isinstance(ingress, list) else ()):
            if not isinstance(ing, dict) or ing.get("ip") is None or ing.get("ipMode") == "Proxy":
                continue  # a hostname, or a load balancer that proxies itself: nothing for this node to answer
            c = _canon(ing["ip"])
            if c is None:
                problems.append(Problem("Service", ns, name, f"status.loadBalancer.ingress[{i}].ip",
                                        f"{ing['ip']!r} is not an IP address", reason=NOT_SERVED))
            else:
                ext.external.append((c[0], c[1], True, f"status.loadBalancer.ingress[{i}].ip"))
        ranges = spec.get("loadBalancerSourceRanges")
        if ranges:
            # set: the ingress IPs admit only these sources; a bad entry is left out and the rest still
            # apply (with none left nobody from outside is served: never open by mistake)
            ext.src_ranges = []
            for i, r in enumerate(ranges if isinstance(ranges, list) else [ranges]):
                try:
                    ext.src_ranges.append(ipaddress.ip_network(r.strip(), strict=False))
                except (AttributeError, ValueError):
                    problems.append(Problem("Service", ns, name, f"spec.loadBalancerSourceRanges[{i}]",
                                            f"{r!r} is not a CIDR; left out, the other ranges still apply"))
    return ext


def _service_order(svc: dict) -> Tuple[str, str, str]:
    m = svc.get("metadata") or {}
    return (str(m.get("creationTimestamp") or ""), m.get("namespace", ""), m.get("name", ""))


def nodeport_claims(services: Iterable[dict]) -> Tuple[set, List[Problem]]:
    """(the (namespace, name, spec.ports index) whose nodePort another Service holds, their problems).

    The API server refuses a nodePort already allocated, so this only
    happens with objects it did not check (another API server, a restore):
    the oldest Service (creationTimestamp, then namespace/name) keeps it, as
    one address:port can reach only one Service.
    """
    cands = [s for s in services if isinstance(s.get("spec"), dict)
             and s["spec"].get("type") in ("NodePort", "LoadBalancer")]
    claims: Dict[Tuple[int, str], Tuple[str, str]] = {}
    lost, problems = set(), []
    for svc in sorted(cands, key=_service_order):
        m = svc.get("metadata") or {}
        ns, name = m.get("namespace", ""), m.get("name", "?")
        for i, sp in enumerate(svc["spec"].get("ports") or []):
            if not isinstance(sp, dict) or not _port_ok(sp.get("nodePort")):
                continue
            k = (sp["nodePort"], sp.get("protocol", "TCP"))
            owner = claims.setdefault(k, (ns, name))
            if owner != (ns, name):
                lost.add((ns, name, i))
                problems.append(Problem("Service", ns, name, f"spec.ports[{i}].nodePort",
                                        f"{k[0]}/{k[1]} is already used by Service {owner[0]}/{owner[1]}: "
                                        "not served on this nodePort", reason=NODEPORT_CONFLICT))
    return lost, problems


def _service_rows(svc: dict, by_svc: Dict[Tuple[str, str], List[dict]], remote: Optional[Remote],
                  node: NodeContext, node_addrs: Dict[int, List[str]], lost: set, problems: List[Problem],
                  wanted: List[Tuple[str, Service]]) -> None:
    """The datapath Services of one Kubernetes Service (svc_id 0: ids are assigned by the caller) appended to
    ``wanted``, its problems to ``problems``. ``by_svc`` holds its EndpointSlices of a known addressType under
    (namespace, name); ``lost`` the (namespace, name, spec.ports index) whose nodePort another Service holds."""
    m, spec = svc.get("metadata") or {}, svc.get("spec")
    ns, name = m.get("namespace", ""), m.get("name", "?")
    if not isinstance(spec, dict):
        problems.append(Problem("Service", ns, name, "spec", "missing"))
        return
    if spec.get("type") == "ExternalName" or spec.get("clusterIP") in ("None", None, ""):
        return
    fronts, bad = _frontends(svc)
    problems += bad
    if bad:
        return  # a Service with a broken address is left out whole, never half-programmed
    ann = m.get("annotations")
    if ann and not isinstance(ann, dict):
        problems.append(Problem("Service", ns, name, "metadata.annotations", "not an object; not meshed"))
        ann = None
    meshed, locality = _mesh_options(ann, ns, name, problems) if ann else (False, "none")
    ext = _external(spec, svc.get("status"), ns, name, problems)
    if ext is not None:
        fams = {a.version for a in fronts}
        for a, fam, _, f in ext.external:
            if fam not in fams:
                problems.append(Problem("Service", ns, name, f, f"{a}: the Service has no IPv{fam} clusterIP, "
                                        "so it has no IPv{fam} backends: not served".format(fam=fam), reason=NOT_SERVED))
    want_local = ext is not None and (ext.etp_local or ext.itp_local)
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = spec.get("sessionAffinityConfig") or {}
        cip = (cfg.get("clientIP") or {}) if isinstance(cfg, dict) else None
        if not isinstance(cip, dict):
            problems.append(Problem("Service", ns, name, "spec.sessionAffinityConfig" if cip is None else
                                    "spec.sessionAffinityConfig.clientIP", "not an object; default timeout used"))
            cip = {}
        t = cip.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
        if not (isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 86400):
            problems.append(Problem("Service", ns, name, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                                    f"{t!r} is not 1..86400"))
            t = DEFAULT_AFFINITY_TIMEOUT
        affinity = int(t)
    for i, sp in enumerate(spec.get("ports") or []):
        if not isinstance(sp, dict):
            problems.append(Problem("Service", ns, name, f"spec.ports[{i}]", "not an object"))
            continue
        port, proto = sp.get("port"), sp.get("protocol", "TCP")
        if not _port_ok(port):
            problems.append(Problem("Service", ns, name, f"spec.ports[{i}].port",
                                    f"{port!r} must be between 1 and 65535"))
            continue
        if proto not in PROTOCOLS:
            if proto != "SCTP":
                problems.append(Problem("Service", ns, name, f"spec.ports[{i}].protocol",
                                        f'"{proto}" is not TCP, UDP or SCTP'))
            continue  # SCTP: the socket LB does not balance it (documented)
        pname = sp.get("name", "")
        for fam in (4, 6):
            fips = [a for a in fronts if a.version == fam]
            if not fips:
                continue
            backends, local = [], []
            for sl in by_svc.get((ns, name), []):
                if (sl["addressType"] == "IPv4") != (fam == 4):
                    continue
                # a slice's backends count only once all of it was read: a malformed one (wrong JSON
                # types an informer may still hand over) is reported by _bad_slice and left out whole
                mine, mine_local = [], []
                try:
                    sport = next((p for p in sl.get("ports") or [] if (p.get("name") or "") == pname
                                  and p.get("protocol", "TCP") == proto), None)
                    if sport is None:
                        continue
                    bport = sport.get("port")
                    if not _port_ok(bport):
                        problems.append(Problem("EndpointSlice", ns, sl["metadata"].get("name", "?"),
                                                f"ports[name={pname}].port", f"{bport!r} is not a port number"))
                        continue
                    for j, ep in enumerate(sl.get("endpoints") or []):
                        cond = ep.get("conditions") or {}
                        # kube: a nil ready counts as ready; terminating endpoints are never new targets
                        if cond.get("ready") is False or cond.get("terminating") is True:
                            continue
                        addrs = ep.get("addresses") or []
                        if type(addrs) is not list:
                            raise TypeError("addresses")
                        here = want_local and node.name and ep.get("nodeName") == node.name
                        for k, a in enumerate(addrs):
                            c = _canon(a)
                            if c is None or c[1] != fam:
                                problems.append(Problem("EndpointSlice", ns, sl["metadata"].get("name", "?"),
                                                        f"endpoints[{j}].addresses[{k}]",
                                                        f'"{a}" is not an {sl["addressType"]} address'))
                                continue
                            mine.append(Backend(c[0], bport))
                            if here:
                                mine_local.append(Backend(c[0], bport))
                except (AttributeError, TypeError):
                    problems.append(_bad_slice(sl, ns))
                    continue
                backends += mine
                local += mine_local
            clusters = None
            if meshed and remote:
                # canonical text: an IPv6 address has a colon, an IPv4 one never
                rb = [bc for bc in remote.get((ns, name, port, proto), ()) if (":" in bc[0].ip) == (fam == 6)]
                if rb and locality == "local" and backends:
                    rb = []  # failover only: a ready local backend keeps traffic here
                elif rb and locality == "remote":
                    backends = []
                if rb:
                    local_set = set(backends)
                    clusters = {b: c for b, c in rb if b not in local_set} or None
                    backends += [b for b, _ in rb]
            backends = sorted(set(backends), key=lambda b: (b.ip, b.port))
            key = f"{ns}/{name}:{pname or port}/{proto}/v{fam}"
            pl = PROTOCOLS[proto]
            if ext is None:  # a plain ClusterIP Service: one datapath Service
                wanted.append((key, Service(name=key, frontends=[Frontend(str(a), port, pl) for a in fips],
                                            backends=backends, svc_id=0, affinity_timeout=affinity,
                                            clusters=clusters)))
                continue
            local = sorted(set(local), key=lambda b: (b.ip, b.port))
            groups: Dict[bool, List[Frontend]] = {False: [], True: []}  # local backends? -> frontends
            seen: Dict[Tuple[str, int, int], str] = {}

            def add(is_local: bool, fe: Frontend, field: str) -> None:
                k = (fe.ip, fe.port, fe.scope)
                if k in seen:
                    if seen[k] != field:
                        problems.append(Problem("Service", ns, name, field,
                                                f"{fe.ip}:{fe.port} is already this Service's {seen[k]}: "
                                                "served once", reason=NOT_SERVED))
                    return
                seen[k] = field
                groups[is_local].append(fe)

            for a in fips:
                cf = "spec.clusterIPs"
                if ext.itp_local:  # in-cluster clients reach only this node's backends, at either scope
                    for scope in (SCOPE_EXT, SCOPE_INT):
                        add(True, Frontend(str(a), port, pl, F_ITP_LOCAL | F_TWO_SCOPES, scope), cf)
                else:
                    add(False, Frontend(str(a), port, pl), cf)
            xf: List[Tuple[str, int, int, str]] = []  # (address, port, flags, field)
            np_ = ext.nodeports.get(i)
            if np_ is not None and (ns, name, i) not in lost:
                for a in node_addrs[fam] + [WILDCARD[fam]]:
                    xf.append((a, np_, F_NODEPORT, f"spec.ports[{i}].nodePort"))
            for a, afam, is_lb, f in ext.external:
                if afam == fam:
                    xf.append((a, port, F_EXTERNAL | (F_SRC_RANGES if is_lb and ext.src_ranges is not None
                                                      else 0), f))
            for a, p, flags, f in xf:
                if ext.etp_local:
                    # outside clients: this node's backends, source kept; in-cluster: every backend
                    add(True, Frontend(a, p, pl, flags | F_ETP_LOCAL | F_TWO_SCOPES, SCOPE_EXT), f)
                    add(False, Frontend(a, p, pl, (flags & ~F_SRC_RANGES) | F_TWO_SCOPES, SCOPE_INT), f)
                else:
                    add(False, Frontend(a, p, pl, flags, SCOPE_EXT), f)
            base = ext.itp_local  # the group holding the clusterIPs keeps the plain key (and svc_id)
            for is_local in (base, not base):
                fes = groups[is_local]
                if not fes:
                    continue
                k = key if is_local == base else key + ("/local" if is_local else "/cluster")
                src = ext.src_ranges if any(f.flags & F_SRC_RANGES for f in fes) else ()
                wanted.append((k, Service(name=k, frontends=fes, backends=local if is_local else backends,
                                          svc_id=0, affinity_timeout=affinity,
                                          clusters=None if is_local else clusters, src_ranges=src or ())))


def desired_services(services: Iterable[dict], slices: Iterable[dict], ids: ServiceIDs,
                     remote: Optional[Remote] = None,
                     node: Optional[NodeContext] = None) -> Tuple[List[Service], List[Problem]]:
    """(datapath Services, problems) for the whole cluster, as this node serves it.

    ``remote`` (from :func:`remote_backends`) adds backends to the ports of
    meshed Services only. Affinity is decided per datapath Service, i.e. per
    (port, IP family): ``local`` takes the remote backends only while that
    port has no ready local backend of that family, ``remote`` the local ones
    only while it has no remote backend. Each Service's ``clusters`` names the
    cluster of every remote backend it got (a backend that is also local
    counts as local).

    ``node`` (this node's name and NodePort addresses) decides which
    endpoints are local (traffic policies ``Local``) and where NodePorts
    answer; without it no endpoint is local and NodePorts get only the
    wildcard frontend.
    """
    node = node or NodeContext("")
    services = services if isinstance(services, list) else list(services)
    problems: List[Problem] = []
    by_svc: Dict[Tuple[str, str], List[dict]] = {}
    for sl in slices:
        m = sl.get("metadata") or {}
        name = (m.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not name:
            continue  # not a Service's slice (or a hand-made one): not ours to read
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            if sl.get("addressType") != "FQDN":  # FQDN slices carry names, not addresses: not an error
                problems.append(Problem("EndpointSlice", m.get("namespace", ""), m.get("name", "?"), "addressType",
                                        f"{sl.get('addressType')!r} is not IPv4, IPv6 or FQDN; not used"))
            continue
        by_svc.setdefault((m.get("namespace", ""), name), []).append(sl)
    lost, claim_problems = nodeport_claims(services)
    problems += claim_problems
    node_addrs = {4: [a for a in node.addresses if ":" not in a], 6: [a for a in node.addresses if ":" in a]}

    wanted: List[Tuple[str, Service]] = []
    for svc in services:
        _service_rows(svc, by_svc, remote, node, node_addrs, lost, problems, wanted)
    idmap = ids.assign(k for k, _ in wanted)
    out = []
    for k, s in wanted:
        s.svc_id = idmap[k]
        out.append(s)
    return out, problems


def health_checks(services: Iterable[dict], slices: Iterable[dict],
                  node_name: str) -> Tuple[Dict[int, Tuple[str, int]], List[Problem]]:
    """healthCheckNodePort -> ("namespace/name", this node's ready endpoints) for every LoadBalancer
    Service with ``externalTrafficPolicy: Local`` (what kube-proxy answers on that port), and problems
    (a port two Services claim: the older keeps it)."""
    cands = []
    for svc in services:
        spec = svc.get("spec")
        if isinstance(spec, dict) and spec.get("type") == "LoadBalancer" \
                and spec.get("externalTrafficPolicy") == "Local" and spec.get("healthCheckNodePort") is not None:
            cands.append(svc)
    if not cands:
        return {}, []
    local: Dict[Tuple[str, str], set] = {}
    for sl in slices:
        m = sl.get("metadata") or {}
        svc_name = (m.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc_name:
            continue
        for ep in sl.get("endpoints") or ():
            cond = (ep.get("conditions") or {}) if isinstance(ep, dict) else {}
            if isinstance(ep, dict) and ep.get("nodeName") == node_name and cond.get("ready") is not False \
                    and cond.get("terminating") is not True:
                local.setdefault((m.get("namespace", ""), svc_name), set()).update(
                    a for a in ep.get("addresses") or () if isinstance(a, str))
    out: Dict[int, Tuple[str, int]] = {}
    problems: List[Problem] = []
    for svc in sorted(cands, key=_service_order):
        m = svc.get("metadata") or {}
        ns, name = m.get("namespace", ""), m.get("name", "?")
        port = svc["spec"]["healthCheckNodePort"]
        if not _port_ok(port):
            problems.append(Problem("Service", ns, name, "spec.healthCheckNodePort",
                                    f"{port!r} must be between 1 and 65535: not answered", reason=NOT_SERVED))
            continue
        if port in out:
            problems.append(Problem("Service", ns, name, "spec.healthCheckNodePort",
                                    f"{port} is already answered for Service {out[port][0]}", reason=NODEPORT_CONFLICT))
            continue
        out[port] = (f"{ns}/{name}", len(local.get((ns, name), ())))
    return out, problems


def frontend_conflicts(services: Sequence[Service]) -> List[Tuple[str, str]]:
    """Pairs of Services claiming one frontend (the second is dropped by the caller). The two masters of an
    address, port and protocol at scopes EXT and INT are two frontends."""
    seen: Dict[Tuple[str, int, str, int], str] = {}
    out = []
    for s in services:
        for f in s.frontends:
            k = (f.ip, f.port, f.proto, f.scope)
            if k in seen:
                out.append((seen[k], s.name))
            else:
                seen[k] = s.name
    return out
