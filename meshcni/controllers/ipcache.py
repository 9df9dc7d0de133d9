# SPDX-License-Identifier: MIT OR Apache-2.0
"""Cluster state -> the ipcache (address prefix -> security identity), a pure function.

- every pod IP (/32, /128) -> the id of its Identity (the object named by
  :func:`meshcni.controllers.identity.identity_name` of its labels, in its
  namespace, made by the controller — a hand-made Identity is never trusted);
  a pod whose Identity does not exist yet is left out (its IP then resolves
  as world / a CIDR identity until the controller catches up);
- node InternalIPs -> host (this node) or remote-node (the others);
- each managed CIDRIdentity's cidrPrefixes -> its id, unless the prefix lies
  inside prefixes of other CIDRIdentities too (overlapping ipBlocks: 192.0.2.0/24
  and 192.0.2.0/28; 10/8 except X and 10/8 except Y both holding 10.128/9).
  The LPM trie answers one id per address, so such a prefix gets an *atom*:
  an agent-local id (:data:`~meshcni.controllers.identity.ATOM_ID_MIN`..
  ``ATOM_ID_MAX``) standing for exactly that set of CIDR identities
  (:func:`cidr_atoms`, the one function the ipcache and the policy compiler
  share); a rule that admits CIDR identity A admits every atom containing A,
  so an address matches every ipBlock it is in, exactly.

Pod and node entries are host prefixes, so the trie's longest match puts
them above any CIDR identity, as upstream does.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from ..layout_constants import MC_ID_HOST as ID_HOST, MC_ID_REMOTE_NODE as ID_REMOTE_NODE, MC_ID_UNKNOWN
from .identity import (ATOM_ID_MAX, ATOM_ID_MIN, CLUSTER_OWNER, POD_ID_MIN as POD_ID_MIN_LOCAL, REMOTE_ID_MAX,
                       REMOTE_ID_MIN, REMOTE_KIND, identity_labels, identity_name, is_managed, remote_id_winners)
from .services import Problem


def _host(ip: ipaddress._BaseAddress) -> str:
    return f"{ip}/{32 if ip.version == 4 else 128}"


@functools.lru_cache(maxsize=1 << 17)
def _host_prefix(s: str) -> Optional[str]:
    """``"10.1.2.3"`` -> ``"10.1.2.3/32"`` (canonical), None if not an address. Cached: every reconcile
    converts every remote pod's address again (the remote part of one reconcile at 9,000 remote pods:
    83 ms with ``ipaddress`` each time, 14 ms with this cache)."""
    try:
        return _host(ipaddress.ip_address(s))
    except ValueError:
        return None


@dataclass
class CidrAtoms:
    """What the ipcache holds for the CIDR identities' prefixes."""
    prefixes: Dict[str, int] = field(default_factory=dict)   # prefix -> CIDR identity id or atom id
    members: Dict[int, FrozenSet[int]] = field(default_factory=dict)  # atom id -> CIDR identity ids
    problems: List[Problem] = field(default_factory=list)

    def ids_for(self, ident: int) -> Set[int]:
        """The ipcache ids an address of CIDR identity ``ident`` may resolve to."""
        return {ident} | {a for a, m in self.members.items() if ident in m}


def _atom_id(key: Tuple[int, ...], taken: Set[int]) -> int:
    size = ATOM_ID_MAX - ATOM_ID_MIN + 1
    h = int.from_bytes(hashlib.sha256(",".join(map(str, key)).encode()).digest()[:8], "big")
    i = ATOM_ID_MIN + h % size
    for _ in range(size):
        if i not in taken:
            return i
        i = ATOM_ID_MIN if i == ATOM_ID_MAX else i + 1
    raise RuntimeError("no free atom id")  # a million distinct overlaps: not a real cluster


