# SPDX-License-Identifier: MIT OR Apache-2.0
"""``Informer``: list + watch one resource into an indexed cache of plain dicts.

The informer calls a ``kubernetes`` client list function (typed ``CoreV1Api``
methods and ``CustomObjectsApi`` methods alike) with ``_preload_content=False``
and parses the JSON itself (:mod:`meshcni.fastjson`: orjson, the collector
held off), so every cached object is a plain ``dict`` keyed ``namespace/name``
(``name`` for cluster-scoped objects). That skips the client's model
deserialisation, which costs an order of magnitude more than decoding for
large lists, and it is the shape controllers want anyway. ``metadata.
managedFields`` is dropped as each object is decoded: nothing reads it.

Protocol, as client-go's reflector does it: list, then watch from the list's
resourceVersion with bookmarks; remember the newest resourceVersion seen in
events and bookmarks; resume a watch that ended from there; on 410 Gone
relist and turn the difference between the cache and the new list into
DELETED / ADDED / MODIFIED notifications, so handlers never miss a deletion.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Callable, Iterable, Iterator

from kubernetes.client.rest import ApiException

from .. import fastjson

log = logging.getLogger("meshcni.k8s.informer")

IndexFunc = Callable[[dict], Iterable[str]]
Handler = Callable[..., None]


def object_key(obj: dict) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    m = obj.get("metadata") or {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name', '')}" if ns else m.get("name", "")


def namespace_index(obj: dict) -> list[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def node_index(obj: dict) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def label_index(label: str) -> IndexFunc:
    """An index function keyed by the value of label ``label`` (objects without it are not indexed)."""
    def index(obj: dict) -> list[str]:
        v = ((obj.get("metadata") or {}).get("labels") or {}).get(label)
        return [v] if v is not None else []
    index.__name__ = f"label_index_{label}"
    return index


class _Gone(Exception):
    """The resourceVersion we hold is older than the server's history: relist."""


class _Stopped(Exception):
    pass


