# SPDX-License-Identifier: MIT OR Apache-2.0
"""The API server through the official ``kubernetes`` client, over HTTP only.

One server per module (port 0); tests use their own namespaces or names so
they do not depend on each other. Servers with special settings (a tiny
history, a data file) are started by the tests that need them.
"""
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from meshcni.apiserver import APIServer

pytestmark = pytest.mark.pure

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
MESH = ("mesh-cni.dev", "v1alpha1")


def _api(srv, tmp_path, name="kubeconfig"):
    path = tmp_path / name
    srv.write_kubeconfig(str(path))
    return config.new_client_from_config(config_file=str(path))


@pytest.fixture(scope="module")
def server():
    with APIServer(crd_dir=str(CRDS), history=10000, bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    return _api(server, tmp_path_factory.mktemp("kc"))


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def ns(core, request):
    name = "t-" + request.node.name.replace("_", "-").lower()[:50].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    return name


def _pod(name, labels=None, node=None, **meta):
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": dict(name=name, labels=labels or {}, **meta), "spec": spec}


def _raw(server, path, method="GET", body=None, ctype="application/json"):
    req = urllib.request.Request(server.url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ------------------------------------------------------------------ discovery

def test_discovery(api, server):
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    for g in ("discovery.k8s.io", "networking.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io",
              "mesh-cni.dev"):
        assert g in groups
    assert groups["mesh-cni.dev"].preferred_version.version == "v1alpha1"
    res = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert res["pods"].namespaced and res["pods"].kind == "Pod" and "watch" in res["pods"].verbs
    assert "po" in res["pods"].short_names
    assert set(res["pods/status"].verbs) == {"get", "patch", "update"}
    assert not res["namespaces"].namespaced and not res["nodes"].namespaced
    assert client.VersionApi(api).get_code().major == "1"
    mesh = client.CustomObjectsApi(api).get_api_resources(*MESH)
    clusters = next(r for r in mesh.resources if r.name == "clusters")
    assert clusters.namespaced is False and clusters.kind == "Cluster"
    assert any(r.name == "clusters/status" for r in mesh.resources)
    for path in ("/healthz", "/readyz", "/livez"):
        assert _raw(server, path) == (200, b"ok")
    assert _raw(server, "/apis/nope.example/v1")[0] == 404
    status, raw = _raw(server, "/api/v1", "POST", {})
    assert status == 405 and json.loads(raw)["reason"] == "MethodNotAllowed"


# ------------------------------------------------------------------ create / get / update / delete

def test_initial_namespaces_and_missing_namespace_is_404(core):
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod("does-not-exist", _pod("p"))
    assert ei.value.status == 404
    body = json.loads(ei.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'namespaces "does-not-exist" not found'


def test_create_generate_name_and_already_exists(core, ns):
    p = core.create_namespaced_pod(ns, {"metadata": {"generateName": "web-"},
                                        "spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert p.metadata.name.startswith("web-") and len(p.metadata.name) == len("web-") + 5
    assert p.metadata.uid and p.metadata.creation_timestamp and p.metadata.generation == 1
    assert p.status.phase == "Pending"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "2"}})
    assert ei.value.status == 409 and json.loads(ei.value.body)["reason"] == "AlreadyExists"
    assert core.read_namespaced_config_map("cm", ns).data == {"a": "1"}
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("nope", ns)
    assert ei.value.status == 404 and json.loads(ei.value.body)["message"] == 'configmaps "nope" not found'


def test_resource_version_is_one_counter_across_kinds(core, ns):
    a = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    b = core.create_namespaced_secret(ns, {"metadata": {"name": "b"}, "stringData": {"k": "v"}})
    c = core.create_namespaced_pod(ns, _pod("c"))
    rvs = [int(o.metadata.resource_version) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert int(core.list_namespaced_pod(ns).metadata.resource_version) >= rvs[-1]


def test_update_conflict_and_unconditional_put(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"v": "1"}})
    stale = cm.metadata.resource_version
    cm.data = {"v": "2"}
    cm2 = core.replace_namespaced_config_map("cm", ns, cm)
    assert int(cm2.metadata.resource_version) > int(stale)
    cm.data = {"v": "3"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_config_map("cm", ns, cm)
    assert ei.value.status == 409
    body = json.loads(ei.value.body)
    assert body["reason"] == "Conflict" and "the object has been modified" in body["message"]
    # no resourceVersion on PUT: unconditional
    out = core.replace_namespaced_config_map("cm", ns, {"metadata": {"name": "cm"}, "data": {"v": "4"}})
    assert out.data == {"v": "4"} and out.metadata.uid == cm.metadata.uid


def test_generation_follows_spec_only(core, ns):
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    s = core.patch_namespaced_service("web", ns, {"metadata": {"labels": {"a": "b"}}})
    assert s.metadata.generation == 1
    s = core.patch_namespaced_service("web", ns, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    assert s.metadata.generation == 2
    assert s.spec.cluster_ip.startswith("10.") and s.spec.ports[0].target_port == 8080
    # a no-op update changes nothing, not even the resourceVersion
    again = core.patch_namespaced_service("web", ns, {"metadata": {"labels": {"a": "b"}}})
    assert again.metadata.resource_version == s.metadata.resource_version


def test_finalizers_delay_deletion(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "fin", "finalizers": ["mesh-cni.dev/x"]}})
    core.delete_namespaced_config_map("fin", ns)
    cm = core.read_namespaced_config_map("fin", ns)
    assert cm.metadata.deletion_timestamp is not None
    assert cm.metadata.deletion_grace_period_seconds == 0
    core.patch_namespaced_config_map("fin", ns, [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("fin", ns)
    assert ei.value.status == 404


def test_delete_namespace_deletes_its_objects(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_pod("doomed", _pod("p"))
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "cm"}})
    core.delete_namespace("doomed")
    with pytest.raises(ApiException) as ei:
        core.read_namespace("doomed")
    assert ei.value.status == 404
    assert core.list_pod_for_all_namespaces(field_selector="metadata.namespace=doomed").items == []


def test_delete_collection(core, ns):
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"c{i}", "labels": {"g": "x" if i else "y"}}})
    core.delete_collection_namespaced_config_map(ns, label_selector="g=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c0"]


