# SPDX-License-Identifier: MIT OR Apache-2.0
"""Identities across meshed clusters, the pure parts: remote pods -> RemoteIdentity specs and the
write plan (meshcni.controllers.identity), RemoteIdentities -> the agent's ipcache
(meshcni.controllers.ipcache) and the NetworkPolicy cluster rule (meshcni.controllers.netpol)."""
import pytest

from meshcni.controllers import identity as idm
from meshcni.controllers.identity import (CLUSTER_LABEL, CLUSTER_OWNER, MANAGED_BY, MANAGER, REMOTE_ID_MAX,
                                          REMOTE_ID_MIN, desired_remote_identities, plan_remote_identities,
                                          remote_identity_body)
from meshcni.controllers.ipcache import ID_REMOTE_NODE, desired_ipcache, remote_groups
from meshcni.controllers.netpol import compile_policies
from meshcni.controllers.model import EGRESS, INGRESS

from test_netpol_compile import World, keys, netpol, pod

pytestmark = pytest.mark.pure


def rpod(name, ns, labels, ip, phase="Running", host_network=False):
    p = {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
         "spec": {"hostNetwork": True} if host_network else {}, "status": {"phase": phase, "podIP": ip}}
    return p


def rns(name, labels=None):
    return {"metadata": {"name": name, "labels": dict(labels or {})}}


