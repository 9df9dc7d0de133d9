# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's reconcilers: Services, ipcache + local endpoints, NetworkPolicy, routes.

Each one pairs a pure desired-state function of :mod:`meshcni.controllers`
with an applier of :mod:`meshcni.datapath`, and keeps what it last applied
for the agent's local API views and gauges. The :class:`~meshcni.k8s.Runner`
does the rest (queue, retries, metrics, Events); the names below are the
``controller`` label of ``meshcni_reconcile_total``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from ..controllers.ipcache import ID_HOST, endpoints_of
from ..controllers.ipcache_inc import IncrementalIPCache
from ..controllers.model import INGRESS
from ..controllers.netpol import (DEFAULT_RANK, CompiledPolicy, fail_closed_problems,
                                  policy_ranks)
from ..controllers.routes import desired_routes
from ..controllers.services import NodeContext, Problem, ServiceIDs, nodeport_addresses, remote_backends
from ..controllers.services_inc import Delta as ServiceDelta, ServiceIndex
from ..datapath.pinwatch import REPAIRED, REPLACED
from ..datapath.endpoints import EndpointDatapath, EndpointRow, IPCacheDatapath
from ..controllers.netpol_inc import Delta, IncrementalPolicy
from ..datapath.policy import PolicyDatapath, PolicyEntry, apply_policy_delta, fit_policy, policy_rows
from ..datapath.routes import RouteDatapath
from ..datapath.services import FLAG_NAMES, SCOPE_INT, Service, ServiceDatapath
from ..k8s.reconciler import REQUEUE_AFTER, ChangeLog, Desired, Reconciler

RESYNC_SECONDS = 300.0  # a full recompute and map diff this often repairs whatever drifted


def _rearm(rec, out: dict) -> dict:
    """Ask the Runner for a run when the next resync is due, unless such a run is already pending
    (the work queue does not merge delayed items: one timer at a time)."""
    now = time.monotonic()
    if rec._timer_due is None or now >= rec._timer_due:
        delay = max(rec._last_full + rec.resync - now, 0.001)
        rec._timer_due = now + delay
        out[REQUEUE_AFTER] = delay
    return out


POLICY_WATCHES = ("networkpolicies", "pods", "namespaces", "identities", "cidridentities")
MESH_WATCHES = ("remoteidentities", "clusters")  # remote pods' identities and the Clusters they belong to