# ------------------------------------------------------------------ status subresource

def test_status_subresource_both_directions(core, ns):
    core.create_namespaced_pod(ns, _pod("p"))
    # status written on the main resource is ignored
    p = core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Running"}})
    assert p.status.phase == "Pending" and p.metadata.labels == {"x": "y"}
    # spec/metadata written through /status are ignored
    p = core.patch_namespaced_pod_status("p", ns, {"spec": {"nodeName": "n9"}, "metadata": {"labels": {"z": "1"}},
                                                   "status": {"phase": "Running", "podIP": "10.244.0.5"}})
    assert p.status.phase == "Running" and p.status.pod_ip == "10.244.0.5"
    assert p.spec.node_name is None and p.metadata.labels == {"x": "y"}
    p.status.phase = "Succeeded"
    p = core.replace_namespaced_pod_status("p", ns, p)
    assert core.read_namespaced_pod_status("p", ns).status.phase == "Succeeded"


def test_cr_status_subresource(api):
    co = client.CustomObjectsApi(api)
    co.create_cluster_custom_object(*MESH, "clusters", {
        "apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "st"},
        "spec": {"secret": {"name": "s", "key": "kubeconfig"}}, "status": {"conditions": []}})
    obj = co.get_cluster_custom_object(*MESH, "clusters", "st")
    assert "status" not in obj  # status is only written through /status
    cond = {"type": "Ready", "status": "True", "reason": "Connected", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}
    out = co.patch_cluster_custom_object_status(*MESH, "clusters", "st", {"status": {"conditions": [cond]}})
    assert out["status"]["conditions"][0]["type"] == "Ready"
    assert out["metadata"]["generation"] == 1


# ------------------------------------------------------------------ validation

