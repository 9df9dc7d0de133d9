# SPDX-License-Identifier: MIT OR Apache-2.0
"""Remote identities through the real controller: remote Pods and Namespaces (a second in-process API
server) -> RemoteIdentity objects in the local one, with the official client on both sides.

One object per (namespace, label set), carrying the addresses; relabels of remote pods and
namespaces, pod churn, an outage past the grace and a deleted Cluster all end in the objects
the agents need, and a remote change that changes nothing here writes nothing.
"""
import pytest
from kubernetes.client.exceptions import ApiException

from meshcni.controllers.identity import CLUSTER_LABEL, CLUSTER_OWNER, MANAGED_BY, MANAGER, REMOTE_ID_MIN

from test_clustermesh import (G, V, Remote, cluster, clusters_named, cond, core, ctl, custom, lapi,  # noqa: F401
                              local, settle, until)

pytestmark = pytest.mark.pure


def rids(custom, owner):
    items = custom.list_cluster_custom_object(G, V, "remoteidentities")["items"]
    return [o for o in items if o["metadata"]["labels"].get(CLUSTER_OWNER) == owner]


def by_app(custom, owner):
    """app label -> (id, namespace, [ips]) of ``owner``'s RemoteIdentities."""
    return {(o["spec"]["namespace"], o["spec"]["podLabels"].get("app")):
            (o["spec"]["id"], sorted(ip for p in o["spec"]["pods"] for ip in p["ips"]))
            for o in rids(custom, owner)}


def rpod(r, ns, name, labels, ip):
    r.core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": labels},
                                      "spec": {"containers": [{"name": "c", "image": "x"}]}})
    r.core.patch_namespaced_pod_status(name, ns, {"status": {"phase": "Running", "podIP": ip,
                                                             "podIPs": [{"ip": ip}]}})


