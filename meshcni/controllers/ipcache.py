# SPDX-License-Identifier: MIT OR Apache-2.0
"""Cluster state -> the ipcache (address prefix -> security identity), a pure function.

- every pod IP (/32, /128) -> the id of its Identity (the object named by
  :func:`meshcni.controllers.identity.identity_name` of its labels, in its
  namespace, made by the controller — a hand-made Identity is never trusted);
  a pod whose Identity does not exist yet is left out (its IP then resolves
  as world / a CIDR identity until the controller catches up);
- node InternalIPs -> host (this node) or remote-node (the others);
- each managed CIDRIdentity's cidrPrefixes -> its id. Several ipBlocks can
  share a prefix (10/8 except X and 10/8 except Y both hold 10.128/9); the LPM
  trie holds one id per prefix, so the lowest id wins and the collision is
  counted — the policy compiler (next issue) resolves it by allowing both.

Pod and node entries are host prefixes, so the trie's longest match puts
them above any CIDR identity, as upstream does.
"""
from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Optional, Tuple

from .identity import identity_labels, identity_name, is_managed
from .services import Problem

ID_HOST, ID_REMOTE_NODE = 1, 6  # layout.h MC_ID_HOST / MC_ID_REMOTE_NODE


def _host(ip: ipaddress._BaseAddress) -> str:
    return f"{ip}/{32 if ip.version == 4 else 128}"


def desired_ipcache(pods: Iterable[dict], namespaces: Iterable[dict], identities: Iterable[dict],
                    cidr_identities: Iterable[dict], nodes: Iterable[dict], self_node: str
                    ) -> Tuple[Dict[str, int], List[Problem], int]:
    """({prefix: identity}, problems, shared-prefix collisions)."""
    problems: List[Problem] = []
    out: Dict[str, int] = {}
    collisions = 0
    for c in sorted(cidr_identities, key=lambda o: ((o.get("spec") or {}).get("id") or 0)):
        if not is_managed(c):
            continue
        spec = c.get("spec") or {}
        ident = spec.get("id")
        if not isinstance(ident, int):
            continue
        for p in spec.get("cidrPrefixes") or []:
            try:
                k = str(ipaddress.ip_network(p))
            except (TypeError, ValueError):
                problems.append(Problem("CIDRIdentity", "", c["metadata"]["name"], "spec.cidrPrefixes",
                                        f'"{p}" is not a CIDR'))
                continue
            if k in out and out[k] != ident:
                collisions += 1
                continue
            out[k] = ident
    ns_labels, ids = identity_index(namespaces, identities)
    for p in pods:
        m, st = p.get("metadata") or {}, p.get("status") or {}
        if st.get("phase") in ("Succeeded", "Failed"):
            continue  # a finished pod's IP may already belong to someone else
        raw = [x.get("ip") for x in st.get("podIPs") or [] if isinstance(x, dict)] or \
            ([st["podIP"]] if st.get("podIP") else [])
        if not raw or (p.get("spec") or {}).get("hostNetwork"):
            continue
        ns = m.get("namespace", "")
        ident = pod_identity(p, ns_labels, ids)
        for i, s in enumerate(raw):
            try:
                ip = ipaddress.ip_address(s)
            except (TypeError, ValueError):
                problems.append(Problem("Pod", ns, m.get("name", "?"), "status.podIP" if i == 0 else f"status.podIPs[{i}]",
                                        f'"{s}" is not an IP address'))
                continue
            if ident is not None:
                out[_host(ip)] = ident
    for n in nodes:
        name = n["metadata"]["name"]
        for a in (n.get("status") or {}).get("addresses") or []:
            if a.get("type") != "InternalIP":
                continue
            try:
                ip = ipaddress.ip_address(a.get("address"))
            except (TypeError, ValueError):
                problems.append(Problem("Node", "", name, "status.addresses", f'"{a.get("address")}" is not an IP'))
                continue
            out[_host(ip)] = ID_HOST if name == self_node else ID_REMOTE_NODE
    return out, problems, collisions


def identity_index(namespaces: Iterable[dict], identities: Iterable[dict]):
    """(namespace -> labels, (namespace, Identity name) -> id of managed Identities)."""
    ns_labels = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}) for n in namespaces}
    ids: Dict[Tuple[str, str], int] = {}
    for o in identities:
        m = o.get("metadata") or {}
        spec = o.get("spec") or {}
        if is_managed(o) and isinstance(spec.get("id"), int):
            ids[(m.get("namespace", ""), m.get("name", ""))] = spec["id"]
    return ns_labels, ids


def pod_identity(pod: dict, ns_labels: Dict[str, dict], ids: Dict[Tuple[str, str], int]) -> Optional[int]:
    ns = (pod.get("metadata") or {}).get("namespace", "")
    return ids.get((ns, identity_name(identity_labels(pod, ns_labels.get(ns)))))


def desired_endpoints(records: Iterable[dict], pods: Iterable[dict], namespaces: Iterable[dict],
                      identities: Iterable[dict]) -> List[Tuple[int, str, int, int]]:
    """(host ifindex, pod IP, identity or 0 if not allocated yet, netns cookie) per local endpoint."""
    ns_labels, ids = identity_index(namespaces, identities)
    by_name = {((p.get("metadata") or {}).get("namespace"), (p.get("metadata") or {}).get("name")): p for p in pods}
    out = []
    for r in records:
        if not isinstance(r.get("hostIfindex"), int) or r["hostIfindex"] <= 0:
            continue
        p = by_name.get((r.get("podNamespace"), r.get("podName")))
        ident = pod_identity(p, ns_labels, ids) if p is not None else None
        ip = (r.get("ips") or ["::/128"])[0].split("/")[0]
        out.append((r["hostIfindex"], ip, ident or 0, int(r.get("netnsCookie") or 0)))
    return sorted(out)


def identity_of(prefixes: Dict[str, int], ip: str) -> Optional[int]:
    """Longest-prefix match over a desired map (tests and the CLI's offline view)."""
    a = ipaddress.ip_address(ip)
    best = None
    for k, v in prefixes.items():
        n = ipaddress.ip_network(k)
        if n.version == a.version and a in n and (best is None or n.prefixlen > best[0]):
            best = (n.prefixlen, v)
    return best[1] if best else None
