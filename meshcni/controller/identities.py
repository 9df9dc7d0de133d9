# SPDX-License-Identifier: MIT OR Apache-2.0
"""The controller's two reconcilers: Identities (pods' label sets) and CIDRIdentities (ipBlocks).

The decisions are :mod:`meshcni.controllers.identity` (pure); this module
applies them to the API. Why the writes are shaped as they are:

- creation is by the deterministic name, so a lost race is a 409 and the
  object is re-read and adopted, never duplicated;
- after creating, the objects carrying the new id are listed by the
  ``mesh-cni.dev/id`` label: a second managed object with that id (another
  controller, a stale cache) is detected at once and the younger one re-picks;
- the caches lag our own writes, so objects we created, patched or deleted
  are overlaid on the cache (:class:`Overlay`) until the watch catches up
  (otherwise the next reconcile would hand an id out twice or re-stamp a GC
  annotation);
- unused Identities are stamped ``mesh-cni.dev/unused-since`` (wall clock,
  RFC 3339) and deleted ``gc_grace`` seconds later with uid+resourceVersion
  preconditions; the stamp lives on the object, so a restart does not reset
  the grace, and a pod reappearing in between removes the stamp.

A write that found the world moved under it (409, 404) asks for another
reconcile soon (``requeueAfter`` :data:`AGAIN`) instead of raising.
"""
from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from kubernetes.client.exceptions import ApiException

from ..controllers import identity as idm
from ..k8s import object_key
from ..k8s.reconciler import REQUEUE_AFTER, Desired, Reconciler

log = logging.getLogger("meshcni.controller")
OVERLAY_TTL = 30.0  # seconds an own write shadows the cache at most (a watch that never delivers it)
AGAIN = 0.05        # seconds before deciding again after losing a race


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def caught_up(cached_rv, ours_rv) -> bool:
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


class Overlay:
    """Our own writes, shadowing an informer cache until its watch delivers them."""

    def __init__(self):
        self.written: Dict[str, Tuple[dict, float]] = {}   # key -> (object as the server returned it, when)
        self.deleted: Dict[str, Tuple[str, float]] = {}    # key -> (uid we deleted, when)

    def put(self, obj: dict):
        k = object_key(obj)
        self.written[k] = (obj, time.monotonic())
        self.deleted.pop(k, None)

    def gone(self, key: str, uid: Optional[str]):
        self.written.pop(key, None)
        self.deleted[key] = (uid or "", time.monotonic())

    def is_echo(self, obj: dict) -> bool:
        """True when a watch event only brings back what we wrote (or deleted): nothing new to decide on."""
        k = object_key(obj)
        m = obj.get("metadata") or {}
        w = self.written.get(k)
        if w is not None:
            wm = w[0]["metadata"]
            return wm.get("uid") == m.get("uid") and wm.get("resourceVersion") == m.get("resourceVersion")
        d = self.deleted.get(k)
        return d is not None and d[0] == m.get("uid")

    def view(self, cached: List[dict]) -> List[dict]:
        now = time.monotonic()
        items = {object_key(o): o for o in cached}
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
                                          and caught_up(cur["metadata"].get("resourceVersion"),
                                                        m.get("resourceVersion"))):
                self.written.pop(k, None)
                continue
            if cur is None or cur["metadata"].get("uid") == m.get("uid"):
                items[k] = obj
            else:
                self.written.pop(k, None)  # replaced by someone else's object: the cache is the truth
        return list(items.values())


def _display(ns: str, name: str) -> str:
    return f"{ns}/{name}" if ns else name