class Services(Reconciler):
    """Services + EndpointSlices (+ MeshEndpoints for meshed Services) -> the socket LB's maps.

    A frontend claimed by two Services stays with the first; the other is
    left out, logged and reported on the Service (Event ``FrontendConflict``)
    while the clash lasts. Only MeshEndpoints the controller made count (see
    :func:`~meshcni.controllers.services.remote_backends`). This node's Node
    object decides where NodePorts answer (its InternalIP/ExternalIP
    addresses, or those of ``nodeport_cidrs`` among them and
    ``local_addresses()``) and which endpoints are local.

    Incremental: informer events mark the Services they concern
    (:meth:`observe`), a run recomputes only those
    (:class:`~meshcni.controllers.services_inc.ServiceIndex`) and writes
    only the datapath Services that changed
    (:meth:`~meshcni.datapath.services.ServiceDatapath.apply_delta`, no map
    dump). The first run, a run after a failed apply, a change of this node
    or of the MeshEndpoints take the full path; every ``resync_interval``
    seconds a resync recomputes everything, dumps and repairs the maps and
    counts what it found different in ``meshcni_service_resync_repaired_total``.
    """
    name = "services"
    watches = ("services", "endpointslices", "meshendpoints", "nodes")

    def __init__(self, datapath: ServiceDatapath, ids: ServiceIDs, metrics, log, node_name: str = "",
                 nodeport_cidrs: Optional[List[str]] = None, local_addresses: Callable[[], List[str]] = list,
                 resync_interval: float = 300.0):
        self.datapath = datapath
        self.ids = ids
        self.metrics = metrics
        self.log = log
        self.node_name = node_name
        self.nodeport_cidrs = nodeport_cidrs
        self.local_addresses = local_addresses
        self.resync_interval = resync_interval
        self.index = ServiceIndex(ids)
        self._next_resync = time.monotonic() + resync_interval
        self._programmed: object = []   # a list (set by hand) or the name -> Service dict of the last delta
        self._counted: Dict[str, int] = {}  # row name -> its backends (for the gauge, kept per delta)
        self._backends = 0
        self.drift = 0

    @property
    def programmed(self) -> List[Service]:
        p = self._programmed
        if isinstance(p, dict):
            for _ in range(10):  # the next run may be changing it on another thread
                try:
                    return list(p.values())
                except RuntimeError:
                    continue
        return list(p)

    @programmed.setter
    def programmed(self, svcs) -> None:
        self._programmed = svcs

    def observe(self, cache: str, old, new) -> None:
        """Runner hook (informer thread): mark the Services an event concerns."""
        if cache in ("services", "endpointslices"):
            self.index.observe(cache, old, new)
        # nodes and MeshEndpoints: desired() compares this node's context and the remote backends

    def node_context(self, caches) -> Tuple[NodeContext, List[str]]:
        node = None
        if self.node_name and "nodes" in caches:
            get = getattr(caches["nodes"], "get", None)
            node = get(self.node_name) if get is not None else \
                next((n for n in caches["nodes"].list() if (n.get("metadata") or {}).get("name") == self.node_name),
                     None)
        addrs, errors = nodeport_addresses(node, self.nodeport_cidrs,
                                           self.local_addresses() if self.nodeport_cidrs else ())
        return NodeContext(self.node_name, addrs), errors

    def desired(self, caches) -> Desired:
        # ServiceIDs hands out (and persists) svc_ids for new Services: an id is
        # part of what is desired, since revnat and affinity entries are keyed by it
        me = caches["meshendpoints"].list()
        remote, mesh_problems = remote_backends(me) if me else ({}, [])
        node, errors = self.node_context(caches)
        resync = time.monotonic() >= self._next_resync
        if resync:
            self._next_resync = time.monotonic() + self.resync_interval
        delta, problems = self.index.desired(caches["services"], caches["endpointslices"], remote, node, resync)
        problems = mesh_problems + problems + [Problem("Node", "", self.node_name, "status.addresses", e)
                                               for e in errors]
        return Desired(delta, problems)

    def apply(self, state: ServiceDelta) -> dict:
        delta = state
        if delta.full:
            for a, b in delta.conflicts:
                self.log.warning("Service %s: frontend already used by %s; left out", b, a)
        dp = self.datapath
        out = {}
        try:
            if delta.full and not (delta.resync and dp.synced):
                dp.apply(delta.order())
                out["path"] = "full"
            else:
                changed = delta.changed
                if changed:
                    rows = delta.rows
                    dp.apply_delta([rows[n] for n in changed if n in rows], [n for n in changed if n not in rows])
                out["path"] = "delta"
                out["changed"] = len(changed)
                if delta.resync:
                    repaired = dp.resync(delta.order()) + delta.drift
                    self.drift += repaired
                    drift_metric = getattr(self.metrics, "service_drift", None)
                    if drift_metric is not None:
                        drift_metric.inc(repaired)
                    if repaired:
                        self.log.warning("services: resync repaired %d entries the incremental path missed", repaired)
                    out["path"], out["repaired"] = "resync", repaired
        except BaseException:
            # the index moved on to this state; the maps may not have: the next run takes the full path
            self.index.invalidate()
            raise
        self.programmed = delta.rows
        n = len(delta.rows)
        if delta.full:
            self._counted = {name: len(s.backends) for name, s in delta.rows.items()}
            self._backends = sum(self._counted.values())
        else:  # the backend total from the counts of the rows the delta touched
            for name in delta.changed:
                self._backends -= self._counted.pop(name, 0)
                s = delta.rows.get(name)
                if s is not None:
                    self._counted[name] = len(s.backends)
                    self._backends += len(s.backends)
        self.metrics.services.set(n)
        self.metrics.backends.set(self._backends)
        out.update(services=n, backends=self._backends)
        if delta.full:
            out[REQUEUE_AFTER] = max(0.0, self._next_resync - time.monotonic())  # the next resync runs even if idle
        return out

    def view(self) -> list:
        """GET /v1/services: what was programmed last."""
        return [{"name": s.name, "id": s.svc_id,
                 "frontends": [_frontend_text(f) for f in s.frontends],
                 "backends": [f"{b.ip}:{b.port}" for b in s.backends],
                 # remote backends only (MeshEndpoints): "ip:port" -> the cluster it lives in
                 "backendClusters": {f"{b.ip}:{b.port}": c for b, c in (s.clusters or {}).items()},
                 "affinityTimeout": s.affinity_timeout,
                 **({"sourceRanges": [str(r) for r in s.src_ranges]} if s.src_ranges else {})}
                for s in self.programmed]


