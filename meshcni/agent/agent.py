# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni agent``: one per node. Loads the datapath, installs the CNI plugin, runs the node's reconcilers.

Bring-up, in order (each step logged):
1. wait for this Node object (its podCIDR is the CNI's IPAM subnet);
2. the datapath (:class:`~meshcni.datapath.node.NodeDatapath`): the pinned
   maps, the socket LB on the node's cgroup v2, the tc programs pinned under
   ``<bpf-root>/progs`` for the plugin;
3. the local API on the unix socket, endpoints restored from the plugin's records;
4. the CNI plugin and its conflist (datapath required, agentSocket set);
5. informers, and one :class:`~meshcni.k8s.Runner` over the reconcilers of
   :mod:`meshcni.agent.reconcilers` (Services with the managed MeshEndpoints
   of meshed ones, ipcache + endpoints, NetworkPolicy, routes to the other
   nodes and to the remote clusters' nodes): nothing is written before every informer has
   listed (a partial cache must never remove a live backend), and every
   reconciler has run once before
6. ready: /readyz turns 200 and the startup taint ``mesh-cni.dev/startup``
   comes off the Node.

On SIGTERM the agent stops its reconcilers and leaves the datapath as it is:
established and new connections keep working while it restarts.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..cni import endpoints as cni_endpoints
from ..cni.install import install, shim_binary
from ..controllers.netpol import FAIL_CLOSED_FIELD
from ..controllers.services import ServiceIDs
from ..datapath.node import NodeDatapath
from ..datapath.routes import RouteDatapath
from .. import health
from ..health import HealthServer
from ..k8s import EventRecorder, Informer, ReconcileMetrics, Runner, SyncTimeout, api_client
from ..k8s.events import DEFAULT_REASON
from ..k8s.trim import trim_endpointslice, trim_pod, trim_service
from .healthcheck import HealthChecks
from .localapi import LocalAPI, identities_view
from .reconcilers import IPCache, Pins, Policy, Routes, Services
from .uplink import Uplink, UplinkOptions

log = logging.getLogger("meshcni.agent")
STARTUP_TAINT = "mesh-cni.dev/startup"
CRD_INFORMERS = ("identities", "cidridentities", "meshendpoints", "clusters", "remoteidentities")


def event_reason(problem) -> str:
    """The Event reason of an agent problem: its own (a Service not served), a pod whose policy failed
    closed, or bad input."""
    return getattr(problem, "reason", "") or ("PolicyFailClosed" if problem.field == FAIL_CLOSED_FIELD
                                              else DEFAULT_REASON)


@dataclass
class AgentConfig:
    node_name: str
    kubeconfig: Optional[str] = None
    bpf_root: str = "/sys/fs/bpf/meshcni"
    cgroup_root: str = "/sys/fs/cgroup"
    cni_bin_dir: str = "/opt/cni/bin"
    cni_conf_dir: str = "/etc/cni/net.d"
    chained: bool = False
    socket: str = "/var/run/meshcni/agent.sock"
    state_dir: str = "/var/run/meshcni"
    metrics_address: str = "127.0.0.1:9962"
    ipam_dir: str = "/var/lib/cni/meshcni"
    routes: bool = True
    cni_shim: Optional[bool] = None  # None: the compiled shim when it was built
    cni_fallback: bool = True  # the Python plugin beside the shim (only where this interpreter is the node's)
    sync_timeout: float = 60.0
    # (first, max) seconds between an informer's reconnect attempts while the API server is away:
    # the max bounds how long after its return the agent notices (< 5 s with the ±50% jitter); each
    # attempt to a server that is gone is one refused connection
    api_backoff: tuple = (0.2, 2.0)
    pin_check_interval: float = 10.0  # seconds between checks of the datapath's pins
    cluster_name: str = "default"     # mesh-cni.dev/cluster of this cluster's pods (NetworkPolicy peers)
    uplink: Optional[UplinkOptions] = None  # NodePort from outside and masquerade (None: the defaults)
    nodeport_addresses: Optional[List[str]] = None  # CIDRs; None: the Node's InternalIP/ExternalIP addresses
    service_resync: float = 300.0     # seconds between full resyncs of the Service maps (drift repaired, counted)


class Metrics:
    """prometheus-client registry of the agent (own registry: tests run several agents)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.reconcile = ReconcileMetrics(r)  # meshcni_reconcile_total / _seconds, meshcni_bad_input_total
        self.services = Gauge("meshcni_services", "datapath services programmed", registry=r)
        self.backends = Gauge("meshcni_backends", "backends across programmed services", registry=r)
        self.service_drift = Counter("meshcni_service_resync_repaired", "service map entries and desired rows a "
                                     "periodic resync found different from what the incremental path kept",
                                     registry=r)
        self.map_entries = Gauge("meshcni_map_entries", "entries per pinned map", ["map"], registry=r)
        self.map_capacity = Gauge("meshcni_map_capacity", "capacity per pinned map", ["map"], registry=r)
        self.endpoints = Gauge("meshcni_endpoints", "local endpoints", registry=r)
        self.drops = Gauge("meshcni_drops", "packets dropped by the tc programs, by reason (since load)", ["reason"],
                           registry=r)
        self.ipcache = Gauge("meshcni_ipcache_entries", "prefixes in the ipcache", registry=r)
        self.policy_entries = Gauge("meshcni_policy_entries", "policy map entries desired", registry=r)
        self.enforced = Gauge("meshcni_policy_enforced", "(identity, direction) pairs isolated", registry=r)
        self.fail_closed = Gauge("meshcni_policy_fail_closed",
                                 "(identity, direction) pairs denied all but host traffic: their policy did not fit",
                                 registry=r)
        self.ipcache_collisions = Gauge("meshcni_ipcache_cidr_atoms",
                                        "sets of overlapping CIDRIdentities given an agent-local atom id", registry=r)
        self.incremental_drift = Counter("meshcni_incremental_drift_total",
                                         "map rows a periodic full resync rewrote after incremental updates",
                                         ["map"], registry=r)
        self.pin_repairs = Counter("meshcni_pin_repairs_total",
                                   "pins found deleted (outcome repaired / failed) or replaced by another object, "
                                   "by pin path under the bpf root", ["pin", "outcome"], registry=r)


def make_informers(api, backoff: tuple = (0.2, 2.0)) -> List[Informer]:
    """Every resource the agent's reconcilers read. Pods, Services and slices are trimmed to the
    fields read (KiB per pod) and listed in pages, so a whole list of full objects is never in memory."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    disc, net = client.DiscoveryV1Api(api), client.NetworkingV1Api(api)
    infs = [Informer(core.list_service_for_all_namespaces, name="services", transform=trim_service, page_size=500),
            Informer(disc.list_endpoint_slice_for_all_namespaces, name="endpointslices",
                     transform=trim_endpointslice, page_size=500),
            Informer(core.list_node, name="nodes"),
            Informer(core.list_pod_for_all_namespaces, name="pods", transform=trim_pod, page_size=500),
            Informer(core.list_namespace, name="namespaces"),
            Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "identities", name="identities"),
            Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "cidridentities",
                     name="cidridentities"),
            Informer(net.list_network_policy_for_all_namespaces, name="networkpolicies"),
            # the mesh: remote backends and remote nodes, both written by the controller (never a Secret here)
            Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "meshendpoints",
                     name="meshendpoints"),
            Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "clusters", name="clusters"),
            Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "remoteidentities",
                     name="remoteidentities")]
    for i in infs:
        i.backoff = backoff
    return infs


