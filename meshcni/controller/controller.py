# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni controller``: cluster-wide identity allocation and the multi-cluster mesh
(:mod:`.clustermesh`) (a Deployment, one active replica).

Bring-up, in order:
1. /healthz /readyz /metrics on ``metrics_address``;
2. informers on Pods, Namespaces, NetworkPolicies, Identities (all
   namespaces) and CIDRIdentities, the mesh's (Clusters, their Secrets,
   Services, Nodes, MeshEndpoints), and one :class:`~meshcni.k8s.Runner`
   over the reconcilers of :mod:`meshcni.controller.identities` and the
   mesh (:class:`~meshcni.controller.clustermesh.ClusterMesh`, keyed by
   Cluster); nothing is decided before all have synced, so existing
   Identities (and their ids) are known before any is allocated;
3. ready (followers too: they are a warm standby);
4. leader election on a Lease. The runner's gate is the leadership: only
   the leader reconciles; on winning the lease it forgets what it reported
   and runs everything again; on losing it the mesh closes its remote
   connections.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..health import HealthServer
from ..k8s import EventRecorder, Informer, LeaderElector, ReconcileMetrics, Runner, api_client
from ..k8s.events import DEFAULT_REASON
from ..controllers import identity as idm
from .clustermesh import ClusterMesh, MeshConfig
from .identities import CIDRIdentities, Identities

log = logging.getLogger("meshcni.controller")


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ControllerConfig:
    kubeconfig: Optional[str] = None
    leader_elect: bool = True
    lease_namespace: str = "kube-system"
    lease_name: str = "meshcni-controller"
    identity: str = field(default_factory=default_identity)
    metrics_address: str = "127.0.0.1:9963"
    gc_grace: float = 300.0          # seconds an Identity may stay unused before it is deleted
    sync_timeout: float = 60.0       # seconds to wait for the informers' first list
    lease_duration: float = 15.0     # seconds; client-go's defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    workers: int = 4                 # identities, CIDR identities, and the mesh's Clusters side by side
    # the multi-cluster mesh (clustermesh.py)
    cluster_name: str = "default"
    namespace: str = "meshcni-system"  # the controller's own: kubeconfig Secrets of remote clusters
    mesh_stale_grace: float = 300.0    # seconds a remote's MeshEndpoints outlive losing it (Cluster may override)
    service_cidrs: Tuple[str, ...] = ()


def _handmade(problem) -> bool:
    return "hand-made" in problem.message


def event_reason(problem) -> str:
    if _handmade(problem):
        return "HandMadeIdentity"
    if problem.kind == "NetworkPolicy":
        return "InvalidIPBlock"
    if problem.kind in ("Identity", "CIDRIdentity"):
        return "IdentityCollision"
    return DEFAULT_REASON


class _RunnerMetrics(ReconcileMetrics):
    """The runner's metrics, plus the controller's older per-process counters of the same events."""

    def __init__(self, registry, reconciles, errors, handmade, problems):
        super().__init__(registry)
        self.legacy = (reconciles, errors, handmade, problems)

    def observe(self, controller: str, outcome: str, seconds: Optional[float] = None) -> None:
        super().observe(controller, outcome, seconds)
        reconciles, errors, _, _ = self.legacy
        reconciles.labels(controller).inc()
        if outcome == "error":
            errors.labels(controller).inc()

    def bad_input(self, problem) -> None:
        super().bad_input(problem)
        _, _, handmade, problems = self.legacy
        (handmade if _handmade(problem) else problems).labels(problem.kind).inc()


class Metrics:
    """prometheus-client registry of the controller (own registry: tests run several controllers)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.identities = Gauge("meshcni_controller_identities", "managed identities by kind", ["kind"], registry=r)
        self.allocations = Counter("meshcni_controller_allocations_total", "identities created, by kind",
                                   ["kind"], registry=r)
        self.collisions = Counter("meshcni_controller_id_collisions_total",
                                  "id collisions: probed past a used id (probe) or two objects with one id "
                                  "(duplicate), by kind", ["kind", "type"], registry=r)
        self.gc_deletions = Counter("meshcni_controller_gc_deletions_total", "identities deleted, by kind and reason",
                                    ["kind", "reason"], registry=r)
        self.leader = Gauge("meshcni_controller_leader", "1 while this replica is the leader", registry=r)
        self.reconcile = _RunnerMetrics(
            r, Counter("meshcni_controller_reconcile_total", "reconciles by key", ["controller"], registry=r),
            Counter("meshcni_controller_reconcile_errors_total", "failed reconciles by key", ["controller"],
                    registry=r),
            Counter("meshcni_controller_handmade_total", "hand-made identity reports, by kind", ["kind"], registry=r),
            Counter("meshcni_controller_bad_input_total", "bad-input reports, by kind", ["kind"], registry=r))


def make_informers(api) -> List[Informer]:
    core, custom, net = client.CoreV1Api(api), client.CustomObjectsApi(api), client.NetworkingV1Api(api)
    return [Informer(core.list_pod_for_all_namespaces, name="pods"),
            Informer(core.list_namespace, name="namespaces"),
            Informer(net.list_network_policy_for_all_namespaces, name="networkpolicies"),
            Informer(custom.list_cluster_custom_object, idm.GROUP, idm.VERSION, "identities", name="identities"),
            Informer(custom.list_cluster_custom_object, idm.GROUP, idm.VERSION, "cidridentities",
                     name="cidridentities")]


class Controller:
    def __init__(self, cfg: ControllerConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.leading = threading.Event()
        self.caches: Dict[str, Informer] = {}
        self.events: Optional[EventRecorder] = None
        self.runner: Optional[Runner] = None
        self.elector: Optional[LeaderElector] = None
        self._http: Optional[HealthServer] = None
        self.metrics_port = 0
        self.mesh: Optional[ClusterMesh] = None

    def start(self) -> "Controller":
        cfg = self.cfg
        self._http = HealthServer(cfg.metrics_address, self.ready, self.metrics.registry,
                                  views={"/status": self.status}, name="controller")
        self.metrics_port = self._http.port
        api = api_client(cfg.kubeconfig)
        custom = client.CustomObjectsApi(api)
        self.mesh = ClusterMesh(api, MeshConfig(cluster_name=cfg.cluster_name, namespace=cfg.namespace,
                                                stale_grace=cfg.mesh_stale_grace,
                                                service_cidrs=tuple(cfg.service_cidrs)), self.metrics.registry)
        self.caches = {**{i.name: i for i in make_informers(api)}, **self.mesh.informers()}
        self.events = EventRecorder(client.CoreV1Api(api), "meshcni-controller", cfg.identity, reason=event_reason)
        reconcilers = [Identities(custom, cfg.gc_grace, self.metrics), CIDRIdentities(custom, self.metrics), self.mesh]
        self.runner = self.mesh.runner = Runner("controller", self.caches, reconcilers, self.events,
                                                self.metrics.reconcile, gate=self.leading, workers=cfg.workers,
                                                sync_timeout=cfg.sync_timeout)
        self.runner.start()
        self.ready.set()
        if cfg.leader_elect:
            self.elector = LeaderElector(api, cfg.lease_name, cfg.lease_namespace, cfg.identity,
                                         lease_duration=cfg.lease_duration, renew_deadline=cfg.renew_deadline,
                                         retry_period=cfg.retry_period, on_started_leading=self._started_leading,
                                         on_stopped_leading=self._stopped_leading).start()
        else:
            self._started_leading()
        log.info("ready (%s)", f"campaigning for lease {cfg.lease_namespace}/{cfg.lease_name} as {cfg.identity}"
                 if cfg.leader_elect else "leader election off: acting at once")
        return self

    def _started_leading(self):
        self.leading.set()
        self.metrics.leader.set(1)
        # a new leader trusts nothing it heard as a follower: forget what it reported, re-read all
        self.events.forget()
        self.runner.kick_all()

    def _stopped_leading(self):
        self.leading.clear()
        self.metrics.leader.set(0)
        if self.mesh is not None:
            self.mesh.stopped_leading()

    def stop(self) -> None:
        if self.elector is not None:
            self.elector.stop()  # releases the lease, so a standby takes over without waiting it out
        self.leading.clear()
        if self.runner is not None:
            self.runner.stop()
        if self.mesh is not None:
            self.mesh.stop()
        for inf in self.caches.values():
            inf.stop()  # those the runner never started (start failed before it)
        if self._http:
            self._http.stop()
        log.info("stopped")

    def status(self) -> dict:
        return {"identity": self.cfg.identity, "ready": self.ready.is_set(), "leader": self.leading.is_set(),
                "informers": {n: {"synced": i.has_synced(), "objects": len(i)} for n, i in self.caches.items()},
                "mesh": self.mesh.status() if self.mesh is not None else None}