class Informer:
    """Keeps an indexed cache of one resource in sync with the API server.

    ``list_fn`` is a bound ``kubernetes`` client list method; ``args`` are its
    positional arguments (e.g. group, version, plural for ``CustomObjectsApi``).
    ``namespace`` is passed as the ``namespace`` keyword (for the
    ``list_namespaced_*`` methods). ``resync`` (seconds) re-delivers every
    cached object as an update ``on_update(obj, obj)`` that often; it is
    checked whenever the stream delivers anything, so its granularity is the
    server's bookmark interval. ``indexers`` adds named index functions to
    the built-in ``namespace`` and ``node`` (``spec.nodeName``) ones.
    ``backoff`` is (first, max) reconnect delay in seconds, doubled per
    consecutive failure with ±50% jitter. ``watch_timeout`` (seconds) is sent
    as ``timeoutSeconds`` so that every watch ends and is re-established;
    ``read_timeout`` (seconds, default ``watch_timeout + 10``) bounds the wait
    for any byte so a half-dead connection is noticed. ``page_size`` > 0 lists
    in pages of that many objects. ``transform`` (e.g.
    :func:`meshcni.k8s.trim.trim_pod`) maps every listed or watched object
    before it is cached and handed to handlers: caches hold only what is read.

    Health: :attr:`connected` is None until the first list or watch succeeds
    or fails, then True after a successful list or watch open and False after
    a failed one (a 410 is not a failure); :attr:`last_error` and
    :attr:`failing_since` (wall-clock seconds) describe the current failure.
    ``on_health(informer)`` is called on the informer's thread whenever
    ``connected`` changes (e.g. to re-evaluate a remote cluster's status).

    Handlers run on the informer's thread, one event at a time, in the order
    the server produced them. Cached dicts are shared: treat them as read-only.
    """

    def __init__(self, list_fn, *args, namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, resync: float | None = None,
                 indexers: dict[str, IndexFunc] | None = None, backoff: tuple[float, float] = (0.2, 10.0),
                 watch_timeout: float = 300.0, read_timeout: float | None = None, connect_timeout: float = 5.0,
                 page_size: int = 0, name: str | None = None,
                 transform: Callable[[dict], dict] | None = None,
                 on_health: Callable[[Informer], None] | None = None):
        self._list_fn = list_fn
        # applied to every object before it is cached or handed to a handler (list and watch)
        self._transform = transform
        self._args = args
        self._kwargs: dict = {}
        if namespace is not None:
            self._kwargs["namespace"] = namespace
        if label_selector:
            self._kwargs["label_selector"] = label_selector
        if field_selector:
            self._kwargs["field_selector"] = field_selector
        self.resync = resync
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout if read_timeout is not None else watch_timeout + 10.0
        self.connect_timeout = connect_timeout
        self.page_size = page_size
        self.name = name or getattr(list_fn, "__name__", "informer")
        self._indexers: dict[str, IndexFunc] = {"namespace": namespace_index, "node": node_index}
        self._indexers.update(indexers or {})
        self._lock = threading.RLock()         # guards the cache and the indexes
        self._dispatch = threading.RLock()     # held while handlers run: add_handler replays under it
        self._items: dict[str, dict] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {n: {} for n in self._indexers}
        self._handlers: list[tuple[Handler | None, Handler | None, Handler | None]] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp = None                      # the open watch response, so stop() can abort it
        self._resp_lock = threading.Lock()
        self.resource_version = ""
        # metrics: plain counters, read by /metrics
        self.relists = 0           # lists after the first one
        self.watch_restarts = 0    # watches opened after the first one
        self.events = 0            # watch events applied (not bookmarks)
        self.errors = 0            # failed list or watch attempts
        self.last_list_seconds = 0.0
        self.connected: bool | None = None
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._on_health = on_health
        self._failures = 0
        self._next_resync = 0.0
        self._watches = 0
        self._just_listed = False

    # ------------------------------------------------------------ public

    def add_handler(self, on_add: Handler | None = None, on_update: Handler | None = None,
                    on_delete: Handler | None = None):
        """Register callbacks ``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)``.

        A handler added after the first list gets ``on_add`` for every cached
        object first, so it sees the same history as one added before start.
        """
        with self._dispatch:
            if self._synced.is_set() and on_add is not None:
                for obj in self.list():
                    self._call(on_add, obj)
            self._handlers.append((on_add, on_update, on_delete))

    def start(self) -> Informer:
        """Run the informer in a daemon thread; returns at once (see :meth:`wait_for_sync`)."""
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0):
        """End the informer: abort the open watch and join the thread (``timeout`` in seconds)."""
        self._stop.set()
        self._abort_watch()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def has_synced(self) -> bool:
        """True once the first list has been delivered to the handlers."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`has_synced`; returns it."""
        return self._synced.wait(timeout)

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._items.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def list(self) -> list[dict]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def by_index(self, name: str, value: str) -> list[dict]:
        """Cached objects whose index ``name`` contains ``value``."""
        with self._lock:
            try:
                keys = self._indexes[name].get(value, ())
            except KeyError:
                raise KeyError(f"informer {self.name}: no index named {name!r}") from None
            return [self._items[k] for k in keys]

    def index_values(self, name: str) -> list[str]:
        with self._lock:
            return [v for v, ks in self._indexes[name].items() if ks]

    # ------------------------------------------------------------ the loop

    def run(self):
        """List and watch until :meth:`stop`; blocks (``start`` runs this in a thread)."""
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list_and_replace()
                    need_list = False
                    self._failures = 0
                self._watch()
            except _Stopped:
                break
            except _Gone as e:
                log.info("informer %s: %s; relisting", self.name, e)
                need_list = True
                self._backoff_if_just_listed()
            except ApiException as e:
                if self._stop.is_set():
                    break
                if e.status == 410:
                    log.info("informer %s: 410 Gone; relisting", self.name)
                    need_list = True
                    self._backoff_if_just_listed()
                    continue
                self.errors += 1
                self._set_health(False, f"API error {e.status} {e.reason}")
                log.warning("informer %s: API error %s %s; retrying", self.name, e.status, e.reason)
                self._sleep_backoff()
            except Exception as e:  # connection refused/reset, timeouts, truncated streams
                if self._stop.is_set():
                    break
                self.errors += 1
                self._set_health(False, f"{type(e).__name__}: {e}")
                log.warning("informer %s: %s: %s; reconnecting", self.name, type(e).__name__, e)
                self._sleep_backoff()

    def _set_health(self, ok: bool, error: str | None = None):
        if ok:
            self.last_error, self.failing_since = None, None
        else:
            self.last_error = error
            if self.failing_since is None:
                self.failing_since = time.time()
        changed = self.connected is not ok
        self.connected = ok
        if changed and self._on_health is not None:
            self._call(self._on_health, self)

    def _backoff_if_just_listed(self):
        # a 410 before the first event after a list means the history is shorter than our
        # list-to-watch gap; relisting at once would loop as fast as the server answers
        if self._just_listed:
            self.errors += 1
            self._sleep_backoff()

    def _sleep_backoff(self):
        first, cap = self.backoff
        delay = min(cap, first * (2 ** self._failures)) * random.uniform(0.5, 1.5)
        self._failures = min(self._failures + 1, 30)
        self._stop.wait(delay)

    def _call_list(self, **kw):
        kw.update(self._kwargs)
        return self._list_fn(*self._args, _preload_content=False, **kw)

    def _list_and_replace(self):
        t0 = time.monotonic()
        items: list[dict] = []
        cont = None
        rv = None
        while True:
            kw = {"_request_timeout": (self.connect_timeout, self.read_timeout)}
            if self.page_size:
                kw["limit"] = self.page_size
                if cont:
                    kw["_continue"] = cont
            resp = self._call_list(**kw)
            try:
                data = resp.data
            finally:
                resp.release_conn()
            with fastjson.gc_paused():
                body = fastjson.loads(data)
                del data
                page = body.get("items") or ()
                for o in page:
                    _drop_unread(o)
                items.extend(map(self._transform, page) if self._transform else page)
                meta = body.get("metadata") or {}
                # the untrimmed page goes before the collector comes back on: its first pass
                # then walks what is cached, not what a transform dropped
                del body, page
            if rv is None:
                # every page of a consistent list carries the same version; should a server serve
                # later pages newer, watching from the first page's version replays, never skips
                rv = meta.get("resourceVersion", "")
            cont = meta.get("continue")
            if not cont:
                break
        if self._stop.is_set():
            raise _Stopped()
        self._replace(items, rv)
        self._set_health(True)
        self._just_listed = True
        self.last_list_seconds = time.monotonic() - t0
        log.debug("informer %s: listed %d objects at %s in %.3fs", self.name, len(items), rv,
                  self.last_list_seconds)

    def _replace(self, items: list[dict], rv: str):
        deleted, added, updated = [], [], []
        # the cache and its indexes (one set per index value) are built with the collector held
        # off, as the decoding is; the handlers below run with it on
        with fastjson.gc_paused(), self._lock:
            new = {object_key(o): o for o in items}
            old = self._items
            for k, o in old.items():
                if k not in new:
                    deleted.append(o)
            for k, o in new.items():
                prev = old.get(k)
                if prev is None:
                    added.append(o)
                elif _rv(prev) != _rv(o):
                    updated.append((prev, o))
            self._items = new
            self._indexes = {n: {} for n in self._indexers}
            for k, o in new.items():
                self._index_add(k, o)
            self.resource_version = rv
        first = not self._synced.is_set()
        if not first:
            self.relists += 1
        with self._dispatch:
            for o in deleted:
                self._notify("DELETED", None, o)
            for o in added:
                self._notify("ADDED", None, o)
            for prev, o in updated:
                self._notify("MODIFIED", prev, o)
        if first:
            self._next_resync = time.monotonic() + (self.resync or 0)
            self._synced.set()

    def _watch(self):
        if self._watches:
            self.watch_restarts += 1
        self._watches += 1
        # spread watch ends over [t, 1.25t) so that many informers do not reconnect together
        timeout = max(1, int(self.watch_timeout * random.uniform(1.0, 1.25)))
        resp = self._call_list(watch=True, allow_watch_bookmarks=True, resource_version=self.resource_version,
                               timeout_seconds=timeout,
                               _request_timeout=(self.connect_timeout, self.read_timeout))
        with self._resp_lock:
            self._resp = resp
        if self._stop.is_set():
            self._abort_watch()
        self._set_health(True)
        try:
            for line in _lines(resp):
                if self._stop.is_set():
                    raise _Stopped()
                self._handle(fastjson.loads(line))
                self._failures = 0
                self._just_listed = False
                self._maybe_resync()
        finally:
            with self._resp_lock:
                self._resp = None
            try:
                resp.close()
                resp.release_conn()
            except Exception:  # the socket may already be gone
                pass
        if self._stop.is_set():
            raise _Stopped()

    def _abort_watch(self):
        # shutdown() wakes a thread blocked in recv() at once; close() alone may not
        with self._resp_lock:
            resp = self._resp
        if resp is None:
            return
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self, ev: dict):
        typ = ev.get("type")
        obj = ev.get("object") or {}
        if typ == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone(obj.get("message") or "410 Gone")
            raise RuntimeError(f"watch error {code}: {obj.get('message')}")
        rv = _rv(obj)
        if typ == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        _drop_unread(obj)
        if self._transform is not None:
            obj = self._transform(obj)
        key = object_key(obj)
        with self._lock:
            if typ in ("ADDED", "MODIFIED"):
                prev = self._items.get(key)
                if prev is not None:
                    self._index_remove(key, prev)
                self._items[key] = obj
                self._index_add(key, obj)
            elif typ == "DELETED":
                prev = self._items.pop(key, None)
                if prev is not None:
                    self._index_remove(key, prev)
            else:
                log.warning("informer %s: unknown watch event type %r", self.name, typ)
                return
            if rv:
                self.resource_version = rv
        self.events += 1
        with self._dispatch:
            if typ == "DELETED":
                if prev is not None:  # handlers never heard of an object deleted before we listed it
                    self._notify("DELETED", None, obj)
            else:
                self._notify("MODIFIED" if prev is not None else "ADDED", prev, obj)

    def _maybe_resync(self):
        if not self.resync or time.monotonic() < self._next_resync:
            return
        self._next_resync = time.monotonic() + self.resync
        with self._dispatch:
            for o in self.list():
                self._notify("MODIFIED", o, o)

    def _notify(self, typ: str, prev: dict | None, obj: dict):
        for on_add, on_update, on_delete in self._handlers:
            if typ == "ADDED" and on_add is not None:
                self._call(on_add, obj)
            elif typ == "MODIFIED" and on_update is not None:
                self._call(on_update, prev, obj)
            elif typ == "DELETED" and on_delete is not None:
                self._call(on_delete, obj)

    def _call(self, fn, *args):
        # a failing handler must not stop the informer or starve the other handlers
        try:
            fn(*args)
        except Exception:
            log.exception("informer %s: handler %s failed", self.name, getattr(fn, "__name__", fn))

    def _index_add(self, key: str, obj: dict):
        for name, fn in self._indexers.items():
            idx = self._indexes[name]
            for v in fn(obj):
                idx.setdefault(v, set()).add(key)

    def _index_remove(self, key: str, obj: dict):
        for name, fn in self._indexers.items():
            idx = self._indexes[name]
            for v in fn(obj):
                s = idx.get(v)
                if s is not None:
                    s.discard(key)
                    if not s:
                        del idx[v]


def _drop_unread(obj) -> None:
    """Drop what no cache reads, right after decoding: ``metadata.managedFields`` (server-side
    apply bookkeeping, often the largest part of a real kube-apiserver object)."""
    meta = obj.get("metadata") if type(obj) is dict else None
    if type(meta) is dict and "managedFields" in meta:
        del meta["managedFields"]


def _rv(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion", "")


def _lines(resp) -> Iterator[bytes]:
    """Newline-delimited JSON frames from a streaming urllib3 response, as they arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        if not chunk:
            continue
        buf += chunk
        if b"\n" not in chunk:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buf.strip():
        yield buf
