# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired Services kept per Kubernetes Service, recomputed only for the Services whose inputs changed.

:func:`~meshcni.controllers.services.desired_services` is the reference: it
rebuilds every datapath Service from every Service and EndpointSlice.
:class:`ServiceIndex` gives the same rows (the property test
tests/pure/test_services_incremental.py compares them after every step of
random event sequences) at the cost of what changed: the rows of one
Service depend on its Service object, its EndpointSlices, the MeshEndpoints
of its ports, this node and which of its nodePorts another Service holds
(:func:`~meshcni.controllers.services.nodeport_claims`). Informer events
mark the (namespace, name) they concern (:meth:`ServiceIndex.observe`); a
Service object changing (or this node, or MeshEndpoints) also re-runs the
cross-Service checks: nodePort claims (a key whose claims changed is
recomputed) and frontend conflicts (which Service keeps a frontend two
claim). An EndpointSlice change never changes either, so it reuses them.

Whatever is in doubt (first run, an unknown cache, a resync) takes the full
path: every key recomputed from the caches' lists, and the rows compared
with the kept ones; differences found at a resync are drift and counted.
"""
from __future__ import annotations

import threading
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .model import Problem, Service
from .services import (FRONTEND_CONFLICT, SERVICE_NAME_LABEL, NodeContext, Remote, ServiceIDs, _service_rows,
                       frontend_conflicts, nodeport_claims)

Key = Tuple[str, str]  # (namespace, Service name)


def _meta(o: Optional[dict]) -> dict:
    return (o or {}).get("metadata") or {} if isinstance(o, dict) else {}


def service_key(svc: dict) -> Key:
    m = _meta(svc)
    return (m.get("namespace", ""), m.get("name", "?"))


def slice_key(sl: Optional[dict]) -> Optional[Key]:
    """The Service an EndpointSlice feeds (its ``kubernetes.io/service-name`` label), or None."""
    m = _meta(sl)
    name = (m.get("labels") or {}).get(SERVICE_NAME_LABEL) if isinstance(m.get("labels"), dict) else None
    return (m.get("namespace", ""), name) if name else None


def object_key(obj: dict) -> str:
    """An informer's cache key (meshcni.k8s.informer.object_key): ``namespace/name``, or ``name``."""
    m = obj.get("metadata") or {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name', '')}" if ns else m.get("name", "")


_cache_key = object_key


def _slice_rows(key: Key, svc: Optional[dict], slices: Iterable[dict], remote: Optional[Remote],
                node: NodeContext, node_addrs, lost: set) -> Tuple[List[Tuple[str, Service]], List[Problem]]:
    """(rows, problems) of one key: its Service (when there is one) and its EndpointSlices, exactly as
    desired_services reads them (slice problems reported even without a Service)."""
    problems: List[Problem] = []
    good: List[dict] = []
    for sl in slices:
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            if sl.get("addressType") != "FQDN":
                m = _meta(sl)
                problems.append(Problem("EndpointSlice", m.get("namespace", ""), m.get("name", "?"), "addressType",
                                        f"{sl.get('addressType')!r} is not IPv4, IPv6 or FQDN; not used"))
            continue
        good.append(sl)
    wanted: List[Tuple[str, Service]] = []
    if svc is not None:
        _service_rows(svc, {key: good}, remote, node, node_addrs, lost, problems, wanted)
    return wanted, problems


class Delta:
    """What :meth:`ServiceIndex.desired` hands the applier: every row programmed (``rows``: name ->
    Service, conflict losers left out), the names added, changed or removed since the last call
    (``changed``), and ``full``: the applier must reconcile everything (first run, resync)."""
    __slots__ = ("rows", "order", "changed", "full", "conflicts", "drift", "resync")

    def __iter__(self):
        """(rows in the caches' order, conflicts): the shape of the full path's state."""
        return iter((self.order(), self.conflicts))

    def __getitem__(self, i):
        return (self.order(), self.conflicts)[i]

    def __init__(self, rows, order, changed, full, conflicts, drift=0, resync=False):
        self.rows: Dict[str, Service] = rows
        self.order = order          # callable: the rows in the caches' order (for a full apply)
        self.changed: Set[str] = changed
        self.full: bool = full
        self.conflicts: List[Tuple[str, str]] = conflicts
        self.drift: int = drift     # rows a resync found different from the kept ones
        self.resync: bool = resync  # a periodic resync (not the first run): the applier counts what it repairs


class ServiceIndex:
    """The desired Services per key, kept between runs (see the module doc)."""

    def __init__(self, ids: ServiceIDs):
        self.ids = ids
        self._lock = threading.Lock()
        self._dirty: Set[Key] = set()
        self._svc_changed = False
        self._everything = True       # the next run takes the full path
        self.slices: Dict[Key, Set[str]] = {}   # key -> its EndpointSlices' cache keys
        self.rows: Dict[Key, List[Tuple[str, Service]]] = {}
        self.problems: Dict[Key, List[Problem]] = {}
        self.lost: set = set()
        self.claim_problems: List[Problem] = []
        self.dropped: Set[str] = set()
        self.conflicts: List[Tuple[str, str]] = []
        self.conflict_problems: List[Problem] = []
        self.by_name: Dict[str, Service] = {}   # every row, conflict losers included
        self.node: Optional[NodeContext] = None
        self.remote: Optional[Remote] = None

    # -- events (informer threads) --

    def observe(self, cache: str, old: Optional[dict], new: Optional[dict]) -> None:
        """Mark what one informer event concerns. Runs before the reconciler is queued, so a run
        that starts after the event sees the mark."""
        with self._lock:
            if cache == "services":
                for o in (old, new):
                    if o is not None:
                        self._dirty.add(service_key(o))
                self._svc_changed = True
            elif cache == "endpointslices":
                ko, kn = slice_key(old), slice_key(new)
                if old is not None and ko is not None and ko != kn:
                    s = self.slices.get(ko)
                    if s is not None:
                        s.discard(_cache_key(old))
                if new is not None and kn is not None:
                    self.slices.setdefault(kn, set()).add(_cache_key(new))
                elif old is not None and ko is not None:
                    s = self.slices.get(ko)
                    if s is not None:
                        s.discard(_cache_key(old))
                self._dirty.update(k for k in (ko, kn) if k is not None)
            else:  # nodes, meshendpoints: rare; the caller decides whether they matter (see the reconciler)
                self._everything = True

    def invalidate(self) -> None:
        """The next run takes the full path."""
        with self._lock:
            self._everything = True

    # -- the run --

    def desired(self, services_cache, slices_cache, remote: Optional[Remote], node: NodeContext,
                resync: bool = False) -> Tuple[Delta, List[Problem]]:
        """(delta, problems). ``services_cache``/``slices_cache`` have ``get(cache key)`` and ``list()``."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            svc_changed, self._svc_changed = self._svc_changed, False
            everything, self._everything = self._everything, False
        if node != self.node or remote != self.remote:
            everything = True
        self.node, self.remote = node, remote
        node_addrs = {4: [a for a in node.addresses if ":" not in a], 6: [a for a in node.addresses if ":" in a]}
        changed: Set[str] = set()
        drift = 0
        try:
            if everything or resync:
                if not everything:
                    # a resync repairs what the events missed: the incremental step first, so what the full
                    # pass still finds different is drift
                    self._recompute(dirty, svc_changed, services_cache, slices_cache, node_addrs, changed)
                    before = dict(self.by_name)
                self._rebuild(services_cache, slices_cache, node_addrs)
                if not everything:
                    drift = sum(1 for n, s in self.by_name.items() if before.get(n) != s) + \
                        sum(1 for n in before if n not in self.by_name)
                    changed |= {n for n, s in self.by_name.items() if before.get(n) != s} | \
                        {n for n in before if n not in self.by_name}
                svcs = services_cache.list()
                self._conflicts(svcs, changed)
                full = True
            else:
                self._recompute(dirty, svc_changed, services_cache, slices_cache, node_addrs, changed)
                full = False
        except BaseException:
            self.invalidate()  # a half-updated index must not be trusted
            raise
        rows = self._programmed()
        problems = list(self.claim_problems)
        for ps in self.problems.values():
            problems += ps
        problems += self.conflict_problems
        return Delta(rows, lambda: [rows[n] for n in self._order(services_cache) if n in rows], changed,
                     full or everything, list(self.conflicts), drift, resync and not everything), problems

    def _programmed(self) -> Dict[str, Service]:
        d = self.dropped
        if not d:
            return self.by_name
        return {n: s for n, s in self.by_name.items() if n not in d}

    def _order(self, services_cache) -> List[str]:
        out = []
        for svc in services_cache.list():
            out += [n for n, _ in self.rows.get(service_key(svc), ())]
        return out

    def _rebuild(self, services_cache, slices_cache, node_addrs) -> None:
        """The full path: every key from the caches' lists."""
        svcs = services_cache.list()
        slices: Dict[Key, Set[str]] = {}
        objs: Dict[Key, List[dict]] = {}
        for sl in slices_cache.list():
            k = slice_key(sl)
            if k is not None:
                slices.setdefault(k, set()).add(_cache_key(sl))
                objs.setdefault(k, []).append(sl)
        with self._lock:
            self.slices = slices
        self.lost, self.claim_problems = nodeport_claims(svcs)
        old_rows = self.rows
        self.rows, self.problems = {}, {}
        keys = {service_key(s): s for s in svcs}
        wanted_all: List[Tuple[str, Service]] = []
        for k in list(keys) + [k for k in slices if k not in keys]:
            rows, probs = _slice_rows(k, keys.get(k), objs.get(k, ()), self.remote, self.node, node_addrs,
                                      self.lost)
            if rows:
                self.rows[k] = rows
                wanted_all += rows
            if probs:
                self.problems[k] = probs
        idmap = self.ids.assign(n for n, _ in wanted_all)
        for n, s in wanted_all:
            s.svc_id = idmap[n]
        del old_rows
        self.by_name = {n: s for n, s in wanted_all}

    def _compute(self, k: Key, svc: Optional[dict], slices_cache, node_addrs):
        sls = [o for o in map(slices_cache.get, sorted(self.slices.get(k, ()))) if o is not None]
        return _slice_rows(k, svc, sls, self.remote, self.node, node_addrs, self.lost)

    def _recompute(self, dirty: Set[Key], svc_changed: bool, services_cache, slices_cache, node_addrs,
                   changed: Set[str]) -> None:
        if svc_changed:
            lost, self.claim_problems = nodeport_claims(services_cache.list())
            dirty |= {(ns, name) for ns, name, _ in lost ^ self.lost}
            self.lost = lost
        added: List[str] = []
        removed: Set[str] = set()
        new_rows: Dict[Key, List[Tuple[str, Service]]] = {}
        for k in dirty:
            svc = services_cache.get(object_key({"metadata": {"namespace": k[0], "name": k[1]}}))
            rows, probs = self._compute(k, svc, slices_cache, node_addrs)
            if probs:
                self.problems[k] = probs
            else:
                self.problems.pop(k, None)
            old = {n for n, _ in self.rows.get(k, ())}
            new = {n for n, _ in rows}
            removed |= old - new
            added += new - old
            new_rows[k] = rows
        if removed or added:
            idmap = self.ids.update(added, removed)
        else:
            idmap = self.ids.ids
        for k, rows in new_rows.items():
            for n, _ in self.rows.get(k, ()):
                if n in removed:
                    self.by_name.pop(n, None)
                    changed.add(n)
            for n, s in rows:
                s.svc_id = idmap[n]
                if self.by_name.get(n) != s:
                    self.by_name[n] = s
                    changed.add(n)
            if rows:
                self.rows[k] = rows
            else:
                self.rows.pop(k, None)
        if svc_changed:
            self._conflicts(services_cache.list(), changed)

    def _conflicts(self, svcs: List[dict], changed: Set[str]) -> None:
        """Which Service keeps a frontend two claim: the first in the caches' order (as the full path)."""
        ordered = []
        for svc in svcs:
            ordered += [s for _, s in self.rows.get(service_key(svc), ())]
        conflicts = frontend_conflicts(ordered)
        dropped = {b for _, b in conflicts}
        changed |= dropped ^ self.dropped
        self.dropped, self.conflicts = dropped, conflicts
        self.conflict_problems = []
        for a, b in conflicts:
            ns, _, name = b.split(":", 1)[0].partition("/")
            self.conflict_problems.append(Problem("Service", ns, name, "spec", f"a frontend of {b} is already used "
                                                  f"by {a}: {b} not served", reason=FRONTEND_CONFLICT))