def test_builtin_validation_422(core, ns):
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_service(ns, {"metadata": {"name": "web"},
                                            "spec": {"clusterIP": "10.96.0.999", "ports": [{"port": 80}]}})
    assert ei.value.status == 422
    body = json.loads(ei.value.body)
    assert body["reason"] == "Invalid" and body["kind"] == "Status"
    assert body["message"].startswith('Service "web" is invalid: spec.clusterIP: Invalid value: "10.96.0.999"')
    assert body["details"]["causes"][0]["field"] == "spec.clusterIP"
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}})
    assert ei.value.status == 422 and json.loads(ei.value.body)["details"]["causes"][0]["field"] == "metadata.name"


def test_crd_validation_422_names_the_field(api):
    co = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as ei:
        co.create_cluster_custom_object(*MESH, "clusters", {
            "apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "bad"},
            "spec": {"secret": {"name": 5, "key": "k"}}})
    assert ei.value.status == 422
    body = json.loads(ei.value.body)
    assert body["reason"] == "Invalid" and body["message"].startswith('Cluster "bad" is invalid:')
    assert any(c["field"] == "spec.secret.name" for c in body["details"]["causes"])


def test_crd_created_through_the_api_is_served(api):
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {
                                       "size": {"type": "integer", "minimum": 1, "default": 3}}}}}}}]}})
    co = client.CustomObjectsApi(api)
    w = co.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {}})
    assert w["spec"]["size"] == 3  # schema default applied
    with pytest.raises(ApiException) as ei:
        co.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 0}})
    assert ei.value.status == 422
    assert json.loads(ei.value.body)["details"]["causes"][0]["field"] == "spec.size"
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as ei:
        co.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert ei.value.status == 404


# ------------------------------------------------------------------ selectors and pagination

def test_label_and_field_selectors(core, ns):
    core.create_namespaced_pod(ns, _pod("a", {"app": "web", "tier": "fe"}, node="n1"))
    core.create_namespaced_pod(ns, _pod("b", {"app": "db"}, node="n2"))
    core.create_namespaced_pod(ns, _pod("c", {"app": "cache", "canary": "1"}, node="n1"))

    def names(**kw):
        return sorted(p.metadata.name for p in core.list_namespaced_pod(ns, **kw).items)
    assert names(label_selector="app in (web,db)") == ["a", "b"]
    assert names(label_selector="app notin (web),!canary") == ["b"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="app!=web") == ["b", "c"]
    assert names(field_selector="spec.nodeName=n1") == ["a", "c"]
    assert names(field_selector="spec.nodeName!=n1,metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Pending", label_selector="app==db") == ["b"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod(ns, label_selector="app in web")
    assert ei.value.status == 400 and "app in web" in json.loads(ei.value.body)["message"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod(ns, field_selector="spec.bogus=x")
    assert ei.value.status == 400


def test_pagination_limit_and_continue(core, ns):
    for i in range(7):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm{i}"}})
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        pages += 1
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3 and seen == [f"cm{i}" for i in range(7)]


# ------------------------------------------------------------------ patches

def test_merge_strategic_and_json_patch(core, ns):
    core.create_namespaced_pod(ns, {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
                                    "spec": {"containers": [{"name": "c1", "image": "i1"},
                                                            {"name": "c2", "image": "i2"}]}})
    # strategic (the client's default for a dict): containers merge by name
    p = core.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c2", "image": "i2b"}]}})
    assert [(c.name, c.image) for c in p.spec.containers] == [("c1", "i1"), ("c2", "i2b")]
    # merge patch: lists are replaced, null deletes
    p = core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"a": None, "c": "3"}}},
                                  _content_type="application/merge-patch+json")
    assert p.metadata.labels == {"b": "2", "c": "3"}
    # json patch (the client's choice for a list)
    p = core.patch_namespaced_pod("p", ns, [{"op": "replace", "path": "/spec/containers/0/image", "value": "i1b"},
                                            {"op": "add", "path": "/metadata/labels/d", "value": "4"}])
    assert p.spec.containers[0].image == "i1b" and p.metadata.labels["d"] == "4"
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_pod("p", ns, [{"op": "test", "path": "/metadata/name", "value": "q"}])
    assert ei.value.status == 422
    # a resourceVersion in a patch is a precondition
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_pod("p", ns, {"metadata": {"resourceVersion": "1", "labels": {"e": "5"}}})
    assert ei.value.status == 409


