# SPDX-License-Identifier: MIT OR Apache-2.0
"""An independent reference evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1).

Written from the API reference, per pod and per connection, with no code
shared with ``meshcni.controllers.netpol`` (it imports nothing from meshcni):
the truth-table tests compare what the datapath does on real packets with
what this module says the API means.

The endpoints of a connection are :class:`Pod` (in the cluster), :class:`Ext`
(an address outside the cluster) and :class:`Node` (a node's own address).
A connection from ``src`` to ``dst`` on (``port``, ``protocol``) is allowed
when the source's egress admits it and the destination's ingress admits it:

- a pod selected by no policy for a direction is not isolated in it;
- an isolated direction admits what at least one rule of one selecting
  policy admits (a union);
- implementation choices meshcni documents (docs/architecture.md), which the
  API leaves open: a pod's own node may always reach it and it may always
  reach its node (kubelet probes); other nodes are ordinary peers that no
  pod/namespace selector matches; ``ipBlock`` matches addresses outside the
  cluster only (pod IPs have pod identities; node IPs are "remote-node");
  a pod can always reach itself: the packets never leave it (the upstream
  suite's ``AllowLoopback``).

Meshed clusters (meshcni's cluster rule, README "NetworkPolicy"): a pod has a
``cluster``; each cluster has its own :class:`World` (its policies, its
namespaces' labels, the other clusters it currently meshes with and their
namespaces' labels as they have them), and :func:`allowed_mesh` takes the
source's egress from the source's cluster and the destination's ingress
from the destination's. Every pod carries the label ``mesh-cni.dev/cluster``
with its cluster's name (whatever it set itself). A peer whose podSelector
has no term on that key matches pods of the policy's own cluster only; with
one, pods of the own cluster and of every meshed cluster, by that term, in
the namespaces the namespaceSelector matches by the pod's own cluster's
namespace labels (without one: namespaces of the policy's namespace name).
A pod of a cluster no longer meshed is matched by no selector; ipBlocks
never match pods of any cluster; named ports resolve on the own cluster's pods only.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Tuple, Union


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Tuple[Tuple[str, str], ...]
    ip: str
    node: str
    # (port name, protocol) -> number, from the containers' ports
    named: Tuple[Tuple[str, str, int], ...] = ()
    cluster: str = ""   # meshed clusters only: the cluster the pod lives in

    @property
    def key(self) -> str:
        return f"{self.cluster}:{self.namespace}/{self.name}" if self.cluster else f"{self.namespace}/{self.name}"

    def label_dict(self) -> Dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Ext:
    name: str
    ip: str

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Node:
    name: str
    ip: str

    @property
    def key(self) -> str:
        return self.name


Endpoint = Union[Pod, Ext, Node]


@dataclass
class World:
    namespaces: Dict[str, Dict[str, str]]          # name -> labels
    policies: List[dict] = field(default_factory=list)
    # meshed clusters only: this world's cluster, and the clusters it meshes with now
    # -> their namespaces' labels (as the remote cluster has them)
    cluster: str = ""
    remote_namespaces: Dict[str, Dict[str, Dict[str, str]]] = field(default_factory=dict)


CLUSTER_LABEL = "mesh-cni.dev/cluster"


# ------------------------------------------------------------------ label selectors

def selector_matches(sel: Optional[Mapping], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression must hold;
    an empty selector ({} or no fields) matches everything."""
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _ns_labels(world: World, ns: str, cluster: str = "") -> Dict[str, str]:
    if cluster and cluster != world.cluster:
        labels = dict(world.remote_namespaces.get(cluster, {}).get(ns, {}))
    else:
        labels = dict(world.namespaces.get(ns, {}))
    labels["kubernetes.io/metadata.name"] = ns  # set on every namespace by the API server
    return labels


# ------------------------------------------------------------------ policy pieces

def policy_types(pol: Mapping) -> List[str]:
    spec = pol.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return list(types)
    out = ["Ingress"]
    if spec.get("egress"):  # defaulted only when there are egress rules
        out.append("Egress")
    return out


def _selects(world: World, pol: Mapping, pod: Pod) -> bool:
    meta = pol.get("metadata") or {}
    if meta.get("namespace") != pod.namespace or pod.cluster != world.cluster:
        return False
    return selector_matches((pol.get("spec") or {}).get("podSelector") or {}, _pod_labels(world, pod))