def cluster_obj(name, nodes=(), conflict=False, deleting=False):
    c = {"metadata": {"name": name}, "status": {"nodes": [{"name": f"{name}-n{i}", "addresses": [a], "podCIDRs": []}
                                                         for i, a in enumerate(nodes)]}}
    if conflict:
        c["status"]["conditions"] = [{"type": "CIDRConflict", "status": "True"}]
    if deleting:
        c["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return c


def rids_for(cluster, pods, namespaces, start=REMOTE_ID_MIN):
    """The RemoteIdentities the controller would have written for ``cluster`` (ids from ``start``)."""
    desired, problems = desired_remote_identities(cluster, pods, namespaces)
    assert problems == []
    out = []
    for i, name in enumerate(sorted(desired)):
        body = remote_identity_body(name, desired[name], start + i)
        body["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{i:02d}Z"
        out.append(body)
    return out


# ---------------------------------------------------------------- remote pods -> RemoteIdentity specs

def test_one_object_per_namespace_and_label_set_with_every_address():
    pods = [rpod(f"web-{i}", "x", {"app": "web", "pod-template-hash": f"h{i}"}, f"10.245.0.{10 + i}")
            for i in range(5)]
    pods += [rpod("db", "x", {"app": "db"}, "10.245.0.20"), rpod("web-y", "y", {"app": "web"}, "10.245.1.5")]
    desired, problems = desired_remote_identities("west", pods, [rns("x", {"team": "blue"}), rns("y")])
    assert problems == []
    assert len(desired) == 3, "5 web replicas (differing only in pod-template-hash) are one label set"
    web = next(s for s in desired.values() if s["namespace"] == "x" and s["podLabels"]["app"] == "web")
    assert web["podLabels"] == {"app": "web", CLUSTER_LABEL: "west"}
    assert web["namespaceLabels"] == {"team": "blue", "kubernetes.io/metadata.name": "x"}
    assert web["cluster"] == "west"
    assert [p["name"] for p in web["pods"]] == [f"web-{i}" for i in range(5)]
    assert web["pods"][0]["ips"] == ["10.245.0.10"]
    names = set(desired)
    assert all(n.startswith("west-") for n in names)
    # the namespace's labels are content, not identity: a relabel keeps the names
    relabelled, _ = desired_remote_identities("west", pods, [rns("x", {"team": "red"}), rns("y")])
    assert set(relabelled) == names


def test_remote_pods_that_get_no_identity_and_the_cluster_label_is_overwritten():
    pods = [rpod("done", "x", {"a": "1"}, "10.245.0.1", phase="Succeeded"),
            rpod("host", "x", {"a": "2"}, "172.18.1.2", host_network=True),
            rpod("noip", "x", {"a": "3"}, None),
            rpod("unknown-ns", "zz", {"a": "4"}, "10.245.0.4"),
            rpod("bad", "x", {"a": "5"}, "not-an-ip"),
            rpod("liar", "x", {"a": "6", CLUSTER_LABEL: "local"}, "10.245.0.6")]
    desired, problems = desired_remote_identities("west", pods, [rns("x")])
    assert [(p.kind, p.name, p.field) for p in problems] == [("Pod", "bad", "status.podIPs[0]")]
    (spec,) = desired.values()
    assert spec["podLabels"] == {"a": "6", CLUSTER_LABEL: "west"}, "a remote pod never passes for a local one"


def test_dual_stack_pod_carries_both_addresses():
    p = rpod("ds", "x", {"a": "1"}, "10.245.0.7")
    p["status"]["podIPs"] = [{"ip": "10.245.0.7"}, {"ip": "fd00::7"}]
    (spec,) = desired_remote_identities("west", [p], [rns("x")])[0].values()
    assert spec["pods"] == [{"name": "ds", "ips": ["10.245.0.7", "fd00::7"]}]


# ---------------------------------------------------------------- the write plan

def test_plan_creates_keeps_replaces_and_deletes():
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1"), rpod("b", "x", {"app": "b"}, "10.245.0.2")]
    desired, _ = desired_remote_identities("west", pods, [rns("x")])
    plan = plan_remote_identities("west", desired, [], [])
    assert len(plan.create) == 2 and not plan.replace and not plan.delete
    for body in plan.create:
        assert REMOTE_ID_MIN <= body["spec"]["id"] <= REMOTE_ID_MAX
        assert body["metadata"]["labels"] == {MANAGED_BY: MANAGER, CLUSTER_OWNER: "west",
                                              idm.ID_LABEL: str(body["spec"]["id"])}
    existing = plan.create
    # nothing changed: nothing to write
    assert plan_remote_identities("west", desired, existing, existing).writes == 0
    # a's address changes, b goes away, c arrives
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.9"), rpod("c", "x", {"app": "c"}, "10.245.0.3")]
    desired2, _ = desired_remote_identities("west", pods, [rns("x")])
    plan = plan_remote_identities("west", desired2, existing, existing)
    (cur, body), = plan.replace
    assert body["spec"]["id"] == cur["spec"]["id"], "an identity keeps its id while its label set lives"
    assert body["spec"]["pods"] == [{"name": "a", "ips": ["10.245.0.9"]}]
    assert [o["spec"]["podLabels"]["app"] for o in plan.delete] == ["b"]
    assert [o["spec"]["podLabels"]["app"] for o in plan.create] == ["c"]
    assert plan.create[0]["spec"]["id"] not in {o["spec"]["id"] for o in existing}
    # everything gone (grace over, Cluster deleted): every object deleted
    assert len(plan_remote_identities("west", {}, existing, existing).delete) == 2


def test_plan_never_reuses_a_local_or_another_clusters_id():
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1")]
    desired, _ = desired_remote_identities("west", pods, [rns("x")])
    first = plan_remote_identities("west", desired, [], []).create[0]["spec"]["id"]
    # the same candidate is taken by another cluster's object and by a local Identity in turn
    other = remote_identity_body("east-0000000000000000", {"cluster": "east", "namespace": "x", "namespaceLabels": {},
                                                           "podLabels": {}, "pods": []}, first)
    got = plan_remote_identities("west", desired, [], [other]).create[0]["spec"]["id"]
    assert got != first and REMOTE_ID_MIN <= got <= REMOTE_ID_MAX
    got = plan_remote_identities("west", desired, [], [], local_ids=[first]).create[0]["spec"]["id"]
    assert got != first
    # an existing object whose id a local Identity holds is re-allocated
    body = plan_remote_identities("west", desired, [], []).create[0]
    plan = plan_remote_identities("west", desired, [body], [body], local_ids=[first])
    assert plan.delete == [body] and plan.create[0]["spec"]["id"] != first
    assert [p.field for p in plan.problems] == ["spec.id"]


def test_plan_resolves_a_duplicate_id_oldest_wins_and_reports_handmade():
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1"), rpod("b", "x", {"app": "b"}, "10.245.0.2")]
    objs = rids_for("west", pods, [rns("x")])
    objs[1]["spec"]["id"] = objs[0]["spec"]["id"]   # two controllers during a leader change
    desired, _ = desired_remote_identities("west", pods, [rns("x")])
    plan = plan_remote_identities("west", desired, objs, objs)
    assert plan.delete == [objs[1]] and len(plan.create) == 1
    assert plan.create[0]["metadata"]["name"] == objs[1]["metadata"]["name"]
    assert plan.create[0]["spec"]["id"] != objs[0]["spec"]["id"]
    hand = dict(objs[0], metadata={"name": "west-handmade", "labels": {CLUSTER_OWNER: "west"}})
    plan = plan_remote_identities("west", desired, [hand], [hand])
    assert [(p.name, p.field) for p in plan.problems] == [("west-handmade", "metadata.labels")]
    assert hand not in plan.delete


# ---------------------------------------------------------------- the agent's view: ipcache

LOCAL_PODS = [pod("a", "x", {"app": "a"}), pod("b", "y", {"app": "b"})]
NS = {"x": {"ns": "x"}, "y": {"ns": "y"}}


def local_world():
    w = World(LOCAL_PODS, NS)
    w.pods[0]["status"]["podIP"] = "10.244.0.1"
    w.pods[1]["status"]["podIP"] = "10.244.0.2"
    return w


def west():
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1"), rpod("b", "y", {"app": "b"}, "10.245.0.2"),
            rpod("c", "x", {"app": "c"}, "10.245.0.3")]
    return rids_for("west", pods, [rns("x", {"ns": "x"}), rns("y", {"ns": "y"})])


def rid_of(objs, app, ns=None):
    return next(o["spec"]["id"] for o in objs if o["spec"]["podLabels"]["app"] == app
                and (ns is None or o["spec"]["namespace"] == ns))


def test_ipcache_holds_remote_pods_and_remote_nodes():
    w, r = local_world(), west()
    want, problems, _ = desired_ipcache(w.pods, w.namespaces, w.identities, [], [], "n1", r,
                                        [cluster_obj("west", nodes=["172.18.1.2"])])
    assert problems == []
    assert want["10.244.0.1/32"] == w.id["a"]
    assert want["10.245.0.1/32"] == rid_of(r, "a") and want["10.245.0.3/32"] == rid_of(r, "c")
    assert want["172.18.1.2/32"] == ID_REMOTE_NODE
    assert len({want[f"10.245.0.{i}/32"] for i in (1, 2, 3)}) == 3


def test_ipcache_leaves_out_what_it_cannot_trust():
    w, r = local_world(), west()
    # a remote object claiming a local pod's address: the local pod keeps it
    r[0]["spec"]["pods"][0]["ips"] = ["10.244.0.1"]
    hand = remote_identity_body("west-hand", {"cluster": "west", "namespace": "x", "namespaceLabels": {},
                                              "podLabels": {"app": "z"}, "pods": [{"name": "z", "ips": ["10.245.9.9"]}]},
                                REMOTE_ID_MIN + 99)
    hand["metadata"]["labels"].pop(MANAGED_BY)
    other = rids_for("gone", [rpod("g", "x", {"app": "g"}, "10.246.0.1")], [rns("x")], start=REMOTE_ID_MIN + 50)
    want, problems, _ = desired_ipcache(w.pods, w.namespaces, w.identities, [], [], "n1", r + [hand] + other,
                                        [cluster_obj("west")])
    assert want["10.244.0.1/32"] == w.id["a"]
    assert [(p.kind, p.field) for p in problems] == [("RemoteIdentity", "spec.pods.ips")]
    assert "10.245.9.9/32" not in want, "hand-made RemoteIdentities are not trusted"
    assert "10.246.0.1/32" not in want, "a RemoteIdentity of no Cluster is not used"
    for c in (cluster_obj("west", conflict=True), cluster_obj("west", deleting=True)):
        want, _, _ = desired_ipcache(w.pods, w.namespaces, w.identities, [], [], "n1", r, [c])
        assert not [k for k in want if k.startswith("10.245.")]


def test_remote_ids_clashing_with_a_local_identity_or_each_other_are_left_out():
    r = west()
    # a local Identity made before the ranges were split may hold a remote-range id: it wins
    groups, problems = remote_groups(r, [cluster_obj("west")], local_ids=[r[0]["spec"]["id"]])
    assert r[0]["spec"]["id"] not in {g.ident for g in groups}
    assert [p.field for p in problems] == ["spec.id"]
    r2 = west()
    r2[2]["spec"]["id"] = r2[0]["spec"]["id"]   # the younger holder (later creationTimestamp) loses
    groups, _ = remote_groups(r2, [cluster_obj("west")])
    assert sorted(g.name for g in groups) == sorted(o["metadata"]["name"] for o in r2[:2])


# ---------------------------------------------------------------- NetworkPolicy: the cluster rule

def compile_with(w, remote, clusters, *policies, name="east"):
    return compile_policies(list(policies), w.pods, w.namespaces, w.identities, w.cidrs,
                            remote_identities=remote, clusters=clusters, cluster_name=name)


def peers_of(out, ident, direction=INGRESS):
    return {k[2] for k in keys(out) if k[0] == ident and k[1] == direction and k[2] != 1}


def test_selectors_without_a_cluster_term_match_local_pods_only():
    w, r = local_world(), west()
    cl = [cluster_obj("west")]
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"podSelector": {}}, {"namespaceSelector": {}}]}]))
    assert peers_of(out, w.id["a"]) == {w.id["a"], w.id["b"]}


