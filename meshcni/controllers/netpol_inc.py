# SPDX-License-Identifier: MIT OR Apache-2.0
"""NetworkPolicy compiled incrementally: one pod or one policy costs what it changes.

:class:`IncrementalPolicy` holds what :func:`~meshcni.controllers.netpol.compile_policies`
computes and throws away: the pods grouped by (namespace, labels), each
policy's own entries and enforced pairs, and reference counts of both per
(identity, direction). Then

- a pod added, deleted or changed moves the pod between groups; only a group
  that appears, disappears or changes its named ports can change a policy,
  and only the policies with a selector matching that group's labels are
  compiled again (selectors are indexed by namespace and by one label key a
  match requires, so finding them does not scan every policy);
- a policy added, deleted or changed is compiled alone;

and in both cases only the (identity, direction) pairs whose entries or
enforcement changed are rebuilt, with the same union, host allow and
allow-everything rules as the full compile. The result is a :class:`Delta`
(old and new entries of those pairs) an applier writes without dumping a map.

Everything else (namespaces, Identities, CIDRIdentities, RemoteIdentities,
Clusters) changes what every group and selector means: :meth:`IncrementalPolicy.full`
rebuilds from scratch, and so does the caller whenever it cannot tell what
changed. The full compile stays the reference: tests/pure/test_netpol_incremental.py
compares both after every step of random event sequences.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple

from .identity import CLUSTER_LABEL, is_managed
from .ipcache import ID_HOST, cidr_atoms, identity_index, pod_identity, remote_groups
from .model import PolicyEntry
from .netpol import (CompiledPolicy, Key, Reqs, _Bad, _Cluster, _compile_one, _container_ports, _Group, _matches,
                     _parse_selector, _sort_key)

Pair = Tuple[int, int]
GroupKey = Tuple[str, FrozenSet[Tuple[str, str]]]


def _key_of(obj: Mapping) -> str:
    m = obj.get("metadata") or {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name', '')}" if ns else m.get("name", "")


class _LiveCluster(_Cluster):
    """A :class:`_Cluster` whose local pods come and go one at a time."""

    def __init__(self, namespaces, identities, remote, cluster_name: str):
        namespaces, identities = list(namespaces), list(identities)
        super().__init__((), namespaces, identities, remote, cluster_name)
        self.ns_labels, self.ids = identity_index(namespaces, identities)
        self.cluster_name = cluster_name
        self.groups: Dict[GroupKey, _Group] = {}
        self.members: Counter = Counter()             # group key -> pods in it
        self.ports: Dict[GroupKey, Counter] = {}      # group key -> (name, proto, number) -> pods exposing it
        self.pod_at: Dict[str, Tuple[GroupKey, Tuple]] = {}  # pod key -> (group key, its named ports)

    def _place(self, pod: Optional[Mapping]) -> Optional[Tuple[GroupKey, Tuple]]:
        """Where the full compile puts ``pod``: (group key, named ports), or None (in no group)."""
        if pod is None:
            return None
        m, st = pod.get("metadata") or {}, pod.get("status") or {}
        if st.get("phase") in ("Succeeded", "Failed") or (pod.get("spec") or {}).get("hostNetwork"):
            return None
        labels = m.get("labels") or {}
        if not isinstance(labels, Mapping):
            return None
        if pod_identity(pod, self.ns_labels, self.ids) is None:
            return None
        ns = m.get("namespace", "") or ""
        return (ns, frozenset(labels.items())), tuple(_container_ports(pod))

    def set_pod(self, key: str, pod: Optional[Mapping]) -> Set[GroupKey]:
        """Put pod ``key`` where ``pod`` says (None: deleted); the groups that appeared, went or changed ports."""
        new = self._place(pod)
        old = self.pod_at.get(key)
        if old == new:
            return set()
        changed: Set[GroupKey] = set()
        if old is not None:
            gk, ports = old
            del self.pod_at[key]
            self.members[gk] -= 1
            if ports:
                c = self.ports[gk]
                c.subtract(ports)
                if any(c[p] <= 0 for p in ports):
                    changed.add(gk)
            if self.members[gk] <= 0:
                self._drop_group(gk)
                changed.add(gk)
        if new is not None:
            gk, ports = new
            self.pod_at[key] = new
            if gk not in self.groups:
                self._add_group(gk, pod)
                changed.add(gk)
            self.members[gk] += 1
            if ports:
                c = self.ports.setdefault(gk, Counter())
                if any(c[p] <= 0 for p in ports):
                    changed.add(gk)
                c.update(ports)
        for gk in changed:
            g = self.groups.get(gk)
            if g is not None:
                g.named = {}
                for (n, proto, num), k in self.ports.get(gk, {}).items():
                    if k > 0:
                        g.named.setdefault((n, proto), set()).add(num)
        if changed:
            self._sel.clear()
            self._nss.clear()
        return changed

    def _add_group(self, gk: GroupKey, pod: Mapping) -> None:
        ns, labels = gk
        g = _Group(ns, {**dict(labels), CLUSTER_LABEL: self.cluster_name}, pod_identity(pod, self.ns_labels, self.ids))
        self.groups[gk] = g
        self.groups_by_ns.setdefault(ns, []).append(g)

    def _drop_group(self, gk: GroupKey) -> None:
        g = self.groups.pop(gk)
        del self.members[gk]
        self.ports.pop(gk, None)
        gs = self.groups_by_ns[gk[0]]
        gs.remove(g)
        if not gs:
            del self.groups_by_ns[gk[0]]

    def removed_group(self, gk: GroupKey) -> _Group:
        """A group's labels for matching after it is gone."""
        ns, labels = gk
        return _Group(ns, {**dict(labels), CLUSTER_LABEL: self.cluster_name}, 0)