def test_remote_pods_become_one_identity_per_label_set(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.core.patch_namespace("app", {"metadata": {"labels": {"team": "blue"}}})
    for i in range(4):
        rpod(r, "app", f"web-{i}", {"app": "web", "pod-template-hash": f"h{i}"}, f"10.245.0.{10 + i}")
    rpod(r, "app", "db", {"app": "db", CLUSTER_LABEL: "local"}, "10.245.0.20")
    cluster("west", r)
    until(lambda: len(rids(custom, "west")) == 2 and
          by_app(custom, "west").get(("app", "web"), (0, []))[1] == [f"10.245.0.{10 + i}" for i in range(4)],
          what="two RemoteIdentities, web with 4 addresses")
    objs = {o["spec"]["podLabels"]["app"]: o for o in rids(custom, "west")}
    web, db = objs["web"], objs["db"]
    assert web["metadata"]["labels"][MANAGED_BY] == MANAGER
    assert web["spec"]["podLabels"] == {"app": "web", CLUSTER_LABEL: "west"}
    assert db["spec"]["podLabels"][CLUSTER_LABEL] == "west", "the remote pod's own cluster label is overwritten"
    assert web["spec"]["namespaceLabels"] == {"team": "blue", "kubernetes.io/metadata.name": "app"}
    assert web["spec"]["id"] >= REMOTE_ID_MIN and db["spec"]["id"] >= REMOTE_ID_MIN
    assert web["spec"]["id"] != db["spec"]["id"]
    web_id, web_name = web["spec"]["id"], web["metadata"]["name"]

    # nothing changes here when nothing changed there
    settle(ctl)
    writes = dict(ctl.mesh.writes)
    r.core.patch_namespaced_pod("web-0", "app", {"metadata": {"annotations": {"touched": "yes"}}})
    ctl.mesh.queue.add("west")
    settle(ctl)
    assert {k: v for k, v in ctl.mesh.writes.items() if k.startswith("rid_")} == \
        {k: v for k, v in writes.items() if k.startswith("rid_")}

    # a remote pod relabelled: its address moves to another label set, the rest keeps its id
    r.core.patch_namespaced_pod("web-3", "app", {"metadata": {"labels": {"app": "db"}}})
    until(lambda: by_app(custom, "west")[("app", "db")][1] == ["10.245.0.13", "10.245.0.20"], what="web-3 -> db")
    assert by_app(custom, "west")[("app", "web")] == (web_id, ["10.245.0.10", "10.245.0.11", "10.245.0.12"])

    # a remote namespace relabelled: replaced in place (same object, same id)
    r.core.patch_namespace("app", {"metadata": {"labels": {"team": "red"}}})
    until(lambda: next(o for o in rids(custom, "west") if o["metadata"]["name"] == web_name)
          ["spec"]["namespaceLabels"].get("team") == "red", what="namespace labels follow")
    assert by_app(custom, "west")[("app", "web")][0] == web_id

    # pods deleted: addresses go, and the last pod of a label set takes its object along
    r.core.delete_namespaced_pod("web-0", "app")
    until(lambda: by_app(custom, "west")[("app", "web")][1] == ["10.245.0.11", "10.245.0.12"], what="web-0 gone")
    r.core.delete_namespaced_pod("db", "app")
    r.core.delete_namespaced_pod("web-3", "app")
    until(lambda: ("app", "db") not in by_app(custom, "west"), what="db's identity gone with its last pod")

    # a pod in a new namespace
    r.core.create_namespace({"metadata": {"name": "other", "labels": {"team": "green"}}})
    rpod(r, "other", "web-x", {"app": "web"}, "10.245.0.30")
    until(lambda: ("other", "web") in by_app(custom, "west"), what="the same labels in another namespace")
    assert by_app(custom, "west")[("other", "web")][0] != web_id


def test_remote_identities_go_after_the_grace_and_come_back(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    rpod(r, "app", "a", {"app": "a"}, "10.245.0.10")
    cluster("flaky", r, grace=2)
    until(lambda: len(rids(custom, "flaky")) == 1, what="RemoteIdentity")
    until(lambda: cond(custom, "flaky", "Ready").get("status") == "True", what="Ready")
    store, port = r.srv.store, r.port
    r.stop()
    until(lambda: cond(custom, "flaky", "APIServerReachable").get("status") == "False", what="unreachable")
    assert len(rids(custom, "flaky")) == 1, "kept during the grace"
    until(lambda: not rids(custom, "flaky"), timeout=8, what="removed after the grace")
    back = Remote(tmp_path, port=port, store=store)
    try:
        until(lambda: len(rids(custom, "flaky")) == 1, timeout=10, what="back after the outage")
    finally:
        back.stop()


def test_deleted_cluster_takes_its_identities_first(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    rpod(r, "app", "a", {"app": "a"}, "10.245.0.10")
    rpod(r, "app", "b", {"app": "b"}, "10.245.0.11")
    cluster("bye", r)
    until(lambda: len(rids(custom, "bye")) == 2, what="RemoteIdentities")
    custom.delete_cluster_custom_object(G, V, "clusters", "bye")
    until(lambda: not clusters_named(custom, "bye"), what="Cluster gone")
    assert rids(custom, "bye") == [], "the finalizer waited for the RemoteIdentities"


def test_handmade_and_orphaned_remote_identities(core, custom, ctl, cluster, tmp_path):
    body = {"apiVersion": f"{G}/{V}", "kind": "RemoteIdentity",
            "metadata": {"name": "ghost-0000000000000000",
                         "labels": {MANAGED_BY: MANAGER, CLUSTER_OWNER: "ghost"}},
            "spec": {"id": REMOTE_ID_MIN + 7, "cluster": "ghost", "namespace": "app", "podLabels": {},
                     "pods": [{"name": "p", "ips": ["10.250.0.1"]}]}}
    custom.create_cluster_custom_object(G, V, "remoteidentities", body)
    until(lambda: not rids(custom, "ghost"), what="a managed RemoteIdentity of no Cluster is deleted")
    # the schema keeps remote ids out of the local range
    bad = dict(body, metadata={"name": "low"}, spec=dict(body["spec"], id=16777216))
    with pytest.raises(ApiException) as e:
        custom.create_cluster_custom_object(G, V, "remoteidentities", bad)
    assert e.value.status == 422 and "spec.id" in e.value.body