def test_cluster_in_matchlabels_selects_that_clusters_pods_in_the_same_namespace():
    w, r = local_world(), west()
    cl = [cluster_obj("west")]
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"podSelector": {"matchLabels": {CLUSTER_LABEL: "west"}}}]}]))
    assert peers_of(out, w.id["a"]) == {rid_of(r, "a"), rid_of(r, "c")}, "west's pods of namespace x"
    # the local cluster by name: local pods only
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"podSelector": {"matchLabels": {CLUSTER_LABEL: "east"}}}]}]))
    assert peers_of(out, w.id["a"]) == {w.id["a"]}


def test_cluster_exists_notin_and_remote_namespace_labels():
    w, r = local_world(), west()
    cl = [cluster_obj("west")]
    exists = {"matchExpressions": [{"key": CLUSTER_LABEL, "operator": "Exists"}]}
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"podSelector": exists, "namespaceSelector": {}}]}]))
    assert peers_of(out, w.id["a"]) == {w.id["a"], w.id["b"]} | {o["spec"]["id"] for o in r}
    notin = {"matchExpressions": [{"key": CLUSTER_LABEL, "operator": "NotIn", "values": ["east"]},
                                  {"key": "app", "operator": "In", "values": ["a", "b"]}]}
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"podSelector": notin,
                                                            "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]))
    assert peers_of(out, w.id["a"]) == {rid_of(r, "b")}, "west's y, matched by its own labels"