def _frontend_text(f) -> str:
    """ip:port/proto, then the frontend's kind and policy flags and its scope when it is not a plain one."""
    tags = [n for bit, n in sorted(FLAG_NAMES.items()) if f.flags & bit]
    if f.scope == SCOPE_INT:
        tags.append("scope=int")
    return f"{f.ip}:{f.port}/{f.proto}" + (f" ({','.join(tags)})" if tags else "")


@dataclass
class IPCacheState:
    prefixes: Optional[Dict[str, int]]  # cidr -> identity; None on the incremental path (see delta)
    endpoints: List[EndpointRow]    # this node's pods, by host veth
    collisions: int                 # sets of overlapping CIDRIdentities given an atom id
    delta: Optional[Dict[str, Optional[int]]] = None  # without prefixes: write only this; with (a resync): first
    resync: bool = False            # a periodic resync: what its dumped diff writes is drift


class IPCache(Reconciler):
    """Pod IPs, node IPs and CIDR identities -> mc_ipcache; this node's endpoints -> mc_endpoints.

    ``local_endpoints()`` returns the CNI plugin's endpoint records (the
    local API's table); the agent kicks this reconciler when they change.

    Pod events write only the pod's own prefixes
    (:class:`~meshcni.controllers.ipcache_inc.IncrementalIPCache`) unless
    something else claims one of them (then, and for every other kind of
    event, a full recompute diffed against what was last written); every
    ``resync`` seconds a full recompute diffed against the dumped map, its
    writes counted in ``meshcni_incremental_drift_total{map="mc_ipcache"}``.
    """
    name = "ipcache"
    watches = ("nodes", "pods", "namespaces", "identities", "cidridentities") + MESH_WATCHES

    def __init__(self, ipcache: IPCacheDatapath, endpoints: EndpointDatapath, node_name: str,
                 local_endpoints: Callable[[], List[dict]], metrics, resync: float = None):
        self.ipcache = ipcache
        self.endpoints = endpoints
        self.node_name = node_name
        self.local_endpoints = local_endpoints
        self.metrics = metrics
        self.size = 0
        self.resync = RESYNC_SECONDS if resync is None else resync
        self.changes = ChangeLog(("pods",))
        self.inc = IncrementalIPCache()
        self._eps: Optional[List[EndpointRow]] = None  # what mc_endpoints was last given
        self._built = False
        self._maps_behind = True
        self._last_full = 0.0
        self._timer_due: Optional[float] = None  # when the resync run asked of the Runner is due
        self.runs = {"full": 0, "incremental": 0}

    def observe(self, cache: str, old, new) -> None:
        self.changes.record(cache, old, new)

    def desired(self, caches) -> Desired:
        try:
            return self._desired(caches)
        except BaseException:
            self._built = False  # half-updated: rebuild from the caches next time
            raise

    def _desired(self, caches) -> Desired:
        changes = self.changes.take()
        resync = self._built and time.monotonic() - self._last_full >= self.resync
        delta = None
        if changes is not None and self._built:
            delta = self.inc.pods_changed([(k, caches["pods"].get(k)) for k in sorted(changes["pods"])])
        if self._maps_behind:
            delta = None
        if delta is None or resync:
            self.inc.full(caches["pods"].list(), caches["namespaces"].list(), caches["identities"].list(),
                          caches["cidridentities"].list(), caches["nodes"].list(), self.node_name,
                          caches["remoteidentities"].list(), caches["clusters"].list())
            self._built, self._last_full = True, time.monotonic()
        pods = caches["pods"]
        eps = endpoints_of(self.local_endpoints(), lambda nn: pods.get(f"{nn[0]}/{nn[1]}"),
                           self.inc.ns_labels, self.inc.ids)
        if delta is not None and not resync:
            return Desired(IPCacheState(None, eps, self.inc.collisions, delta=delta), self.inc.problems())
        return Desired(IPCacheState(dict(self.inc.prefixes), eps, self.inc.collisions, delta=delta,
                                    resync=resync), self.inc.problems())

    def apply(self, state: IPCacheState) -> dict:
        try:
            out = self._apply(state)
        except BaseException:
            self._maps_behind = True
            raise
        self._maps_behind = False
        return out

    def _apply(self, state: IPCacheState) -> dict:
        self.metrics.ipcache_collisions.set(state.collisions)
        w = self.ipcache.apply_delta(state.delta) if state.delta else {}
        if state.prefixes is None:
            self.runs["incremental"] += 1
            if state.endpoints != self._eps:  # mc_endpoints is diffed against a dump: only when it changed
                self.endpoints.apply(state.endpoints)
                self._eps = state.endpoints
            self.size = len(self.inc.prefixes)
            self.metrics.ipcache.set(self.size)
            return _rearm(self, {"prefixes": self.size, "endpoints": len(state.endpoints), **w})
        r = self.ipcache.apply(state.prefixes, dump=state.resync)
        self.runs["full"] += 1
        counter = getattr(self.metrics, "incremental_drift", None)
        if state.resync and r["writes"] and counter is not None:
            counter.labels("mc_ipcache").inc(r["writes"])
        self.endpoints.apply(state.endpoints)
        self._eps = state.endpoints
        self.size = len(state.prefixes)
        self.metrics.ipcache.set(self.size)
        return _rearm(self, {"prefixes": self.size, "endpoints": len(state.endpoints)})


