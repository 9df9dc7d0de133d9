# SPDX-License-Identifier: MIT OR Apache-2.0
"""The object store: every object, one resourceVersion counter, the event history.

One lock guards everything (as etcd serialises writes, so does this store).
Stored objects are immutable values: a write builds a new dict and swaps it
in, so readers may serialise what they got outside the lock and watch events
can share the stored dicts.

Watchers each own a bounded queue, filled under the lock with a non-blocking
put; a watcher that falls too far behind is marked overflowed and its stream
ends with 410 Expired, so neither writers nor other watchers ever wait on it.
"""
from __future__ import annotations

import base64
import bisect
import collections
import copy
import json
import logging
import os
import queue
import random
import threading
import time
import uuid

from .. import fastjson
from . import admission
from . import resources as res
from .errors import (
    APIError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    namespace_not_found,
    not_found,
)
from .patch import APPLY, apply_patch

log = logging.getLogger("meshcni.apiserver")

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")  # kube's NamespaceLifecycle refuses these
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # kube's generateName alphabet (no vowels)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Event:
    """One change: type, the object after it, and (MODIFIED) the object before."""

    __slots__ = ("_line", "key", "ns", "obj", "old", "rv", "type")

    def __init__(self, type_, key, ns, obj, old, rv):
        self.type = type_
        self.key = key
        self.ns = ns
        self.obj = obj
        self.old = old
        self.rv = rv
        self._line = None

    def line(self, type_=None, obj=None) -> bytes:
        """The newline-terminated watch frame; the common case is serialised once."""
        if type_ is None and obj is None:
            if self._line is None:
                self._line = _frame(self.type, self.obj)
            return self._line
        return _frame(type_ or self.type, self.obj if obj is None else obj)


def _frame(type_, obj) -> bytes:
    return fastjson.dumps({"type": type_, "object": obj}) + b"\n"


class Watcher:
    """One watch stream's view of the store: a backlog, then a live queue."""

    def __init__(self, store, rt, namespace, labels, fields, maxsize):
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.backlog: list[Event] = []
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.overflowed = False
        self.expired_message = ""
        self.closed = False
        self.version = rt.version  # the version the client asked for; set by the HTTP layer
        self.transform = None      # e.g. object -> Table for kubectl get --watch

    def offer(self, ev: Event):
        # called with the store lock held: never block
        if self.overflowed or self.closed:
            return
        try:
            self.queue.put_nowait(ev)
        except queue.Full:
            self.overflowed = True
            # wake the stream so it notices promptly
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(None)
            except (queue.Empty, queue.Full):
                pass

    def _matches(self, obj) -> bool:
        if obj is None:
            return False
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches((obj.get("metadata") or {}).get("labels")):
            return False
        return self.fields.empty or self.fields.matches(obj)

    def translate(self, ev: Event) -> bytes | None:
        """The frame this watcher sees for ``ev`` (selector transitions included), or None."""
        if ev.type == "MODIFIED" and (not self.labels.empty or not self.fields.empty):
            now, before = self._matches(ev.obj), self._matches(ev.old)
            if now and before:
                return self._line(ev)
            if now:
                return self._line(ev, "ADDED")
            if before:
                # kube sends the previous content stamped with the event's version
                old = dict(ev.old)
                old["metadata"] = dict(old.get("metadata") or {}, resourceVersion=str(ev.rv))
                return self._line(ev, "DELETED", old)
            return None
        if not self._matches(ev.obj):
            return None
        return self._line(ev)

    def _line(self, ev, type_=None, obj=None):
        want = self.rt.api_version(self.version)
        o = ev.obj if obj is None else obj
        if self.transform is not None:
            return _frame(type_ or ev.type, self.transform(dict(o, apiVersion=want)))
        if o.get("apiVersion") != want:
            o = dict(o, apiVersion=want)
            return ev.line(type_ or ev.type, o)
        return ev.line(type_, obj)

    def wake(self):
        """End the stream soon (server stopping, resource type gone)."""
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass  # a full queue wakes the reader anyway

    def close(self):
        self.store.unwatch(self)


