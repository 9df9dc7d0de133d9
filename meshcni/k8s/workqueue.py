# SPDX-License-Identifier: MIT OR Apache-2.0
"""``WorkQueue``: a keyed work queue for controllers, with delays and per-key backoff.

Controllers enqueue *keys* (``namespace/name``), not objects: a key changed
ten times while waiting is processed once, against the informer's current
cache. A key is never handed to two workers at once; a key added while it is
being processed is queued again when the worker calls :meth:`WorkQueue.done`.
"""
from __future__ import annotations

import collections
import heapq
import logging
import threading
import time
from typing import Callable, Hashable

log = logging.getLogger("meshcni.k8s.workqueue")


class ShutDown(Exception):
    """The queue was shut down and has nothing left to hand out."""


class WorkQueue:
    """Keyed FIFO with de-duplication, delayed adds and per-key exponential backoff.

    ``base_delay`` and ``max_delay`` (seconds) shape :meth:`add_rate_limited`:
    the n-th consecutive retry of a key waits ``min(base_delay * 2**n, max_delay)``.
    """

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0, name: str = "queue"):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.name = name
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._dirty: set = set()          # keys waiting to be handed out
        self._processing: set = set()     # keys a worker holds
        self._delayed: list = []          # heap of (due monotonic time, seq, key)
        # monotonic times for liveness (meshcni.health.queue_progress): when each
        # waiting key became ready, and when each held key was handed out
        self._ready_since: dict = {}
        self._held_since: dict = {}
        self._seq = 0
        self._failures: dict = {}
        self._shutdown = False
        # metrics
        self.adds = 0
        self.retries = 0

    def add(self, key: Hashable):
        """Queue ``key`` unless it is already waiting (then this is a no-op)."""
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key):
        if self._shutdown or key in self._dirty:
            return
        self.adds += 1
        self._dirty.add(key)
        if key in self._processing:
            return  # done() queues it again
        self._queue.append(key)
        self._ready_since.setdefault(key, time.monotonic())
        self._cond.notify()

    def discard(self, key: Hashable):
        """Take ``key`` out of the queue if it is waiting (not held by a worker, not delayed).

        For a caller about to do that key's work itself, against caches at
        least as new as whatever queued it.
        """
        with self._cond:
            if key in self._dirty and key not in self._processing:
                self._dirty.discard(key)
                self._queue.remove(key)

    def add_after(self, key: Hashable, delay: float):
        """Queue ``key`` after ``delay`` seconds (at once if ``delay`` <= 0)."""
        if delay <= 0:
            return self.add(key)
        with self._cond:
            if self._shutdown:
                return
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
            # a waiting get() may be sleeping until a later due time
            self._cond.notify_all()

    def add_rate_limited(self, key: Hashable):
        """Queue ``key`` after its backoff delay; each call without :meth:`forget` doubles it."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
            self.retries += 1
        self.add_after(key, self.when(n))

    def when(self, failures: int) -> float:
        """The backoff delay in seconds after ``failures`` consecutive failures."""
        if failures > 64:  # 2**n overflows float range long after max_delay is reached
            return self.max_delay
        return min(self.base_delay * (2 ** failures), self.max_delay)

    def forget(self, key: Hashable):
        """Reset ``key``'s backoff (call after it was processed successfully)."""
        with self._cond:
            self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None):
        """The next key, which the caller holds until :meth:`done`.

        Returns None after ``timeout`` seconds with nothing ready; raises
        :class:`ShutDown` once the queue is shut down and drained.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                self._promote_locked(now)
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._ready_since.pop(key, None)
                    self._held_since[key] = now
                    self._dirty.discard(key)
                    return key
                if self._shutdown:
                    raise ShutDown(self.name)
                wait = None if deadline is None else deadline - now
                if wait is not None and wait <= 0:
                    return None
                if self._delayed:
                    due = self._delayed[0][0] - now
                    wait = due if wait is None else min(wait, due)
                self._cond.wait(wait)

    def _promote_locked(self, now: float):
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._add_locked(key)

    def done(self, key: Hashable):
        """Release ``key``; if it was added meanwhile it is queued again now."""
        with self._cond:
            self._processing.discard(key)
            self._held_since.pop(key, None)
            if key in self._dirty:
                self._queue.append(key)
                self._ready_since.setdefault(key, time.monotonic())
                self._cond.notify()

    def shutdown(self):
        """Stop accepting keys; get() hands out what is ready, then raises :class:`ShutDown`."""
        with self._cond:
            self._shutdown = True
            self._delayed.clear()
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    def __len__(self) -> int:
        """Keys ready to be handed out (delayed ones not counted)."""
        with self._cond:
            return len(self._queue)

    def in_flight(self) -> int:
        """Keys handed out and not yet done."""
        with self._cond:
            return len(self._processing)

    def delayed(self) -> int:
        with self._cond:
            return len(self._delayed)

    def oldest(self, now: float | None = None) -> tuple:
        """(seconds the longest-held key has been processed, seconds the oldest
        ready key has waited for a worker); 0.0 where there is none.

        A worker that makes progress keeps both small whatever the load; a
        stuck one lets one of them grow without bound (liveness reads them).
        """
        now = time.monotonic() if now is None else now
        with self._cond:
            held = max((now - t for t in self._held_since.values()), default=0.0)
            waiting = max((now - t for t in self._ready_since.values()), default=0.0)
        return held, waiting


def run_workers(queue: WorkQueue, fn: Callable[[Hashable], None], n: int = 1,
                name: str | None = None) -> list[threading.Thread]:
    """Start ``n`` daemon threads calling ``fn(key)`` for every key until the queue shuts down.

    A key whose ``fn`` raised is logged and re-added with backoff; one that
    succeeded has its backoff forgotten. Join the returned threads after
    :meth:`WorkQueue.shutdown` to wait for in-flight work.
    """
    label = name or queue.name

    def worker():
        while True:
            try:
                key = queue.get()
            except ShutDown:
                return
            try:
                fn(key)
            except Exception:
                log.exception("%s: processing %s failed (retry %d)", label, key, queue.num_requeues(key) + 1)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    threads = [threading.Thread(target=worker, name=f"{label}-worker-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads
