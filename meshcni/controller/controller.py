# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni controller``: cluster-wide identity allocation and the multi-cluster mesh
(a Deployment, one active replica; the mesh is :mod:`.clustermesh`).

Bring-up, in order:
1. /healthz /readyz /metrics on ``metrics_address``;
2. informers on Pods, Namespaces, NetworkPolicies, Identities (all
   namespaces) and CIDRIdentities; nothing is decided before all have synced,
   so existing Identities (and their ids) are known before any is allocated;
3. ready (followers too: they are a warm standby);
4. leader election on a Lease; only the leader reconciles. Every event
   enqueues one of two keys (``identities``, ``cidridentities``); a worker
   recomputes the whole desired set from the caches
   (:mod:`meshcni.controllers.identity`) and applies the difference.

Why the API writes are shaped as they are:
- creation is by the deterministic name, so a lost race is a 409 and the
  object is re-read and adopted, never duplicated;
- after creating, the objects carrying the new id are listed by the
  ``mesh-cni.dev/id`` label: a second managed object with that id (another
  controller, a stale cache) is detected at once and the younger one re-picks;
- the caches lag our own writes, so objects we created, patched or deleted
  are overlaid on the cache until the watch catches up (otherwise the next
  reconcile would hand an id out twice or re-stamp a GC annotation);
- unused Identities are stamped ``mesh-cni.dev/unused-since`` (wall clock,
  RFC 3339) and deleted ``gc_grace`` seconds later with uid+resourceVersion
  preconditions; the stamp lives on the object, so a restart does not reset
  the grace, and a pod reappearing in between removes the stamp.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..controllers import identity as idm

log = logging.getLogger("meshcni.controller")
IDENTITIES_KEY = "identities"
CIDR_KEY = "cidridentities"
OVERLAY_TTL = 30.0  # seconds an own write shadows the cache at most (a watch that never delivers it)


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
    workers: int = 2                 # one per key is enough: a key is never processed twice at once
    # the multi-cluster mesh (clustermesh.py)
    cluster_name: str = "default"
    namespace: str = "meshcni-system"  # the controller's own: kubeconfig Secrets of remote clusters
    mesh_stale_grace: float = 300.0    # seconds a remote's MeshEndpoints outlive losing it (Cluster may override)
    service_cidrs: Tuple[str, ...] = ()