def test_server_side_apply_creates_then_merges(core, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns},
            "data": {"a": "1"}}
    cm = core.patch_namespaced_config_map("ssa", ns, body, field_manager="test",
                                          _content_type="application/apply-patch+yaml")
    assert cm.data == {"a": "1"} and cm.metadata.uid
    body["data"] = {"b": "2"}
    cm = core.patch_namespaced_config_map("ssa", ns, body, field_manager="test", force=True,
                                          _content_type="application/apply-patch+yaml")
    assert cm.data == {"a": "1", "b": "2"}
    co = client.CustomObjectsApi(core.api_client)
    obj = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "applied"},
           "spec": {"secret": {"name": "s", "key": "k"}}}
    # an apply that creates answers 201 (this client method then returns None, as against kube)
    co.patch_cluster_custom_object(*MESH, "clusters", "applied", obj, field_manager="test",
                                   _content_type="application/apply-patch+yaml")
    obj["spec"]["secret"]["key"] = "k2"
    got = co.patch_cluster_custom_object(*MESH, "clusters", "applied", obj, field_manager="test",
                                         _content_type="application/apply-patch+yaml")
    assert got["spec"]["secret"] == {"name": "s", "key": "k2"}


def test_other_builtin_groups(api, ns):
    disc = client.DiscoveryV1Api(api)
    disc.create_namespaced_endpoint_slice(ns, {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    sl = disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=web")
    assert sl.items[0].endpoints[0].addresses == ["10.244.1.5"]
    net = client.NetworkingV1Api(api)
    net.create_namespaced_network_policy(ns, {"metadata": {"name": "deny"},
                                              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    assert net.read_namespaced_network_policy("deny", ns).spec.policy_types == ["Ingress"]
    coord = client.CoordinationV1Api(api)
    coord.create_namespaced_lease(ns, {"metadata": {"name": "leader"},
                                       "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    lease = coord.read_namespaced_lease("leader", ns)
    lease.spec.holder_identity = "b"
    assert coord.replace_namespaced_lease("leader", ns, lease).spec.holder_identity == "b"
    core = client.CoreV1Api(api)
    core.create_node({"metadata": {"name": "node-x"}, "status": {"addresses": [{"type": "InternalIP",
                                                                                "address": "192.0.2.10"}]}})
    assert core.read_node("node-x").status.addresses[0].address == "192.0.2.10"
    core.create_namespaced_event(ns, {"metadata": {"name": "ev1"}, "involvedObject": {"kind": "Pod", "name": "p"},
                                      "reason": "Started", "message": "m", "type": "Normal"})
    assert core.list_namespaced_event(ns).items[0].reason == "Started"


# ------------------------------------------------------------------ watch

def _collect(stream, n, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout
    for ev in stream:
        out.append(ev)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


def test_list_then_watch_resumes_in_order(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "before"}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("x", ns, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("x", ns)
    w = watch.Watch()
    evs = _collect(w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5), 3)
    w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in evs] == [("ADDED", "x"), ("MODIFIED", "x"),
                                                                      ("DELETED", "x")]
    rvs = [int(e["object"].metadata.resource_version) for e in evs]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert evs[1]["object"].data == {"v": "2"}
    # resume from the middle: only what came after
    w = watch.Watch()
    evs2 = _collect(w.stream(core.list_namespaced_config_map, ns, resource_version=str(rvs[0]),
                             timeout_seconds=5), 2)
    w.stop()
    assert [e["type"] for e in evs2] == ["MODIFIED", "DELETED"]


def test_watch_from_zero_sends_synthetic_added(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "two"}})
    w = watch.Watch()
    evs = _collect(w.stream(core.list_namespaced_config_map, ns, resource_version="0", timeout_seconds=5), 2)
    w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in evs] == [("ADDED", "one"), ("ADDED", "two")]


def test_watch_bookmarks_and_timeout(core, ns):
    rv = core.list_namespaced_pod(ns).metadata.resource_version
    t0 = time.monotonic()
    w = watch.Watch()
    evs = list(w.stream(core.list_namespaced_pod, ns, resource_version=rv, allow_watch_bookmarks=True,
                        timeout_seconds=1))
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3
    bms = [e for e in evs if e["type"] == "BOOKMARK"]
    assert len(bms) >= 2  # periodic (0.2 s) plus the one at the timeout
    assert bms[0]["raw_object"]["kind"] == "Pod"
    assert set(bms[0]["raw_object"]["metadata"]) == {"resourceVersion"}
    assert int(bms[-1]["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
    assert w.resource_version == bms[-1]["raw_object"]["metadata"]["resourceVersion"]


def test_watch_selector_transitions(core, ns):
    core.create_namespaced_pod(ns, _pod("p", {"app": "web"}))
    rv = core.list_namespaced_pod(ns).metadata.resource_version
    core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"app": "db"}}})    # stops matching
    core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"app": "web"}}})   # matches again
    core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"v": "2"}}})       # still matches
    w = watch.Watch()
    evs = _collect(w.stream(core.list_namespaced_pod, ns, resource_version=rv, label_selector="app=web",
                            timeout_seconds=5), 3)
    w.stop()
    assert [e["type"] for e in evs] == ["DELETED", "ADDED", "MODIFIED"]
    assert evs[0]["object"].metadata.labels == {"app": "web"}  # last matching content
    assert int(evs[0]["object"].metadata.resource_version) > int(rv)