# ---------------------------------------------------------------- which policies a group concerns

Sel = Tuple[Optional[Reqs], Reqs]  # (namespace requirements, None = the policy's own namespace; pod requirements)


def _selectors(pol: Mapping) -> Tuple[List[Sel], bool]:
    """Every pod-matching selector of ``pol`` and whether any rule depends on every group (an egress rule
    with named ports and no ``to``). A superset of what the compiler uses (both directions, whatever
    ``policyTypes`` says): it only decides which policies to compile again."""
    spec = pol.get("spec")
    if not isinstance(spec, Mapping):
        return [], False
    out: List[Sel] = []
    try:
        out.append((None, _parse_selector(spec.get("podSelector"), "")))
    except _Bad:
        return [], False  # the compiler skips the whole policy
    every = False
    for dname, pfield in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(dname)
        for rule in rules if isinstance(rules, list) else ():
            if not isinstance(rule, Mapping):
                continue
            raw = rule.get(pfield)
            if raw is None or raw == []:
                ports = rule.get("ports")
                if dname == "egress" and isinstance(ports, list) and any(
                        isinstance(p, Mapping) and isinstance(p.get("port"), str) for p in ports):
                    every = True
                continue
            for peer in raw if isinstance(raw, list) else ():
                if not isinstance(peer, Mapping) or peer.get("ipBlock") is not None:
                    continue
                ps, nss = peer.get("podSelector"), peer.get("namespaceSelector")
                if ps is None and nss is None:
                    continue
                try:
                    out.append((None if nss is None else _parse_selector(nss, ""), _parse_selector(ps, "")))
                except _Bad:
                    continue  # the compiler drops that peer
    return out, every


def _anchor(reqs: Reqs) -> Optional[str]:
    """A label key every match of ``reqs`` has (In/Exists), None if there is none."""
    for key, op, _ in reqs:
        if op in ("In", "Exists"):
            return key
    return None


class _PolicyIndex:
    """Policies by the selectors they hold: (namespace or None, anchor key or None) -> policy keys."""

    def __init__(self):
        self.by: Dict[Tuple[Optional[str], Optional[str]], Set[str]] = {}
        self.sels: Dict[str, Tuple[str, List[Sel]]] = {}  # policy key -> (its namespace, selectors)
        self.every: Set[str] = set()

    def put(self, pkey: str, pol: Optional[Mapping]) -> None:
        self.drop(pkey)
        if pol is None:
            return
        ns = (pol.get("metadata") or {}).get("namespace", "") or ""
        sels, every = _selectors(pol)
        self.sels[pkey] = (ns, sels)
        if every:
            self.every.add(pkey)
        for ns_reqs, pod_reqs in sels:
            self.by.setdefault((ns if ns_reqs is None else None, _anchor(pod_reqs)), set()).add(pkey)

    def drop(self, pkey: str) -> None:
        old = self.sels.pop(pkey, None)
        self.every.discard(pkey)
        if old is None:
            return
        ns, sels = old
        for ns_reqs, pod_reqs in sels:
            s = self.by.get((ns if ns_reqs is None else None, _anchor(pod_reqs)))
            if s is not None:
                s.discard(pkey)

    def concerning(self, g: _Group, ns_sel_labels: Mapping[str, Mapping[str, str]]) -> Set[str]:
        """The policies with a selector that matches group ``g`` (its namespace and labels)."""
        cand: Set[str] = set(self.every)
        for scope in (g.ns, None):
            for k in list(g.labels) + [None]:
                cand |= self.by.get((scope, k), set())
        out = set()
        ns_labels = ns_sel_labels.get(g.ns) or {"kubernetes.io/metadata.name": g.ns}
        for pkey in cand:
            if pkey in self.every:
                out.add(pkey)
                continue
            pns, sels = self.sels[pkey]
            for ns_reqs, pod_reqs in sels:
                if (pns == g.ns if ns_reqs is None else _matches(ns_reqs, ns_labels)) and _matches(pod_reqs, g.labels):
                    out.add(pkey)
                    break
        return out