def local_addresses() -> List[str]:
    """Every address on this network namespace's interfaces but loopback and link-local (the candidates
    ``--nodeport-addresses`` chooses from)."""
    import ipaddress
    from pyroute2 import IPRoute
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            a = msg.get_attr("IFA_ADDRESS")
            if a is None:
                continue
            ip = ipaddress.ip_address(a)
            if not (ip.is_loopback or ip.is_link_local):
                out.append(str(ip))
    return out


def pod_ip_names(pods, remote_identities=()) -> Dict[str, str]:
    """pod IP -> "namespace/name", or "cluster:namespace/name" for a remote cluster's pod
    (GET /v1/ips, for monitors)."""
    out = {}
    for o in remote_identities:
        spec = o.get("spec") or {}
        for p in spec.get("pods") or []:
            for ip in (p.get("ips") or []) if isinstance(p, dict) else []:
                out[str(ip)] = f"{spec.get('cluster', '')}:{spec.get('namespace', '')}/{p.get('name', '')}"
    for p in pods:
        m, st = p.get("metadata") or {}, p.get("status") or {}
        for x in st.get("podIPs") or ([{"ip": st["podIP"]}] if st.get("podIP") else []):
            if isinstance(x, dict) and isinstance(x.get("ip"), str):
                out[x["ip"]] = f"{m.get('namespace', '')}/{m.get('name', '')}"
    return out


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.api = None
        self.core = None
        self.pod_cidrs: List[str] = []
        self.datapath: Optional[NodeDatapath] = None
        self.localapi: Optional[LocalAPI] = None
        self.caches: Dict[str, Informer] = {}
        self.services: Optional[Services] = None
        self.healthchecks: Optional[HealthChecks] = None
        self.ipcache: Optional[IPCache] = None
        self.policy: Optional[Policy] = None
        self.runner: Optional[Runner] = None
        self._http: Optional[HealthServer] = None

    def start(self) -> "Agent":
        cfg = self.cfg
        self._http = HealthServer(cfg.metrics_address, self.ready, self.metrics.registry,
                                  before_metrics=self._update_map_gauges, name="agent")
        self.api = api_client(cfg.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        spec = self._wait_node()["spec"]
        self.pod_cidrs = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
        log.info("node %s: podCIDRs %s", cfg.node_name, ",".join(self.pod_cidrs) or "(none)")

        dp = self.datapath = NodeDatapath(cfg.bpf_root, cfg.cgroup_root)
        log.info("socket LB on cgroup %s: %s", cfg.cgroup_root,
                 ", ".join(f"{k} {v}" for k, v in sorted(dp.attached.items())))
        log.info("tc programs pinned under %s/progs: %s", cfg.bpf_root, dp.programs)
        m = self.metrics
        self.services = Services(dp.services, ServiceIDs(os.path.join(cfg.state_dir, "service-ids.json")), m, log,
                                 cfg.node_name, cfg.nodeport_addresses, local_addresses, cfg.service_resync)
        self.healthchecks = HealthChecks(cfg.node_name, self.services.node_context)
        self.ipcache = IPCache(dp.ipcache, dp.endpoints, cfg.node_name, self._local_endpoints, m)
        self.policy = Policy(dp.policy, m, cluster_name=cfg.cluster_name)
        events = EventRecorder(self.core, "meshcni-agent", cfg.node_name, host=cfg.node_name, reason=event_reason)
        reconcilers = [self.services, self.healthchecks, self.ipcache, self.policy,
                       Pins(dp.check_pins, cfg.node_name, events, m, cfg.pin_check_interval)]
        if cfg.routes:
            reconcilers.append(Routes(RouteDatapath(), cfg.node_name))
        reconcilers.append(Uplink.for_agent(cfg.bpf_root, dp.maps, cfg.node_name, cfg.uplink))

        self.localapi = LocalAPI(cfg.socket, self.status, on_change=self._endpoints_changed,
                                 views={"/v1/services": self.services.view, "/v1/policy": self.policy.view,
                                        "/v1/healthchecks": self.healthchecks.view,
                                        "/v1/ips": lambda: pod_ip_names(self.caches["pods"].list(),
                                                                        self.caches["remoteidentities"].list()),
                                        # meshcni identity list / bpf ipcache list: labels and cluster per id
                                        "/v1/identities": lambda: identities_view(
                                            self.caches["identities"].list(), self.caches["cidridentities"].list(),
                                            self.caches["remoteidentities"].list(), cfg.cluster_name)})
        self.localapi.load(cni_endpoints.all_records(cfg.state_dir))
        self.localapi.start()
        m.endpoints.set(len(self.localapi.endpoints))
        log.info("local API on %s (%d endpoints restored)", cfg.socket, len(self.localapi.endpoints))
        self._install_cni()

        self.caches = {i.name: i for i in make_informers(self.api, tuple(cfg.api_backoff))}
        self.runner = Runner("agent", self.caches, reconcilers, events, m.reconcile, sync_timeout=cfg.sync_timeout)
        try:
            self.runner.start()  # every reconciler ran once on complete caches
        except SyncTimeout as e:
            if e.informer in CRD_INFORMERS:
                raise RuntimeError(f"{e} (are the meshcni CRDs installed? kubectl apply -k deploy/crds)") from None
            raise
        # /healthz: 503 once the worker, an informer or the pinned datapath is stuck or gone
        health.watch(self._http.liveness, queue=self.runner.queue, informers=self.informers,
                     pins=[os.path.join(cfg.bpf_root, d) for d in ("progs", "links")])
        self._remove_startup_taint()
        self.ready.set()
        log.info("ready")
        return self

    @property
    def informers(self) -> List[Informer]:
        return list(self.caches.values())

    def programmed_services(self) -> list:
        return self.services.view() if self.services else []

    def _local_endpoints(self) -> List[dict]:
        with self.localapi.lock:
            return list(self.localapi.endpoints.values())

    def _endpoints_changed(self) -> None:
        self.metrics.endpoints.set(len(self.localapi.endpoints))
        if self.runner is not None:
            self.runner.kick(self.ipcache.name)

    def _wait_node(self) -> dict:
        deadline = time.monotonic() + self.cfg.sync_timeout
        while True:
            try:
                return self.api.sanitize_for_serialization(self.core.read_node(self.cfg.node_name))
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise RuntimeError(f"Node {self.cfg.node_name}: {e.reason}") from None
            time.sleep(0.5)

    def _install_cni(self) -> None:
        cfg = self.cfg
        shim = cfg.cni_shim if cfg.cni_shim is not None else shim_binary() is not None
        kw = dict(datapath="required", bpf_root=cfg.bpf_root, state_dir=cfg.state_dir, agent_socket=cfg.socket,
                  shim=shim, fallback=cfg.cni_fallback)
        if cfg.chained:
            done = install(cfg.cni_bin_dir, cfg.cni_conf_dir, chained=True, **kw)
        else:
            if not self.pod_cidrs:
                raise RuntimeError(f"Node {cfg.node_name}: spec.podCIDR is empty; standalone IPAM needs it")
            done = install(cfg.cni_bin_dir, cfg.cni_conf_dir, subnets=self.pod_cidrs, data_dir=cfg.ipam_dir, **kw)
        log.info("CNI installed: %s", json.dumps(done))

    def _remove_startup_taint(self) -> None:
        node = self.api.sanitize_for_serialization(self.core.read_node(self.cfg.node_name))
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t.get("key") != STARTUP_TAINT]
        if len(keep) != len(taints):
            self.core.patch_node(self.cfg.node_name, {"spec": {"taints": keep or None}})
            log.info("startup taint %s removed from Node %s", STARTUP_TAINT, self.cfg.node_name)

    def status(self) -> dict:
        return {"node": self.cfg.node_name, "ready": self.ready.is_set(), "podCIDRs": self.pod_cidrs,
                "endpoints": len(self.localapi.endpoints) if self.localapi else 0,
                "services": self.runner.last.get("services", {}) if self.runner else {},
                "ipcache": self.ipcache.size if self.ipcache else 0,
                "policy": self.policy.stats if self.policy else {},
                "informers": {i.name: {"synced": i.has_synced(), "objects": len(i.list()),
                                       "relists": i.relists, "watchRestarts": i.watch_restarts}
                              for i in self.informers}}

    def _update_map_gauges(self) -> None:
        if self.datapath is None:
            return
        try:
            for reason, (pkts, _bytes) in self.datapath.drop_counts().items():
                self.metrics.drops.labels(reason).set(pkts)
        except OSError as e:
            log.debug("drop counters: %s", e)
        for name, (entries, capacity) in self.datapath.usage().items():
            self.metrics.map_entries.labels(name).set(entries)
            self.metrics.map_capacity.labels(name).set(capacity)

    def stop(self) -> None:
        """Stop reconcilers and servers; the datapath stays (pins and links survive us)."""
        if self.runner is not None:
            self.runner.stop()  # waits for a reconcile in flight: the maps stay open until it is done
        for inf in self.caches.values():
            inf.stop()  # those the runner never started (start failed before it)
        if self.healthchecks is not None:
            self.healthchecks.close()
        if self.localapi:
            self.localapi.stop()
        if self._http:
            self._http.stop()
        if self.datapath is not None:
            self.datapath.close()
        log.info("stopped (datapath left in place)")
