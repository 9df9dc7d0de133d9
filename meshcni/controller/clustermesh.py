# SPDX-License-Identifier: MIT OR Apache-2.0
"""The multi-cluster mesh controller: Clusters + kubeconfig Secrets -> remote informers -> MeshEndpoints.

Shape: :class:`ClusterMesh` is a keyed :class:`~meshcni.k8s.reconciler.Reconciler`
(one key per Cluster) run by the controller's one
:class:`~meshcni.k8s.reconciler.Runner`, which gives it the work queue,
retries, metrics, the leadership gate and the once-per-problem Events. For
each Cluster, :func:`decide` is a pure function of a :class:`Snapshot` (the
local caches, the remote caches and their health, the clock) returning a
:class:`ClusterPlan`; :meth:`ClusterMesh.apply` is the only code with side
effects: it manages the remote connections and makes the API writes the plan
lists. Remote informer events and connection changes queue their Cluster
(:meth:`ClusterMesh.kick`). The decisions themselves (MeshEndpoints, status,
conflicts) live in :mod:`meshcni.controllers.mesh`.

Why the connections and writes behave as they do:

- a new kubeconfig (Secret created late, rotated, fixed) starts a *pending*
  connection; the active one keeps feeding the MeshEndpoints until the
  pending one has listed everything, then they swap. An unchanged remote
  therefore gives an identical desired state and no write across a rotation;
- a remote that cannot be reached keeps its MeshEndpoints (status
  ``stale: true`` with ``staleSince``) for the grace period
  (``spec.staleGracePeriodSeconds``, else ``--mesh-stale-grace``), then they
  are deleted and ``status.nodes`` is emptied, so traffic stops going to a
  cluster that is gone. The informers keep their caches across the outage and
  resume (or relist after 410) when it ends, so deletions made meanwhile are
  seen; the first sync after a reconnection recomputes everything;
- a connection still being made is not "unreachable": restarts and leader
  changes mark nothing stale;
- writes are computed against the MeshEndpoint informer plus our own
  not-yet-seen writes (the controller's ``Overlay``), so a burst of remote
  events never writes one object twice, and an unchanged remote writes nothing;
- the API server here does not garbage-collect by ownerReference (and a real
  one would only on Service deletion): the controller deletes MeshEndpoints
  whose Service is gone or no longer meshed itself.
"""
from __future__ import annotations

import collections
import datetime
import functools
import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..controllers import identity as idm
from ..controllers import mesh
from ..controllers.identity import GROUP, VERSION
from ..k8s.events import EventReport, problem_key
from ..k8s.reconciler import REQUEUE_AFTER, Desired, Reconciler
from .identities import Overlay

log = logging.getLogger("meshcni.controller.mesh")

_ADDR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>:? ?")
GLOBAL_KEY = "(global)"   # hand-made reports and MeshEndpoints of Clusters never seen (no valid name or label)


@dataclass
class MeshConfig:
    cluster_name: str = "default"
    namespace: str = "meshcni-system"       # where the kubeconfig Secrets live
    stale_grace: float = mesh.DEFAULT_STALE_GRACE   # seconds, when a Cluster does not say
    service_cidrs: Tuple[str, ...] = ()
    remote_backoff: Tuple[float, float] = (0.2, 5.0)  # seconds between reconnect attempts (first, max)
    remote_watch_timeout: float = 60.0
    remote_connect_timeout: float = 5.0
    remote_page_size: int = 500
    workers: int = 2