# ---------------------------------------------------------------- the state

@dataclass
class _Compiled:
    keys: Optional[Set[Key]]
    enforced: Set[Pair]
    problems: list


@dataclass
class Delta:
    """What changed in the compiled policy: per (identity, direction), its entries before and after
    (as :class:`PolicyEntry` field tuples; empty when not enforced), and the enforced pairs switched
    off and on."""
    old: Dict[Pair, FrozenSet[Key]] = field(default_factory=dict)
    new: Dict[Pair, FrozenSet[Key]] = field(default_factory=dict)
    enforce_off: Set[Pair] = field(default_factory=set)
    enforce_on: Set[Pair] = field(default_factory=set)
    policies: int = 0            # policies compiled again

    def __bool__(self) -> bool:
        return bool(self.old or self.new or self.enforce_off or self.enforce_on)


@functools.lru_cache(maxsize=4096)
def _blocks(port: Tuple[int, int]) -> int:
    """How many aligned power-of-two blocks cover the range (``datapath.policy.port_blocks``, counted
    here: controllers import no compiled code)."""
    lo, hi = port
    n = 0
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        lo += size
        n += 1
    return n


def _bound(keys: Iterable[Key]) -> int:
    """An upper bound of the mc_policy rows of these entries (a port range expands to prefixes)."""
    return sum(_blocks(k[4]) if isinstance(k[4], tuple) else 1 for k in keys)