def cidr_atoms(cidr_identities: Iterable[dict]) -> CidrAtoms:
    """Managed CIDRIdentities -> the ipcache's CIDR prefixes and the atoms of overlapping ones.

    An address's longest matching prefix P decides what the trie answers; the
    ipBlocks the address is in are exactly the identities owning P or a
    prefix containing P (each identity's prefixes are disjoint). So each P
    maps to that set: one identity -> its own id; several -> an atom whose
    id is hash-derived from the set (stable while the set exists; probed on
    the rare clash, in a fixed order, so every agent computes the same ids).
    """
    out = CidrAtoms()
    owners: Dict[ipaddress._BaseNetwork, Set[int]] = {}
    for c in cidr_identities:
        if not is_managed(c):
            continue
        spec = c.get("spec") or {}
        ident = spec.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool):
            continue
        for p in spec.get("cidrPrefixes") or []:
            try:
                n = ipaddress.ip_network(p)
            except (TypeError, ValueError):
                out.problems.append(Problem("CIDRIdentity", "", c["metadata"]["name"], "spec.cidrPrefixes",
                                            f'"{p}" is not a CIDR'))
                continue
            owners.setdefault(n, set()).add(ident)
    lengths = {v: sorted({n.prefixlen for n in owners if n.version == v}) for v in (4, 6)}
    sets: Dict[str, Tuple[int, ...]] = {}
    for n in owners:
        m: Set[int] = set()
        for plen in lengths[n.version]:
            if plen > n.prefixlen:
                break
            m |= owners.get(n.supernet(new_prefix=plen) if plen < n.prefixlen else n, set())
        sets[str(n)] = tuple(sorted(m))
    atoms: Dict[Tuple[int, ...], int] = {}
    taken: Set[int] = set()
    for key in sorted({k for k in sets.values() if len(k) > 1}):
        atoms[key] = _atom_id(key, taken)
        taken.add(atoms[key])
    for prefix, key in sets.items():
        out.prefixes[prefix] = key[0] if len(key) == 1 else atoms[key]
    out.members = {i: frozenset(k) for k, i in atoms.items()}
    return out


@dataclass
class RemoteGroup:
    """One RemoteIdentity as the agent trusts it: pods of one label set in one remote namespace."""
    cluster: str
    namespace: str
    namespace_labels: Dict[str, str]
    labels: Dict[str, str]            # pod labels, mesh-cni.dev/cluster included
    ident: int
    pods: List[Tuple[str, List[str]]]  # (pod name, addresses)
    name: str = ""                     # the RemoteIdentity's


def _usable_clusters(clusters: Iterable[dict]) -> Dict[str, dict]:
    """Clusters whose remote state the agent programs: not being deleted, no CIDR conflict
    (the controller removes their objects too; this keeps a lagging cache from using them)."""
    out = {}
    for c in clusters:
        m = c.get("metadata") or {}
        if not m.get("name") or m.get("deletionTimestamp"):
            continue
        conds = (c.get("status") or {}).get("conditions") or []
        if any(isinstance(x, dict) and x.get("type") == "CIDRConflict" and x.get("status") == "True" for x in conds):
            continue
        out[m["name"]] = c
    return out


def remote_groups(remote_identities: Iterable[dict], clusters: Iterable[dict], local_ids: Iterable[int] = ()
                  ) -> Tuple[List[RemoteGroup], List[Problem]]:
    """The RemoteIdentities the agent uses: made by the controller (the managed-by label: anyone who may
    create one could otherwise make an address of their choice match a policy's remote peer), of a
    usable Cluster (:func:`_usable_clusters`), id in the remote range and not held by an older object."""
    usable = _usable_clusters(clusters)
    objs = [o for o in remote_identities if is_managed(o)]
    winners = remote_id_winners(objs)
    local_ids = set(local_ids)
    out: List[RemoteGroup] = []
    problems: List[Problem] = []
    for o in objs:
        m, spec = o.get("metadata") or {}, o.get("spec") or {}
        name = m.get("name", "?")
        cl = spec.get("cluster")
        if cl not in usable or (m.get("labels") or {}).get(CLUSTER_OWNER) != cl:
            continue
        ident = spec.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool) or not REMOTE_ID_MIN <= ident <= REMOTE_ID_MAX:
            problems.append(Problem(REMOTE_KIND, "", name, "spec.id", f"{ident!r} is not in {REMOTE_ID_MIN}.."
                                    f"{REMOTE_ID_MAX}; left out"))
            continue
        if ident in local_ids:
            problems.append(Problem(REMOTE_KIND, "", name, "spec.id", f"{ident} is a local Identity's id; left out "
                                    "until the controller re-allocates it"))
            continue
        if winners.get(ident) is not o:
            continue  # the controller re-allocates the younger holder
        pods = [(str(p.get("name", "")), [str(x) for x in p.get("ips") or []])
                for p in spec.get("pods") or [] if isinstance(p, dict)]
        out.append(RemoteGroup(cl, str(spec.get("namespace", "")), dict(spec.get("namespaceLabels") or {}),
                               dict(spec.get("podLabels") or {}), ident, pods, name))
    out.sort(key=lambda g: g.ident)
    return out, problems


def remote_node_addresses(clusters: Iterable[dict]) -> Dict[str, str]:
    """address -> cluster of every remote node (``Cluster.status.nodes[].addresses``)."""
    out = {}
    for name, c in _usable_clusters(clusters).items():
        for n in (c.get("status") or {}).get("nodes") or []:
            for a in (n.get("addresses") or []) if isinstance(n, dict) else []:
                out[str(a)] = name
    return out