class Store:
    """All objects of all kinds, keyed by (group, plural) then (namespace, name)."""

    def __init__(self, history: int = 1000, watch_queue: int = 10000, service_cidr=admission.SERVICE_CIDR,
                 node_port_range: range = admission.NODE_PORTS):
        self.lock = threading.RLock()
        self.rv = 0
        self.history: collections.deque[Event] = collections.deque()
        self.history_size = max(1, history)
        self.compacted = 0           # events with rv <= this are gone from history
        self.watch_queue = watch_queue
        self.types: dict[tuple[str, str], res.ResourceType] = {}
        self.by_url: dict[tuple[str, str, str], res.ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        # per resource: (its objects dict, rv, count, sorted keys) -- a paged list sorts once,
        # not once per page; any write bumps rv (a replacement in place keeps the keys)
        self._sorted: dict[tuple[str, str], tuple] = {}
        self.watchers: dict[tuple[str, str], set[Watcher]] = collections.defaultdict(set)
        self.ips = admission.IPAllocator(service_cidr, node_port_range)
        for rt in res.BUILTIN:
            self._register(rt)
        for ns in INITIAL_NAMESPACES:
            self.create(self.types[res.NAMESPACE_KEY], "", {"metadata": {"name": ns}})

    # ------------------------------------------------------------ resource table

    def _register(self, rt: res.ResourceType):
        old = self.types.get(rt.key)
        if old is not None:
            for v in old.served_versions:
                self.by_url.pop((old.group, v, old.plural), None)
        self.types[rt.key] = rt
        for v in rt.served_versions:
            self.by_url[(rt.group, v, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})

    def _unregister(self, key):
        rt = self.types.pop(key, None)
        if rt is None:
            return
        for v in rt.served_versions:
            self.by_url.pop((rt.group, v, rt.plural), None)
        self.objects.pop(key, None)
        for w in list(self.watchers.pop(key, ())):
            w.wake()

    def resolve(self, group: str, version: str, plural: str) -> res.ResourceType | None:
        with self.lock:
            return self.by_url.get((group, version, plural))

    def snapshot_types(self) -> list[res.ResourceType]:
        with self.lock:
            return list(self.types.values())

    # ------------------------------------------------------------ internals

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, type_, rt, obj, old=None):
        ev = Event(type_, rt.key, (obj.get("metadata") or {}).get("namespace", ""), obj, old,
                   int(obj["metadata"]["resourceVersion"]))
        self.history.append(ev)
        if len(self.history) > self.history_size:
            self.compacted = self.history.popleft().rv
        for w in self.watchers.get(rt.key, ()):
            w.offer(ev)

    def _check_namespace(self, rt, ns: str, creating: bool):
        if not rt.namespaced:
            return
        nso = self.objects[res.NAMESPACE_KEY].get(("", ns))
        if nso is None:
            raise namespace_not_found(ns)
        if creating and nso["metadata"].get("deletionTimestamp"):
            raise forbidden(f'{rt.plural} "" is forbidden: unable to create new content in namespace '
                            f"{ns} because it is being terminated", rt)

    def _commit(self, rt, obj, type_, old=None):
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        m = obj["metadata"]
        self.objects[rt.key][(m.get("namespace", ""), m["name"])] = obj
        if rt.key == res.CRD_KEY:
            self._crd_changed(obj)
        self._emit(type_, rt, obj, old)
        return obj

    def _remove(self, rt, cur):
        m = cur["metadata"]
        last = dict(cur)
        last["metadata"] = dict(m, resourceVersion=str(self._next_rv()))
        self.objects[rt.key].pop((m.get("namespace", ""), m["name"]), None)
        self._emit("DELETED", rt, last)
        if rt.key == res.CRD_KEY:
            self._crd_removed(cur)
        elif rt.key == ("", "services"):
            self.ips.release(cur)
        if rt.namespaced:
            self._maybe_finish_namespace(m.get("namespace", ""))
        return last

    def _current(self, rt, ns, name):
        cur = self.objects.get(rt.key, {}).get((ns if rt.namespaced else "", name))
        if cur is None:
            raise not_found(rt, name)
        return cur

    # ------------------------------------------------------------ CRDs

    def _crd_changed(self, crd):
        rt = res.from_crd(crd)
        if rt.plural and rt.group:
            existing = self.types.get(rt.key)
            if existing is not None and not existing.crd:
                return
            self._register(rt)

    def _crd_removed(self, crd):
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        rt = self.types.get(key)
        if rt is None or not rt.crd:
            return
        for obj in list(self.objects.get(key, {}).values()):
            self._remove(rt, obj)
        self._unregister(key)

    # ------------------------------------------------------------ namespaces

    def _maybe_finish_namespace(self, ns):
        nso = self.objects[res.NAMESPACE_KEY].get(("", ns))
        if nso is None or not nso["metadata"].get("deletionTimestamp"):
            return
        for rt in self.types.values():
            if rt.namespaced and any(k[0] == ns for k in self.objects.get(rt.key, {})):
                return
        self._remove(self.types[res.NAMESPACE_KEY], nso)

    def _delete_namespace(self, rt, cur):
        m = cur["metadata"]
        if not m.get("deletionTimestamp"):
            new = copy.deepcopy(cur)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            cur = self._commit(rt, new, "MODIFIED", cur)
        ns = m["name"]
        for other in list(self.types.values()):
            if not other.namespaced:
                continue
            for key, obj in list(self.objects.get(other.key, {}).items()):
                if key[0] == ns:
                    self._delete_obj(other, obj)
        self._maybe_finish_namespace(ns)
        return self.objects[res.NAMESPACE_KEY].get(("", ns), cur)

    # ------------------------------------------------------------ verbs

    def get(self, rt, ns, name) -> dict:
        with self.lock:
            if rt.namespaced:
                self._check_namespace(rt, ns, False)
            return self._current(rt, ns, name)

    def list(self, rt, ns, labels, fields, limit=0, cont=None):
        """(items, resourceVersion, continue token, remaining count) of the current state."""
        with self.lock:
            if ns and rt.namespaced and ("", ns) not in self.objects[res.NAMESPACE_KEY]:
                # a real server lists an empty collection for a missing namespace
                return [], str(self.rv), "", None
            objs = self.objects.get(rt.key, {})
            keys = self._sorted_keys(rt.key, objs)
            rv = self.rv
            start = None
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont.encode() + b"=="))
                    start = tuple(tok["start"])
                    if len(start) != 2 or not all(isinstance(x, str) for x in start):
                        raise ValueError("not a key")  # keys are (namespace, name): compared below
                except (ValueError, KeyError, TypeError):
                    raise bad_request(f'invalid continue token "{cont}"') from None
            items = []
            last = None
            more = False
            remaining = 0
            # keys sort by (namespace, name): one namespace is one run of them, and a page
            # starts right after the continue token's key
            lo, hi = 0, len(keys)
            if ns and rt.namespaced:
                lo, hi = bisect.bisect_left(keys, (ns,)), bisect.bisect_left(keys, (ns + "\0",))
            if start is not None:
                lo = max(lo, bisect.bisect_right(keys, start))
            select = not labels.empty or not fields.empty
            for i in range(lo, hi):
                k = keys[i]
                o = objs[k]
                if select:
                    if not labels.empty and not labels.matches(o["metadata"].get("labels")):
                        continue
                    if not fields.empty and not fields.matches(o):
                        continue
                if limit and len(items) >= limit:
                    more = True
                    if not select:  # every key left matches
                        remaining = hi - i
                        break
                    remaining += 1
                    continue
                items.append(o)
                last = k
        token = ""
        if more:
            token = base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": list(last)}).encode()
                                             ).decode().rstrip("=")
        return items, str(rv), token, (remaining if more else None)

    def _sorted_keys(self, key, objs) -> list:
        c = self._sorted.get(key)
        if c is not None and c[0] is objs and c[1] == self.rv and c[2] == len(objs):
            return c[3]
        keys = sorted(objs)
        self._sorted[key] = (objs, self.rv, len(objs), keys)
        return keys

    def create(self, rt, ns, body, dry_run=False, strict=False) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        if not isinstance(body.get("metadata") or {}, dict):
            raise bad_request("metadata must be an object")
        with self.lock:
            obj = dict(body)
            meta = dict(obj.get("metadata") or {})
            obj["metadata"] = meta
            _check_type(rt, obj)
            obj["apiVersion"] = rt.api_version(_version_of(obj, rt))
            obj["kind"] = rt.kind
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
                meta["namespace"] = ns
                self._check_namespace(rt, ns, True)
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                gen = meta.get("generateName")
                if not gen:
                    raise invalid(rt, "", [admission.FieldError(
                        "metadata.name", None, "FieldValueRequired", "name or generateName is required")])
                for _ in range(16):
                    meta["name"] = gen + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                    if (ns if rt.namespaced else "", meta["name"]) not in self.objects[rt.key]:
                        break
            name = meta["name"]
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "managedFields", "selfLink"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            admission.prepare_create(self, rt, obj, strict)
            if (ns if rt.namespaced else "", name) in self.objects[rt.key]:
                raise already_exists(rt, name)
            if rt.key == ("", "services"):
                # fill the allocated fields first (validation checks them), reserve last
                self.ips.allocate(obj, dry_run=True)
            errors = admission.validate(rt, obj, None)
            if errors:
                raise invalid(rt, name, errors)
            if rt.key == ("", "services") and not dry_run:
                self.ips.reserve(obj)
            if dry_run:
                return obj
            return self._commit(rt, obj, "ADDED")

    def update(self, rt, ns, name, body, subresource=None, dry_run=False, strict=False) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        with self.lock:
            if rt.namespaced:
                self._check_namespace(rt, ns, False)
            cur = self._current(rt, ns, name)
            return self._update(rt, cur, body, subresource, dry_run, strict)

    def _update(self, rt, cur, body, subresource, dry_run, strict=False):
        name = cur["metadata"]["name"]
        bmeta = body.get("metadata") or {}
        if not isinstance(bmeta, dict):
            # (a patch can produce this too: {"metadata": 5})
            raise bad_request("metadata must be an object")
        if bmeta.get("name") and bmeta["name"] != name:
            raise bad_request(f"the name of the object ({bmeta['name']}) does not match the name "
                              f"on the URL ({name})")
        if rt.namespaced and bmeta.get("namespace") and bmeta["namespace"] != cur["metadata"]["namespace"]:
            raise bad_request("the namespace of the provided object does not match the namespace "
                              "sent on the request")
        want_rv = bmeta.get("resourceVersion")
        if want_rv and str(want_rv) != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if bmeta.get("uid") and bmeta["uid"] != cur["metadata"]["uid"]:
            raise conflict(rt, name)
        if subresource == "status":
            new = copy.deepcopy(cur)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            _check_type(rt, body)
            new = copy.deepcopy(body)
            new["apiVersion"] = rt.api_version(_version_of(new, rt))
            new["kind"] = rt.kind
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            cm = cur["metadata"]
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
                if k in cm:
                    meta[k] = cm[k]
                else:
                    meta.pop(k, None)
            meta.pop("managedFields", None)
            if rt.status:
                if "status" in cur:
                    new["status"] = copy.deepcopy(cur["status"])
                else:
                    new.pop("status", None)
            admission.prepare_update(self, rt, new, cur, strict)
            if rt.key == ("", "services"):
                self.ips.allocate_update(cur, new)  # node ports asked for are checked, absent ones picked
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        errors = admission.validate(rt, new, cur)
        if errors:
            raise invalid(rt, name, errors)
        if cur.get("metadata", {}).get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or ()) - set(cur["metadata"].get("finalizers") or ())
            if added:
                raise forbidden(f'{rt.describe()} "{name}" is forbidden: no new finalizers can be added '
                                "if the object is being deleted", rt, name)
        if _spec_changed(rt, cur, new):
            new["metadata"]["generation"] = int(cur["metadata"].get("generation") or 1) + 1
        if new == cur:
            return cur
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._commit_quiet(rt, new)
            return self._remove(rt, new)
        if rt.key == ("", "services"):
            self.ips.reallocate(cur, new)
        return self._commit(rt, new, "MODIFIED", cur)

    def _commit_quiet(self, rt, new):
        m = new["metadata"]
        self.objects[rt.key][(m.get("namespace", ""), m["name"])] = new

    def patch(self, rt, ns, name, content_type, body, subresource=None, dry_run=False,
              force=False, strict=False) -> tuple[dict, bool]:
        """Apply a patch; returns (object, created). Apply patches create missing objects."""
        with self.lock:
            if rt.namespaced:
                self._check_namespace(rt, ns, content_type == APPLY)
            try:
                cur = self._current(rt, ns, name)
            except APIError:
                if content_type != APPLY or subresource:
                    raise
                if not isinstance(body, dict):
                    raise bad_request("apply patch: the body must be an object") from None
                b = dict(body)
                b["metadata"] = dict(b.get("metadata") or {}, name=name)
                return self.create(rt, ns, _strip_directives(b), dry_run, strict), True
            if content_type == APPLY and isinstance(body, dict):
                bmeta = body.get("metadata") or {}
                if bmeta.get("name") and bmeta["name"] != name:
                    raise bad_request(f"the name of the object ({bmeta['name']}) does not match "
                                      f"the name on the URL ({name})")
                body = dict(body)
                body["metadata"] = {k: v for k, v in bmeta.items() if k != "managedFields"}
            patched = apply_patch(content_type, cur, body)
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            return self._update(rt, cur, patched, subresource, dry_run, strict), False

    def delete(self, rt, ns, name, options=None, dry_run=False) -> dict:
        with self.lock:
            if rt.namespaced:
                self._check_namespace(rt, ns, False)
            cur = self._current(rt, ns, name)
            pre = (options or {}).get("preconditions") or {}
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise conflict(rt, name)
            if dry_run:
                return cur
            if rt.key == res.NAMESPACE_KEY:
                if name in IMMORTAL_NAMESPACES:
                    raise forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                                    rt, name)
                return self._delete_namespace(rt, cur)
            return self._delete_obj(rt, cur)

    def _delete_obj(self, rt, cur):
        m = cur["metadata"]
        if m.get("finalizers"):
            if m.get("deletionTimestamp"):
                return cur
            new = dict(cur)
            # a deletion request counts as a spec change (kube bumps generation for it)
            new["metadata"] = dict(m, deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0,
                                   generation=int(m.get("generation") or 1) + 1)
            return self._commit(rt, new, "MODIFIED", cur)
        return self._remove(rt, cur)

    def delete_collection(self, rt, ns, labels, fields, dry_run=False) -> list[dict]:
        with self.lock:
            items, _, _, _ = self.list(rt, ns, labels, fields)
            if dry_run:
                return items
            return [self._delete_obj(rt, o) for o in items]

    # ------------------------------------------------------------ watch

    def watch(self, rt, ns, rv: str | None, labels, fields) -> Watcher:
        """Register a watcher. Its backlog holds the events after ``rv`` (or synthetic ADDED
        events for the current state when rv is empty or "0"); an expired rv yields a watcher
        whose ``expired_message`` is set."""
        w = Watcher(self, rt, ns if rt.namespaced else "", labels, fields, self.watch_queue)
        with self.lock:
            if rv in (None, "", "0"):
                rvs = self.rv
                for k in sorted(self.objects.get(rt.key, {})):
                    o = self.objects[rt.key][k]
                    w.backlog.append(Event("ADDED", rt.key, k[0], o, None, rvs))
            else:
                try:
                    since = int(rv)
                except ValueError:
                    raise bad_request(f'invalid resource version "{rv}"') from None
                if since < self.compacted:
                    w.expired_message = (f"too old resource version: {since} ({self.compacted + 1})")
                    return w
                if since > self.rv:
                    # a version from the future (a server that lost its snapshot): kube
                    # answers "too large resource version"; ending the watch makes the
                    # client relist instead of trusting a cache newer than the server
                    w.expired_message = f"too large resource version: {since}, current: {self.rv}"
                    return w
                back = []
                for ev in reversed(self.history):
                    if ev.rv <= since:
                        break
                    if ev.key == rt.key:
                        back.append(ev)
                back.reverse()
                w.backlog = back
            self.watchers[rt.key].add(w)
        return w

    def unwatch(self, w: Watcher):
        with self.lock:
            w.closed = True
            self.watchers.get(w.rt.key, set()).discard(w)

    def bookmark_rv(self, w: Watcher) -> str | None:
        """The store's version if every event up to it has reached ``w``'s queue reader."""
        with self.lock:
            if w.queue.empty():
                return str(self.rv)
        return None

    def watcher_count(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.watchers.values())

    # ------------------------------------------------------------ persistence

    def dump(self) -> dict:
        with self.lock:
            objs = []
            # CRDs first so that loading registers their types before their objects
            order = sorted(self.objects, key=lambda k: (k != res.CRD_KEY, k != res.NAMESPACE_KEY, k))
            for key in order:
                rt = self.types[key]
                for o in self.objects[key].values():
                    objs.append({"group": rt.group, "plural": rt.plural, "object": o})
            return {"resourceVersion": self.rv, "objects": objs}

    def load(self, data: dict):
        with self.lock:
            self._sorted.clear()
            for key in list(self.objects):
                self.objects[key] = {}
            for entry in data.get("objects", ()):
                key = (entry["group"], entry["plural"])
                obj = entry["object"]
                if key == res.CRD_KEY:
                    self._crd_changed(obj)
                if key not in self.types:
                    log.warning("snapshot: dropping %s %s: no such resource",
                                "/".join(key), obj.get("metadata", {}).get("name"))
                    continue
                m = obj["metadata"]
                self.objects[key][(m.get("namespace", ""), m["name"])] = obj
                if key == ("", "services"):
                    self.ips.reserve(obj)
            self.rv = max(int(data.get("resourceVersion", 0)), self.rv)
            self.history.clear()
            # the history before a restart is gone: older versions answer 410
            self.compacted = self.rv

    def save(self, path: str):
        data = self.dump()
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _strip_directives(obj):
    if isinstance(obj, dict):
        return {k: _strip_directives(v) for k, v in obj.items()
                if not k.startswith("$")}
    if isinstance(obj, list):
        return [_strip_directives(v) for v in obj]
    return obj


def _version_of(obj, rt) -> str:
    av = obj.get("apiVersion") or ""
    v = av.rsplit("/", 1)[-1] if av else rt.version
    return v if v in rt.served_versions else rt.version


def _check_type(rt, obj):
    av, kind = obj.get("apiVersion"), obj.get("kind")
    if av:
        group = av.rsplit("/", 1)[0] if "/" in av else ""
        version = av.rsplit("/", 1)[-1]
        if group != rt.group or version not in rt.served_versions:
            raise bad_request(f"the API version in the data ({av}) does not match the expected API "
                              f"version ({rt.api_version()})")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")


_NOT_SPEC = ("metadata", "status", "apiVersion", "kind")


def _spec_changed(rt, old, new) -> bool:
    # kube bumps generation on spec changes; kinds without a status subresource count
    # every non-metadata field as spec (CRs without /status, ConfigMap data, ...)
    skip = _NOT_SPEC if rt.status else ("metadata", "apiVersion", "kind")
    keys = (set(old) | set(new)) - set(skip)
    return any(old.get(k) != new.get(k) for k in keys)