class IdentityWriter:
    """API writes of one kind (``Identity``/``identities`` or ``CIDRIdentity``/``cidridentities``),
    recorded in its :class:`Overlay`. Methods return False when the caller should decide again soon."""

    def __init__(self, custom, kind: str, plural: str, metrics):
        self.custom = custom
        self.kind = kind
        self.plural = plural
        self.metrics = metrics
        self.overlay = Overlay()

    def get(self, ns: str, name: str) -> Optional[dict]:
        try:
            if ns:
                resp = self.custom.get_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, self.plural, name,
                                                                _preload_content=False)
            else:
                resp = self.custom.get_cluster_custom_object(idm.GROUP, idm.VERSION, self.plural, name,
                                                             _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def create(self, body: dict) -> bool:
        """Create ``body``; False when the caller should reconcile again soon (lost a race)."""
        m = body["metadata"]
        ns, name = m.get("namespace", ""), m["name"]
        try:
            if ns:
                created = self.custom.create_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, self.plural, body)
            else:
                created = self.custom.create_cluster_custom_object(idm.GROUP, idm.VERSION, self.plural, body)
        except ApiException as e:
            if e.status in (403, 404) and ns:
                # the namespace is gone or terminating (kube answers 403): its pods go with it
                log.info("%s %s/%s: namespace not accepting objects (%s)", self.kind, ns, name, e.status)
                return True
            if e.status != 409:
                raise
            cur = self.get(ns, name)
            if cur is not None:
                # the name is derived from the content, so a managed object there is ours to adopt
                # (with its id); a hand-made one is reported and evicted by the next round
                self.overlay.put(cur)
            log.info("%s %s: already exists; adopting the stored object", self.kind, _display(ns, name))
            return False
        self.overlay.put(created)
        self.metrics.allocations.labels(self.kind).inc()
        log.info("%s %s: created with id %d", self.kind, _display(ns, name), created["spec"]["id"])
        return self._check_duplicate(created)

    def _check_duplicate(self, created: dict) -> bool:
        """List the managed objects holding ``created``'s id; if we are the younger, step back."""
        ident = created["spec"]["id"]
        sel = f"{idm.MANAGED_BY}={idm.MANAGER},{idm.ID_LABEL}={ident}"
        resp = self.custom.list_cluster_custom_object(idm.GROUP, idm.VERSION, self.plural, label_selector=sel,
                                                      _preload_content=False)
        holders = [o for o in json.loads(resp.data).get("items") or () if (o.get("spec") or {}).get("id") == ident]
        if len(holders) < 2:
            return True
        for o in holders:
            self.overlay.put(o)  # the other holder may not be in our cache yet; the re-pick must see it
        holders.sort(key=idm._age_key)
        if holders[0]["metadata"].get("uid") == created["metadata"].get("uid"):
            return True  # we keep the id; the other side sees the same order and re-picks
        self.metrics.collisions.labels(self.kind, "duplicate").inc()
        log.warning("%s %s: id %d also held by %s; re-allocating", self.kind, object_key(created), ident,
                    object_key(holders[0]))
        m = created["metadata"]
        self.delete({"namespace": m.get("namespace", ""), "name": m["name"], "uid": m.get("uid"),
                     "reason": "id-collision", "immediate": True})
        return False

    def delete(self, d: dict) -> bool:
        pre = {k: d[k] for k in ("uid", "resourceVersion") if d.get(k) and (k == "uid" or not d["immediate"])}
        body = {"preconditions": pre} if pre else None
        ns, name = d["namespace"], d["name"]
        try:
            if ns:
                self.custom.delete_namespaced_custom_object(idm.GROUP, idm.VERSION, ns, self.plural, name, body=body)
            else:
                self.custom.delete_cluster_custom_object(idm.GROUP, idm.VERSION, self.plural, name, body=body)
        except ApiException as e:
            if e.status == 404:
                self.overlay.gone(_display(ns, name), d.get("uid"))
                return True
            if e.status == 409:
                # changed since we decided (a pod came back and the stamp was cleared): decide again
                log.info("%s %s: changed before deletion; re-evaluating", self.kind, _display(ns, name))
                return False
            raise
        self.overlay.gone(_display(ns, name), d.get("uid"))
        self.metrics.gc_deletions.labels(self.kind, d["reason"]).inc()
        log.info("%s %s: deleted (%s)", self.kind, _display(ns, name), d["reason"])
        return True

    def annotate_unused(self, obj: dict, since: Optional[str]) -> bool:
        """Set (or, with None, remove) the unused-since stamp, guarded by the resourceVersion."""
        m = obj["metadata"]
        patch = {"metadata": {"annotations": {idm.UNUSED_SINCE: since}, "resourceVersion": m.get("resourceVersion")}}
        try:
            self.overlay.put(self.custom.patch_namespaced_custom_object(idm.GROUP, idm.VERSION, m["namespace"],
                                                                        self.plural, m["name"], patch))
        except ApiException as e:
            if e.status in (404, 409):
                return False  # moved on under us: decide again
            raise
        return True

    def patch(self, obj: dict, patch: dict) -> None:
        self.overlay.put(self.custom.patch_cluster_custom_object(idm.GROUP, idm.VERSION, self.plural,
                                                                 obj["metadata"]["name"], patch))

    def managed(self, cached: List[dict]) -> int:
        """Managed objects as the cache plus our not-yet-seen writes show them."""
        return sum(1 for o in self.overlay.view(cached) if idm.is_managed(o))