@dataclass
class PolicyState:
    compiled: Optional[CompiledPolicy]         # None on the incremental path (see delta)
    entries: List[PolicyEntry]                 # what fits mc_policy
    enforced: List[Tuple[int, int]]
    closed: List[Tuple[int, int]]              # (identity, direction) failing closed: their policy did not fit
    delta: Optional[Delta] = None              # without compiled: write only this (the incremental path);
                                               # with it (a resync): written first, then the full diff
    resync: bool = False                       # a periodic full resync: rows its full diff writes are drift


def _direction(d: int) -> str:
    return "ingress" if d == INGRESS else "egress"


class Policy(Reconciler):
    """NetworkPolicies -> mc_policy + mc_enforce.

    Incremental (:class:`~meshcni.controllers.netpol_inc.IncrementalPolicy`):
    pod and NetworkPolicy events recompile only the policies they concern and
    write only the rows of the (identity, direction) pairs that changed, with
    no map dump. Anything else (a namespace, Identity, CIDRIdentity, remote
    change, a relist, a failed apply, a map that may be full) and every
    ``resync`` seconds: a full compile and a diff against the dumped maps;
    rows that a periodic resync had to write are counted as drift
    (``meshcni_incremental_drift_total{map="mc_policy"}``).

    A desired policy larger than the map fails *closed* for the endpoints
    that do not fit (:func:`~meshcni.datapath.policy.fit_policy`): whole
    (identity, direction) groups are taken by their pods'
    ``mesh-cni.dev/policy-priority`` (highest first), then age (oldest pod
    first), then size, and programmed while they fit; the rest keep only
    the allow from their own node and deny everything else. That is logged
    as an error naming them, counted (outcome ``map_full``,
    ``meshcni_policy_fail_closed``), reported with a ``PolicyFailClosed``
    Event on every affected pod, and re-evaluated on every change.
    """
    name = "policy"
    watches = POLICY_WATCHES + MESH_WATCHES

    def __init__(self, datapath: PolicyDatapath, metrics, capacity: Optional[int] = None,
                 cluster_name: str = "default", resync: float = RESYNC_SECONDS):
        self.cluster_name = cluster_name
        self.datapath = datapath
        # rows this agent may use in mc_policy (default: all of it)
        self.capacity = min(capacity or datapath.policy.spec.max_entries, datapath.policy.spec.max_entries)
        self.metrics = metrics
        self.stats: dict = {}
        self.detail: dict = {}
        self.resync = resync
        self.changes = ChangeLog(("pods", "networkpolicies"))
        self.inc = IncrementalPolicy(cluster_name)
        self._built = False        # self.inc holds the caches' state
        self._maps_behind = True   # the maps may differ from self.inc: the next run diffs them whole
        self._closed = False       # the last run failed closed for someone: stay on the full path
        self._last_full = 0.0
        self._timer_due: Optional[float] = None  # when the resync run asked of the Runner is due
        self.runs = {"full": 0, "incremental": 0}
        self._lock = threading.Lock()

    def observe(self, cache: str, old, new) -> None:
        self.changes.record(cache, old, new)

    def desired(self, caches) -> Desired:
        try:
            with self._lock:
                return self._desired(caches)
        except BaseException:
            self._built = False  # half-updated: rebuild from the caches next time
            raise

    def _desired(self, caches) -> Desired:
        changes = self.changes.take()
        resync = self._built and time.monotonic() - self._last_full >= self.resync
        delta = None
        if changes is not None and self._built:
            delta = Delta()
            for cache, fn in (("pods", self.inc.pods_changed), ("networkpolicies", self.inc.policies_changed)):
                if changes[cache]:
                    delta = _merge(delta, fn([(k, caches[cache].get(k)) for k in sorted(changes[cache])]))
        if self._maps_behind or self._closed or self.inc.bound > self.capacity:
            delta = None  # the maps are diffed whole below
        if delta is None or resync:
            self.inc.full(*(caches[n].list() for n in POLICY_WATCHES),
                          remote_identities=caches["remoteidentities"].list(),
                          clusters=caches["clusters"].list())
            self._built, self._last_full = True, time.monotonic()
            # a resync first writes the delta of the changes it knows of, so that what the full diff
            # then writes is drift alone
            return self._full_state(caches, delta if resync else None)
        return Desired(PolicyState(None, [], [], [], delta=delta), self.inc.problems())

    def _full_state(self, caches, resync: Optional[Delta]) -> Desired:
        compiled = self.inc.compiled()
        entries, enforced, closed = fit_policy(compiled.entries, compiled.enforced, self.capacity, ID_HOST)
        problems = compiled.problems
        full = ""
        if closed:
            # the map is full: which groups keep their policy is decided by priority and age
            # (only then: the ranks cost a pass over every pod)
            ranks = policy_ranks(caches["pods"].list(), caches["namespaces"].list(), caches["identities"].list())
            entries, enforced, closed = fit_policy(compiled.entries, compiled.enforced, self.capacity, ID_HOST,
                                                   rank=ranks.rank, default_rank=DEFAULT_RANK)
            problems = problems + ranks.problems + fail_closed_problems(closed, ranks, self.capacity)
            full = (f"{len(compiled.entries)} entries do not fit mc_policy ({self.capacity} rows): failing closed "
                    f"for {len(closed)} (identity, direction): "
                    + ", ".join(f"{i}/{_direction(d)}" for i, d in closed[:20]))
        return Desired(PolicyState(compiled, entries, enforced, closed, delta=resync, resync=resync is not None),
                       problems, map_full=full)

    def apply(self, state: PolicyState) -> dict:
        try:
            out = self._apply_delta(state) if state.compiled is None else self._apply_full(state)
        except BaseException:
            self._maps_behind = True
            raise
        self._maps_behind = False
        return out

    def _apply_delta(self, state: PolicyState) -> dict:
        d = state.delta
        w = apply_policy_delta(self.datapath, {p: (d.old[p], d.new[p]) for p in d.new}, d.enforce_off,
                               d.enforce_on)
        self.runs["incremental"] += 1
        entries = self.inc.n_entries
        self.metrics.policy_entries.set(entries)
        self.metrics.enforced.set(len(self.inc.final))
        self.stats = {"entries": entries, "enforced": len(self.inc.final), "failClosed": 0}
        self.detail = {}  # view() computes it from self.inc when asked
        return _rearm(self, {**self.stats, "pairs": len(d.new), "policies": d.policies, **w})

    def _apply_full(self, state: PolicyState) -> dict:
        c = state.compiled
        if state.delta:
            d = state.delta
            apply_policy_delta(self.datapath, {p: (d.old[p], d.new[p]) for p in d.new}, d.enforce_off,
                               d.enforce_on)
        self.metrics.fail_closed.set(len(state.closed))
        rp, re_ = self.datapath.apply(state.entries, state.enforced)
        self._closed = bool(state.closed)
        self.runs["full"] += 1
        if state.resync:
            drift = rp.added + rp.changed + rp.deleted + re_.added + re_.changed + re_.deleted
            counter = getattr(self.metrics, "incremental_drift", None)
            if drift and counter is not None:
                counter.labels("mc_policy").inc(drift)
        self.metrics.policy_entries.set(len(c.entries))
        self.metrics.enforced.set(len(c.enforced))
        self.stats = {"entries": len(c.entries), "enforced": len(c.enforced), "failClosed": len(state.closed)}
        self.detail = {"perPolicy": c.stats["per_policy"],
                       "perIdentity": {str(k): v for k, v in c.stats["per_identity"].items()},
                       "failClosed": [{"identity": i, "direction": _direction(d)} for i, d in state.closed],
                       "rows": rp.added + rp.changed + rp.unchanged, "capacity": self.capacity}
        return _rearm(self, dict(self.stats))

    def view(self) -> dict:
        """GET /v1/policy: what the compiler produced, per policy and per identity (map size watch)."""
        if not self.detail and self._built:
            with self._lock:  # the local API's thread: a worker may be updating self.inc
                c = self.inc.compiled()
            self.detail = {"perPolicy": c.stats["per_policy"],
                           "perIdentity": {str(k): v for k, v in c.stats["per_identity"].items()},
                           "failClosed": [], "rows": policy_rows(c.entries), "capacity": self.capacity}
        return {**self.stats, **self.detail}