def test_remote_namespace_relabel_and_egress_and_targets_stay_local():
    w = local_world()
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1")]
    r = rids_for("west", pods, [rns("x", {"ns": "x", "team": "blue"})])
    cl = [cluster_obj("west")]
    pol = netpol("p", "x", {"matchLabels": {CLUSTER_LABEL: "east"}}, types=["Egress"],
                 egress=[{"to": [{"podSelector": {"matchLabels": {CLUSTER_LABEL: "west"}},
                                  "namespaceSelector": {"matchLabels": {"team": "blue"}}}]}])
    out = compile_with(w, r, cl, pol)
    assert peers_of(out, w.id["a"], EGRESS) == {rid_of(r, "a")}
    assert {k[0] for k in keys(out)} == {w.id["a"]}, "a policy applies to local pods only"
    r[0]["spec"]["namespaceLabels"]["team"] = "red"
    assert peers_of(compile_with(w, r, cl, pol), w.id["a"], EGRESS) == set()


def test_a_cluster_that_went_away_is_admitted_nowhere():
    w, r = local_world(), west()
    pol = netpol("p", "x", {}, ingress=[{"from": [{"podSelector": {"matchExpressions": [
        {"key": CLUSTER_LABEL, "operator": "Exists"}]}, "namespaceSelector": {}}]}])
    with_west = peers_of(compile_with(w, r, [cluster_obj("west")], pol), w.id["a"])
    assert {o["spec"]["id"] for o in r} <= with_west
    for clusters in ([], [cluster_obj("west", deleting=True)], [cluster_obj("west", conflict=True)]):
        assert peers_of(compile_with(w, r, clusters, pol), w.id["a"]) == {w.id["a"], w.id["b"]}


