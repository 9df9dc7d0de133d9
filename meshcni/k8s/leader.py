# SPDX-License-Identifier: MIT OR Apache-2.0
"""``LeaderElector``: leader election on a ``coordination.k8s.io/v1`` Lease.

The API server's optimistic concurrency is the only arbiter: every write
carries the resourceVersion we read, so of two candidates writing the same
version exactly one succeeds and the other gets 409 Conflict. Expiry is
judged on *our* clock, from when we last saw the record change, never from
the renewTime in it, so clock skew between nodes cannot make a live leader
look expired (client-go does the same).
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import random
import threading
import time
from typing import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("meshcni.k8s.leader")


def _now_micro() -> str:
    # MicroTime wire format: RFC 3339 with microseconds, UTC
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaign for Lease ``namespace/lease_name`` as ``identity``.

    Durations are seconds: a leader that has not renewed for
    ``lease_duration`` may be replaced; the leader gives up if it cannot
    renew within ``renew_deadline`` (< ``lease_duration``, so it stops before
    anyone may take over); candidates and the leader retry every
    ``retry_period`` (jittered up to +20%). ``on_started_leading()`` and
    ``on_stopped_leading()`` run on the elector's thread and must return
    promptly (start long work in your own thread). After losing the lease the
    elector campaigns again; :meth:`stop` releases a held lease by clearing
    ``holderIdentity`` so a follower takes over at its next retry.
    """

    def __init__(self, api_client, lease_name: str, namespace: str, identity: str,
                 lease_duration: float = 15, renew_deadline: float = 10, retry_period: float = 2,
                 on_started_leading: Callable[[], None] | None = None,
                 on_stopped_leading: Callable[[], None] | None = None):
        if not renew_deadline < lease_duration:
            raise ValueError(f"lease {namespace}/{lease_name}: renew_deadline {renew_deadline}s must be "
                             f"less than lease_duration {lease_duration}s")
        if not retry_period < renew_deadline:
            raise ValueError(f"lease {namespace}/{lease_name}: retry_period {retry_period}s must be "
                             f"less than renew_deadline {renew_deadline}s")
        self.api = client.CoordinationV1Api(api_client)
        self.lease_name = lease_name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._stop = threading.Event()
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed: tuple | None = None     # (holder, renewTime, resourceVersion) last read
        self._observed_at = 0.0                 # monotonic time the record last changed
        self._observed_duration = lease_duration
        # metrics
        self.transitions = 0     # times this elector became leader
        self.conflicts = 0

    # ------------------------------------------------------------ public

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def leader(self) -> str:
        """The holder we last observed ('' if none)."""
        return self._observed[0] if self._observed else ""

    def wait_for_leadership(self, timeout: float | None = None) -> bool:
        return self._leading.wait(timeout)

    def start(self) -> LeaderElector:
        if self._thread is not None:
            raise RuntimeError(f"elector {self.identity} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"leader-{self.lease_name}-{self.identity}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0):
        """Stop campaigning; release the lease if held; join the thread (``timeout`` seconds)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ the loop

    def _jitter(self) -> float:
        return self.retry_period * random.uniform(1.0, 1.2)

    def run(self):
        while not self._stop.is_set():
            while not self._stop.is_set() and not self.try_acquire_or_renew():
                self._stop.wait(self._jitter())
            if self._stop.is_set():
                break
            last_ok = time.monotonic()
            self._leading.set()
            self.transitions += 1
            log.info("lease %s/%s: %s is now the leader", self.namespace, self.lease_name, self.identity)
            self._callback(self.on_started_leading)
            while not self._stop.wait(self.retry_period):
                if self.try_acquire_or_renew():
                    last_ok = time.monotonic()
                    continue
                if self._observed and self._observed[0] != self.identity:
                    log.warning("lease %s/%s: %s lost the lease to %s", self.namespace, self.lease_name,
                                self.identity, self._observed[0])
                    break
                if time.monotonic() - last_ok > self.renew_deadline:
                    log.warning("lease %s/%s: %s could not renew within %ss; stepping down",
                                self.namespace, self.lease_name, self.identity, self.renew_deadline)
                    break
            if self._stop.is_set():
                self._release()
            self._leading.clear()
            self._callback(self.on_stopped_leading)

    def _callback(self, fn):
        if fn is None:
            return
        try:
            fn()
        except Exception:
            log.exception("lease %s/%s: leadership callback failed", self.namespace, self.lease_name)

    # ------------------------------------------------------------ one attempt

    def _read(self) -> dict | None:
        try:
            resp = self.api.read_namespaced_lease(self.lease_name, self.namespace, _preload_content=False,
                                                  _request_timeout=self.retry_period * 2)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _observe(self, lease: dict):
        spec = lease.get("spec") or {}
        rec = (spec.get("holderIdentity") or "", spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if rec != self._observed:
            self._observed = rec
            self._observed_at = time.monotonic()
            self._observed_duration = spec.get("leaseDurationSeconds") or self.lease_duration

    def _duration_field(self) -> int:
        # the API field is whole seconds; rounding down would let followers take over early
        return max(1, math.ceil(self.lease_duration))

    def try_acquire_or_renew(self) -> bool:
        """One round: create, take over or renew the lease. True if we hold it afterwards."""
        now = _now_micro()
        try:
            lease = self._read()
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.lease_name, "namespace": self.namespace},
                        "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self._duration_field(),
                                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
                resp = self.api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                        _request_timeout=self.retry_period * 2)
                self._observe(json.loads(resp.data))
                return True
            self._observe(lease)
            spec = dict(lease.get("spec") or {})
            holder = spec.get("holderIdentity") or ""
            expired = time.monotonic() > self._observed_at + self._observed_duration
            if holder and holder != self.identity and not expired:
                return False
            if holder != self.identity:
                spec["acquireTime"] = now
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
            spec["holderIdentity"] = self.identity
            spec["renewTime"] = now
            spec["leaseDurationSeconds"] = self._duration_field()
            # the resourceVersion we read makes this write conditional: a 409 means we lost the race
            body = dict(lease, spec=spec)
            resp = self.api.replace_namespaced_lease(self.lease_name, self.namespace, body, _preload_content=False,
                                                     _request_timeout=self.retry_period * 2)
            self._observe(json.loads(resp.data))
            return True
        except ApiException as e:
            if e.status == 409:
                self.conflicts += 1
                log.debug("lease %s/%s: %s lost a write race", self.namespace, self.lease_name, self.identity)
            else:
                log.warning("lease %s/%s: %s: API error %s %s", self.namespace, self.lease_name,
                            self.identity, e.status, e.reason)
            return False
        except Exception as e:  # the API server is unreachable: keep campaigning
            log.warning("lease %s/%s: %s: %s: %s", self.namespace, self.lease_name, self.identity,
                        type(e).__name__, e)
            return False

    def _release(self):
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease["spec"], holderIdentity="", leaseDurationSeconds=1, renewTime=_now_micro())
            self.api.replace_namespaced_lease(self.lease_name, self.namespace, dict(lease, spec=spec),
                                              _preload_content=False, _request_timeout=self.retry_period * 2)
            log.info("lease %s/%s: %s released the lease", self.namespace, self.lease_name, self.identity)
        except Exception as e:
            log.warning("lease %s/%s: %s could not release the lease: %s", self.namespace, self.lease_name,
                        self.identity, e)