@dataclass
class Plan:
    cached: List[dict]     # the informer's list the plan was made from
    existing: List[dict]   # the same, with our own writes overlaid
    create: list
    keep: list
    delete: list


def _requeue(stats: dict, after: Optional[float]) -> dict:
    if after is not None:
        stats[REQUEUE_AFTER] = after
    return stats


class Identities(Reconciler):
    """One Identity per (namespace labels, pod labels) set in use; unused ones deleted after ``gc_grace`` s."""
    name = "identities"
    watches = ("pods", "namespaces", "identities")

    def __init__(self, custom, gc_grace: float, metrics):
        self.writer = IdentityWriter(custom, "Identity", "identities", metrics)
        self.gc_grace = gc_grace
        self.metrics = metrics

    def desired(self, caches) -> Desired:
        cached = caches["identities"].list()
        existing = self.writer.overlay.view(cached)
        create, keep, delete, problems = idm.desired_identities(caches["pods"].list(), caches["namespaces"].list(),
                                                                existing)
        return Desired(Plan(cached, existing, create, keep, delete), problems)

    def apply(self, plan: Plan) -> dict:
        w = self.writer
        soon = False
        after: Optional[float] = None
        for d in plan.delete:
            if d["immediate"]:
                soon |= not w.delete(d)
        for body in plan.create:
            soon |= not w.create(body)
            cand = idm.candidate_id({"namespaceLabels": body["spec"]["namespaceLabels"],
                                     "podLabels": body["spec"]["podLabels"]})
            if cand != body["spec"]["id"]:
                self.metrics.collisions.labels("Identity", "probe").inc()
        for o in plan.keep:
            if idm.UNUSED_SINCE in (o["metadata"].get("annotations") or {}):
                soon |= not w.annotate_unused(o, None)
        by_key = {object_key(o): o for o in plan.existing}
        for d in plan.delete:
            if d["immediate"]:
                continue
            obj = by_key.get(f"{d['namespace']}/{d['name']}")
            if obj is None:
                continue
            since = parse_time((obj["metadata"].get("annotations") or {}).get(idm.UNUSED_SINCE))
            if since is None:
                soon |= not w.annotate_unused(obj, now_rfc3339())
                after = self.gc_grace if after is None else min(after, self.gc_grace)
                continue
            left = since + self.gc_grace - time.time()
            if left > 0:
                after = left + 0.05 if after is None else min(after, left + 0.05)
                continue
            soon |= not w.delete(dict(d, resourceVersion=obj["metadata"].get("resourceVersion"),
                                      uid=obj["metadata"].get("uid")))
        managed = w.managed(plan.cached)
        self.metrics.identities.labels("Identity").set(managed)
        return _requeue({"managed": managed, "created": len(plan.create)}, AGAIN if soon else after)


class CIDRIdentities(Reconciler):
    """One CIDRIdentity per NetworkPolicy ipBlock (cidr + except) in use; others deleted at once."""
    name = "cidridentities"
    watches = ("networkpolicies", "cidridentities")

    def __init__(self, custom, metrics):
        self.writer = IdentityWriter(custom, "CIDRIdentity", "cidridentities", metrics)
        self.metrics = metrics

    def desired(self, caches) -> Desired:
        cached = caches["cidridentities"].list()
        existing = self.writer.overlay.view(cached)
        create, keep, delete, problems = idm.desired_cidr_identities(caches["networkpolicies"].list(), existing)
        return Desired(Plan(cached, existing, create, keep, delete), problems)

    def apply(self, plan: Plan) -> dict:
        w = self.writer
        soon = False
        for d in plan.delete:
            soon |= not w.delete(d)
        for body in plan.create:
            soon |= not w.create(body)
        for o, patch in plan.keep:
            if patch:
                w.patch(o, patch)
                log.warning("CIDRIdentity %s: cidrPrefixes corrected to %s", o["metadata"]["name"],
                            patch["spec"]["cidrPrefixes"])
        managed = w.managed(plan.cached)
        self.metrics.identities.labels("CIDRIdentity").set(managed)
        return _requeue({"managed": managed, "created": len(plan.create)}, AGAIN if soon else None)
