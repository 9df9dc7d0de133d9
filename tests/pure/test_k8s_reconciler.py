# SPDX-License-Identifier: MIT OR Apache-2.0
"""The Runner over real Informers on the in-process API server: sync gate, first run, event wiring,
retries with backoff, map-full outcomes, once-per-problem Events, the leadership gate, metrics."""
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from meshcni.apiserver import APIServer
from meshcni.controllers.services import Problem
from meshcni.errors import MapFullError
from meshcni.k8s import Desired, EventRecorder, Informer, ReconcileMetrics, Reconciler, Runner, SyncTimeout, api_client
from meshcni.k8s.events import EventReport
from meshcni.k8s.reconciler import REQUEUE_AFTER
from testutil import eventually

pytestmark = pytest.mark.pure

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def until(cond, timeout=10.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.01)


@pytest.fixture(scope="module")
def server():
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    return api_client(server.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "kubeconfig")))


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def ns(core, request):
    name = "rec-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def runners():
    made = []
    yield made.append
    for r in made:
        r.stop()


def informers(core, ns):
    return {"configmaps": Informer(core.list_namespaced_config_map, namespace=ns, name="configmaps",
                                   backoff=(0.05, 0.3)),
            "secrets": Informer(core.list_namespaced_secret, namespace=ns, name="secrets", backoff=(0.05, 0.3))}


def cm(core, ns, name, labels=None):
    core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels or {}}})


class Names(Reconciler):
    """Desired: the sorted names in one cache; bad=true labelled objects are problems and left out."""

    def __init__(self, name, cache, fail=0, exc=RuntimeError):
        self.name, self.watches, self.cache = name, (cache,), cache
        self.fail, self.exc = fail, exc
        self.applied = []            # every state apply() was called with, successful or not
        self.synced_when_asked = []  # was every cache synced when desired() ran?
        self.times = []

    def desired(self, caches):
        self.synced_when_asked.append(all(c.has_synced() for c in caches.values()))
        objs = caches[self.cache].list()
        bad = [o for o in objs if (o["metadata"].get("labels") or {}).get("bad") == "true"]
        problems = [Problem("ConfigMap", o["metadata"]["namespace"], o["metadata"]["name"], "metadata.labels.bad",
                            "is true") for o in bad]
        return Desired(sorted(o["metadata"]["name"] for o in objs if o not in bad), problems)

    def apply(self, state):
        self.applied.append(state)
        self.times.append(time.monotonic())
        if self.fail:
            self.fail -= 1
            raise self.exc("apply failed on purpose") if self.exc is RuntimeError else self.exc
        return {"objects": len(state)}


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_first_run_on_synced_caches_then_events_enqueue_only_watchers(core, ns, runners):
    cm(core, ns, "a")
    cm(core, ns, "b")
    caches = informers(core, ns)
    cms, secrets = Names("cms", "configmaps"), Names("secrets", "secrets")
    metrics = ReconcileMetrics()
    r = Runner("t", caches, [cms, secrets], EventRecorder(None, "test", "t"), metrics)
    runners(r)
    assert not any(c.running for c in caches.values())
    r.start()
    # start() returned after one run of each, on complete caches
    assert cms.applied == [["a", "b"]] and secrets.applied == [[]]
    assert all(cms.synced_when_asked) and all(secrets.synced_when_asked) and r.synced
    assert r.last["cms"]["objects"] == 2 and r.last["cms"]["seconds"] >= 0
    cm(core, ns, "c")
    until(lambda: cms.applied[-1] == ["a", "b", "c"], what="the configmap event to reach cms")
    time.sleep(0.3)
    assert secrets.applied == [[]]  # it does not watch configmaps
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    until(lambda: secrets.applied[-1] == ["s"], what="the secret event to reach secrets")
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="ok") == len(cms.applied)
    assert value(metrics, "meshcni_reconcile_seconds_count", controller="cms") == len(cms.applied)
    r.stop()
    assert not any(c.running for c in caches.values())  # it stops the informers it started


def test_a_failed_apply_is_retried_with_growing_backoff_until_it_succeeds(core, ns, runners):
    cm(core, ns, "a")
    caches = informers(core, ns)
    rec = Names("cms", "configmaps")
    metrics = ReconcileMetrics()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), metrics, base_delay=0.1)
    runners(r)
    r.start()
    rec.fail = 3  # the next three applies fail
    r.kick("cms")
    until(lambda: value(metrics, "meshcni_reconcile_total", controller="cms", outcome="ok") == 2,
          what="the retries to succeed")
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="error") == 3
    gaps = [b - a for a, b in zip(rec.times[1:], rec.times[2:])]
    # 0.1, 0.2, 0.4 s: each consecutive failure doubles the wait
    assert len(gaps) == 3 and 0.08 < gaps[0] < gaps[1] < gaps[2] and gaps[2] >= 0.35, gaps
    assert r.queue.num_requeues("cms") == 0  # forgotten after the success
    time.sleep(0.5)
    assert len(rec.applied) == 5  # no further retries once it worked