def test_watch_410_then_relist(tmp_path):
    with APIServer(history=5) as srv:
        core = client.CoreV1Api(_api(srv, tmp_path))
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(10):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        # the raw stream: an ERROR event carrying a 410 Expired Status
        status, raw = _raw(srv, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}")
        assert status == 200
        ev = json.loads(raw.splitlines()[0])
        assert ev["type"] == "ERROR"
        assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
        assert ev["object"]["kind"] == "Status"
        # the client retries once, then raises
        with pytest.raises(ApiException) as ei:
            list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv))
        assert ei.value.status == 410
        # relist and watch from the fresh version works
        fresh = core.list_namespaced_config_map("default")
        assert len(fresh.items) == 10
        core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        w = watch.Watch()
        evs = _collect(w.stream(core.list_namespaced_config_map, "default",
                                resource_version=fresh.metadata.resource_version, timeout_seconds=5), 1)
        w.stop()
        assert evs[0]["object"].metadata.name == "after"


def test_many_watchers_and_a_disconnecting_one(server, core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    n_events, n_watchers = 20, 50
    results = [None] * n_watchers
    started = threading.Barrier(n_watchers + 2, timeout=20)

    def watcher(i):
        w = watch.Watch()
        got = []
        stream = w.stream(client.CoreV1Api(core.api_client).list_namespaced_config_map, ns,
                          resource_version=rv, timeout_seconds=15)
        started.wait()
        for ev in stream:
            got.append(ev["object"].metadata.name)
            if len(got) == n_events:
                w.stop()
        results[i] = got

    # a client that reads one event and then vanishes without closing cleanly
    def rude():
        s = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        s.sendall(f"GET /api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv} HTTP/1.1\r\n"
                  f"Host: x\r\n\r\n".encode())
        started.wait()
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()

    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(n_watchers)]
    threads.append(threading.Thread(target=rude))
    for t in threads:
        t.start()
    started.wait()
    for i in range(n_events):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"m{i:02d}"}})
    for t in threads:
        t.join(20)
    want = [f"m{i:02d}" for i in range(n_events)]
    assert all(r == want for r in results), [len(r or ()) for r in results]


# ------------------------------------------------------------------ persistence

