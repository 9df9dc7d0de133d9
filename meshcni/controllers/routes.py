# SPDX-License-Identifier: MIT OR Apache-2.0
"""Nodes and remote clusters -> this node's routes to other pod CIDRs (kindnet-style, pure).

Every other Node with a podCIDR and an InternalIP of the same family gets a
route ``podCIDR via InternalIP``. A Node whose podCIDR overlaps another's
(or this node's) is reported and left out — the newer of the two: routing one prefix two ways would
black-hole half of someone's pods.

Remote clusters (multi-cluster mesh): each ``Cluster``'s ``status.nodes``
(written by the controller: the remote Nodes' InternalIPs and podCIDRs) adds
``podCIDR via address`` for every remote node. Local Nodes claim first, then
the Clusters oldest first: a remote podCIDR overlapping a local node's or an
earlier remote one is reported and left out, never routed over a local
pod's prefix. A Cluster whose ``CIDRConflict`` condition is True, or which is
being deleted, contributes nothing.
"""
from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Tuple

from .model import Problem


def _internal_ips(node: dict) -> List[ipaddress._BaseAddress]:
    out = []
    for a in ((node.get("status") or {}).get("addresses") or []):
        if a.get("type") == "InternalIP":
            try:
                out.append(ipaddress.ip_address(a.get("address")))
            except (TypeError, ValueError):
                pass
    return out


def _cidrs(node: dict) -> Tuple[List[ipaddress._BaseNetwork], List[Problem]]:
    spec = node.get("spec") or {}
    raw = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    out, bad = [], []
    for i, c in enumerate(raw):
        try:
            out.append(ipaddress.ip_network(c))
        except (TypeError, ValueError):
            bad.append(Problem("Node", "", node["metadata"]["name"], f"spec.podCIDRs[{i}]", f'"{c}" is not a CIDR'))
    return out, bad


def _net(c):
    try:
        return ipaddress.ip_network(c)
    except (TypeError, ValueError):
        return None


def _remote_nodes(cluster: dict, claimed: list, problems: List[Problem]) -> Dict[str, str]:
    """Routes for one Cluster's ``status.nodes``; claims its prefixes in ``claimed``."""
    cname = (cluster.get("metadata") or {}).get("name", "?")
    status = cluster.get("status") or {}
    conds = status.get("conditions") or []
    if any(isinstance(c, dict) and c.get("type") == "CIDRConflict" and c.get("status") == "True" for c in conds):
        return {}  # the controller found its pod CIDRs overlapping ours: nothing of it is routed
    nodes = status.get("nodes") or []
    if not isinstance(nodes, list):
        problems.append(Problem("Cluster", "", cname, "status.nodes", "not a list"))
        return {}
    out: Dict[str, str] = {}
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            problems.append(Problem("Cluster", "", cname, f"status.nodes[{i}]", "not an object"))
            continue
        nname = n.get("name") or f"#{i}"
        ips = []
        for j, a in enumerate(n.get("addresses") or []):
            try:
                ips.append(ipaddress.ip_address(a))
            except (TypeError, ValueError):
                problems.append(Problem("Cluster", "", cname, f"status.nodes[{i}].addresses[{j}]",
                                        f"{a!r} is not an IP address"))
        for j, raw in enumerate(n.get("podCIDRs") or []):
            f = f"status.nodes[{i}].podCIDRs[{j}]"
            c = _net(raw)
            if c is None:
                problems.append(Problem("Cluster", "", cname, f, f"{raw!r} is not a CIDR"))
                continue
            other = next((o for cc, o in claimed if cc.version == c.version and cc.overlaps(c)), None)
            if other is not None:
                problems.append(Problem("Cluster", "", cname, f,
                                        f"{c} (node {nname}) overlaps the podCIDR of {other}; no route for it"))
                continue
            via = next((ip for ip in ips if ip.version == c.version), None)
            if via is None:
                problems.append(Problem("Cluster", "", cname, f"status.nodes[{i}].addresses",
                                        f"no address of the family of {c} (node {nname}); no route for it"))
                continue
            claimed.append((c, f"node {nname} of Cluster {cname}"))
            out[str(c)] = str(via)
    return out


def desired_routes(nodes: Iterable[dict], self_name: str,
                   clusters: Iterable[dict] = ()) -> Tuple[Dict[str, str], List[Problem]]:
    """({pod CIDR: via IP}, problems) for the node named ``self_name``.

    ``clusters``: the mesh's ``Cluster`` objects; their ``status.nodes`` add
    routes to the remote clusters' pod CIDRs (see the module docstring).
    """
    problems: List[Problem] = []
    claimed: List[Tuple[ipaddress._BaseNetwork, str]] = []
    per_node = []
    # the older Node keeps a contested prefix: a newcomer must not steal a live node's pods
    for n in sorted(nodes, key=lambda n: (n["metadata"].get("creationTimestamp") or "", n["metadata"]["name"])):
        name = n["metadata"]["name"]
        cidrs, bad = _cidrs(n)
        problems += bad
        ok = []
        for c in cidrs:
            other = next((o for cc, o in claimed if cc.version == c.version and cc.overlaps(c)), None)
            if other is not None:
                problems.append(Problem("Node", "", name, "spec.podCIDR",
                                        f"{c} overlaps the podCIDR of {other}; no route for it"))
                continue
            claimed.append((c, f"Node {name}"))
            ok.append(c)
        per_node.append((name, ok, _internal_ips(n)))
    routes: Dict[str, str] = {}
    for name, cidrs, ips in per_node:
        if name == self_name:
            continue
        for c in cidrs:
            via = next((ip for ip in ips if ip.version == c.version), None)
            if via is None:
                problems.append(Problem("Node", "", name, "status.addresses",
                                        f"no InternalIP of the family of {c}; no route for it"))
                continue
            routes[str(c)] = str(via)
    for cl in sorted(clusters, key=lambda c: ((c.get("metadata") or {}).get("creationTimestamp") or "",
                                              (c.get("metadata") or {}).get("name") or "")):
        if (cl.get("metadata") or {}).get("deletionTimestamp"):
            continue  # going away: its routes go first, the finalizer then clears its backends
        routes.update(_remote_nodes(cl, claimed, problems))
    return routes, problems
