# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni agent``: one per node. Loads the datapath, installs the CNI plugin, runs the node's controllers.

Bring-up, in order (each step logged):
1. wait for this Node object (its podCIDR is the CNI's IPAM subnet);
2. the datapath: service maps (pinned, reused across restarts), the socket LB
   attached to the node's cgroup v2 (links pinned, so it outlives the agent),
   the pod-facing tc programs pinned under ``<bpf-root>/progs`` for the plugin;
3. the local API on the unix socket, endpoints restored from the plugin's records;
4. the CNI plugin and its conflist (datapath required, agentSocket set);
5. informers for Services, EndpointSlices, MeshEndpoints, Clusters, ...;
   nothing is written to a map before every one has synced (a partial cache
   must never remove a live backend, local or remote);
6. the Service controller: every change enqueues one key, a worker computes
   the desired Services (local backends + managed MeshEndpoints) from the
   caches and reconciles the maps in batches; the routes controller routes the
   other nodes' and the remote clusters' (Cluster ``status.nodes``) pod CIDRs;
7. ready: /readyz turns 200 and the startup taint ``mesh-cni.dev/startup``
   comes off the Node.

On SIGTERM the agent stops its controllers and leaves the datapath as it is:
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

from .. import health

log = logging.getLogger("meshcni.agent")
STARTUP_TAINT = "mesh-cni.dev/startup"
SERVICES_KEY = "services"
ROUTES_KEY = "routes"
IPCACHE_KEY = "ipcache"
POLICY_KEY = "policy"
RTPROT_MESHCNI = 191  # routes the agent owns (and may delete); others are never touched


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


class Metrics:
    """prometheus-client registry of the agent (own registry: tests run several agents)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.reconciles = Counter("meshcni_reconcile_total", "reconciles by controller and outcome",
                                  ["controller", "outcome"], registry=self.registry)
        self.duration = Histogram("meshcni_reconcile_seconds", "reconcile duration by controller", ["controller"],
                                  registry=self.registry)
        self.problems = Counter("meshcni_bad_input_total", "objects left out for bad input, by kind",
                                ["kind"], registry=self.registry)
        self.services = Gauge("meshcni_services", "datapath services programmed", registry=self.registry)
        self.backends = Gauge("meshcni_backends", "backends across programmed services", registry=self.registry)
        self.map_entries = Gauge("meshcni_map_entries", "entries per pinned map", ["map"], registry=self.registry)
        self.map_capacity = Gauge("meshcni_map_capacity", "capacity per pinned map", ["map"], registry=self.registry)
        self.endpoints = Gauge("meshcni_endpoints", "local endpoints", registry=self.registry)
        self.drops = Gauge("meshcni_drops", "packets dropped by the tc programs, by reason (since load)", ["reason"],
                           registry=self.registry)
        self.ipcache = Gauge("meshcni_ipcache_entries", "prefixes in the ipcache", registry=self.registry)
        self.policy_entries = Gauge("meshcni_policy_entries", "policy map entries desired", registry=self.registry)
        self.enforced = Gauge("meshcni_policy_enforced", "(identity, direction) pairs isolated",
                              registry=self.registry)
        self.fail_closed = Gauge("meshcni_policy_fail_closed",
                                 "(identity, direction) pairs denied all but host traffic: their policy did not fit",
                                 registry=self.registry)
        self.ipcache_collisions = Gauge("meshcni_ipcache_cidr_atoms",
                                        "sets of overlapping CIDRIdentities given an agent-local atom id",
                                        registry=self.registry)


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.informers = []
        self.queue = None
        self.svc_dp = None
        self.socklb = None
        self.policy = None
        self.localapi = None
        self._http = None
        self.last_reconcile: Dict[str, object] = {}
        self.programmed: list = []
        self._reported: Dict[str, set] = {}  # controller -> the problems it reported last time
        self.pod_cidrs: List[str] = []

    # -- bring-up --

    def start(self) -> "Agent":
        from kubernetes import client
        from ..k8s import Informer, WorkQueue, api_client, run_workers
        cfg = self.cfg
        self._start_http()
        self.api = api_client(cfg.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        node = self._wait_node()
        self.pod_cidrs = list(node["spec"].get("podCIDRs") or ([node["spec"]["podCIDR"]]
                                                               if node["spec"].get("podCIDR") else []))
        log.info("node %s: podCIDRs %s", cfg.node_name, ",".join(self.pod_cidrs) or "(none)")
        self._start_datapath()
        from ..cni import endpoints as eps
        from .localapi import LocalAPI
        self.localapi = LocalAPI(cfg.socket, self.status,
                                 on_change=self._endpoints_changed,
                                 views={"/v1/services": self.programmed_services,
                                        "/v1/policy": self.policy_view, "/v1/ips": self.ip_names})
        self.localapi.load(eps.all_records(cfg.state_dir))
        self.localapi.start()
        self.metrics.endpoints.set(len(self.localapi.endpoints))
        log.info("local API on %s (%d endpoints restored)", cfg.socket, len(self.localapi.endpoints))
        self._install_cni()
        disc = client.DiscoveryV1Api(self.api)
        from ..k8s.trim import trim_endpointslice, trim_pod, trim_service
        self.services = Informer(self.core.list_service_for_all_namespaces, name="services", transform=trim_service,
                                 page_size=500)
        self.slices = Informer(disc.list_endpoint_slice_for_all_namespaces, name="endpointslices",
                               transform=trim_endpointslice, page_size=500)
        self.nodes = Informer(self.core.list_node, name="nodes")
        custom = client.CustomObjectsApi(self.api)
        # every pod of the cluster is cached: only the fields the controllers read (KiB per pod),
        # listed in pages so that a whole list of full objects is never in memory at once
        self.pods = Informer(self.core.list_pod_for_all_namespaces, name="pods", transform=trim_pod,
                             page_size=500)
        self.namespaces = Informer(self.core.list_namespace, name="namespaces")
        self.identities = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "identities",
                                   name="identities")
        self.cidr_identities = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1",
                                        "cidridentities", name="cidridentities")
        net = client.NetworkingV1Api(self.api)
        self.netpols = Informer(net.list_network_policy_for_all_namespaces, name="networkpolicies")
        # the mesh: remote backends and remote nodes, both written by the controller (never a Secret here)
        self.meshendpoints = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1",
                                      "meshendpoints", name="meshendpoints")
        self.clusters = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "clusters",
                                 name="clusters")
        self.queue = WorkQueue(name="agent")
        wiring = ((self.services, (SERVICES_KEY,)), (self.slices, (SERVICES_KEY,)),
                  (self.nodes, (ROUTES_KEY, IPCACHE_KEY)), (self.pods, (IPCACHE_KEY, POLICY_KEY)),
                  (self.namespaces, (IPCACHE_KEY, POLICY_KEY)), (self.identities, (IPCACHE_KEY, POLICY_KEY)),
                  (self.cidr_identities, (IPCACHE_KEY, POLICY_KEY)), (self.netpols, (POLICY_KEY,)),
                  (self.meshendpoints, (SERVICES_KEY,)), (self.clusters, (ROUTES_KEY,)))
        for inf, keys in wiring:
            def kick(*_, ks=keys):
                for k in ks:
                    self.queue.add(k)
            inf.add_handler(kick, kick, kick)
            inf.start()
            self.informers.append(inf)
        for inf in self.informers:
            if not inf.wait_for_sync(cfg.sync_timeout):
                hint = " (are the meshcni CRDs installed? kubectl apply -k deploy/crds)" \
                    if inf.name in ("identities", "cidridentities", "meshendpoints", "clusters") else ""
                raise RuntimeError(f"informer {inf.name}: no initial list within {cfg.sync_timeout} s{hint}")
        log.info("informers synced: %d services, %d endpointslices", len(self.services.list()), len(self.slices.list()))
        self.reconcile_services()  # first reconcile on complete caches, before readiness
        self.reconcile_ipcache()
        self.reconcile_policy()
        if cfg.routes:
            self.reconcile_routes()
        run_workers(self.queue, self._work, 1, name="agent")
        # /healthz: 503 once the worker, an informer or the pinned datapath is stuck or gone
        health.watch(self._http.liveness, queue=self.queue, informers=self.informers,
                     pins=[os.path.join(cfg.bpf_root, d) for d in ("progs", "links")])
        self._remove_startup_taint()
        self.ready.set()
        log.info("ready")
        return self

    def _report(self, problems, source: str) -> None:
        """Log, count and put an Event on each newly seen bad object.

        Once per distinct problem while it lasts: ``source``'s reconcile reports
        its whole current list, so a problem that was fixed is forgotten (memory
        stays bounded by what is broken now) and is reported again if it comes back.
        """
        from kubernetes.client.exceptions import ApiException
        keys = {str(p) for p in problems}
        before = self._reported.get(source, set())
        self._reported[source] = keys
        for p in problems:
            key = str(p)
            if key in before:
                continue
            before = before | {key}  # the same problem twice in one list: one Event
            log.warning("%s", p)
            self.metrics.problems.labels(p.kind).inc()
            ev = {"apiVersion": "v1", "kind": "Event",
                  "metadata": {"generateName": f"{p.name}.", "namespace": p.namespace or "default"},
                  "involvedObject": {"kind": p.kind, "name": p.name, "namespace": p.namespace or None,
                                     "apiVersion": "mesh-cni.dev/v1alpha1"
                                     if p.kind in ("Identity", "CIDRIdentity", "MeshEndpoint", "Cluster")
                                     else "discovery.k8s.io/v1" if p.kind == "EndpointSlice" else "v1"},
                  "reason": "InvalidField", "message": f"{p.field}: {p.message}"[:1000], "type": "Warning",
                  "source": {"component": "meshcni-agent", "host": self.cfg.node_name},
                  "reportingComponent": "meshcni-agent", "reportingInstance": self.cfg.node_name}
            try:
                self.core.create_namespaced_event(p.namespace or "default", ev)
            except (ApiException, OSError) as e:
                log.debug("event for %s: %s", p, e)

    def _endpoints_changed(self) -> None:
        self.metrics.endpoints.set(len(self.localapi.endpoints))
        if self.queue is not None:
            self.queue.add(IPCACHE_KEY)

    def _wait_node(self) -> dict:
        from kubernetes.client.exceptions import ApiException
        deadline = time.monotonic() + self.cfg.sync_timeout
        while True:
            try:
                return self.api.sanitize_for_serialization(self.core.read_node(self.cfg.node_name))
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise RuntimeError(f"Node {self.cfg.node_name}: {e.reason}") from None
            time.sleep(0.5)

    def _start_datapath(self) -> None:
        from ..controllers.services import ServiceIDs
        from ..datapath.policy import PolicyProgram
        from ..datapath.services import ServiceDatapath
        from ..datapath.socklb import SockLB
        cfg = self.cfg
        self.svc_dp = ServiceDatapath(cfg.bpf_root)
        self.svc_ids = ServiceIDs(os.path.join(cfg.state_dir, "service-ids.json"))
        self.socklb = SockLB(cfg.bpf_root)
        done = self.socklb.attach(cfg.cgroup_root)
        log.info("socket LB on cgroup %s: %s", cfg.cgroup_root, ", ".join(f"{k} {v}" for k, v in sorted(done.items())))
        self.policy = PolicyProgram(cfg.bpf_root)
        ids = self.policy.pin_programs(cfg.bpf_root)
        self.policy_dp = self.policy.datapath()
        self.endpoints_map = self.policy_dp.endpoints
        from ..datapath.policy import CTGC
        # expired conntrack entries are deleted by us, in batches (the map is a hash, not LRU)
        self.ctgc = CTGC(self.policy_dp.ct, interval=30.0).start()
        log.info("tc programs pinned under %s/progs: %s", cfg.bpf_root, ids)

    def _install_cni(self) -> None:
        from ..cni.install import install, shim_binary
        cfg = self.cfg
        shim = cfg.cni_shim if cfg.cni_shim is not None else shim_binary() is not None
        kw = dict(datapath="required", bpf_root=cfg.bpf_root, state_dir=cfg.state_dir, agent_socket=cfg.socket,
                  shim=shim, fallback=cfg.cni_fallback)
        if cfg.chained:
            done = install(cfg.cni_bin_dir, cfg.cni_conf_dir, chained=True, **kw)
        else:
            if not self.pod_cidrs:
                raise RuntimeError(f"Node {cfg.node_name}: spec.podCIDR is empty; standalone IPAM needs it")
            done = install(cfg.cni_bin_dir, cfg.cni_conf_dir, subnets=self.pod_cidrs,
                           data_dir=cfg.ipam_dir, **kw)
        log.info("CNI installed: %s", json.dumps(done))

    def _remove_startup_taint(self) -> None:
        node = self.api.sanitize_for_serialization(self.core.read_node(self.cfg.node_name))
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t.get("key") != STARTUP_TAINT]
        if len(keep) != len(taints):
            self.core.patch_node(self.cfg.node_name, {"spec": {"taints": keep or None}})
            log.info("startup taint %s removed from Node %s", STARTUP_TAINT, self.cfg.node_name)

    # -- controllers --

    def _work(self, key: str) -> None:
        if key == SERVICES_KEY:
            self.reconcile_services()
        elif key == ROUTES_KEY and self.cfg.routes:
            self.reconcile_routes()
        elif key == IPCACHE_KEY:
            self.reconcile_ipcache()
        elif key == POLICY_KEY:
            self.reconcile_policy()

    def reconcile_policy(self) -> None:
        """NetworkPolicies -> mc_policy + mc_enforce (the compiler is pure; this only applies).

        A desired policy larger than the policy map fails *closed* for the
        endpoints that do not fit (:func:`~meshcni.datapath.policy.fit_policy`):
        whole (identity, direction) groups are programmed smallest first; the
        rest keep only the allow from their own node and deny everything
        else. Logged as an error naming them, counted
        (``meshcni_reconcile_total{controller="policy",outcome="map_full"}``,
        ``meshcni_policy_fail_closed``), re-evaluated on every change.
        """
        from ..controllers.ipcache import ID_HOST
        from ..controllers.netpol import compile_policies
        from ..datapath.policy import fit_policy
        t0 = time.perf_counter()
        compiled = compile_policies(self.netpols.list(), self.pods.list(), self.namespaces.list(),
                                    self.identities.list(), self.cidr_identities.list())
        self._report(compiled.problems, "policy")
        entries, enforced, closed = fit_policy(compiled.entries, compiled.enforced,
                                               self.policy_dp.policy.spec.max_entries, ID_HOST)
        self.metrics.fail_closed.set(len(closed))
        if closed:
            self.metrics.reconciles.labels("policy", "map_full").inc()
            log.error("policy: %d entries do not fit mc_policy (%d rows): failing closed for %d (identity, direction): %s",
                      len(compiled.entries), self.policy_dp.policy.spec.max_entries, len(closed),
                      ", ".join(f"{i}/{'ingress' if d == 0 else 'egress'}" for i, d in closed[:20]))
        try:
            rp, _ = self.policy_dp.apply(entries, enforced)
        except Exception:
            self.metrics.reconciles.labels("policy", "error").inc()
            raise
        self.metrics.reconciles.labels("policy", "ok").inc()
        self.metrics.duration.labels("policy").observe(time.perf_counter() - t0)
        self.metrics.policy_entries.set(len(compiled.entries))
        self.metrics.enforced.set(len(compiled.enforced))
        self.policy_stats = {"entries": len(compiled.entries), "enforced": len(compiled.enforced),
                             "failClosed": len(closed)}
        self.policy_detail = {"perPolicy": compiled.stats["per_policy"],
                              "perIdentity": {str(k): v for k, v in compiled.stats["per_identity"].items()},
                              "failClosed": [{"identity": i, "direction": "ingress" if d == 0 else "egress"}
                                             for i, d in closed],
                              "rows": rp.added + rp.changed + rp.unchanged, "capacity": self.policy_dp.policy.spec.max_entries}
        log.info("policy reconciled: %d entries, %d isolated (identity, direction) in %.1f ms",
                 len(compiled.entries), len(compiled.enforced), (time.perf_counter() - t0) * 1000)

    def _reconcile_endpoints(self) -> None:
        """Local endpoints (ifindex of the host veth) -> their identity, for the tc programs."""
        import numpy as np
        from ..controllers.ipcache import desired_endpoints
        from ..datapath.policy import addr16
        with self.localapi.lock:
            records = list(self.localapi.endpoints.values())
        want = desired_endpoints(records, self.pods.list(), self.namespaces.list(), self.identities.list())
        m = self.endpoints_map
        k = np.zeros(len(want), m.key_dtype)
        v = np.zeros(len(want), m.value_dtype)
        for i, (ifindex, ip, ident, cookie) in enumerate(want):
            k[i]["ifindex"] = ifindex
            v[i]["addr"] = np.frombuffer(addr16(ip), np.uint8)
            v[i]["identity"], v[i]["netns_cookie"] = ident, cookie
        m.reconcile(k, v)

    def reconcile_ipcache(self) -> None:
        """Pod IPs, node IPs and CIDR identities -> mc_ipcache (one batched reconcile)."""
        from ..controllers.ipcache import desired_ipcache
        t0 = time.perf_counter()
        want, problems, collisions = desired_ipcache(self.pods.list(), self.namespaces.list(),
                                                     self.identities.list(), self.cidr_identities.list(),
                                                     self.nodes.list(), self.cfg.node_name)
        self._report(problems, "ipcache")
        self.metrics.ipcache_collisions.set(collisions)
        try:
            self.svc_dp.maps.ipcache.reconcile_prefixes(want, cache=True)
            self._reconcile_endpoints()
        except Exception:
            self.metrics.reconciles.labels("ipcache", "error").inc()
            raise
        self.metrics.reconciles.labels("ipcache", "ok").inc()
        self.metrics.duration.labels("ipcache").observe(time.perf_counter() - t0)
        self.metrics.ipcache.set(len(want))
        self.ipcache_size = len(want)
        log.info("ipcache reconciled: %d prefixes in %.1f ms", len(want), (time.perf_counter() - t0) * 1000)

    def reconcile_routes(self) -> None:
        """Routes to the other nodes' pod CIDRs in this (the node's) network namespace."""
        import socket
        from pyroute2 import IPRoute
        from ..controllers.routes import desired_routes
        t0 = time.perf_counter()
        want, problems = desired_routes(self.nodes.list(), self.cfg.node_name, self.clusters.list())
        self._report(problems, "routes")
        with IPRoute() as ipr:
            have = {}
            for fam in (socket.AF_INET, socket.AF_INET6):
                for r in ipr.get_routes(family=fam, table=254):
                    if r["proto"] == RTPROT_MESHCNI:
                        have[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = r.get_attr("RTA_GATEWAY")
            for dst, via in want.items():
                if have.get(dst) != via:
                    ipr.route("replace", dst=dst, gateway=via, proto=RTPROT_MESHCNI,
                              family=socket.AF_INET6 if ":" in dst else socket.AF_INET)
            for dst in set(have) - set(want):
                ipr.route("del", dst=dst, proto=RTPROT_MESHCNI, family=socket.AF_INET6 if ":" in dst else socket.AF_INET)
        self.metrics.reconciles.labels("routes", "ok").inc()
        self.metrics.duration.labels("routes").observe(time.perf_counter() - t0)
        log.info("routes reconciled: %d pod CIDRs of other nodes and remote clusters", len(want))

    def reconcile_services(self) -> None:
        from ..controllers.services import desired_services, frontend_conflicts, remote_backends
        from ..errors import MapFullError
        t0 = time.perf_counter()
        remote, mesh_problems = remote_backends(self.meshendpoints.list())
        desired, problems = desired_services(self.services.list(), self.slices.list(), self.svc_ids, remote=remote)
        self._report(mesh_problems + problems, "services")
        for a, b in frontend_conflicts(desired):
            log.warning("Service %s: frontend already used by %s; left out", b, a)
        dropped = {b for _, b in frontend_conflicts(desired)}
        desired = [s for s in desired if s.name not in dropped]
        try:
            self.svc_dp.apply(desired)
        except MapFullError as e:
            self.metrics.reconciles.labels("services", "map_full").inc()
            log.error("services: %s (existing entries kept)", e)
            raise
        except Exception:
            self.metrics.reconciles.labels("services", "error").inc()
            raise
        self.programmed = desired
        self.metrics.reconciles.labels("services", "ok").inc()
        self.metrics.duration.labels("services").observe(time.perf_counter() - t0)
        self.metrics.services.set(len(desired))
        self.metrics.backends.set(sum(len(s.backends) for s in desired))
        self.last_reconcile = {"services": len(desired), "backends": sum(len(s.backends) for s in desired),
                               "seconds": round(time.perf_counter() - t0, 4), "at": time.time()}
        log.info("services reconciled: %d services, %d backends in %.1f ms", len(desired),
                 self.last_reconcile["backends"], (time.perf_counter() - t0) * 1000)

    # -- status, health, metrics --

    def programmed_services(self) -> list:
        return [{"name": s.name, "id": s.svc_id,
                 "frontends": [f"{f.ip}:{f.port}/{f.proto}" for f in s.frontends],
                 "backends": [f"{b.ip}:{b.port}" for b in s.backends],
                 # remote backends only (MeshEndpoints): "ip:port" -> the cluster it lives in
                 "backendClusters": {f"{b.ip}:{b.port}": c for b, c in (s.clusters or {}).items()},
                 "affinityTimeout": s.affinity_timeout} for s in self.programmed]

    def policy_view(self) -> dict:
        """GET /v1/policy: what the compiler produced, per policy and per identity (map size watch)."""
        return {**getattr(self, "policy_stats", {}), **getattr(self, "policy_detail", {})}

    def ip_names(self) -> dict:
        """GET /v1/ips: pod IP -> "namespace/name" for every pod the informer holds (for monitors)."""
        out = {}
        for p in self.pods.list():
            m, st = p.get("metadata") or {}, p.get("status") or {}
            for x in st.get("podIPs") or ([{"ip": st["podIP"]}] if st.get("podIP") else []):
                if isinstance(x, dict) and isinstance(x.get("ip"), str):
                    out[x["ip"]] = f"{m.get('namespace', '')}/{m.get('name', '')}"
        return out

    def status(self) -> dict:
        return {"node": self.cfg.node_name, "ready": self.ready.is_set(), "podCIDRs": self.pod_cidrs,
                "endpoints": len(self.localapi.endpoints) if self.localapi else 0,
                "services": self.last_reconcile,
                "ipcache": getattr(self, "ipcache_size", 0),
                "policy": getattr(self, "policy_stats", {}),
                "informers": {i.name: {"synced": i.has_synced(), "objects": len(i.list()),
                                       "relists": i.relists, "watchRestarts": i.watch_restarts}
                              for i in self.informers}}

    def _update_map_gauges(self) -> None:
        """Map pressure for /metrics. Dumping every map (mc_ct can hold 100k+ entries) on each
        scrape would cost more than the scrape is worth: refreshed at most every 10 s."""
        if self.svc_dp is None:
            return
        if getattr(self, "policy_dp", None) is not None:
            try:  # a per-CPU array of a few reasons: cheap, always fresh
                for reason, (pkts, _bytes) in self.policy_dp.drop_counts().items():
                    self.metrics.drops.labels(reason).set(pkts)
            except Exception as e:
                log.debug("drop counters: %s", e)
        now = time.monotonic()
        if now - getattr(self, "_gauges_at", -1e9) < 10.0:
            return
        self._gauges_at = now
        for name in ("svc", "backends", "revnat", "maglev", "affinity", "ipcache", "policy", "enforce", "ct"):
            m = getattr(self.svc_dp.maps, name, None)
            if m is not None:
                try:
                    self.metrics.map_entries.labels(f"mc_{name}").set(len(m.dump()[0]))
                    self.metrics.map_capacity.labels(f"mc_{name}").set(m.spec.max_entries)
                except Exception:
                    pass

    def _start_http(self) -> None:
        from ..health import HealthServer
        self._http = HealthServer(self.cfg.metrics_address, self.ready, self.metrics.registry,
                                  before_metrics=self._update_map_gauges, name="agent")

    def stop(self) -> None:
        """Stop controllers and servers; the datapath stays (pins and links survive us)."""
        self.stopping.set()
        if self.queue is not None:
            self.queue.shutdown()
        if getattr(self, "ctgc", None) is not None:
            self.ctgc.stop()
        for inf in self.informers:
            inf.stop()
        if self.localapi:
            self.localapi.stop()
        if self._http:
            self._http.stop()
        for x in (self.policy, self.socklb, self.svc_dp):
            if x is not None:
                x.close()  # closes fds only; pinned maps, programs and links stay
        log.info("stopped (datapath left in place)")