def test_map_full_is_its_own_outcome_and_retried(core, ns, runners):
    caches = informers(core, ns)
    full = MapFullError("mc_svc", 4, 10, 4, [], 6, 4)
    rec = Names("cms", "configmaps", exc=full)
    metrics = ReconcileMetrics()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), metrics, base_delay=0.05)
    runners(r)
    r.start()
    rec.fail = 1
    r.kick("cms")
    until(lambda: value(metrics, "meshcni_reconcile_total", controller="cms", outcome="ok") == 2,
          what="a retry after map_full")
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="map_full") == 1
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="error") == 0


def test_a_failing_first_run_fails_start(core, ns, runners):
    caches = informers(core, ns)
    rec = Names("cms", "configmaps", fail=1, exc=MapFullError("mc_svc", 4, 10, 4, [], 6, 4))
    metrics = ReconcileMetrics()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), metrics)
    runners(r)
    with pytest.raises(MapFullError):
        r.start()  # not ready: the process reports the failure and exits
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="map_full") == 1


def test_desired_that_did_not_fit_counts_map_full_and_still_applies(core, ns, runners):
    caches = informers(core, ns)

    class Partial(Names):
        def desired(self, caches):
            return Desired(["what fit"], map_full="3 of 5 entries fit mc_policy; failing closed")
    rec = Partial("cms", "configmaps")
    metrics = ReconcileMetrics()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), metrics)
    runners(r)
    r.start()
    assert rec.applied == [["what fit"]]
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="map_full") == 1
    assert value(metrics, "meshcni_reconcile_total", controller="cms", outcome="ok") == 1


def test_problems_get_one_event_while_they_last_and_again_when_they_return(core, ns, runners):
    cm(core, ns, "good")
    cm(core, ns, "broken", {"bad": "true"})
    caches = informers(core, ns)
    rec = Names("cms", "configmaps")
    metrics = ReconcileMetrics()
    events = EventRecorder(core, "meshcni-test", "node-1", host="node-1", reason=lambda p: "BadConfigMap")
    r = Runner("t", caches, [rec], events, metrics)
    runners(r)
    r.start()
    assert rec.applied[-1] == ["good"]  # left out, reported

    def evs():
        return core.list_namespaced_event(ns, field_selector="involvedObject.name=broken").items
    got = evs()
    assert len(got) == 1
    ev = got[0]
    assert (ev.reason, ev.type, ev.count, ev.message) == ("BadConfigMap", "Warning", 1, "metadata.labels.bad: is true")
    assert (ev.involved_object.kind, ev.involved_object.api_version, ev.involved_object.namespace) == \
        ("ConfigMap", "v1", ns)
    assert (ev.source.component, ev.source.host, ev.reporting_component, ev.reporting_instance) == \
        ("meshcni-test", "node-1", "meshcni-test", "node-1")
    assert value(metrics, "meshcni_bad_input_total", kind="ConfigMap") == 1
    for i in range(3):  # still broken: reconciled again, not reported again
        cm(core, ns, f"more-{i}")
    until(lambda: len(rec.applied[-1]) == 4, what="three more configmaps")
    assert len(evs()) == 1 and evs()[0].count == 1
    assert value(metrics, "meshcni_bad_input_total", kind="ConfigMap") == 1
    # fixed: forgotten; broken again: reported again (the same Event, counted twice)
    core.patch_namespaced_config_map("broken", ns, {"metadata": {"labels": {"bad": None}}})
    until(lambda: "broken" in rec.applied[-1], what="the fixed configmap to be applied")
    core.patch_namespaced_config_map("broken", ns, {"metadata": {"labels": {"bad": "true"}}})
    until(lambda: "broken" not in rec.applied[-1], what="the broken configmap to be left out again")
    got = evs()
    assert len(got) == 1 and got[0].count == 2
    assert value(metrics, "meshcni_bad_input_total", kind="ConfigMap") == 2
    assert events.written == 2 and events.failed == 0


def test_event_message_is_capped_and_api_version_follows_the_kind(core, ns):
    events = EventRecorder(core, "meshcni-test", "x")
    p = Problem("NetworkPolicy", ns, "np", "spec.ingress[0].from[0].ipBlock.cidr", "x" * 5000)
    assert events.report("policy", [p, p]) == [p]  # the same problem twice in one list: one report
    ev = core.list_namespaced_event(ns, field_selector="involvedObject.name=np").items
    assert len(ev) == 1 and len(ev[0].message) == 1024
    assert ev[0].involved_object.api_version == "networking.k8s.io/v1" and ev[0].reason == "InvalidField"
    assert events.report("policy", [p]) == []
    assert events.report("other-source", [p]) == [p]  # once per source
    events.forget()
    assert events.report("policy", [p]) == [p]