class Metrics:
    """prometheus-client registry of the controller (own registry: tests run several controllers)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge
        r = self.registry = CollectorRegistry()
        self.identities = Gauge("meshcni_controller_identities", "managed identities by kind", ["kind"], registry=r)
        self.allocations = Counter("meshcni_controller_allocations_total", "identities created, by kind",
                                   ["kind"], registry=r)
        self.collisions = Counter("meshcni_controller_id_collisions_total",
                                  "id collisions: probed past a used id (probe) or two objects with one id "
                                  "(duplicate), by kind", ["kind", "type"], registry=r)
        self.gc_deletions = Counter("meshcni_controller_gc_deletions_total", "identities deleted, by kind and reason",
                                    ["kind", "reason"], registry=r)
        self.reconcile_errors = Counter("meshcni_controller_reconcile_errors_total", "failed reconciles by key",
                                        ["controller"], registry=r)
        self.reconciles = Counter("meshcni_controller_reconcile_total", "reconciles by key", ["controller"],
                                  registry=r)
        self.handmade = Counter("meshcni_controller_handmade_total", "hand-made identity reports, by kind",
                                ["kind"], registry=r)
        self.problems = Counter("meshcni_controller_bad_input_total", "bad-input reports, by kind", ["kind"],
                                registry=r)
        self.leader = Gauge("meshcni_controller_leader", "1 while this replica is the leader", registry=r)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def _key(obj: dict) -> str:
    from ..k8s import object_key
    return object_key(obj)


def _caught_up(cached_rv, ours_rv) -> bool:
    """True when the cached version is ours or newer.

    resourceVersions are opaque to clients, but every server we know issues increasing
    integers (etcd revisions); comparing them lets a later write by someone else win at
    once instead of after OVERLAY_TTL. Anything else falls back to equality.
    """
    if cached_rv == ours_rv:
        return True
    try:
        return int(cached_rv) >= int(ours_rv)
    except (TypeError, ValueError):
        return False


class _Overlay:
    """Our own writes, shadowing an informer cache until its watch delivers them."""

    def __init__(self):
        self.written: Dict[str, Tuple[dict, float]] = {}   # key -> (object as the server returned it, when)
        self.deleted: Dict[str, Tuple[str, float]] = {}    # key -> (uid we deleted, when)

    def put(self, obj: dict):
        k = _key(obj)
        self.written[k] = (obj, time.monotonic())
        self.deleted.pop(k, None)

    def gone(self, key: str, uid: Optional[str]):
        self.written.pop(key, None)
        self.deleted[key] = (uid or "", time.monotonic())

    def is_echo(self, obj: dict) -> bool:
        """True when a watch event only brings back what we wrote (or deleted): nothing new to decide on."""
        k = _key(obj)
        m = obj.get("metadata") or {}
        w = self.written.get(k)
        if w is not None:
            wm = w[0]["metadata"]
            return wm.get("uid") == m.get("uid") and wm.get("resourceVersion") == m.get("resourceVersion")
        d = self.deleted.get(k)
        return d is not None and d[0] == m.get("uid")

    def view(self, cached: List[dict]) -> List[dict]:
        now = time.monotonic()
        items = {_key(o): o for o in cached}
        for k, (uid, at) in list(self.deleted.items()):
            cur = items.get(k)
            if cur is None or cur["metadata"].get("uid") != uid or now - at > OVERLAY_TTL:
                # the cache caught up (or holds a newer object of that name): stop shadowing
                self.deleted.pop(k, None)
                continue
            del items[k]
        for k, (obj, at) in list(self.written.items()):
            cur = items.get(k)
            m = obj["metadata"]
            if now - at > OVERLAY_TTL or (cur is not None and cur["metadata"].get("uid") == m.get("uid")
                                          and _caught_up(cur["metadata"].get("resourceVersion"),
                                                         m.get("resourceVersion"))):
                self.written.pop(k, None)
                continue
            if cur is None or cur["metadata"].get("uid") == m.get("uid"):
                items[k] = obj
            else:
                self.written.pop(k, None)  # replaced by someone else's object: the cache is the truth
        return list(items.values())


class Controller:
    def __init__(self, cfg: ControllerConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.leading = threading.Event()
        self.informers = []
        self.queue = None
        self.elector = None
        self._http = None
        self.metrics_port = 0
        self._overlay = {IDENTITIES_KEY: _Overlay(), CIDR_KEY: _Overlay()}
        self._reported: Dict[str, set] = {IDENTITIES_KEY: set(), CIDR_KEY: set()}
        self._workers: list = []
        self.mesh = None

    # -- bring-up --

    def start(self) -> "Controller":
        from kubernetes import client
        from ..k8s import Informer, LeaderElector, WorkQueue, api_client, run_workers
        cfg = self.cfg
        self._start_http()
        self.api = api_client(cfg.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        net = client.NetworkingV1Api(self.api)
        self.pods = Informer(self.core.list_pod_for_all_namespaces, name="pods")
        self.namespaces = Informer(self.core.list_namespace, name="namespaces")
        self.policies = Informer(net.list_network_policy_for_all_namespaces, name="networkpolicies")
        self.identities = Informer(self.custom.list_cluster_custom_object, idm.GROUP, idm.VERSION, "identities",
                                   name="identities")
        self.cidrs = Informer(self.custom.list_cluster_custom_object, idm.GROUP, idm.VERSION, "cidridentities",
                              name="cidridentities")
        self.queue = WorkQueue(name="controller")
        for inf, key in ((self.pods, IDENTITIES_KEY), (self.namespaces, IDENTITIES_KEY),
                         (self.identities, IDENTITIES_KEY), (self.policies, CIDR_KEY), (self.cidrs, CIDR_KEY)):
            inf.add_handler(lambda o, k=key: self.queue.add(k), lambda a, b, k=key: self.queue.add(k),
                            lambda o, k=key: self.queue.add(k))
            inf.start()
            self.informers.append(inf)
        for inf in self.informers:
            if not inf.wait_for_sync(cfg.sync_timeout):
                raise RuntimeError(f"informer {inf.name}: no initial list within {cfg.sync_timeout} s")
        log.info("informers synced: %d pods, %d namespaces, %d networkpolicies, %d identities, %d cidridentities",
                 len(self.pods), len(self.namespaces), len(self.policies), len(self.identities), len(self.cidrs))
        self._workers = run_workers(self.queue, self.process, cfg.workers, name="controller")
        from .clustermesh import ClusterMesh, MeshConfig
        self.mesh = ClusterMesh(self.api, MeshConfig(cluster_name=cfg.cluster_name, namespace=cfg.namespace,
                                                     stale_grace=cfg.mesh_stale_grace,
                                                     service_cidrs=tuple(cfg.service_cidrs)),
                                leading=self.leading.is_set, registry=self.metrics.registry).start(cfg.sync_timeout)
        self.ready.set()
        if cfg.leader_elect:
            self.elector = LeaderElector(self.api, cfg.lease_name, cfg.lease_namespace, cfg.identity,
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
        for k in self._reported:
            self._reported[k] = set()
        self.queue.add(IDENTITIES_KEY)
        self.queue.add(CIDR_KEY)
        if self.mesh is not None:
            self.mesh.started_leading()

    def _stopped_leading(self):
        self.leading.clear()
        self.metrics.leader.set(0)
        if self.mesh is not None:
            self.mesh.stopped_leading()

    def stop(self) -> None:
        if self.elector is not None:
            self.elector.stop()  # releases the lease, so a standby takes over without waiting it out
        self.leading.clear()
        if self.queue is not None:
            self.queue.shutdown()
        for t in self._workers:
            t.join(5)
        if self.mesh is not None:
            self.mesh.stop()
        for inf in self.informers:
            inf.stop()
        if self._http:
            self._http.stop()
        log.info("stopped")

    # -- reconcile --

    def process(self, key: str) -> None:
        if not self.leading.is_set():
            return  # the callback re-enqueues everything when we become leader
        self.metrics.reconciles.labels(key).inc()
        try:
            if key == IDENTITIES_KEY:
                self.reconcile_identities()
            elif key == CIDR_KEY:
                self.reconcile_cidr_identities()
        except Exception:
            self.metrics.reconcile_errors.labels(key).inc()
            raise  # run_workers logs and retries with backoff

    def identity_view(self) -> List[dict]:
        """Identities as the cache plus our not-yet-seen writes show them."""
        return self._overlay[IDENTITIES_KEY].view(self.identities.list())

    def cidr_view(self) -> List[dict]:
        return self._overlay[CIDR_KEY].view(self.cidrs.list())

    def reconcile_identities(self) -> None:
        existing = self.identity_view()
        create, keep, delete, problems = idm.desired_identities(self.pods.list(), self.namespaces.list(), existing)
        self._report(IDENTITIES_KEY, problems, {_key(o): o for o in existing})
        ov = self._overlay[IDENTITIES_KEY]
        for d in delete:
            if d["immediate"]:
                self._delete("Identity", "identities", d, ov)
        retry = False
        for body in create:
            retry |= not self._create("Identity", "identities", body, ov, idm.POD_ID_MIN, idm.POD_ID_MAX)
            cand = idm.candidate_id({"namespaceLabels": body["spec"]["namespaceLabels"],
                                     "podLabels": body["spec"]["podLabels"]})
            if cand != body["spec"]["id"]:
                self.metrics.collisions.labels("Identity", "probe").inc()
        for o in keep:
            if idm.UNUSED_SINCE in (o["metadata"].get("annotations") or {}):
                self._annotate(o, None, ov)
        grace = self.cfg.gc_grace
        by_key = {_key(o): o for o in existing}
        for d in delete:
            if d["immediate"]:
                continue
            obj = by_key.get(f"{d['namespace']}/{d['name']}")
            if obj is None:
                continue
            since = _parse_time((obj["metadata"].get("annotations") or {}).get(idm.UNUSED_SINCE))
            if since is None:
                self._annotate(obj, _now_rfc3339(), ov)
                self.queue.add_after(IDENTITIES_KEY, grace)
                continue
            left = since + grace - time.time()
            if left > 0:
                self.queue.add_after(IDENTITIES_KEY, left + 0.05)
                continue
            d = dict(d, resourceVersion=obj["metadata"].get("resourceVersion"), uid=obj["metadata"].get("uid"))
            self._delete("Identity", "identities", d, ov)
        self.metrics.identities.labels("Identity").set(sum(1 for o in self.identity_view() if idm.is_managed(o)))
        if retry:
            self.queue.add_after(IDENTITIES_KEY, 0.05)

    def reconcile_cidr_identities(self) -> None:
        existing = self.cidr_view()
        create, keep, delete, problems = idm.desired_cidr_identities(self.policies.list(), existing)
        cache = {_key(o): o for o in existing}
        cache.update({_key(p): p for p in self.policies.list()})
        self._report(CIDR_KEY, problems, cache)
        ov = self._overlay[CIDR_KEY]
        for d in delete:
            self._delete("CIDRIdentity", "cidridentities", d, ov)
        retry = False
        for body in create:
            retry |= not self._create("CIDRIdentity", "cidridentities", body, ov, idm.CIDR_ID_MIN, idm.CIDR_ID_MAX)
        for o, patch in keep:
            if patch:
                ov.put(self.custom.patch_cluster_custom_object(idm.GROUP, idm.VERSION, "cidridentities",
                                                               o["metadata"]["name"], patch))
                log.warning("CIDRIdentity %s: cidrPrefixes corrected to %s", o["metadata"]["name"],
                            patch["spec"]["cidrPrefixes"])
        self.metrics.identities.labels("CIDRIdentity").set(sum(1 for o in self.cidr_view() if idm.is_managed(o)))
        if retry:
            self.queue.add_after(CIDR_KEY, 0.05)

    # -- API writes --

    def _get(self, plural: str, ns: str, name: str) -> Optional[dict]:
        from kubernetes.client.exceptions import ApiException
        try:
            if ns:
                resp = self.custom.get_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, plural, name,
                                                                _preload_content=False)
            else:
                resp = self.custom.get_cluster_custom_object(idm.GROUP, idm.VERSION, plural, name,
                                                             _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _create(self, kind: str, plural: str, body: dict, ov: _Overlay, lo: int, hi: int) -> bool:
        """Create ``body``; False when the caller should reconcile again soon (lost a race)."""
        from kubernetes.client.exceptions import ApiException
        m = body["metadata"]
        ns, name = m.get("namespace", ""), m["name"]
        try:
            if ns:
                created = self.custom.create_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, plural, body)
            else:
                created = self.custom.create_cluster_custom_object(idm.GROUP, idm.VERSION, plural, body)
        except ApiException as e:
            if e.status in (403, 404) and ns:
                # the namespace is gone or terminating (kube answers 403): its pods go with it
                log.info("%s %s/%s: namespace not accepting objects (%s)", kind, ns, name, e.status)
                return True
            if e.status != 409:
                raise
            cur = self._get(plural, ns, name)
            if cur is not None:
                # the name is derived from the content, so a managed object there is ours to adopt
                # (with its id); a hand-made one is reported and evicted by the next round
                ov.put(cur)
            log.info("%s %s: already exists; adopting the stored object", kind, f"{ns}/{name}" if ns else name)
            return False
        ov.put(created)
        self.metrics.allocations.labels(kind).inc()
        log.info("%s %s: created with id %d", kind, f"{ns}/{name}" if ns else name, created["spec"]["id"])
        return self._check_duplicate(kind, plural, created, ov)

    def _check_duplicate(self, kind: str, plural: str, created: dict, ov: _Overlay) -> bool:
        """List the managed objects holding ``created``'s id; if we are the younger, step back."""
        ident = created["spec"]["id"]
        sel = f"{idm.MANAGED_BY}={idm.MANAGER},{idm.ID_LABEL}={ident}"
        resp = self.custom.list_cluster_custom_object(idm.GROUP, idm.VERSION, plural, label_selector=sel,
                                                      _preload_content=False)
        holders = [o for o in json.loads(resp.data).get("items") or () if (o.get("spec") or {}).get("id") == ident]
        if len(holders) < 2:
            return True
        for o in holders:
            ov.put(o)  # the other holder may not be in our cache yet; the re-pick must see it
        holders.sort(key=idm._age_key)
        if holders[0]["metadata"].get("uid") == created["metadata"].get("uid"):
            return True  # we keep the id; the other side sees the same order and re-picks
        self.metrics.collisions.labels(kind, "duplicate").inc()
        log.warning("%s %s: id %d also held by %s; re-allocating", kind, _key(created), ident, _key(holders[0]))
        m = created["metadata"]
        self._delete(kind, plural, {"namespace": m.get("namespace", ""), "name": m["name"], "uid": m.get("uid"),
                                    "reason": "id-collision", "immediate": True}, ov)
        return False

    def _delete(self, kind: str, plural: str, d: dict, ov: _Overlay) -> None:
        from kubernetes.client.exceptions import ApiException
        pre = {k: d[k] for k in ("uid", "resourceVersion") if d.get(k) and (k == "uid" or not d["immediate"])}
        body = {"preconditions": pre} if pre else None
        ns, name = d["namespace"], d["name"]
        try:
            if ns:
                self.custom.delete_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, plural, name, body=body)
            else:
                self.custom.delete_cluster_custom_object(idm.GROUP, idm.VERSION, plural, name, body=body)
        except ApiException as e:
            if e.status == 404:
                ov.gone(f"{ns}/{name}" if ns else name, d.get("uid"))
                return
            if e.status == 409:
                # changed since we decided (a pod came back and the stamp was cleared): decide again
                log.info("%s %s: changed before deletion; re-evaluating", kind, f"{ns}/{name}" if ns else name)
                self.queue.add_after(IDENTITIES_KEY if kind == "Identity" else CIDR_KEY, 0.05)
                return
            raise
        ov.gone(f"{ns}/{name}" if ns else name, d.get("uid"))
        self.metrics.gc_deletions.labels(kind, d["reason"]).inc()
        log.info("%s %s: deleted (%s)", kind, f"{ns}/{name}" if ns else name, d["reason"])

    def _annotate(self, obj: dict, since: Optional[str], ov: _Overlay) -> None:
        from kubernetes.client.exceptions import ApiException
        m = obj["metadata"]
        patch = {"metadata": {"annotations": {idm.UNUSED_SINCE: since},
                              "resourceVersion": m.get("resourceVersion")}}
        try:
            ov.put(self.custom.patch_namespaced_custom_object(idm.GROUP, idm.VERSION, m["namespace"], "identities",
                                                              m["name"], patch))
        except ApiException as e:
            if e.status in (404, 409):
                self.queue.add_after(IDENTITIES_KEY, 0.05)  # moved on under us: decide again
                return
            raise

    # -- reports --

    def _report(self, key: str, problems, objects: Dict[str, dict]) -> None:
        """Log, count and send an Event for each problem once (again only after it went away)."""
        seen = set()
        for p in problems:
            k = str(p)
            seen.add(k)
            if k in self._reported[key]:
                continue
            log.warning("%s", p)
            handmade = "hand-made" in p.message
            (self.metrics.handmade if handmade else self.metrics.problems).labels(p.kind).inc()
            obj = objects.get(f"{p.namespace}/{p.name}" if p.namespace else p.name)
            if obj is not None:
                reason = ("HandMadeIdentity" if handmade else "InvalidIPBlock" if p.kind == "NetworkPolicy"
                          else "IdentityCollision")
                try:
                    self._event(obj, reason, str(p))
                except Exception as e:  # an Event is a courtesy: never fail the reconcile on it
                    log.warning("Event for %s %s: %s", p.kind, p.name, e)
        self._reported[key] = seen

    def _event(self, obj: dict, reason: str, message: str) -> None:
        from kubernetes.client.exceptions import ApiException
        m = obj["metadata"]
        ns = m.get("namespace") or "default"  # kube records events of cluster-scoped objects in default
        # one Event per (object, message): a repeated report after a restart finds it (409), not a new one
        name = f"{m['name']}.{hashlib.sha256((m.get('uid', '') + message).encode()).hexdigest()[:16]}"
        now = _now_rfc3339()
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": m["name"],
                                   "namespace": m.get("namespace"), "uid": m.get("uid"),
                                   "resourceVersion": m.get("resourceVersion")},
                "reason": reason, "message": message[:1024], "type": "Warning", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "meshcni-controller"},
                "reportingComponent": "meshcni-controller", "reportingInstance": self.cfg.identity}
        try:
            self.core.create_namespaced_event(ns, body, _preload_content=False)
        except ApiException as e:
            if e.status != 409:
                raise

    # -- health, metrics --

    def status(self) -> dict:
        return {"identity": self.cfg.identity, "ready": self.ready.is_set(), "leader": self.leading.is_set(),
                "informers": {i.name: {"synced": i.has_synced(), "objects": len(i)} for i in self.informers},
                "mesh": self.mesh.status() if self.mesh is not None else None}

    def _start_http(self) -> None:
        from ..health import HealthServer
        self._http = HealthServer(self.cfg.metrics_address, self.ready, self.metrics.registry,
                                  views={"/status": self.status}, name="controller")
        self.metrics_port = self._http.port