def _now() -> float:
    return time.time()


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(s) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def fingerprint(kubeconfig: dict) -> str:
    return hashlib.sha256(json.dumps(kubeconfig, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _trim_namespace(ns: dict) -> dict:
    m = ns.get("metadata") or {}
    ann = {k: v for k, v in (m.get("annotations") or {}).items() if k.startswith("mesh-cni.dev/")}
    # labels: remote namespaces are matched by their own labels in NetworkPolicy (RemoteIdentity)
    return {"metadata": {"name": m.get("name"), "resourceVersion": m.get("resourceVersion"), "annotations": ann,
                         "labels": dict(m.get("labels") or {})}}


def _trim_node(n: dict) -> dict:
    m, spec, st = n.get("metadata") or {}, n.get("spec") or {}, n.get("status") or {}
    return {"metadata": {"name": m.get("name"), "resourceVersion": m.get("resourceVersion")},
            "spec": {k: spec[k] for k in ("podCIDR", "podCIDRs") if k in spec},
            "status": {"addresses": st.get("addresses") or []}}


# ---------------------------------------------------------------- remote connections

class Remote:
    """One connection to a remote cluster: an ApiClient from kubeconfig bytes and four informers.

    ``on_change()`` is called (from informer threads) on every remote event and
    health flip. :attr:`synced_at` is the wall-clock time the connection last
    became complete (all four listed and connected): the first sync, or the
    full resync after an outage.
    """

    def __init__(self, cluster: str, fp: str, kubeconfig: dict, cfg: MeshConfig, on_change: Callable[[], None]):
        from kubernetes import client, config
        from ..k8s import Informer
        from ..k8s.trim import trim_endpointslice, trim_pod, trim_service
        self.cluster, self.fingerprint = cluster, fp
        # the client's errors may quote what it sends (a header holding a token): out of every message
        self._secrets = mesh.credentials(kubeconfig)
        conf = client.Configuration()
        conf.connection_pool_maxsize = 8  # four watches plus lists; urllib3's default of 4 would queue
        # raises for a kubeconfig the loader cannot use (bad certificate data, unknown auth): the caller reports it
        self.api = config.new_client_from_config_dict(kubeconfig, client_configuration=conf, persist_config=False)
        self.server = conf.host
        core, disc = client.CoreV1Api(self.api), client.DiscoveryV1Api(self.api)
        self._on_change = on_change
        self.synced_at: Optional[float] = None
        self.resyncs = 0
        self._complete = False
        self._lock = threading.Lock()
        kw = dict(backoff=cfg.remote_backoff, watch_timeout=cfg.remote_watch_timeout,
                  connect_timeout=cfg.remote_connect_timeout, page_size=cfg.remote_page_size,
                  on_health=self._health)
        self.services = Informer(core.list_service_for_all_namespaces, name=f"{cluster}/services",
                                 transform=trim_service, **kw)
        self.slices = Informer(disc.list_endpoint_slice_for_all_namespaces, name=f"{cluster}/endpointslices",
                               transform=trim_endpointslice, **kw)
        self.namespaces = Informer(core.list_namespace, name=f"{cluster}/namespaces", transform=_trim_namespace, **kw)
        self.nodes = Informer(core.list_node, name=f"{cluster}/nodes", transform=_trim_node, **kw)
        # labels and addresses of the remote pods: their identities here (RemoteIdentity). Not part of
        # the connection's health: a remote whose role predates this (403 on pods) still serves its
        # Services; only its identities are not updated (reported on the Cluster)
        self.pods = Informer(core.list_pod_for_all_namespaces, name=f"{cluster}/pods", transform=trim_pod, **kw)
        self.informers = (self.services, self.slices, self.namespaces, self.nodes)
        for inf in self.informers + (self.pods,):
            inf.add_handler(lambda o: on_change(), lambda a, b: on_change(), lambda o: on_change())

    def start(self) -> "Remote":
        for inf in self.informers + (self.pods,):
            inf.start()
        return self

    def stop(self) -> None:
        for inf in self.informers + (self.pods,):
            inf.stop(2.0)
        try:
            self.api.close()
        except Exception:  # a pool already torn down by the failed connection
            pass

    def _health(self, _inf) -> None:
        with self._lock:
            complete = self.synced() and self.connected() is True
            if complete and not self._complete:
                self.synced_at = _now()
                self.resyncs += 1
            self._complete = complete
        self._on_change()

    def synced(self) -> bool:
        return all(i.has_synced() for i in self.informers)

    def connected(self) -> Optional[bool]:
        """True: every informer's last list/watch worked; False: one failed; None: still connecting."""
        states = [i.connected for i in self.informers]
        if any(s is False for s in states):
            return False
        return True if all(s is True for s in states) else None

    def failing_since(self) -> Optional[float]:
        times = [i.failing_since for i in self.informers if i.failing_since is not None]
        return min(times) if times else None

    def last_error(self) -> str:
        # urllib3 puts object addresses in its messages; without them the text is stable across retries,
        # so the status (and its Event) is written once per outage, not once per attempt
        err = next((f"{i.name}: {i.last_error}" for i in self.informers if i.last_error), "")
        return mesh.redact(_ADDR.sub("", err), self._secrets)[:500]

    def view(self) -> "RemoteView":
        return RemoteView(self.fingerprint, self.server, self.synced(), self.connected(), self.failing_since(),
                          self.last_error(), self.synced_at, self.services.list(), self.namespaces.list(),
                          self.slices.list(), self.nodes.list(), self.pods.list(), self.pods.has_synced(),
                          _ADDR.sub("", f"{self.pods.last_error}")[:500] if self.pods.connected is False else "")


@dataclass
class RemoteView:
    """What :func:`decide` may know of one connection: plain data, read once per reconcile."""
    fingerprint: str
    server: str
    synced: bool
    connected: Optional[bool]
    failing_since: Optional[float]
    last_error: str
    synced_at: Optional[float]
    services: list = field(default_factory=list)
    namespaces: list = field(default_factory=list)
    slices: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    pods: list = field(default_factory=list)
    pods_synced: bool = False
    pods_error: str = ""                  # the pods informer's failure ("" while it works)


# ---------------------------------------------------------------- the pure decision

@dataclass
class Snapshot:
    name: str
    cluster: Optional[dict]                 # the Cluster as cache + our writes show it; None = gone
    secret: Optional[dict]
    active: Optional[RemoteView]            # the data source
    pending: Optional[RemoteView]           # a newer kubeconfig's connection, not yet synced
    client_error: Optional[Tuple[str, str]]  # (fingerprint, message) of a kubeconfig the loader refused
    existing: List[dict]                    # MeshEndpoints owned by (labelled for) this cluster
    services: List[dict]                    # local Services
    nodes: List[dict]                       # local Nodes
    no_source_since: Optional[float]        # when this controller first saw the cluster without a usable source
    now: float
    memo: Optional[dict] = None             # per-Service results of the active source (mesh.desired_meshendpoints)
    remote_identities: List[dict] = field(default_factory=list)   # RemoteIdentities labelled for this cluster
    all_remote_identities: List[dict] = field(default_factory=list)  # of every cluster (their ids are taken)
    local_ids: List[int] = field(default_factory=list)            # ids of the local Identities


@dataclass
class ClusterPlan:
    name: str
    cluster: Optional[dict] = None
    add_finalizer: bool = False
    finalize: bool = False                  # remove our finalizer once ``meps.delete`` and ``rids.delete`` went through
    connect: Optional[Tuple[str, dict]] = None   # (fingerprint, kubeconfig) to connect with
    disconnect: bool = False
    meps: mesh.MeshEndpointPlan = field(default_factory=mesh.MeshEndpointPlan)
    rids: idm.RemoteIdentityPlan = field(default_factory=idm.RemoteIdentityPlan)
    stale_since: Optional[str] = None       # status of MeshEndpoints created or kept now
    stale_patches: List[Tuple[dict, dict]] = field(default_factory=list)
    status: Optional[dict] = None           # None: no write
    problems: List[mesh.MeshProblem] = field(default_factory=list)
    requeue_after: Optional[float] = None
    no_source: bool = False                 # the runtime remembers since when

    @property
    def writes(self) -> int:
        return (self.meps.writes + self.rids.writes + len(self.stale_patches) + (self.status is not None)
                + self.add_finalizer + (self.finalize and not self.meps.delete and not self.rids.delete))


def _grace(cluster: dict, default: float, problems: Optional[list] = None) -> float:
    spec = cluster.get("spec")
    v = spec.get("staleGracePeriodSeconds") if isinstance(spec, dict) else None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    if v is not None and problems is not None:
        problems.append(mesh.MeshProblem("Cluster", "", (cluster.get("metadata") or {}).get("name", ""),
                                         "spec.staleGracePeriodSeconds",
                                         f"{v!r} is not a number of seconds >= 0; {default:g} used"))
    return default


def decide(s: Snapshot, cfg: MeshConfig) -> ClusterPlan:
    """Everything cluster ``s.name`` needs done now (pure: reads only ``s``)."""
    plan = ClusterPlan(s.name, s.cluster)
    c = s.cluster
    if c is None:
        # gone without our finalizer (never seen by us, or removed by hand): clean up what it owned
        plan.disconnect = True
        plan.meps = mesh.plan_meshendpoints(s.name, {}, s.existing)
        plan.rids = _plan_rids(s, {})
        return plan
    meta = c.get("metadata") or {}
    finalizers = meta.get("finalizers") or []
    if meta.get("deletionTimestamp"):
        plan.disconnect = True
        plan.meps = mesh.plan_meshendpoints(s.name, {}, s.existing)
        plan.rids = _plan_rids(s, {})
        plan.finalize = mesh.FINALIZER in finalizers
        return plan
    generation = int(meta.get("generation") or 1)
    prev = c.get("status") if isinstance(c.get("status"), dict) else None
    now = rfc3339(s.now)
    if s.name == cfg.cluster_name:
        why = mesh.Cond("Unknown", "LocalClusterName",
                        f"this is the local cluster's name (--cluster-name={cfg.cluster_name}); ignored")
        obs = mesh.ClusterObservation(why, why, why, why, ready=mesh.Cond("False", why.reason, why.message))
        plan.disconnect = True
        plan.meps = mesh.plan_meshendpoints(s.name, {}, s.existing)
        plan.rids = _plan_rids(s, {})
        st = mesh.cluster_status(prev, generation, obs, now)
        plan.status = None if st == prev else st
        plan.problems = [mesh.MeshProblem("Cluster", "", s.name, "metadata.name", why.message)]
        return plan
    plan.add_finalizer = mesh.FINALIZER not in finalizers
    spec_problems: List[mesh.MeshProblem] = []
    grace = _grace(c, cfg.stale_grace, spec_problems)

    # the Secret
    try:
        kc = mesh.kubeconfig_from_secret(c, s.secret, cfg.namespace)
        fp = fingerprint(kc)
        if s.client_error and s.client_error[0] == fp:
            raise mesh.SecretError("InvalidKubeconfig", s.client_error[1])
        name, key = mesh.secret_ref(c)
        secret = mesh.Cond("True", "Resolved", f"Secret {cfg.namespace}/{name} key {key}")
        if fp not in {v.fingerprint for v in (s.active, s.pending) if v is not None}:
            plan.connect = (fp, kc)
    except mesh.SecretError as e:
        secret = mesh.Cond("False", e.reason, str(e))
        if s.active is not None:
            secret = mesh.Cond("False", e.reason, f"{e}; still using the kubeconfig it held before")

    # the connection
    newest = s.pending or s.active
    if plan.connect is not None:
        reach = mesh.Cond("Unknown", "Connecting", "connecting with the Secret's kubeconfig")
    elif newest is None:
        reach = mesh.Cond("Unknown", "NoClient", "no usable kubeconfig")
    elif newest.connected is False:
        msg = f"{newest.server}: {newest.last_error}"
        if s.pending is not None and s.active is not None:
            msg += "; the previous kubeconfig is still in use"
        reach = mesh.Cond("False", "Unreachable", msg)
    elif newest.connected is True:
        reach = mesh.Cond("True", "Reachable", newest.server)
    else:
        reach = mesh.Cond("Unknown", "Connecting", f"connecting to {newest.server}")
    src = s.active if s.active is not None and s.active.synced else None
    if src is not None:
        synced = mesh.Cond("True", "Synced", "Services, EndpointSlices, Namespaces and Nodes listed and watched")
    elif newest is not None or plan.connect is not None:
        synced = mesh.Cond("False", "Syncing", "waiting for the first list of Services, EndpointSlices, "
                                               "Namespaces and Nodes")
    else:
        synced = mesh.Cond("Unknown", "NoClient", "no usable kubeconfig")

    # staleness: a source that failed, or no source and nothing on the way
    stale_since: Optional[float] = None
    if src is not None:
        if src.connected is False:
            stale_since = src.failing_since or s.now
    elif plan.connect is None and (newest is None or newest.connected is False):
        plan.no_source = True
        marks = [t for t in (_parse_time((o.get("status") or {}).get("staleSince")) for o in s.existing) if t]
        stale_since = min(marks + [s.no_source_since or s.now])
    expired = stale_since is not None and s.now - stale_since >= grace
    if stale_since is not None and not expired:
        plan.requeue_after = stale_since + grace - s.now + 0.05
        plan.stale_since = rfc3339(stale_since)
        reach = mesh.Cond(reach.status if reach.status != "True" else "False", reach.reason,
                          f"{reach.message}; MeshEndpoints kept (stale) until {rfc3339(stale_since + grace)}")
    elif expired:
        reach = mesh.Cond(reach.status if reach.status != "True" else "False", reach.reason,
                          f"{reach.message}; stale for more than {grace:g} s: MeshEndpoints and routes removed")

    # what to program
    problems: List[mesh.MeshProblem] = []
    conflicts = mesh.cidr_conflicts(s.name, src.nodes, s.nodes, cfg.service_cidrs, problems) if src else []
    keep = False
    if conflicts:
        conflict = mesh.Cond("True", "PodCIDROverlap", "; ".join(conflicts[:5]) + (
            f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else "") + "; nothing of it is programmed")
        desired, nodes, meshed, eps = {}, [], 0, 0
        rdesired: Optional[dict] = {}
    else:
        rdesired = None
        conflict = mesh.Cond("False", "NoConflict", "") if src else mesh.Cond("Unknown", "NotSynced", "")
        if expired:
            desired, nodes, meshed, eps = {}, [], 0, 0
            rdesired = {}
        elif src is None:
            keep = True  # nothing known yet (or any more): what exists stays, as it is
            desired = {}
            nodes = list((prev or {}).get("nodes") or [])
            meshed = sum(1 for o in s.existing if mesh.is_managed(o))
            eps = len({m.get("ip") for o in s.existing if mesh.is_managed(o)
                       for m in (o.get("spec") or {}).get("backend_port_mappings") or ()})
        else:
            res = mesh.desired_meshendpoints(s.name, s.services, src.services, src.namespaces, src.slices, s.memo)
            desired, meshed, eps = res.desired, res.meshed_services, res.remote_endpoints
            problems += res.problems
            nodes = mesh.remote_nodes(src.nodes, s.name, problems)
            if src.pods_synced:
                rdesired, rproblems = idm.desired_remote_identities(s.name, src.pods, src.namespaces)
                problems += [mesh.MeshProblem(p.kind, p.namespace, p.name, p.field, p.message, s.name)
                             for p in rproblems]
            if src.pods_error:
                # remote identities stay as they are (none, before the first list): the rest of the mesh works
                problems.append(mesh.MeshProblem("Cluster", "", s.name, "pods",
                                                 f"listing the remote cluster's Pods fails ({src.pods_error}): its "
                                                 "pods' identities are not updated (grant list/watch on pods to "
                                                 "the remote's meshcni-clustermesh-remote)", s.name))
    if not keep:
        plan.meps = mesh.plan_meshendpoints(s.name, desired, s.existing)
        problems += plan.meps.problems
    if rdesired is not None:
        # nothing known (no source yet, or lost within the grace): the remote identities stay as they are
        plan.rids = _plan_rids(s, rdesired)
        problems += [mesh.MeshProblem(p.kind, p.namespace, p.name, p.field, p.message, s.name)
                     for p in plan.rids.problems]
    deleted = {id(o) for o in plan.meps.delete}
    stale_mark = plan.stale_since if (stale_since is not None and not expired) else None
    for o in s.existing:
        if id(o) in deleted or not mesh.is_managed(o):
            continue
        p = mesh.stale_status(o, stale_mark)
        if p is not None:
            plan.stale_patches.append((o, p))
    obs = mesh.ClusterObservation(secret, reach, synced, conflict, meshed_services=meshed, remote_endpoints=eps,
                                  last_sync_time=rfc3339(src.synced_at) if src and src.synced_at else None,
                                  nodes=nodes)
    st = mesh.cluster_status(prev, generation, obs, now)
    plan.status = None if st == prev else st
    plan.problems = spec_problems + problems + mesh.condition_problems(s.name, st)
    return plan


def _plan_rids(s: Snapshot, desired: dict) -> idm.RemoteIdentityPlan:
    return idm.plan_remote_identities(s.name, desired, s.remote_identities, s.all_remote_identities, s.local_ids)


def decide_global(clusters: Dict[str, dict], meshendpoints: List[dict]) -> Tuple[Dict[str, List[dict]], list]:
    """Managed MeshEndpoints whose owner Cluster does not exist (to delete, by owner), and hand-made reports."""
    orphans: Dict[str, List[dict]] = {}
    for o in meshendpoints:
        owner = ((o.get("metadata") or {}).get("labels") or {}).get(mesh.CLUSTER_OWNER)
        if mesh.is_managed(o) and owner not in clusters:
            orphans.setdefault(owner or "", []).append(o)
    return orphans, mesh.handmade_problems(meshendpoints)


# ---------------------------------------------------------------- the reconciler

@dataclass
class GlobalPlan:
    """What no single Cluster owns: managed MeshEndpoints of Clusters that do not exist, by owner."""
    orphans: Dict[str, List[dict]] = field(default_factory=dict)
    rid_orphans: List[dict] = field(default_factory=list)   # managed RemoteIdentities of Clusters that do not exist


class _Queue:
    """The runner's queue as the mesh's callers see it: ``add(cluster)`` queues that Cluster's reconcile;
    length and in-flight count are the whole queue's (idle means the controller is idle)."""

    def __init__(self, mesh: "ClusterMesh"):
        self._mesh = mesh

    def add(self, cluster: str) -> None:
        self._mesh.kick(cluster)

    def add_after(self, cluster: str, delay: float) -> None:
        self._mesh.kick(cluster, delay)

    def __len__(self) -> int:
        return len(self._mesh.runner.queue)

    def in_flight(self) -> int:
        return self._mesh.runner.queue.in_flight()


class ClusterMesh(Reconciler):
    """The mesh as a keyed :class:`~meshcni.k8s.reconciler.Reconciler`: one key per Cluster, plus
    :data:`GLOBAL_KEY` for what no Cluster owns (hand-made reports, MeshEndpoints of unknown Clusters).

    ``api`` is the local ApiClient. :meth:`informers` gives the local
    informers for the runner's caches; set :attr:`runner` to the
    :class:`~meshcni.k8s.Runner` that runs it (remote events and connection
    changes kick it). The runner's gate (leadership) decides when it acts;
    :meth:`stopped_leading` closes the remote connections, :meth:`stop` at exit.
    ``desired`` reads the local caches and the remote connections' caches;
    ``apply`` manages the connections and makes the API writes.
    """

    name = "meshendpoints"
    watches = ("clusters", "secrets", "services", "nodes", "meshendpoints", "remoteidentities")

    def __init__(self, api, cfg: MeshConfig, registry=None):
        from kubernetes import client
        self.api = api
        self.cfg = cfg
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.runner = None
        self._remotes: Dict[str, Dict[str, Optional[Remote]]] = {}
        self._client_errors: Dict[str, Tuple[str, str]] = {}
        self._no_source_since: Dict[str, float] = {}
        self._memo: Dict[Tuple[str, str], dict] = {}   # (cluster, kubeconfig fingerprint) -> memo
        self._lock = threading.RLock()
        self._mep_ov = Overlay()
        self._rid_ov = Overlay()
        self._cluster_ov = Overlay()
        self.writes = collections.Counter()   # API writes by kind ("create", "replace", ...): tests and benchmarks
        self.syncs = 0                        # reconciles run (while leading)
        self._event_written = functools.partial(self._count, "event")
        self._metrics(registry)

    def _metrics(self, registry):
        self._m_writes = self._m_remote = None
        if registry is None:
            return
        from prometheus_client import Counter, Gauge
        self._m_writes = Counter("meshcni_mesh_api_writes_total", "API writes of the mesh controller, by verb",
                                 ["verb"], registry=registry)
        self._m_remote = Gauge("meshcni_mesh_remote_clusters", "remote cluster connections by state", ["state"],
                               registry=registry)

    def informers(self) -> dict:
        """The local informers the mesh reads, by the cache names in :attr:`watches`."""
        from ..k8s import Informer, label_index
        from ..k8s.trim import trim_service
        return {"clusters": Informer(self.custom.list_cluster_custom_object, GROUP, VERSION, "clusters",
                                     name="clusters"),
                "secrets": Informer(self.core.list_namespaced_secret, namespace=self.cfg.namespace, name="secrets"),
                "services": Informer(self.core.list_service_for_all_namespaces, name="services",
                                     transform=trim_service, page_size=500),
                "nodes": Informer(self.core.list_node, name="nodes", transform=_trim_node),
                "meshendpoints": Informer(self.custom.list_cluster_custom_object, GROUP, VERSION, "meshendpoints",
                                          name="meshendpoints", page_size=500,
                                          indexers={"owner": label_index(mesh.CLUSTER_OWNER)}),
                "remoteidentities": Informer(self.custom.list_cluster_custom_object, GROUP, VERSION,
                                             idm.REMOTE_PLURAL, name="remoteidentities", page_size=500,
                                             indexers={"owner": label_index(mesh.CLUSTER_OWNER)})}

    @property
    def queue(self) -> _Queue:
        return _Queue(self)

    def kick(self, cluster: str, after: float = 0.0) -> None:
        if self.runner is not None:
            self.runner.kick(self.name, after, key=cluster)

    def stopped_leading(self) -> None:
        # a follower holds no remote credentials in use: connections are rebuilt by the next leader
        with self._lock:
            for name in list(self._remotes):
                self._drop(name)

    def stop(self) -> None:
        """Close every remote connection (after the runner stopped: no reconcile opens a new one)."""
        with self._lock:
            for name in list(self._remotes):
                self._drop(name, wait=True)

    # -- which Clusters an event concerns (informer threads: cheap) --

    def keys(self, caches) -> List[str]:
        return [GLOBAL_KEY, *caches["clusters"].keys()]

    def keys_for(self, caches, cache: str, old, new):
        clusters = caches["clusters"]
        if cache == "clusters":
            # our own status write coming back decides nothing new
            return [] if old is not None and new is not None and self._cluster_ov.is_echo(new) else \
                [_name(new if new is not None else old)]
        if cache == "secrets":
            name = _name(new if new is not None else old)
            return [_name(c) for c in clusters.list()
                    if ((c.get("spec") or {}).get("secret") or {}).get("name") == name]
        if cache == "services":
            return clusters.keys() if any(o is not None and mesh.is_meshed(o) for o in (old, new)) else []
        if cache == "nodes":
            changed = old is None or new is None or (old.get("spec") or {}) != (new.get("spec") or {})
            return clusters.keys() if changed else []
        if cache == "meshendpoints":
            o = new if new is not None else old
            if self._mep_ov.is_echo(o):
                return []  # our own write coming back: a reconcile would find nothing to do (and cost 20-50 ms)
            owner = ((o.get("metadata") or {}).get("labels") or {}).get(mesh.CLUSTER_OWNER)
            # a hand-made one there may block (or, gone, unblock) the managed one
            return ([owner] if owner else []) + ([GLOBAL_KEY] if not owner or not mesh.is_managed(o) else [])
        if cache == "remoteidentities":
            o = new if new is not None else old
            if self._rid_ov.is_echo(o):
                return []
            owner = ((o.get("metadata") or {}).get("labels") or {}).get(mesh.CLUSTER_OWNER)
            return ([owner] if owner else []) + ([GLOBAL_KEY] if owner not in clusters.keys() else [])
        return None

    # -- desired: the caches -> a plan (pure decisions in decide / decide_global) --

    def desired(self, caches, key: str) -> Desired:
        if key == GLOBAL_KEY:
            clusters = {_name(c): c for c in caches["clusters"].list()}
            orphans, problems = decide_global(clusters, self._mep_ov.view(caches["meshendpoints"].list()))
            rid_orphans = [o for o in self._rid_ov.view(caches["remoteidentities"].list())
                           if mesh.is_managed(o) and _owner(o) not in clusters]
            return Desired(GlobalPlan(orphans, rid_orphans), self._reports(caches, problems))
        plan = decide(self.snapshot(caches, key), self.cfg)
        return Desired(plan, self._reports(caches, plan.problems))

    def snapshot(self, caches, name: str) -> Snapshot:
        cached = caches["clusters"].get(name)
        cluster = next((o for o in self._cluster_ov.view([cached] if cached else []) if _name(o) == name), None)
        secret = None
        if cluster is not None:
            ref = (cluster.get("spec") or {}).get("secret") or {}
            if isinstance(ref.get("name"), str):
                secret = caches["secrets"].get(f"{self.cfg.namespace}/{ref['name']}")
        with self._lock:
            slot = self._remotes.get(name) or {}
            active, pending = slot.get("active"), slot.get("pending")
            client_error = self._client_errors.get(name)
            since = self._no_source_since.get(name)
        existing = [o for o in self._mep_ov.view(caches["meshendpoints"].by_index("owner", name))
                    if ((o.get("metadata") or {}).get("labels") or {}).get(mesh.CLUSTER_OWNER) == name]
        all_rids = self._rid_ov.view(caches["remoteidentities"].list())
        rids = [o for o in all_rids if _owner(o) == name]
        idents = caches.get("identities")
        local_ids = [i for i in ((o.get("spec") or {}).get("id") for o in (idents.list() if idents is not None else ()))
                     if isinstance(i, int) and i >= idm.REMOTE_ID_MIN]
        memo = None
        if active is not None:
            # resourceVersions are only comparable within one server: a memo per connection
            memo = self._memo.setdefault((name, active.fingerprint), {})
        return Snapshot(name, cluster, secret, active.view() if active else None, pending.view() if pending else None,
                        client_error, existing, caches["services"].list(), caches["nodes"].list(), since, _now(),
                        memo, rids, all_rids, local_ids)

    def _reports(self, caches, problems) -> List[EventReport]:
        """Each problem as its Warning Event: a local Service's or MeshEndpoint's on that object, the rest
        (remote objects, the Cluster's conditions) on the Cluster."""
        out = []
        for p in problems:
            local = not getattr(p, "cluster", "") and p.kind in ("Service", "MeshEndpoint")
            if local:
                ns, kind, name = p.namespace, p.kind, p.name
                obj = caches["services" if p.kind == "Service" else "meshendpoints"].get(f"{ns}/{name}")
            else:
                ns, kind = "", "Cluster"
                name = p.name if p.kind == "Cluster" else getattr(p, "cluster", "") or p.name
                obj = caches["clusters"].get(name)
            reason = {"MeshEndpoint": "HandMadeMeshEndpoint" if "hand-made" in p.message else "InvalidMeshEndpoint",
                      "Cluster": "ClusterProblem"}.get(p.kind, "InvalidRemoteObject" if getattr(p, "cluster", "")
                                                       else "InvalidField")
            # a condition is one problem per (type, reason): its message may carry details that change
            out.append(EventReport(kind, ns, name, reason, str(p), uid=((obj or {}).get("metadata") or {}).get("uid"),
                                   key=problem_key(p), written=self._event_written))
        return out

    # -- the applier --

    def apply(self, plan) -> dict:
        self.syncs += 1
        if isinstance(plan, GlobalPlan):
            for owner, objs in plan.orphans.items():
                for o in objs:
                    log.info("MeshEndpoint %s: its Cluster %r does not exist; deleting", _key(o), owner)
                    self._delete_mep(o)
            for o in plan.rid_orphans:
                log.info("RemoteIdentity %s: its Cluster %r does not exist; deleting", _name(o), _owner(o))
                self._delete_rid(o)
            n = sum(len(v) for v in plan.orphans.values()) + len(plan.rid_orphans)
            return {"delete": n} if n else {}
        return self.apply_cluster(plan)

    def apply_cluster(self, plan: ClusterPlan) -> dict:
        """Connections first (so a new client syncs while we write), then the API writes of ``plan``."""
        from kubernetes.client.exceptions import ApiException
        name = plan.name
        with self._lock:
            if plan.no_source:
                self._no_source_since.setdefault(name, _now())
            else:
                self._no_source_since.pop(name, None)
            if plan.disconnect:
                self._drop(name)
            elif plan.connect is not None:
                self._connect(name, *plan.connect)
            promoted = self._promote(name)
        stats = collections.Counter()
        again = [plan.requeue_after] if plan.requeue_after is not None else []
        try:
            if plan.add_finalizer and plan.cluster is not None:
                self._patch_finalizers(plan.cluster, add=True)
                stats["finalizer"] += 1
            for o in plan.meps.delete:
                self._delete_mep(o)
                stats["delete"] += 1
            for body in plan.meps.create:
                if self._create_mep(body, plan.stale_since):
                    stats["create"] += 1
            for cur, body in plan.meps.replace:
                self._replace_mep(body)
                stats["replace"] += 1
            for o, patch in plan.stale_patches:
                self._patch_mep_status(o, patch)
                stats["stale"] += 1
            for o in plan.rids.delete:
                self._delete_rid(o)
                stats["rid_delete"] += 1
            for cur, body in plan.rids.replace:
                self._replace_rid(cur, body)
                stats["rid_replace"] += 1
            for body in plan.rids.create:
                self._create_rid(body)
                stats["rid_create"] += 1
            if plan.status is not None and plan.cluster is not None:
                self._write_status(plan.cluster, plan.status)
                stats["status"] += 1
            if plan.finalize and plan.cluster is not None:
                self._patch_finalizers(plan.cluster, add=False)
                stats["finalizer"] += 1
        except ApiException as e:
            if e.status not in (404, 409):
                raise
            # raced with someone (or our cache lags our own write): decide again on fresh caches
            log.info("Cluster %s: %s %s during apply; retrying", name, e.status, e.reason)
            again.append(0.05)
        if promoted:
            again.append(0.0)  # decide again on the new connection's data
        out = dict(stats)
        if again:
            # the next run decides every later deadline again (a grace period's end among them)
            out[REQUEUE_AFTER] = min(again)
        return out

    # connections (called under self._lock)

    def _connect(self, name: str, fp: str, kubeconfig: dict) -> None:
        slot = self._remotes.setdefault(name, {"active": None, "pending": None})
        old = slot.get("pending")
        if old is not None:
            _stop_later(old)  # superseded by an even newer kubeconfig before it synced
            slot["pending"] = None
        try:
            r = Remote(name, fp, kubeconfig, self.cfg, lambda: self.kick(name))
        except Exception as e:
            self._client_errors[name] = (fp, mesh.redact(f"the kubeconfig cannot be used: {type(e).__name__}: {e}",
                                                         mesh.credentials(kubeconfig)))
            log.warning("Cluster %s: %s", name, self._client_errors[name][1])
            self.kick(name)
            return
        self._client_errors.pop(name, None)
        slot["pending"] = r.start()
        log.info("Cluster %s: connecting to %s (kubeconfig %s)", name, r.server, fp)
        self._gauge()

    def _promote(self, name: str) -> bool:
        slot = self._remotes.get(name)
        if not slot or slot.get("pending") is None:
            return False
        p = slot["pending"]
        if not (p.synced() and p.connected() is True):
            return False
        old, slot["active"], slot["pending"] = slot.get("active"), p, None
        if old is not None:
            _stop_later(old)
            self._memo.pop((name, old.fingerprint), None)
            log.info("Cluster %s: now using %s (kubeconfig %s); the previous connection is closed", name, p.server,
                     p.fingerprint)
        else:
            log.info("Cluster %s: connected to %s and synced", name, p.server)
        self._gauge()
        return True

    def _drop(self, name: str, wait: bool = False) -> None:
        for k in [k for k in self._memo if k[0] == name]:
            del self._memo[k]
        slot = self._remotes.pop(name, None) or {}
        for r in (slot.get("active"), slot.get("pending")):
            if r is not None:
                r.stop() if wait else _stop_later(r)
        self._client_errors.pop(name, None)
        self._gauge()

    def _gauge(self):
        if self._m_remote is None:
            return
        n = collections.Counter()
        for slot in self._remotes.values():
            for state in ("active", "pending"):
                if slot.get(state) is not None:
                    n[state] += 1
        for state in ("active", "pending"):
            self._m_remote.labels(state).set(n[state])

    # API writes

    def _count(self, verb: str):
        self.writes[verb] += 1
        if self._m_writes is not None:
            self._m_writes.labels(verb).inc()

    def _create_mep(self, body: dict, stale_since: Optional[str]) -> bool:
        from kubernetes.client.exceptions import ApiException
        m = body["metadata"]
        try:
            created = self.custom.create_namespaced_custom_object(GROUP, VERSION, m["namespace"], "meshendpoints",
                                                                  body, _preload_content=False)
        except ApiException as e:
            if e.status in (403, 404):
                log.info("MeshEndpoint %s/%s: namespace not accepting objects (%s)", m["namespace"], m["name"],
                         e.status)
                return False
            raise
        self._count("create")
        obj = json.loads(created.data)
        self._mep_ov.put(obj)
        if stale_since is not None:
            self._patch_mep_status(obj, {"status": {"stale": True, "staleSince": stale_since}})
        return True

    def _replace_mep(self, body: dict) -> None:
        m = body["metadata"]
        resp = self.custom.replace_namespaced_custom_object(GROUP, VERSION, m["namespace"], "meshendpoints",
                                                            m["name"], body, _preload_content=False)
        self._count("replace")
        self._mep_ov.put(json.loads(resp.data))

    def _delete_mep(self, o: dict) -> None:
        from kubernetes.client.exceptions import ApiException
        m = o["metadata"]
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, m["namespace"], "meshendpoints", m["name"],
                                                        body={"preconditions": {"uid": m.get("uid")}}
                                                        if m.get("uid") else None)
        except ApiException as e:
            if e.status not in (404, 409):  # gone already / a new object of that name: not ours to delete
                raise
        else:
            self._count("delete")
        self._mep_ov.gone(_key(o), m.get("uid"))

    def _patch_mep_status(self, o: dict, patch: dict) -> None:
        m = o["metadata"]
        resp = self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, m["namespace"], "meshendpoints",
                                                                 m["name"], patch, _preload_content=False)
        self._count("stale")
        self._mep_ov.put(json.loads(resp.data))

    def _create_rid(self, body: dict) -> None:
        """Create a RemoteIdentity. Clusters are reconciled in parallel and each decides ids on its own
        snapshot: under the lock, an id another cluster's reconcile took meanwhile is re-picked first."""
        with self._lock:
            taken = {(o.get("spec") or {}).get("id") for o in self._rid_ov.view(self._rid_cache())
                     if _name(o) != body["metadata"]["name"]}
            ident = body["spec"]["id"]
            if ident in taken:
                seed = {"namespaceLabels": {"cluster": body["spec"]["cluster"], "namespace": body["spec"]["namespace"]},
                        "podLabels": body["spec"]["podLabels"]}
                ident = idm.allocate_id(seed, taken, idm.REMOTE_ID_MIN, idm.REMOTE_ID_MAX)
                body = {**body, "metadata": {**body["metadata"], "labels": {**body["metadata"]["labels"],
                                                                            idm.ID_LABEL: str(ident)}},
                        "spec": {**body["spec"], "id": ident}}
            resp = self.custom.create_cluster_custom_object(GROUP, VERSION, idm.REMOTE_PLURAL, body,
                                                            _preload_content=False)
            self._count("rid_create")
            self._rid_ov.put(json.loads(resp.data))

    def _rid_cache(self) -> List[dict]:
        caches = getattr(self.runner, "caches", None) or {}
        inf = caches.get("remoteidentities")
        return inf.list() if inf is not None else []

    def _replace_rid(self, cur: dict, body: dict) -> None:
        body = {**body, "metadata": {**body["metadata"],
                                     "resourceVersion": (cur.get("metadata") or {}).get("resourceVersion")}}
        resp = self.custom.replace_cluster_custom_object(GROUP, VERSION, idm.REMOTE_PLURAL, _name(body), body,
                                                         _preload_content=False)
        self._count("rid_replace")
        self._rid_ov.put(json.loads(resp.data))

    def _delete_rid(self, o: dict) -> None:
        from kubernetes.client.exceptions import ApiException
        m = o["metadata"]
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, idm.REMOTE_PLURAL, m["name"],
                                                     body={"preconditions": {"uid": m.get("uid")}}
                                                     if m.get("uid") else None)
        except ApiException as e:
            if e.status not in (404, 409):
                raise
        else:
            self._count("rid_delete")
        self._rid_ov.gone(m["name"], m.get("uid"))

    def _write_status(self, cluster: dict, status: dict) -> None:
        prev = cluster.get("status") or {}
        body = {"status": {**{k: None for k in prev if k not in status}, **status}}
        resp = self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "clusters", _name(cluster), body,
                                                              _preload_content=False)
        self._count("status")
        self._cluster_ov.put(json.loads(resp.data))

    def _patch_finalizers(self, cluster: dict, add: bool) -> None:
        m = cluster["metadata"]
        fins = [f for f in m.get("finalizers") or () if f != mesh.FINALIZER]
        if add:
            fins.append(mesh.FINALIZER)
        # the resourceVersion makes this a compare-and-swap: another writer's finalizer is never lost
        resp = self.custom.patch_cluster_custom_object(
            GROUP, VERSION, "clusters", m["name"],
            {"metadata": {"finalizers": fins, "resourceVersion": m.get("resourceVersion")}}, _preload_content=False)
        self._count("finalizer")
        if add:  # a removal may have been the object's end: nothing to shadow
            self._cluster_ov.put(json.loads(resp.data))
        if not add:
            log.info("Cluster %s: every MeshEndpoint it owned is deleted; finalizer removed", m["name"])

    # views

    def status(self) -> dict:
        with self._lock:
            out = {}
            for name, slot in self._remotes.items():
                out[name] = {k: {"server": r.server, "fingerprint": r.fingerprint, "synced": r.synced(),
                                 "connected": r.connected(), "error": r.last_error(), "resyncs": r.resyncs}
                             for k, r in slot.items() if r is not None}
        return {"remotes": out, "writes": dict(self.writes)}


def _stop_later(r: Remote) -> None:
    # a remote stuck in a list request may take its read timeout to notice: never hold up a reconcile for it
    threading.Thread(target=r.stop, name=f"stop-{r.cluster}", daemon=True).start()


def _name(o: dict) -> str:
    return (o.get("metadata") or {}).get("name", "")


def _owner(o: dict) -> Optional[str]:
    return ((o.get("metadata") or {}).get("labels") or {}).get(mesh.CLUSTER_OWNER)


def _key(o: dict) -> str:
    m = o.get("metadata") or {}
    return f"{m.get('namespace')}/{m.get('name')}" if m.get("namespace") else m.get("name", "")