def test_gate_closed_runs_nothing_until_opened_and_kicked(core, ns, runners):
    cm(core, ns, "a")
    caches = informers(core, ns)
    rec = Names("cms", "configmaps")
    leading = threading.Event()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), ReconcileMetrics(), gate=leading, workers=2)
    runners(r)
    r.start()
    assert rec.applied == [] and r.synced  # synced, but not leading: no first run
    cm(core, ns, "b")
    time.sleep(0.3)
    assert rec.applied == []  # events are dropped while the gate is closed
    leading.set()
    r.kick_all()
    until(lambda: rec.applied == [["a", "b"]], what="a run once the gate opened")
    leading.clear()
    cm(core, ns, "c")
    time.sleep(0.3)
    assert rec.applied == [["a", "b"]]


def test_requeue_after_runs_it_again(core, ns, runners):
    caches = informers(core, ns)

    class Timer(Names):
        def apply(self, state):
            super().apply(state)
            return {REQUEUE_AFTER: 0.2} if len(self.applied) < 3 else {}
    rec = Timer("cms", "configmaps")
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), ReconcileMetrics())
    runners(r)
    r.start()
    until(lambda: len(rec.applied) == 3, what="two requeued runs")
    assert rec.times[1] - rec.times[0] >= 0.19
    time.sleep(0.4)
    assert len(rec.applied) == 3


def test_an_informer_that_never_lists_is_a_sync_timeout(api, ns, runners):
    custom = client.CustomObjectsApi(api)
    # a resource the server does not serve: the list fails, the informer retries, never syncs
    caches = {"nothing": Informer(custom.list_cluster_custom_object, "example.com", "v1", "nothings",
                                  name="nothings", backoff=(0.05, 0.1))}
    rec = Names("n", "nothing")
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), ReconcileMetrics(), sync_timeout=0.5)
    runners(r)
    with pytest.raises(SyncTimeout, match="informer nothings: no initial list within 0.5 s"):
        r.start()
    assert rec.applied == []  # nothing decided on a cache that never listed


def test_wiring_mistakes_name_the_reconciler(core, ns):
    caches = informers(core, ns)
    with pytest.raises(ValueError, match="reconciler cms watches 'pods'"):
        Runner("t", caches, [Names("cms", "pods")], EventRecorder(None, "test", "t"))
    with pytest.raises(ValueError, match="'cms' is empty or used twice"):
        Runner("t", caches, [Names("cms", "configmaps"), Names("cms", "secrets")], EventRecorder(None, "t", "t"))
    with pytest.raises(KeyError, match="no reconciler 'x'"):
        Runner("t", caches, [], EventRecorder(None, "t", "t"), CollectorRegistry()).kick("x")


class Groups(Reconciler):
    """Keyed by the ``group`` label of configmaps: desired(key) = the sorted names in that group.

    A configmap labelled bad=true is a problem of its group; apply fails while ``fail[key]`` > 0.
    """

    name, watches = "groups", ("configmaps",)

    def __init__(self):
        self.applied = []   # (key, state) of every apply
        self.routed = []    # (cache, old name, new name) of every event routed
        self.fail = {}

    def keys(self, caches):
        return sorted({(o["metadata"].get("labels") or {}).get("group", "") for o in caches["configmaps"].list()})

    def keys_for(self, caches, cache, old, new):
        self.routed.append((cache, old and old["metadata"]["name"], new and new["metadata"]["name"]))
        return {(o["metadata"].get("labels") or {}).get("group", "") for o in (old, new) if o is not None}

    def desired(self, caches, key):
        objs = [o for o in caches["configmaps"].list() if (o["metadata"].get("labels") or {}).get("group", "") == key]
        bad = [o for o in objs if (o["metadata"].get("labels") or {}).get("bad") == "true"]
        return Desired((key, sorted(o["metadata"]["name"] for o in objs)),
                       [Problem("ConfigMap", o["metadata"]["namespace"], o["metadata"]["name"], "metadata.labels.bad",
                                "is true") for o in bad])

    def apply(self, state):
        key, names = state
        self.applied.append(state)
        if self.fail.get(key):
            self.fail[key] -= 1
            raise RuntimeError(f"group {key}: failing on purpose")
        return {"objects": len(names)}

    def runs(self, key):
        return [names for k, names in self.applied if k == key]