def test_no_remote_identities_changes_nothing():
    w = local_world()
    pol = netpol("p", "x", {}, ingress=[{"from": [{"namespaceSelector": {}}]}])
    plain = compile_policies([pol], w.pods, w.namespaces, w.identities, w.cidrs)
    assert keys(compile_with(w, [], [], pol, name="default")) == keys(plain)


# ---------------------------------------------------------------- what the CLI shows

@pytest.mark.extension  # meshcni.bpf.decode reads rows in layout.h's dtypes from meshcni._libbpf
def test_identity_labels_and_text_name_the_cluster():
    from meshcni.bpf import decode
    from meshcni.cli.bpf import _cluster_of
    r = west()
    local = {"metadata": {"name": "id-1", "namespace": "x"},
             "spec": {"id": 16777300, "namespaceLabels": {"kubernetes.io/metadata.name": "x"},
                      "podLabels": {"app": "a"}}}
    got = decode.identity_labels([local], [], r, cluster="east")
    a = got[rid_of(r, "a")]
    assert (a["kind"], a["cluster"], a["namespace"]) == ("RemoteIdentity", "west", "x")
    assert decode.labels_text(a) == "cluster=west ns=x app=a"
    assert got[16777300]["cluster"] == "east" and decode.labels_text(got[16777300]) == "ns=x app=a"
    assert _cluster_of("west:y/b") == "west" and _cluster_of("y/b") is None and _cluster_of("") is None


# ---------------------------------------------------------------- the mesh's decision, with and without remote Pods

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: r, cluster: {server: "http://172.30.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: r, user: u}}]
current-context: c
"""


def snapshot(pods_synced=True, pods_error="", existing=()):
    import base64
    import time

    from meshcni.controller.clustermesh import RemoteView, Snapshot, fingerprint
    from meshcni.controllers import mesh
    cl = {"metadata": {"name": "west", "generation": 1, "finalizers": [mesh.FINALIZER]},
          "spec": {"secret": {"name": "west-kc"}}}
    secret = {"metadata": {"name": "west-kc", "namespace": "meshcni-system"},
              "data": {"config": base64.b64encode(KUBECONFIG.encode()).decode()}}
    fp = fingerprint(mesh.kubeconfig_from_secret(cl, secret, "meshcni-system"))
    pods = [rpod("a", "x", {"app": "a"}, "10.245.0.1")]
    view = RemoteView(fp, "http://172.30.0.1:6443", True, True, None, "", time.time(), namespaces=[rns("x")],
                      pods=pods if pods_synced else [], pods_synced=pods_synced, pods_error=pods_error)
    return Snapshot("west", cl, secret, view, None, None, [], [], [], None, time.time(),
                    remote_identities=list(existing), all_remote_identities=list(existing))


def test_decide_writes_remote_identities_from_a_synced_source():
    from meshcni.controller.clustermesh import MeshConfig, decide
    plan = decide(snapshot(), MeshConfig(cluster_name="east"))
    assert [b["spec"]["podLabels"] for b in plan.rids.create] == [{"app": "a", CLUSTER_LABEL: "west"}]


def test_a_remote_refusing_pods_keeps_the_mesh_and_its_identities_and_says_why():
    from meshcni.controller.clustermesh import MeshConfig, decide
    have = rids_for("west", [rpod("a", "x", {"app": "a"}, "10.245.0.1")], [rns("x")])
    plan = decide(snapshot(pods_synced=False, pods_error="(403) Forbidden", existing=have),
                  MeshConfig(cluster_name="east"))
    assert plan.rids.writes == 0, "what exists stays; nothing is made from a list that failed"
    (p,) = [p for p in plan.problems if p.field == "pods"]
    assert "403" in p.message and "meshcni-clustermesh-remote" in p.message
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", "Services still mesh"


def test_a_cluster_term_in_the_namespace_selector_never_widens_to_remote_pods():
    w, r = local_world(), west()
    cl = [cluster_obj("west")]
    nss = {"matchExpressions": [{"key": CLUSTER_LABEL, "operator": "DoesNotExist"}]}
    out = compile_with(w, r, cl, netpol("p", "x", {"matchLabels": {"app": "a"}},
                                        ingress=[{"from": [{"namespaceSelector": nss}]}]))
    assert peers_of(out, w.id["a"]) == {w.id["a"], w.id["b"]}, "namespaces lack the label; pods stay local"