def pod_prefixes(p: dict, ns_labels: Dict[str, dict], ids: Dict[Tuple[str, str], int]
                 ) -> Tuple[Optional[int], List[str], List[Problem]]:
    """One pod's part of the ipcache: (its identity, the host prefixes it maps to it, its bad fields).
    No prefixes for a finished or hostNetwork pod, one whose Identity does not exist yet, or one
    whose status/spec an informer handed over with the wrong JSON types (reported)."""
    m, st, spec = p.get("metadata") or {}, p.get("status") or {}, p.get("spec") or {}
    if type(st) is not dict or type(spec) is not dict or type(st.get("podIPs") or []) is not list:
        bad = "status" if type(st) is not dict else "spec" if type(spec) is not dict else "status.podIPs"
        return None, [], [Problem("Pod", m.get("namespace", ""), m.get("name", "?"), bad,
                                  f"not {'a list' if bad == 'status.podIPs' else 'an object'}; not in the ipcache")]
    if st.get("phase") in ("Succeeded", "Failed"):
        return None, [], []  # a finished pod's IP may already belong to someone else
    podips = st.get("podIPs")
    raw = [(f"status.podIPs[{i}].ip", x.get("ip")) for i, x in enumerate(podips or []) if isinstance(x, dict)] \
        or ([("status.podIP", st["podIP"])] if st.get("podIP") else [])
    if not raw or spec.get("hostNetwork"):
        return None, [], []
    ns = m.get("namespace", "")
    ident = pod_identity(p, ns_labels, ids)
    out: List[str] = []
    problems: List[Problem] = []
    for where, s in raw:
        try:
            ip = ipaddress.ip_address(s)
        except (TypeError, ValueError):
            problems.append(Problem("Pod", ns, m.get("name", "?"), where, f'"{s}" is not an IP address'))
            continue
        if ident is not None:
            out.append(_host(ip))
    return ident, out, problems


def desired_ipcache(pods: Iterable[dict], namespaces: Iterable[dict], identities: Iterable[dict],
                    cidr_identities: Iterable[dict], nodes: Iterable[dict], self_node: str,
                    remote_identities: Iterable[dict] = (), clusters: Iterable[dict] = ()
                    ) -> Tuple[Dict[str, int], List[Problem], int]:
    """({prefix: identity}, problems, atoms: CIDR prefixes shared by overlapping ipBlocks).

    Remote clusters (the mesh): each address of a usable RemoteIdentity -> its id, and
    each remote node address -> remote-node, as host prefixes, so no ipBlock matches
    them. Local pods and nodes win an address claimed by both (reported): a remote
    cluster never takes over a local address.
    """
    atoms = cidr_atoms(cidr_identities)
    problems: List[Problem] = list(atoms.problems)
    out: Dict[str, int] = dict(atoms.prefixes)
    collisions = len(atoms.members)
    ns_labels, ids = identity_index(namespaces, identities)
    for p in pods:
        ident, prefixes, bad = pod_prefixes(p, ns_labels, ids)
        problems += bad
        for k in prefixes:
            out[k] = ident
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
    local = {k for k, v in out.items() if v >= POD_ID_MIN_LOCAL or v in (ID_HOST, ID_REMOTE_NODE)}
    groups, rproblems = remote_groups(remote_identities, clusters, ids.values())
    problems += rproblems
    for g in groups:
        for pod, addrs in g.pods:
            for s in addrs:
                key = _host_prefix(s)
                if key is None:
                    problems.append(Problem(REMOTE_KIND, "", g.name, "spec.pods.ips",
                                            f'pod {g.namespace}/{pod}: "{s}" is not an IP address'))
                    continue
                if key in local:
                    problems.append(Problem(REMOTE_KIND, "", g.name, "spec.pods.ips",
                                            f"pod {g.namespace}/{pod}: {s} is a local address here; "
                                            "the local one wins"))
                    continue
                out[key] = g.ident
    for s in remote_node_addresses(clusters):
        key = _host_prefix(s)
        if key is not None and key not in local:
            out[key] = ID_REMOTE_NODE
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
    return endpoints_of(records, by_name.get, ns_labels, ids)


def endpoints_of(records: Iterable[dict], pod, ns_labels: Dict[str, dict], ids: Dict[Tuple[str, str], int]
                 ) -> List[Tuple[int, str, int, int]]:
    """:func:`desired_endpoints` with ``pod((namespace, name))`` looking a pod up (None: not there)."""
    out = []
    for r in records:
        if not isinstance(r.get("hostIfindex"), int) or r["hostIfindex"] <= 0:
            continue
        p = pod((r.get("podNamespace"), r.get("podName")))
        ident = pod_identity(p, ns_labels, ids) if p is not None else None
        ip = (r.get("ips") or ["::/128"])[0].split("/")[0]
        out.append((r["hostIfindex"], ip, ident or MC_ID_UNKNOWN, int(r.get("netnsCookie") or 0)))
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