def test_keyed_reconciler_runs_retries_and_reports_each_key_alone(core, ns, runners):
    cm(core, ns, "a1", {"group": "a"})
    cm(core, ns, "b1", {"group": "b", "bad": "true"})
    caches = informers(core, ns)
    rec = Groups()
    metrics = ReconcileMetrics()
    events = EventRecorder(core, "meshcni-test", "t", reason=lambda p: "BadConfigMap")
    r = Runner("t", caches, [rec], events, metrics, base_delay=0.1)
    runners(r)
    r.start()
    # the first run: every key once, on complete caches
    assert sorted(rec.applied) == [("a", ["a1"]), ("b", ["b1"])] and r.last["groups"]["key"] in ("a", "b")
    assert len(core.list_namespaced_event(ns, field_selector="involvedObject.name=b1").items) == 1

    # an event runs the keys it concerns, and only those; old and new are passed for an update
    cm(core, ns, "a2", {"group": "a"})
    until(lambda: rec.runs("a")[-1] == ["a1", "a2"], what="group a to follow")
    core.patch_namespaced_config_map("a2", ns, {"metadata": {"labels": {"group": "c"}}})
    until(lambda: rec.runs("c") == [["a2"]] and rec.runs("a")[-1] == ["a1"], what="a2 to move from a to c")
    assert ("configmaps", "a2", "a2") in rec.routed and ("configmaps", None, "a1") in rec.routed
    time.sleep(0.3)
    assert len(rec.runs("b")) == 1, "b was not concerned by any of it"

    # by hand: one key, or every key
    n = {k: len(rec.runs(k)) for k in "abc"}
    r.kick("groups", key="b")
    until(lambda: len(rec.runs("b")) == n["b"] + 1, what="the kicked key")
    r.kick("groups")
    until(lambda: all(len(rec.runs(k)) >= n[k] + 1 for k in "ac"), what="every key")
    with pytest.raises(ValueError, match="not keyed"):
        Runner("u", informers(core, ns), [Names("cms", "configmaps")], events).kick("cms", key="x")

    # b's problem is still reported (once) while a runs without problems: reports are per key
    assert len(core.list_namespaced_event(ns, field_selector="involvedObject.name=b1").items) == 1
    assert value(metrics, "meshcni_bad_input_total", kind="ConfigMap") == 1

    # a failing key is retried with its own backoff; the others run meanwhile
    rec.fail["a"] = 2
    r.kick("groups", key="a")
    cm(core, ns, "c2", {"group": "c"})
    until(lambda: rec.runs("c")[-1] == ["a2", "c2"], what="c while a fails")
    until(lambda: value(metrics, "meshcni_reconcile_total", controller="groups", outcome="error") == 2
          and r.queue.num_requeues(("groups", "a")) == 0, what="a to succeed after two retries")
    assert r.queue.num_requeues(("groups", "c")) == 0
    assert value(metrics, "meshcni_reconcile_total", controller="groups", outcome="ok") == len(rec.applied) - 2


def test_requeue_after_of_a_keyed_reconciler_runs_that_key_again(core, ns, runners):
    cm(core, ns, "a1", {"group": "a"})
    cm(core, ns, "b1", {"group": "b"})
    caches = informers(core, ns)

    class Timer(Groups):
        def apply(self, state):
            stats = super().apply(state)
            return {**stats, REQUEUE_AFTER: 0.1} if state[0] == "a" and len(self.runs("a")) < 3 else stats
    rec = Timer()
    r = Runner("t", caches, [rec], EventRecorder(None, "test", "t"), ReconcileMetrics())
    runners(r)
    r.start()
    until(lambda: len(rec.runs("a")) == 3, what="two requeued runs of a")
    time.sleep(0.3)
    assert len(rec.runs("a")) == 3 and len(rec.runs("b")) == 1


def test_event_report_keeps_its_object_reason_message_and_key(core, ns):
    events = EventRecorder(core, "meshcni-test", "x", reason=lambda p: "NotThisOne")
    written = []

    def report(message, key="cond/Ready/Unreachable"):
        return EventReport("ConfigMap", ns, "target", "ClusterProblem", message, uid="u-1", key=key,
                           written=lambda: written.append(message))
    first = report("cluster east: Service app/web: spec.ports: no port")
    assert events.report("mesh/east", [first]) == [first]
    (ev,) = core.list_namespaced_event(ns, field_selector="involvedObject.name=target").items
    assert (ev.reason, ev.message, ev.involved_object.uid) == ("ClusterProblem", str(first), "u-1")
    assert written == [str(first)]
    # the same key with another message is the same problem while it lasts
    assert events.report("mesh/east", [report("changed details")]) == []
    assert events.report("mesh/east", []) == []
    assert events.report("mesh/east", [report("back")]) != []
    assert len(written) == 2
