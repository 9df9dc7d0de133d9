# SPDX-License-Identifier: MIT OR Apache-2.0
"""``EventRecorder``: bad input reported as core/v1 Events, once per problem while it lasts.

A controller recomputes its whole desired state on every change, so it sees
the same broken object again and again. :meth:`EventRecorder.report` takes
the complete list of problems one *source* (a reconciler) sees now and
reports only those it did not see the last time: a problem is logged and put
on an Event once while it lasts, forgotten as soon as it is fixed (memory
stays bounded by what is broken now), and reported again if it comes back.

Events are named ``<object>.<hash of (object, reporter, reason, message)>``,
so a process that restarts and reports the same problem again finds its
Event (409) and bumps ``count`` and ``lastTimestamp`` instead of piling up
new ones. An Event is a courtesy: a failure to write one is logged, never
raised.

Problems are anything with ``kind``, ``namespace``, ``name``, ``field`` and
``message`` (:class:`meshcni.controllers.services.Problem`). A problem with a
non-empty ``key`` is the same problem as long as its key is (a condition
whose message carries changing details); otherwise its text decides. An
:class:`EventReport` is a problem whose reporter already decided its Event:
the object it goes on, the reason and the message (the mesh puts a remote
cluster's bad objects on the local Cluster).
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

from kubernetes.client.exceptions import ApiException

log = logging.getLogger("meshcni.k8s.events")

MESSAGE_MAX = 1024  # bytes of an Event message kube keeps
DEFAULT_REASON = "InvalidField"
# involvedObject.apiVersion of each kind a meshcni process reports on; the rest are core/v1
API_VERSIONS = {
    "Identity": "mesh-cni.dev/v1alpha1", "CIDRIdentity": "mesh-cni.dev/v1alpha1",
    "Cluster": "mesh-cni.dev/v1alpha1", "MeshEndpoint": "mesh-cni.dev/v1alpha1",
    "EndpointSlice": "discovery.k8s.io/v1", "NetworkPolicy": "networking.k8s.io/v1",
    "Lease": "coordination.k8s.io/v1",
}


@dataclass(frozen=True)
class EventReport:
    """A problem reported as it stands: an Event on ``kind namespace/name`` (``uid``) with ``reason`` and
    ``message``, which is also its log line.

    ``key`` identifies it for once-per-problem reporting (default: the
    message); ``written`` is called after its Event was written (a
    reporter's own count of its API writes).
    """
    kind: str
    namespace: str
    name: str
    reason: str
    message: str
    uid: Optional[str] = None
    key: str = ""
    written: Optional[Callable[[], None]] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.message


def problem_key(p) -> str:
    """What makes two reports the same problem: its ``key`` when it has one, else its text."""
    return getattr(p, "key", "") or str(p)


def api_version(kind: str) -> str:
    return API_VERSIONS.get(kind, "v1")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    """Writes Events for one process (``component``, e.g. "meshcni-agent"; ``instance``, e.g. the node).

    ``core`` is a ``kubernetes.client.CoreV1Api`` (None: problems are only
    logged). ``reason(problem)`` names the Event reason of a problem
    (default ``InvalidField``). ``host`` goes to ``source.host`` (the node,
    for a per-node process).
    """

    def __init__(self, core, component: str, instance: str, host: Optional[str] = None,
                 reason: Optional[Callable[[object], str]] = None):
        self.core = core
        self.component = component
        self.instance = instance
        self.host = host
        self.reason = reason or (lambda p: DEFAULT_REASON)
        self._lock = threading.Lock()
        self._reported: Dict[str, set] = {}  # source -> str(problem) of what it reported last time
        self.written = 0   # Events created or bumped
        self.failed = 0    # Event writes that failed (logged)

    def report(self, source: str, problems: Iterable, counted: Optional[Callable[[object], None]] = None) -> List:
        """Log and put an Event on each problem ``source`` did not report last time; returns those.

        ``problems`` is everything ``source`` sees broken now: what is missing
        from it is forgotten, so it is reported again if it comes back. The
        same problem twice in one list is one report. ``counted(problem)`` is
        called for each new one *before* its Event is written, so whoever sees
        the Event also sees the problem counted in the metrics.
        """
        problems = list(problems)
        keys = [problem_key(p) for p in problems]
        with self._lock:
            before = self._reported.get(source, set())
            self._reported[source] = set(keys)
        new, seen = [], set(before)
        for p, k in zip(problems, keys):
            if k in seen:
                continue
            seen.add(k)
            new.append(p)
        for p in new:
            log.warning("%s", p)
            if counted is not None:
                counted(p)
            if isinstance(p, EventReport):
                if self.emit(p.kind, p.namespace, p.name, p.reason, p.message, uid=p.uid) and p.written:
                    p.written()
            else:
                self.emit(p.kind, p.namespace, p.name, self.reason(p), f"{p.field}: {p.message}")
        return new

    def forget(self, source: Optional[str] = None) -> None:
        """Forget what ``source`` (every source, if None) reported: all of it is reported again."""
        with self._lock:
            if source is None:
                self._reported.clear()
            else:
                self._reported.pop(source, None)

    def emit(self, kind: str, namespace: str, name: str, reason: str, message: str, type: str = "Warning",
             uid: Optional[str] = None) -> bool:
        """Create (or bump) the Event on ``kind namespace/name``; False if it could not be written.

        Events of cluster-scoped objects go to ``default``, as kube records them.
        """
        if self.core is None:
            return False
        ns = namespace or "default"
        message = message.encode()[:MESSAGE_MAX].decode(errors="ignore")
        digest = hashlib.sha256("\0".join((kind, namespace or "", name, self.component, self.instance, reason,
                                           message)).encode()).hexdigest()[:16]
        ev_name = f"{name[:200]}.{digest}"
        now = _now()
        involved = {"apiVersion": api_version(kind), "kind": kind, "name": name, "namespace": namespace or None}
        if uid:
            involved["uid"] = uid
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": ev_name, "namespace": ns},
                "involvedObject": involved, "reason": reason, "message": message, "type": type, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now, "source": source,
                "reportingComponent": self.component, "reportingInstance": self.instance}
        try:
            try:
                self.core.create_namespaced_event(ns, body, _preload_content=False)
            except ApiException as e:
                if e.status != 409:
                    raise
                # reported before (an earlier run, or the problem went away and came back): bump it
                cur = self.core.read_namespaced_event(ev_name, ns)
                self.core.patch_namespaced_event(ev_name, ns, {"count": (cur.count or 1) + 1, "lastTimestamp": now},
                                                 _preload_content=False)
        except Exception as e:  # an Event is a courtesy: never fail the reconcile on it
            self.failed += 1
            log.warning("Event %s on %s %s: %s", reason, kind, f"{namespace}/{name}" if namespace else name,
                        getattr(e, "reason", None) or e)
            return False
        self.written += 1
        return True
