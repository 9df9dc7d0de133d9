# SPDX-License-Identifier: MIT OR Apache-2.0
"""The mesh controller's decision step (clustermesh.decide): plain snapshots in, a plan out, no I/O."""
import base64

import pytest
import yaml

from meshcni.controller.clustermesh import MeshConfig, RemoteView, Snapshot, decide, decide_global, fingerprint, rfc3339
from meshcni.controllers import mesh

pytestmark = pytest.mark.pure

CFG = MeshConfig(cluster_name="here", namespace="meshcni-system", stale_grace=100.0, service_cidrs=("10.96.0.0/12",))
KC = {"clusters": [{"name": "r", "cluster": {"server": "http://192.0.2.1:6443"}}],
      "contexts": [{"name": "r", "context": {"cluster": "r"}}], "current-context": "r"}
FP = fingerprint(KC)
T0 = 1_700_000_000.0


def cluster(name="east", fin=True, deleting=False, grace=None, status=None):
    meta = {"name": name, "uid": "cu", "resourceVersion": "7", "generation": 2}
    if fin:
        meta["finalizers"] = [mesh.FINALIZER]
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    spec = {"secret": {"name": "kc", "key": "config"}}
    if grace is not None:
        spec["staleGracePeriodSeconds"] = grace
    c = {"metadata": meta, "spec": spec}
    if status is not None:
        c["status"] = status
    return c


def secret(cfg=KC):
    return {"metadata": {"name": "kc", "namespace": "meshcni-system"},
            "data": {"config": base64.b64encode(yaml.safe_dump(cfg).encode()).decode()}}


