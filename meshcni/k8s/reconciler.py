# SPDX-License-Identifier: MIT OR Apache-2.0
"""One shape for every controller: a :class:`Reconciler`, and the :class:`Runner` that drives them.

A reconciler is what it watches, a pure function from the informers' caches
to a desired state, and an applier::

    class Routes(Reconciler):
        name = "routes"                      # metrics label and queue key
        watches = ("nodes",)                 # informers whose events enqueue it
        def desired(self, caches):           # PURE: reads caches only
            want, problems = desired_routes(caches["nodes"].list(), self.node)
            return Desired(want, problems)
        def apply(self, state):              # the only side effects
            return self.datapath.apply(state)

The :class:`Runner` gives all of them the rest, the same way:

- it starts the informers it was given that are not running yet and waits
  until every one has listed: nothing is decided on a partial cache (a
  partial Service cache would remove live backends);
- it runs every reconciler once, in order, before :meth:`Runner.start`
  returns, so a process that turns ready after ``start`` is ready only after
  the first reconcile of everything (a failure there is raised);
- then one :class:`~meshcni.k8s.workqueue.WorkQueue` keyed by reconciler
  name (and key, for a keyed reconciler): an informer event enqueues every reconciler watching that informer,
  so a burst of events costs one reconcile per reconciler; :meth:`Runner.kick`
  enqueues one by hand;
- every run is timed and counted (``meshcni_reconcile_total{controller,
  outcome}`` with outcome ``ok``, ``error`` or ``map_full``,
  ``meshcni_reconcile_seconds{controller}``); problems are reported through
  the :class:`~meshcni.k8s.events.EventRecorder` once per problem while they
  last and counted (``meshcni_bad_input_total{kind}``);
- a run that raised is retried with per-reconciler (per-key) exponential backoff
  (``base_delay * 2**n``, at most ``max_delay`` seconds); a success resets it.
  A :class:`~meshcni.errors.MapFullError` is outcome ``map_full``: the
  applier keeps what the map held, and the run is retried like any failure.
  It is also counted by map (``meshcni_map_full_total{controller,map}``)
  and reported once while it lasts as a ``MapFull`` Warning Event naming
  the map and its capacity, on the process's Node (the recorder's
  ``host``; a recorder without one only logs it); the first run that
  applies again ends the report, so the next overflow is reported anew;
- ``gate`` (a callable or a ``threading.Event``) closes the runner: while it
  is false nothing runs and dequeued work is dropped, and whoever opens it
  calls :meth:`Runner.kick_all` (the controller process runs its reconcilers
  only while it holds the leader lease).

``apply`` returns a small dict of stats (or None): it is logged, kept in
:attr:`Runner.last` for status views, and its ``requeueAfter`` key (seconds),
if present, queues the reconciler again after that long (for time-based
work such as a garbage-collection grace period).

A *keyed* reconciler manages many independent objects (the mesh: one remote
Cluster each) and is queued, run, retried and reported per key, so a change
in one costs one object's reconcile and one object's failure retries alone.
It defines, besides the above::

        def keys(self, caches):                    # every key there is now (first run, kick_all)
        def keys_for(self, caches, cache, old, new):  # optional: the keys one event concerns
        def desired(self, caches, key): ...        # PURE, for one key; its state carries the key to apply

A plain reconciler that keeps state between runs (to recompute only what
changed) may define ``observe(cache, old, new)``: called on the informer's
thread for every event of a cache it watches, before it is queued, so a run
that starts after the event sees what it marked.

``keys_for`` runs on the informer's thread (keep it cheap); ``old`` is None
for an add, ``new`` None for a delete; None means every key, ``()`` none.
Queue keys are ``(name, key)``; metrics keep the label ``controller=name``;
problems are reported per key (source ``name/key``).

A plain reconciler that works incrementally defines ``observe(cache, old,
new)``: the runner calls it on the informer's thread for every event of a
cache it watches, before queueing it, so ``desired`` can ask a
:class:`ChangeLog` which objects changed since its last run.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Union

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..errors import MapFullError
from .events import EventReport
from .workqueue import WorkQueue, run_workers

log = logging.getLogger("meshcni.k8s.reconciler")

REQUEUE_AFTER = "requeueAfter"  # key of apply()'s stats: run again after this many seconds
OUTCOMES = ("ok", "error", "map_full")
MAP_FULL_REASON = "MapFull"  # Event reason of a reconcile refused by a full map


@dataclass
class Desired:
    """What a reconciler wants, computed from the caches alone.

    ``state`` is whatever its ``apply`` takes. ``problems`` are the bad
    objects left out (:class:`meshcni.controllers.services.Problem`: kind,
    namespace, name, field, message); the runner reports them. ``map_full``,
    when set, says the desired state did not fit a map and what was done
    about it (e.g. policy failing closed for some endpoints): the runner logs
    it as an error and counts outcome ``map_full``, and still applies
    ``state`` (which is what did fit).
    """
    state: object
    problems: Sequence = ()
    map_full: str = ""


class Reconciler:
    """Base class (duck typing works as well): ``name``, ``watches``, ``desired``, ``apply``.

    A keyed reconciler (see the module doc) also defines ``keys`` and takes
    the key in ``desired(caches, key)``.
    """

    name: str = ""
    watches: tuple = ()

    def desired(self, caches: Mapping[str, object]) -> Desired:
        """Pure: read ``caches[name].list()`` / ``.get(key)`` and return the desired state."""
        raise NotImplementedError

    def apply(self, state) -> Optional[dict]:
        """Make the world (kernel maps, netlink, the API) hold ``state``; small stats or None."""
        raise NotImplementedError


class ChangeLog:
    """The keys (``namespace/name``) of objects changed since the last :meth:`take`, for the caches named
    ``keyed``; an event of any other cache, :meth:`everything`, or more than ``limit`` keys (a relist, an
    informer resync) means "cannot tell" and the taker recomputes everything. Thread-safe: events are
    recorded on informer threads, taken on a worker."""

    def __init__(self, keyed: Iterable[str], limit: int = 1000):
        self._lock = threading.Lock()
        self._names = tuple(keyed)
        self.limit = limit
        self._keys: Dict[str, set] = {c: set() for c in self._names}
        self._all = True  # nothing taken yet: the first run is a full one

    def record(self, cache: str, old: Optional[dict], new: Optional[dict]) -> None:
        obj = new if new is not None else old
        with self._lock:
            if self._all:
                return
            keys = self._keys.get(cache)
            if keys is None or obj is None:
                self._all = True
                return
            m = obj.get("metadata") or {}
            ns = m.get("namespace")
            keys.add(f"{ns}/{m.get('name', '')}" if ns else m.get("name", ""))
            if len(keys) > self.limit:
                self._all = True

    def everything(self) -> None:
        with self._lock:
            self._all = True

    def take(self) -> Optional[Dict[str, set]]:
        """{cache: changed keys} since the last take, or None when only a full recompute is right."""
        with self._lock:
            out = None if self._all else self._keys
            self._keys = {c: set() for c in self._names}
            self._all = False
            return out


class ReconcileMetrics:
    """The runner's metrics in a prometheus-client registry (a private one when None).

    Subclass to count more (the controller process also keeps its older
    ``meshcni_controller_*`` counters through :meth:`observe` and :meth:`bad_input`).
    """

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter("meshcni_reconcile_total", "reconciles by controller and outcome",
                                  ["controller", "outcome"], registry=self.registry)
        self.duration = Histogram("meshcni_reconcile_seconds", "reconcile duration by controller", ["controller"],
                                  registry=self.registry)
        self.problems = Counter("meshcni_bad_input_total", "objects left out for bad input, by kind",
                                ["kind"], registry=self.registry)
        self.maps_full = Counter("meshcni_map_full_total", "reconciles refused because a map was full, by "
                                 "controller and map", ["controller", "map"], registry=self.registry)

    def observe(self, controller: str, outcome: str, seconds: Optional[float] = None) -> None:
        self.reconciles.labels(controller, outcome).inc()
        if seconds is not None:
            self.duration.labels(controller).observe(seconds)

    def bad_input(self, problem) -> None:
        self.problems.labels(problem.kind).inc()

    def map_full(self, controller: str, map_name: str) -> None:
        self.maps_full.labels(controller, map_name).inc()


class SyncTimeout(RuntimeError):
    """An informer did not deliver its first list in time."""

    def __init__(self, informer: str, timeout: float):
        super().__init__(f"informer {informer}: no initial list within {timeout} s")
        self.informer = informer


Gate = Union[Callable[[], bool], threading.Event, None]


class Runner:
    """Drives ``reconcilers`` over the informers in ``caches`` (see the module doc).

    ``caches`` maps the names reconcilers use in ``watches`` and ``desired``
    to informers; the runner starts those not yet running and stops those it
    started. ``events`` is the process's :class:`~meshcni.k8s.events.EventRecorder`;
    ``metrics`` a :class:`ReconcileMetrics`, or a registry to create one in.
    ``workers`` threads share the queue; one reconciler never runs twice at once.
    """

    def __init__(self, name: str, caches: Mapping[str, object], reconcilers: Iterable, events,
                 metrics=None, *, gate: Gate = None, workers: int = 1, sync_timeout: float = 60.0,
                 base_delay: float = 0.005, max_delay: float = 1000.0):
        self.name = name
        self.caches = dict(caches)
        self.reconcilers: List = list(reconcilers)
        self.events = events
        self.metrics = metrics if isinstance(metrics, ReconcileMetrics) else ReconcileMetrics(metrics)
        self._gate = gate.is_set if isinstance(gate, threading.Event) else gate
        self.workers = workers
        self.sync_timeout = sync_timeout
        self.queue = WorkQueue(base_delay=base_delay, max_delay=max_delay, name=name)
        self.last: Dict[str, dict] = {}  # reconciler -> stats of its last successful run (+ seconds, at)
        self._full: set = set()    # labels whose last run was refused by a full map (an Event stands)
        self._by_name: Dict[str, object] = {}
        self._keyed = set()        # names of keyed reconcilers
        watchers: Dict[str, List[str]] = {}
        for r in self.reconcilers:
            if not r.name or r.name in self._by_name:
                raise ValueError(f"runner {name}: reconciler name {r.name!r} is empty or used twice")
            self._by_name[r.name] = r
            if callable(getattr(r, "keys", None)):
                self._keyed.add(r.name)
            for w in r.watches:
                if w not in self.caches:
                    raise ValueError(f"runner {name}: reconciler {r.name} watches {w!r}, which is not in the "
                                     f"caches ({', '.join(sorted(self.caches))})")
                watchers.setdefault(w, []).append(r.name)
        self._watchers = watchers
        self._started: List = []   # informers this runner started (and stops)
        self._threads: List[threading.Thread] = []
        for cache, names in watchers.items():
            plain = tuple(n for n in names if n not in self._keyed)
            keyed = tuple(self._by_name[n] for n in names if n in self._keyed)
            observers = tuple(o for o in (getattr(self._by_name[n], "observe", None) for n in plain) if callable(o))

            def enqueue(old, new, cache=cache, plain=plain, keyed=keyed, observers=observers):
                # recorded before queueing: the run the queue starts must see this change
                for o in observers:
                    o(cache, old, new)
                for n in plain:
                    self.queue.add(n)
                for r in keyed:
                    route = getattr(r, "keys_for", None)
                    keys = route(self.caches, cache, old, new) if route is not None else None
                    for k in (r.keys(self.caches) if keys is None else keys):
                        self.queue.add((r.name, k))
            self.caches[cache].add_handler(lambda o, f=enqueue: f(None, o), enqueue, lambda o, f=enqueue: f(o, None))

    # -- lifecycle --

    def start(self) -> "Runner":
        """Start and sync the informers, run every reconciler once (if the gate is open), start the workers.

        Raises :class:`SyncTimeout` when an informer does not list within
        ``sync_timeout`` seconds, and whatever a first run raised.
        """
        for inf in self.caches.values():
            if not inf.running:
                inf.start()
                self._started.append(inf)
        for cache, inf in self.caches.items():
            if not inf.wait_for_sync(self.sync_timeout):
                raise SyncTimeout(getattr(inf, "name", cache), self.sync_timeout)
        log.info("%s: informers synced: %s", self.name, ", ".join(f"{len(inf)} {c}" for c, inf in self.caches.items()))
        if self.open():
            for item in self._every():
                # the events of the initial list queued it; this run reads the complete caches
                self.queue.discard(item)
                self.run_once(*self._split(item))
        self._threads = run_workers(self.queue, self._work, self.workers, name=self.name)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers (waiting up to ``timeout`` s for a run in flight) and the informers it started."""
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout)
        for inf in self._started:
            inf.stop()
        self._started = []

    def open(self) -> bool:
        """Whether the gate lets reconcilers run now."""
        return self._gate is None or bool(self._gate())

    @property
    def synced(self) -> bool:
        return all(inf.has_synced() for inf in self.caches.values())

    # -- work --

    def kick(self, name: str, after: float = 0.0, *, key: Hashable = None) -> None:
        """Queue reconciler ``name`` (after ``after`` seconds); of a keyed one, ``key`` (None: every key)."""
        if name not in self._by_name:
            raise KeyError(f"runner {self.name}: no reconciler {name!r}")
        if name not in self._keyed:
            if key is not None:
                raise ValueError(f"runner {self.name}: reconciler {name} is not keyed (key {key!r})")
            self.queue.add_after(name, after)
            return
        for k in self._by_name[name].keys(self.caches) if key is None else (key,):
            self.queue.add_after((name, k), after)

    def kick_all(self) -> None:
        for item in self._every():
            self.queue.add(item)

    def _every(self) -> List:
        """The queue items of every reconciler, and of every key of the keyed ones, in order."""
        out = []
        for r in self.reconcilers:
            out += [(r.name, k) for k in r.keys(self.caches)] if r.name in self._keyed else [r.name]
        return out

    @staticmethod
    def _split(item) -> tuple:
        return item if isinstance(item, tuple) else (item, None)

    def _work(self, item) -> None:
        if not self.open():
            return  # whoever opens the gate kicks everything
        self.run_once(*self._split(item))  # run_workers retries a failure with backoff, forgets it on success

    def run_once(self, name: str, key: Hashable = None) -> dict:
        """Run reconciler ``name`` (of a keyed one: for ``key``) now, on this thread: desired, report, apply,
        count. Raises its failure.

        :meth:`start` uses it for the first run; afterwards the workers call
        it, and a direct call may overlap one of theirs.
        """
        r = self._by_name[name]
        keyed = name in self._keyed
        label = f"{name}/{key}" if keyed else name
        t0 = time.perf_counter()
        try:
            d = r.desired(self.caches, key) if keyed else r.desired(self.caches)
            self.events.report(label, d.problems, counted=self.metrics.bad_input)
            if d.map_full:
                self.metrics.observe(name, "map_full")
                log.error("%s: %s", label, d.map_full)
            stats = r.apply(d.state) or {}
        except MapFullError as e:
            self.metrics.observe(name, "map_full")
            self.metrics.map_full(name, e.map_name)
            log.error("%s: %s (existing entries kept)", label, e)
            self._report_map_full(label, e)
            raise
        except Exception:
            self.metrics.observe(name, "error")
            raise
        dt = time.perf_counter() - t0
        if label in self._full:
            self._full.discard(label)
            self.events.report(f"{label}/map_full", [])
        self.metrics.observe(name, "ok", dt)
        after = stats.get(REQUEUE_AFTER)
        if after is not None:
            self.queue.add_after((name, key) if keyed else name, after)
        self.last[name] = {**stats, "seconds": round(dt, 4), "at": time.time(), **({"key": key} if keyed else {})}
        shown = ", ".join(f"{k} {v}" for k, v in stats.items()
                          if k != REQUEUE_AFTER and not isinstance(v, (dict, list)))
        log.info("%s reconciled in %.1f ms%s", label, dt * 1000, f": {shown}" if shown else "")
        return self.last[name]

    def _report_map_full(self, label: str, e: MapFullError) -> None:
        # keyed by the map, so the retries of one overflow are one Event whatever their counts
        host = getattr(self.events, "host", None)
        self._full.add(label)
        if not host:
            return
        msg = f"{label}: {e} (the entries there before are kept; the reconcile is retried)"
        self.events.report(f"{label}/map_full", [EventReport("Node", "", host, MAP_FULL_REASON, msg,
                                                             key=f"{label}/{e.map_name}")])


__all__ = ["MAP_FULL_REASON", "ChangeLog", "Desired", "Reconciler", "ReconcileMetrics", "Runner", "SyncTimeout",
           "REQUEUE_AFTER"]