class IncrementalPolicy:
    """The compiled NetworkPolicy, kept current one pod or policy at a time (see the module doc)."""

    def __init__(self, cluster_name: str = "default"):
        self.cluster_name = cluster_name
        self.cluster: Optional[_LiveCluster] = None

    # -- from scratch

    def full(self, policies, pods, namespaces, identities, cidr_identities, *, remote_identities=(),
             clusters=()) -> None:
        """Build everything from the complete caches (what :func:`compile_policies` reads)."""
        identities = list(identities)
        remote, _ = remote_groups(remote_identities, clusters, identity_index((), identities)[1].values())
        self.cluster = _LiveCluster(namespaces, identities, remote, self.cluster_name)
        cidr_identities = list(cidr_identities)
        self.atoms = cidr_atoms(cidr_identities)
        self.cidr_ids: Dict[str, int] = {}
        for c in cidr_identities:
            i = (c.get("spec") or {}).get("id")
            if is_managed(c) and isinstance(i, int) and not isinstance(i, bool):
                self.cidr_ids[(c.get("metadata") or {}).get("name", "")] = i
        for p in pods:
            self.cluster.set_pod(_key_of(p), p)
        self.policies: Dict[str, Mapping] = {}
        self.index = _PolicyIndex()
        self.per: Dict[str, _Compiled] = {}
        self.key_count: Dict[Pair, Counter] = {}
        self.enf_count: Counter = Counter()
        self.final: Dict[Pair, FrozenSet[Key]] = {}
        self.bound = 0               # an upper bound of the mc_policy rows of self.final
        self.n_entries = 0
        self.per_identity: Counter = Counter()
        for pol in policies:
            k = _key_of(pol)
            self.policies[k] = pol
            self.index.put(k, pol)
            self._account(k, self._compile(pol))
        for pair in list(self.key_count) + list(self.enf_count):
            self._refinal(pair)

    # -- events

    def pods_changed(self, changes: Iterable[Tuple[str, Optional[Mapping]]]) -> Delta:
        """Pods ``(key, object or None if deleted)`` -> what changed in the compiled policy."""
        groups: Dict[GroupKey, _Group] = {}
        for key, pod in changes:
            for gk in self.cluster.set_pod(key, pod):
                groups[gk] = self.cluster.groups.get(gk) or self.cluster.removed_group(gk)
        todo: Set[str] = set()
        for g in groups.values():
            todo |= self.index.concerning(g, self.cluster.ns_sel_labels)
        return self._recompile(todo)

    def policies_changed(self, changes: Iterable[Tuple[str, Optional[Mapping]]]) -> Delta:
        """NetworkPolicies ``(key, object or None if deleted)`` -> what changed in the compiled policy."""
        todo = set()
        for key, pol in changes:
            if pol is None:
                self.policies.pop(key, None)
            else:
                self.policies[key] = pol
            self.index.put(key, pol)
            todo.add(key)
        return self._recompile(todo)

    # -- results

    def entries(self, pairs: Optional[Iterable[Pair]] = None) -> List[PolicyEntry]:
        pairs = self.final if pairs is None else pairs
        keys = [k for p in pairs for k in self.final.get(p, ())]
        return [PolicyEntry(*k) for k in sorted(keys, key=_sort_key)]

    def compiled(self) -> CompiledPolicy:
        """The whole state as :func:`compile_policies` returns it (problems in policy order)."""
        entries = self.entries()
        problems = [p for k in self.policies for p in self.per[k].problems]
        per_policy = {k: len(c.keys) for k, c in self.per.items() if c.keys is not None}
        per_identity = {i: n for i, n in self.per_identity.items() if n}
        enforced = set(self.final)
        stats = {"per_policy": per_policy, "per_identity": per_identity, "entries": len(entries),
                 "enforced": len(enforced), "policies": len(per_policy), "problems": len(problems)}
        return CompiledPolicy(entries, enforced, problems, stats)

    def problems(self) -> list:
        return [p for k in self.policies for p in self.per[k].problems]

    # -- internals

    def _compile(self, pol: Mapping) -> _Compiled:
        problems: list = []
        enforced: Set[Pair] = set()
        keys = _compile_one(pol, self.cluster, self.cidr_ids, self.atoms, problems, enforced)
        return _Compiled(keys, enforced, problems)

    def _account(self, pkey: str, new: Optional[_Compiled], sign_old: Optional[_Compiled] = None) -> Set[Pair]:
        """Swap policy ``pkey``'s contribution from ``sign_old`` to ``new``; the pairs touched."""
        touched: Set[Pair] = set()
        old_keys = (sign_old.keys or set()) if sign_old is not None else set()
        old_enf = sign_old.enforced if sign_old is not None else set()
        new_keys = (new.keys or set()) if new is not None else set()
        new_enf = new.enforced if new is not None else set()
        for k in old_keys - new_keys:
            c = self.key_count[(k[0], k[1])]
            c[k] -= 1
            if c[k] <= 0:
                del c[k]
                touched.add((k[0], k[1]))
        for k in new_keys - old_keys:
            c = self.key_count.setdefault((k[0], k[1]), Counter())
            if c[k] <= 0:
                touched.add((k[0], k[1]))
            c[k] += 1
        for p in old_enf - new_enf:
            self.enf_count[p] -= 1
            if self.enf_count[p] <= 0:
                del self.enf_count[p]
                touched.add(p)
        for p in new_enf - old_enf:
            if self.enf_count[p] <= 0:
                touched.add(p)
            self.enf_count[p] += 1
        if new is None:
            self.per.pop(pkey, None)
        else:
            self.per[pkey] = new
        return touched

    def _refinal(self, pair: Pair) -> Tuple[FrozenSet[Key], FrozenSet[Key]]:
        old = self.final.get(pair, frozenset())
        if self.enf_count.get(pair, 0) <= 0:
            new: FrozenSet[Key] = frozenset()
        else:
            ks = set(self.key_count.get(pair, ()))
            ks.add((pair[0], pair[1], ID_HOST, None, None))
            everything = (pair[0], pair[1], None, None, None)
            new = frozenset((everything,)) if everything in ks else frozenset(ks)
        if new:
            self.final[pair] = new
        else:
            self.final.pop(pair, None)
        c = self.key_count.get(pair)
        if c is not None and not c:
            del self.key_count[pair]
        if old != new:
            self.bound += _bound(new - old) - _bound(old - new)
            self.per_identity[pair[0]] += len(new) - len(old)
            self.n_entries += len(new) - len(old)
        return old, new

    def _recompile(self, todo: Set[str]) -> Delta:
        touched: Set[Pair] = set()
        for pkey in todo:
            old = self.per.get(pkey)
            pol = self.policies.get(pkey)
            touched |= self._account(pkey, self._compile(pol) if pol is not None else None, old)
        d = Delta(policies=len(todo))
        for pair in touched:
            old, new = self._refinal(pair)
            if old == new:
                continue
            d.old[pair], d.new[pair] = old, new
            if old and not new:
                d.enforce_off.add(pair)
            elif new and not old:
                d.enforce_on.add(pair)
        return d


__all__ = ["IncrementalPolicy", "Delta"]