def lsvc(name="web"):
    return {"metadata": {"name": name, "namespace": "app", "uid": f"u-{name}",
                         "annotations": {mesh.MULTI_CLUSTER: "true"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def remote(fp=FP, synced=True, connected=True, failing_since=None, ips=("10.245.0.5",), nodes=None):
    svc = {"metadata": {"name": "web", "namespace": "app"}, "spec": {"ports": [{"name": "http", "port": 80}]}}
    sl = {"metadata": {"name": "web-1", "namespace": "app", "labels": {mesh.SERVICE_NAME_LABEL: "web"}},
          "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
          "endpoints": [{"addresses": [ip]} for ip in ips]}
    nodes = nodes if nodes is not None else [{"metadata": {"name": "r1"}, "spec": {"podCIDRs": ["10.245.0.0/24"]},
                                             "status": {"addresses": [{"type": "InternalIP",
                                                                       "address": "172.18.1.2"}]}}]
    return RemoteView(fp, "http://192.0.2.1:6443", synced, connected, failing_since,
                      "" if connected is not False else "nodes: connection refused", T0 - 50, [svc],
                      [{"metadata": {"name": "app"}}], [sl], nodes)


LOCAL_NODES = [{"metadata": {"name": "l1"}, "spec": {"podCIDRs": ["10.244.0.0/24"]}}]


def snap(c=None, sec=None, active=None, pending=None, existing=(), now=T0, no_source_since=None, client_error=None,
         services=None):
    return Snapshot("east" if c is None else c["metadata"]["name"], c, sec, active, pending, client_error,
                    list(existing), services if services is not None else [lsvc()], LOCAL_NODES, no_source_since, now)


def conds(plan):
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}


def stored(body, status=None):
    o = dict(body, metadata=dict(body["metadata"], uid="mu", resourceVersion="9"))
    if status:
        o["status"] = status
    return o


def test_first_sight_adds_finalizer_and_connects_without_marking_anything_stale():
    existing = [stored(mesh.meshendpoint_body("east", lsvc(), []))]
    p = decide(snap(cluster(fin=False), secret(), existing=existing), CFG)
    assert p.add_finalizer and p.connect == (FP, KC)
    assert p.meps.writes == 0 and p.stale_patches == []  # nothing known yet: what exists stays as is
    assert conds(p)["APIServerReachable"] == ("Unknown", "Connecting")
    assert conds(p)["Ready"] == ("False", "Connecting") and p.problems == []


def test_synced_source_programs_and_reports_ready():
    p = decide(snap(cluster(), secret(), active=remote()), CFG)
    assert p.connect is None and not p.add_finalizer
    (body,) = p.meps.create
    assert body["spec"]["backend_port_mappings"] == [{"ip": "10.245.0.5", "service_port": 80, "backend_port": 8080,
                                                      "protocol": "TCP"}]
    assert conds(p) == {"Ready": ("True", "Ready"), "SecretResolved": ("True", "Resolved"),
                        "APIServerReachable": ("True", "Reachable"), "InitialSyncComplete": ("True", "Synced"),
                        "CIDRConflict": ("False", "NoConflict")}
    assert p.status["nodes"] == [{"name": "r1", "addresses": ["172.18.1.2"], "podCIDRs": ["10.245.0.0/24"]}]
    assert p.status["lastSyncTime"] == rfc3339(T0 - 50) and p.status["observedGeneration"] == 2
    # the same inputs once applied: nothing to do
    again = decide(snap(cluster(status=p.status), secret(), active=remote(), existing=[stored(body)]), CFG)
    assert again.writes == 0 and again.status is None


def test_new_kubeconfig_connects_beside_the_active_one():
    new = dict(KC, clusters=[{"name": "r", "cluster": {"server": "http://192.0.2.2:6443"}}])
    p = decide(snap(cluster(), secret(new), active=remote()), CFG)
    assert p.connect == (fingerprint(new), new) and not p.disconnect
    assert p.meps.create, "the active connection keeps feeding the MeshEndpoints meanwhile"
    # while the pending one connects, nothing is connected again
    p2 = decide(snap(cluster(), secret(new), active=remote(), pending=remote(fingerprint(new), synced=False,
                                                                          connected=None)), CFG)
    assert p2.connect is None


def test_broken_secret_keeps_the_working_connection():
    p = decide(snap(cluster(), None, active=remote()), CFG)
    assert p.connect is None and not p.disconnect and p.meps.create
    assert conds(p)["SecretResolved"] == ("False", "SecretNotFound")
    assert "still using" in next(c for c in p.status["conditions"] if c["type"] == "SecretResolved")["message"]


def test_refused_kubeconfig_is_not_retried():
    p = decide(snap(cluster(), secret(), client_error=(FP, "bad certificate data")), CFG)
    assert p.connect is None and conds(p)["SecretResolved"] == ("False", "InvalidKubeconfig")


def test_unreachable_within_grace_marks_stale_and_keeps():
    body = mesh.desired_meshendpoints("east", [lsvc()], remote().services, remote().namespaces,
                                      remote().slices).desired["app/web-east"]
    ex = [stored(body)]
    src = remote(connected=False, failing_since=T0 - 10)
    p = decide(snap(cluster(), secret(), active=src, existing=ex), CFG)
    assert p.meps.writes == 0
    assert p.stale_patches == [(ex[0], {"status": {"stale": True, "staleSince": rfc3339(T0 - 10)}})]
    assert conds(p)["APIServerReachable"] == ("False", "Unreachable") and conds(p)["Ready"][0] == "False"
    assert p.requeue_after == pytest.approx(90.05)
    assert p.status["nodes"], "routes kept during the grace"
    # already marked: no second write
    ex2 = [stored(body, {"stale": True, "staleSince": rfc3339(T0 - 10)})]
    assert decide(snap(cluster(), secret(), active=src, existing=ex2), CFG).stale_patches == []


def test_unreachable_past_grace_removes_everything():
    body = mesh.meshendpoint_body("east", lsvc(), [])
    ex = [stored(body, {"stale": True, "staleSince": rfc3339(T0 - 200)})]
    p = decide(snap(cluster(grace=30), secret(), active=remote(connected=False, failing_since=T0 - 31),
                    existing=ex), CFG)
    assert [o["metadata"]["name"] for o in p.meps.delete] == ["web-east"] and p.status["nodes"] == []
    assert p.status["meshedServices"] == 0


def test_no_source_after_restart_grace_counts_from_the_stored_stale_mark():
    body = mesh.meshendpoint_body("east", lsvc(), [])
    ex = [stored(body, {"stale": True, "staleSince": rfc3339(T0 - 150)})]
    # the pending connection failed: no source; the mark on the object is older than the grace (100)
    failing = remote(synced=False, connected=False, failing_since=T0 - 1)
    p = decide(snap(cluster(), secret(), pending=failing, existing=ex), CFG)
    assert p.no_source and [o["metadata"]["name"] for o in p.meps.delete] == ["web-east"]
    ex = [stored(body, {"stale": True, "staleSince": rfc3339(T0 - 50)})]
    p = decide(snap(cluster(), secret(), pending=failing, existing=ex), CFG)
    assert p.meps.writes == 0 and p.requeue_after == pytest.approx(50.05)


def test_cidr_conflict_programs_nothing():
    clash = [{"metadata": {"name": "r9"}, "spec": {"podCIDRs": ["10.244.0.0/16"]},
              "status": {"addresses": [{"type": "InternalIP", "address": "172.18.1.9"}]}}]
    ex = [stored(mesh.meshendpoint_body("east", lsvc(), []))]
    p = decide(snap(cluster(), secret(), active=remote(nodes=clash), existing=ex), CFG)
    assert conds(p)["CIDRConflict"] == ("True", "PodCIDROverlap") and conds(p)["Ready"] == ("False", "PodCIDROverlap")
    assert len(p.meps.delete) == 1 and not p.meps.create and p.status["nodes"] == []
    assert [x.field for x in p.problems] == ["status.conditions[CIDRConflict]"]


def test_deletion_deletes_then_releases_the_finalizer():
    ex = [stored(mesh.meshendpoint_body("east", lsvc(), []))]
    p = decide(snap(cluster(deleting=True), secret(), active=remote(), existing=ex), CFG)
    assert p.disconnect and p.finalize and len(p.meps.delete) == 1 and p.status is None
    gone = decide(snap(None, None, existing=ex), CFG)
    assert gone.disconnect and len(gone.meps.delete) == 1


def test_local_cluster_name_is_ignored():
    p = decide(snap(cluster("here", fin=False), secret()), CFG)
    assert p.connect is None and p.disconnect and not p.add_finalizer
    assert conds(p)["Ready"] == ("False", "LocalClusterName")
    assert [x.field for x in p.problems] == ["metadata.name"]


def test_global_orphans_and_handmade():
    managed = stored(mesh.meshendpoint_body("ghost", lsvc(), []))
    ok = stored(mesh.meshendpoint_body("east", lsvc(), []))
    hand = stored(mesh.meshendpoint_body("east", lsvc("x"), []))
    del hand["metadata"]["labels"][mesh.MANAGED_BY]
    orphans, problems = decide_global({"east": cluster()}, [managed, ok, hand])
    assert list(orphans) == ["ghost"] and [p.name for p in problems] == ["x-east"]