def _pod_labels(world: World, pod: Pod) -> Dict[str, str]:
    labels = pod.label_dict()
    if world.cluster:
        labels[CLUSTER_LABEL] = pod.cluster
    return labels


def _names_cluster(sel: Optional[Mapping]) -> bool:
    if not sel:
        return False
    return CLUSTER_LABEL in (sel.get("matchLabels") or {}) or any(
        e.get("key") == CLUSTER_LABEL for e in sel.get("matchExpressions") or [])


def _peer_matches(world: World, pol_ns: str, peer: Mapping, other: Endpoint) -> bool:
    if "ipBlock" in peer and peer["ipBlock"] is not None:
        if not isinstance(other, Ext):
            return False
        addr = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if addr.version != net.version or addr not in net:
            return False
        for ex in block.get("except") or []:
            exn = ipaddress.ip_network(ex, strict=False)
            if addr.version == exn.version and addr in exn:
                return False
        return True
    if not isinstance(other, Pod):
        return False
    ps, nss = peer.get("podSelector"), peer.get("namespaceSelector")
    if other.cluster != world.cluster:
        # another cluster's pod: only a podSelector naming the cluster label, only while meshed
        if not _names_cluster(ps) or other.cluster not in world.remote_namespaces:
            return False
    if nss is None:
        if other.namespace != pol_ns:
            return False
    elif not selector_matches(nss, _ns_labels(world, other.namespace, other.cluster)):
        return False
    return selector_matches(ps or {}, _pod_labels(world, other))


def _port_matches(rule_ports: Optional[list], port: int, proto: str, receiver: Endpoint) -> bool:
    if not rule_ports:
        return True
    for rp in rule_ports:
        if (rp.get("protocol") or "TCP") != proto:
            continue
        p = rp.get("port")
        if p is None:
            return True
        if isinstance(p, str):
            # a named port is resolved against the receiving pod's container ports
            if isinstance(receiver, Pod) and any(n == p and pr == proto and num == port
                                                 for n, pr, num in receiver.named):
                return True
            continue
        end = rp.get("endPort")
        if (end is None and port == p) or (end is not None and p <= port <= end):
            return True
    return False


def _direction_allows(world: World, pod: Pod, direction: str, other: Endpoint, port: int, proto: str,
                      receiver: Endpoint) -> bool:
    """Whether ``pod``'s ``direction`` ("Ingress"/"Egress") admits the connection with ``other``."""
    isolated = False
    for pol in world.policies:
        if not _selects(world, pol, pod) or direction not in policy_types(pol):
            continue
        isolated = True
        ns = pol["metadata"]["namespace"]
        rules = (pol.get("spec") or {}).get("ingress" if direction == "Ingress" else "egress") or []
        for rule in rules:
            peers = rule.get("from" if direction == "Ingress" else "to")
            if peers and not any(_peer_matches(world, ns, pr, other) for pr in peers):
                continue
            if _port_matches(rule.get("ports"), port, proto, receiver):
                return True
    return not isolated


def allowed_mesh(worlds: Mapping[str, World], src: Pod, dst: Pod, port: int, proto: str) -> bool:
    """The verdict for a connection between pods of meshed clusters (``worlds``: cluster -> its World):
    the source's egress as its cluster decides, the destination's ingress as its own decides."""
    if src == dst:
        return True
    # the source's cluster knows no container ports of another cluster's pods: an egress rule's
    # named port matches none of them
    recv = dst if dst.cluster == src.cluster else replace(dst, named=())
    if not _direction_allows(worlds[src.cluster], src, "Egress", dst, port, proto, recv):
        return False
    return _direction_allows(worlds[dst.cluster], dst, "Ingress", src, port, proto, dst)


def allowed(world: World, src: Endpoint, dst: Endpoint, port: int, proto: str) -> bool:
    """The API's verdict for a new connection ``src`` -> ``dst``:``port``/``proto``."""
    if src == dst:
        return True  # a pod reaching itself never leaves it (upstream's AllowLoopback)
    if isinstance(src, Pod):
        if not (isinstance(dst, Node) and dst.name == src.node):
            if not _direction_allows(world, src, "Egress", dst, port, proto, dst):
                return False
    if isinstance(dst, Pod):
        if isinstance(src, Node) and src.name == dst.node:
            return True
        if not _direction_allows(world, dst, "Ingress", src, port, proto, dst):
            return False
    return True