def _merge(a: Delta, b: Delta) -> Delta:
    """Two deltas in a row as one: the first's old rows, the second's new ones."""
    if not a:
        b.policies += a.policies
        return b
    out = Delta(dict(a.old), dict(a.new), set(a.enforce_off), set(a.enforce_on), a.policies + b.policies)
    for p in b.new:
        out.old.setdefault(p, b.old[p])
        out.new[p] = b.new[p]
    was = {p for p in out.old if out.old[p]}
    now = {p for p in out.new if out.new[p]}
    out.enforce_off = was - now
    out.enforce_on = now - was
    return out


class Routes(Reconciler):
    """Nodes and remote Clusters' ``status.nodes`` -> routes to their pod CIDRs in the node's network namespace."""
    name = "routes"
    watches = ("nodes", "clusters")

    def __init__(self, datapath: RouteDatapath, node_name: str):
        self.datapath = datapath
        self.node_name = node_name

    def desired(self, caches) -> Desired:
        want, problems = desired_routes(caches["nodes"].list(), self.node_name, caches["clusters"].list())
        return Desired(want, problems)

    def apply(self, state: Dict[str, str]) -> dict:
        return self.datapath.apply(state)


PIN_REASONS = {REPAIRED: "PinRepaired", REPLACED: "PinReplaced", "failed": "PinRepairFailed"}


class Pins(Reconciler):
    """The node's pins (maps, tc programs, socket-LB links) checked against the objects the agent holds,
    every ``interval`` seconds (it watches nothing: it requeues itself).

    A deleted pin is pinned again from the held fd; a pin replaced by another
    object is reported and left alone. Each finding is logged (by the
    datapath), counted in ``meshcni_pin_repairs_total{pin, outcome}`` and put
    on the agent's Node as a Warning Event (``PinRepaired``, ``PinReplaced``,
    ``PinRepairFailed``).
    """
    name = "pins"
    watches = ()

    def __init__(self, check: Callable[[], list], node_name: str, events, metrics, interval: float = 10.0):
        self.check = check
        self.node_name = node_name
        self.events = events
        self.metrics = metrics
        self.interval = interval

    def desired(self, caches) -> Desired:
        return Desired(None)

    def apply(self, state) -> dict:
        found = self.check()
        for f in found:
            self.metrics.pin_repairs.labels(f.pin, f.outcome).inc()
            self.events.emit("Node", "", self.node_name, PIN_REASONS[f.outcome], f.message)
        out = {REQUEUE_AFTER: self.interval}
        for f in found:
            out[f.outcome] = out.get(f.outcome, 0) + 1
        return out