def test_persistence_round_trip(tmp_path):
    data = tmp_path / "state.json"
    with APIServer(crd_dir=str(CRDS), data_file=str(data)) as srv:
        api = _api(srv, tmp_path)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "keep"}})
        svc = core.create_namespaced_service("keep", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
        client.CustomObjectsApi(api).create_cluster_custom_object(*MESH, "clusters", {
            "apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "east"},
            "spec": {"secret": {"name": "s", "key": "k"}}})
        rv = int(core.list_namespace().metadata.resource_version)
    assert json.loads(data.read_text())["resourceVersion"] == rv
    with APIServer(data_file=str(data)) as srv:  # CRDs come back from the snapshot too
        api = _api(srv, tmp_path, "kc2")
        core = client.CoreV1Api(api)
        got = core.read_namespaced_service("web", "keep")
        assert got.metadata.uid == svc.metadata.uid and got.spec.cluster_ip == svc.spec.cluster_ip
        assert client.CustomObjectsApi(api).get_cluster_custom_object(*MESH, "clusters", "east")["spec"]
        new = core.create_namespaced_config_map("keep", {"metadata": {"name": "x"}})
        assert int(new.metadata.resource_version) > rv
        # the history did not survive: an old version is 410
        _, raw = _raw(srv, f"/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion={rv - 1}")
        assert json.loads(raw.splitlines()[0])["object"]["code"] == 410


def test_slow_watcher_is_cut_off_with_410_without_stalling_writers(tmp_path):
    with APIServer(watch_queue=5) as srv:
        core = client.CoreV1Api(_api(srv, tmp_path))
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        s = socket.create_connection(("127.0.0.1", int(srv.url.rsplit(":", 1)[1])))
        s.sendall(f"GET /api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv} HTTP/1.1\r\n"
                  "Host: x\r\n\r\n".encode())
        big = "x" * 1_000_000  # a few of these fill the socket buffers of a client that does not read
        t0 = time.monotonic()
        for i in range(30):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"big{i}"}, "data": {"d": big}})
        assert time.monotonic() - t0 < 10  # the writers never waited for the stuck watcher
        s.settimeout(10)
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            raw += chunk
        s.close()
        assert b'"type":"ERROR"' in raw or b'"type": "ERROR"' in raw
        assert b'"code": 410' in raw and b'"Expired"' in raw
        assert raw.count(b'"type":"ADDED"') < 30


def test_strict_field_validation_and_pruning(server, api):
    body = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "strict"},
            "spec": {"secret": {"name": "s", "key": "k"}, "bogus": 1}}
    status, raw = _raw(server, "/apis/mesh-cni.dev/v1alpha1/clusters?fieldValidation=Strict", "POST", body)
    assert status == 400
    err = json.loads(raw)
    assert err["reason"] == "BadRequest" and 'unknown field "spec.bogus"' in err["message"]
    # without Strict an undeclared field is pruned, as kube does for structural schemas
    status, raw = _raw(server, "/apis/mesh-cni.dev/v1alpha1/clusters", "POST", body)
    assert status == 201 and "bogus" not in json.loads(raw)["spec"]


def test_immortal_namespaces(core):
    with pytest.raises(ApiException) as ei:
        core.delete_namespace("default")
    assert ei.value.status == 403 and json.loads(ei.value.body)["reason"] == "Forbidden"


def test_dry_run_and_send_initial_events(server, core, ns):
    status, raw = _raw(server, f"/api/v1/namespaces/{ns}/configmaps?dryRun=All", "POST", {"metadata": {"name": "dry"}})
    assert status == 201 and json.loads(raw)["metadata"]["name"] == "dry"
    assert core.list_namespaced_config_map(ns).items == []
    core.create_namespaced_config_map(ns, {"metadata": {"name": "real"}})
    status, raw = _raw(server, f"/api/v1/namespaces/{ns}/configmaps?watch=1&sendInitialEvents=true"
                               "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1")
    evs = [json.loads(line) for line in raw.splitlines()]
    assert (evs[0]["type"], evs[0]["object"]["metadata"]["name"]) == ("ADDED", "real")
    assert evs[1]["type"] == "BOOKMARK"
    assert evs[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
