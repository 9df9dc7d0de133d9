# SPDX-License-Identifier: MIT OR Apache-2.0
"""The ipcache kept current one pod at a time.

:class:`IncrementalIPCache` computes the whole map with
:func:`~meshcni.controllers.ipcache.desired_ipcache` (the reference) and
remembers which pod claims which host prefix. A pod added, deleted or changed
then touches only its own prefixes, provided each of them is claimed by
nothing else: not by a node, a CIDRIdentity prefix, a remote pod or node, or
another local pod (IP reuse). Where two claim one prefix, the full function's
precedence and order decide, so such an event returns None and the caller
recomputes everything. Events of any other kind are the caller's to turn into
a full recompute.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .ipcache import desired_ipcache, identity_index, pod_prefixes

Change = Optional[int]  # the prefix's identity now, None: deleted


def _key_of(obj: Mapping) -> str:
    m = obj.get("metadata") or {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name', '')}" if ns else m.get("name", "")


class IncrementalIPCache:
    def full(self, pods, namespaces, identities, cidr_identities, nodes, self_node: str,
             remote_identities=(), clusters=()) -> None:
        pods, namespaces, identities = list(pods), list(namespaces), list(identities)
        cidr_identities, nodes = list(cidr_identities), list(nodes)
        remote_identities, clusters = list(remote_identities), list(clusters)
        self.prefixes, problems, self.collisions = desired_ipcache(
            pods, namespaces, identities, cidr_identities, nodes, self_node, remote_identities, clusters)
        # what claims an address besides local pods (nodes, CIDRs, remote clusters): a pod there is a full run
        self.others: Set[str] = set(desired_ipcache((), namespaces, identities, cidr_identities, nodes, self_node,
                                                    remote_identities, clusters)[0])
        self.ns_labels, self.ids = identity_index(namespaces, identities)
        self.other_problems = [p for p in problems if p.kind != "Pod"]
        self.pod: Dict[str, List[str]] = {}                # pod key -> its prefixes
        self.bad: Dict[str, list] = {}                     # pod key -> its problems (bad addresses)
        self.claims: Dict[str, Set[str]] = {}              # prefix -> pod keys claiming it
        for p in pods:
            self._set(_key_of(p), p)

    def _set(self, key: str, pod: Optional[Mapping]) -> Tuple[List[str], List[str], Optional[int]]:
        old = self.pod.pop(key, [])
        self.bad.pop(key, None)
        ident, new, bad = pod_prefixes(pod, self.ns_labels, self.ids) if pod is not None else (None, [], [])
        if new:
            self.pod[key] = new
        if bad:
            self.bad[key] = bad
        for k in old:
            c = self.claims.get(k)
            if c is not None:
                c.discard(key)
                if not c:
                    del self.claims[k]
        for k in new:
            self.claims.setdefault(k, set()).add(key)
        return old, new, ident

    def pods_changed(self, changes: Iterable[Tuple[str, Optional[Mapping]]]) -> Optional[Dict[str, Change]]:
        """Pods ``(key, object or None)`` -> {prefix: identity or None (deleted)}; None: recompute everything."""
        out: Dict[str, Change] = {}
        for key, pod in changes:
            before = self.pod.get(key, [])
            _, after, _ = pod_prefixes(pod, self.ns_labels, self.ids) if pod is not None else (None, [], [])
            for k in set(before) | set(after):
                if k in self.others or (self.claims.get(k, set()) - {key}) or after.count(k) > 1:
                    return None
            old, new, ident = self._set(key, pod)
            for k in old:
                if k not in new:
                    self.prefixes.pop(k, None)
                    out[k] = None
            for k in new:
                if self.prefixes.get(k) != ident:
                    self.prefixes[k] = ident
                    out[k] = ident
        return out

    def problems(self) -> list:
        return self.other_problems + [p for bad in self.bad.values() for p in bad]


__all__ = ["IncrementalIPCache"]
