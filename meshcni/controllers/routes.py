# SPDX-License-Identifier: MIT OR Apache-2.0
"""Nodes -> this node's routes to the other nodes' pod CIDRs (kindnet-style, pure).

Every other Node with a podCIDR and an InternalIP of the same family gets a
route ``podCIDR via InternalIP``. A Node whose podCIDR overlaps another's
(or this node's) is reported and left out — the newer of the two: routing one prefix two ways would
black-hole half of someone's pods.
"""
from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Tuple

from .services import Problem


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


def desired_routes(nodes: Iterable[dict], self_name: str) -> Tuple[Dict[str, str], List[Problem]]:
    """({pod CIDR: via IP}, problems) for the node named ``self_name``."""
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
                                        f"{c} overlaps the podCIDR of Node {other}; no route for it"))
                continue
            claimed.append((c, name))
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
    return routes, problems
