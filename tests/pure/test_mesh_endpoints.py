# SPDX-License-Identifier: MIT OR Apache-2.0
"""Multi-cluster pure core: remote Services + EndpointSlices -> MeshEndpoints, Cluster status, CIDR conflicts."""
import base64
import json

import pytest
import yaml

from meshcni.controllers import mesh

pytestmark = pytest.mark.pure

C = "c2"


def svc(name="web", ns="app", ports=None, annotations=None, uid="uid-web", meshed=True, **spec):
    ann = dict(annotations or {})
    if meshed:
        ann.setdefault(mesh.MULTI_CLUSTER, "true")
    return {"metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": ann},
            "spec": dict({"ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]},
                         **spec)}


def rsvc(name="web", ns="app", ports=None, export=None):
    ann = {mesh.EXPORT: export} if export is not None else {}
    return {"metadata": {"name": name, "namespace": ns, "annotations": ann},
            "spec": {"ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def eps(svc_name="web", ns="app", addrs=("10.242.0.21",), port=8080, name="http", proto="TCP", fam="IPv4",
        ready=True, terminating=False, slice_name=None, ports=None):
    return {"metadata": {"name": slice_name or f"{svc_name}-{fam.lower()}", "namespace": ns,
                         "labels": {mesh.SERVICE_NAME_LABEL: svc_name}},
            "addressType": fam,
            "ports": ports if ports is not None else [{"name": name, "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready, "terminating": terminating}}
                          for a in addrs]}


def nsobj(name="app", export=None):
    return {"metadata": {"name": name, "annotations": {mesh.EXPORT: export} if export is not None else {}}}


def mappings(local, remote, slices, problems=None):
    return mesh.backend_port_mappings(local, remote, slices, problems if problems is not None else [], C)


def m(ip, sp=80, bp=8080, proto="TCP"):
    return {"ip": ip, "service_port": sp, "backend_port": bp, "protocol": proto}


# ---------------------------------------------------------------- ports

def test_seed_example_shape():
    res = mesh.desired_meshendpoints("cluster2", [svc()], [rsvc()], [nsobj()], [eps()])
    assert res.problems == []
    body = res.desired["app/web-cluster2"]
    assert body["apiVersion"] == "mesh-cni.dev/v1alpha1" and body["kind"] == "MeshEndpoint"
    assert body["metadata"]["name"] == "web-cluster2" and body["metadata"]["namespace"] == "app"
    assert body["metadata"]["labels"] == {"kubernetes.io/service-name": "web", "mesh-cni.dev/cluster-owner": "cluster2",
                                          "app.kubernetes.io/managed-by": "meshcni-controller"}
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                    "uid": "uid-web", "controller": True}]
    assert body["spec"] == {"backend_port_mappings": [m("10.242.0.21")]}
    assert (res.meshed_services, res.remote_endpoints) == (1, 1)


def test_port_matched_by_name_before_number():
    # local "http" 80 and "admin" 9000; remote swapped numbers: names win
    local = svc(ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "admin", "port": 9000}])
    remote = rsvc(ports=[{"name": "http", "port": 9000, "protocol": "TCP"}, {"name": "admin", "port": 80}])
    sl = eps(ports=[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9090}])
    assert mappings(local, remote, [sl]) == [m("10.242.0.21", 80, 8080), m("10.242.0.21", 9000, 9090)]


def test_port_matched_by_number_when_names_differ():
    local = svc(ports=[{"name": "web", "port": 80}])
    remote = rsvc(ports=[{"name": "http", "port": 80}])
    assert mappings(local, remote, [eps(name="http", port=8080)]) == [m("10.242.0.21", 80, 8080)]


def test_unnamed_single_ports_match_by_empty_name_even_with_other_numbers():
    local = svc(ports=[{"port": 80}])
    remote = rsvc(ports=[{"port": 8000}])
    assert mappings(local, remote, [eps(name="", port=8080)]) == [m("10.242.0.21", 80, 8080)]


def test_protocol_must_match():
    local = svc(ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
    remote = rsvc(ports=[{"name": "dns", "port": 53, "protocol": "TCP"}])
    probs = []
    assert mappings(local, remote, [eps(name="dns", port=53, proto="TCP")], probs) == []
    assert len(probs) == 1 and probs[0].field == "spec.ports[0]" and "no UDP port" in probs[0].message
    assert "Service app/web" in str(probs[0])


def test_same_number_two_protocols():
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    sl = eps(ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 5354,
                                                                       "protocol": "TCP"}])
    assert mappings(svc(ports=ports), rsvc(ports=ports), [sl]) == [
        m("10.242.0.21", 53, 5354, "TCP"), m("10.242.0.21", 53, 5353, "UDP")]


# ---------------------------------------------------------------- endpoints

def test_multiple_slices_merge_sorted_and_deduplicated():
    s1 = eps(addrs=("10.242.0.30", "10.242.0.4"), slice_name="web-a")
    s2 = eps(addrs=("10.242.0.21", "10.242.0.4"), slice_name="web-b")  # .4 in both (a slice migration)
    out = mappings(svc(), rsvc(), [s1, s2])
    assert out == [m("10.242.0.4"), m("10.242.0.21"), m("10.242.0.30")]  # numeric, not text, order


def test_slice_disagreement_keeps_lowest_backend_port():
    s1 = eps(addrs=("10.242.0.4",), port=9090, slice_name="web-new")
    s2 = eps(addrs=("10.242.0.4",), port=8080, slice_name="web-old")
    assert mappings(svc(), rsvc(), [s1, s2]) == [m("10.242.0.4", 80, 8080)]


def test_dual_stack():
    out = mappings(svc(), rsvc(), [eps(addrs=("fd00:10::5", "fd00:10::0:4"), fam="IPv6"),
                                   eps(addrs=("10.242.0.5",))])
    assert out == [m("10.242.0.5"), m("fd00:10::4"), m("fd00:10::5")]  # v4 first, canonical v6 text


def test_not_ready_and_terminating_left_out_nil_ready_counts():
    sl = eps(addrs=())
    sl["endpoints"] = [
        {"addresses": ["10.242.0.1"], "conditions": {"ready": False}},
        {"addresses": ["10.242.0.2"], "conditions": {"ready": True, "terminating": True}},
        {"addresses": ["10.242.0.3"], "conditions": {"serving": True, "terminating": True}},
        {"addresses": ["10.242.0.4"]},                                  # nil conditions: ready
        {"addresses": ["10.242.0.5"], "conditions": {"ready": None}},   # nil ready: ready
        {"addresses": ["10.242.0.6"], "conditions": {"ready": True, "terminating": False}},
    ]
    assert [x["ip"] for x in mappings(svc(), rsvc(), [sl])] == ["10.242.0.4", "10.242.0.5", "10.242.0.6"]


def test_fqdn_slices_ignored_and_other_services_slices_not_mixed():
    fq = eps(fam="FQDN", addrs=("web.example",))
    other = eps(svc_name="api", addrs=("10.242.9.9",))
    res = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [nsobj()], [fq, other, eps()])
    assert res.problems == []
    assert [x["ip"] for x in res.desired[f"app/web-{C}"]["spec"]["backend_port_mappings"]] == ["10.242.0.21"]


def test_remote_without_endpoints_still_has_an_empty_meshendpoint():
    res = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [nsobj()], [])
    assert res.desired[f"app/web-{C}"]["spec"]["backend_port_mappings"] == []
    assert (res.meshed_services, res.remote_endpoints) == (1, 0)


# ---------------------------------------------------------------- which Services

def test_only_meshed_services_with_a_remote_twin():
    local = [svc(), svc("api", uid="u2"), svc("plain", meshed=False), svc("off", annotations={
        mesh.MULTI_CLUSTER: "false"}), svc("web", ns="other", uid="u3")]
    remote = [rsvc(), rsvc("plain"), rsvc("off")]  # no api in the remote; other/web absent too
    res = mesh.desired_meshendpoints(C, local, remote, [nsobj()], [eps()])
    assert sorted(res.desired) == [f"app/web-{C}"]


def test_annotation_value_is_case_insensitive_true():
    assert mesh.is_meshed(svc(annotations={mesh.MULTI_CLUSTER: "True"}))
    assert not mesh.is_meshed(svc(annotations={mesh.MULTI_CLUSTER: "yes"}))


@pytest.mark.parametrize("remote_export,ns_export,exported", [
    (None, None, True), ("true", None, True), ("false", None, False), (None, "false", False),
    ("FALSE", None, False), ("true", "false", False)])
def test_export_opt_out(remote_export, ns_export, exported):
    res = mesh.desired_meshendpoints(C, [svc()], [rsvc(export=remote_export)], [nsobj(export=ns_export)], [eps()])
    assert bool(res.desired) is exported
    assert res.problems == []


def test_remote_namespace_missing_from_cache_does_not_block_export():
    res = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [], [eps()])
    assert list(res.desired) == [f"app/web-{C}"]


def test_externalname_reported_not_meshed():
    res = mesh.desired_meshendpoints(C, [svc(type="ExternalName")], [rsvc()], [nsobj()], [eps()])
    assert res.desired == {} and [p.field for p in res.problems] == ["spec.type"]


def test_too_long_name_reported():
    long = "c" * 200
    res = mesh.desired_meshendpoints(long, [svc(name="w" * 60)], [rsvc(name="w" * 60)], [], [])
    assert res.desired == {} and res.problems[0].field == "metadata.name"


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("mutate,field,kind", [
    (lambda s, r, e: e["endpoints"][0].__setitem__("addresses", ["10.0.0.999"]), "endpoints[0].addresses[0]",
     "EndpointSlice"),
    (lambda s, r, e: e["endpoints"][0].__setitem__("addresses", ["fd00::1"]), "endpoints[0].addresses[0]",
     "EndpointSlice"),  # v6 in a v4 slice
    (lambda s, r, e: e["endpoints"][0].__setitem__("addresses", "10.0.0.1"), "endpoints[0].addresses",
     "EndpointSlice"),
    (lambda s, r, e: e["endpoints"].__setitem__(0, "x"), "endpoints[0]", "EndpointSlice"),
    (lambda s, r, e: e["ports"][0].__setitem__("port", "eighty"), "ports[0].port", "EndpointSlice"),
    (lambda s, r, e: e["ports"][0].__setitem__("protocol", "ICMP"), "ports[0].protocol", "EndpointSlice"),
    (lambda s, r, e: e.__setitem__("addressType", "IPv5"), "addressType", "EndpointSlice"),
    (lambda s, r, e: e.__setitem__("endpoints", {}), None, None),    # empty mapping: no endpoints, no report
    (lambda s, r, e: e.__setitem__("endpoints", 7), "endpoints", "EndpointSlice"),
    (lambda s, r, e: r["spec"]["ports"][0].__setitem__("port", 0), "spec.ports[0].port", "Service"),
    (lambda s, r, e: s["spec"]["ports"][0].__setitem__("port", True), "spec.ports[0].port", "Service"),
    (lambda s, r, e: s["spec"].__setitem__("ports", "80"), "spec.ports", "Service"),
    (lambda s, r, e: s["spec"]["ports"].__setitem__(0, None), "spec.ports[0]", "Service"),
])
def test_bad_input_reported_naming_object_and_field(mutate, field, kind):
    s, r, e = svc(), rsvc(), eps()
    mutate(s, r, e)
    res = mesh.desired_meshendpoints(C, [s], [r], [nsobj()], [e])
    if field is None:
        assert res.problems == []
        return
    hit = [p for p in res.problems if p.field == field]
    assert hit, [str(p) for p in res.problems]
    assert hit[0].kind == kind
    text = str(hit[0])
    assert field in text and (("web-ipv4" in text) if kind == "EndpointSlice" else ("app/web" in text))
    if kind == "EndpointSlice" or field == "spec.ports[0].port" and r["spec"]["ports"][0]["port"] == 0:
        assert text.startswith(f"cluster {C}: ")  # remote objects say which cluster


def test_garbage_objects_never_crash():
    junk = [{}, {"metadata": None}, {"metadata": {"name": "x"}, "spec": None},
            {"metadata": {"labels": {mesh.SERVICE_NAME_LABEL: "web"}, "namespace": "app"}, "endpoints": None}]
    res = mesh.desired_meshendpoints(C, junk + [svc()], junk + [rsvc()], junk, junk + [eps()])
    assert list(res.desired) == [f"app/web-{C}"]


# ---------------------------------------------------------------- plan (diff against the cluster)

def stored(body, rv="5", uid="u-mep", status=None):
    o = json.loads(json.dumps(body))
    o["metadata"].update(resourceVersion=rv, uid=uid)
    if status is not None:
        o["status"] = status
    return o


def test_plan_unchanged_is_no_write_and_deterministic():
    r1 = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [nsobj()],
                                    [eps(addrs=("10.242.0.9", "10.242.0.1")), eps(addrs=("fd00::1",), fam="IPv6")])
    r2 = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [nsobj()],
                                    [eps(addrs=("fd00::1",), fam="IPv6"), eps(addrs=("10.242.0.1", "10.242.0.9"))])
    assert json.dumps(r1.desired, sort_keys=False) == json.dumps(r2.desired, sort_keys=False)
    existing = [stored(b) for b in r1.desired.values()]
    assert mesh.plan_meshendpoints(C, r2.desired, existing).writes == 0


def test_plan_create_replace_delete_only_own_cluster():
    d = mesh.desired_meshendpoints(C, [svc(), svc("api", uid="u-api")], [rsvc(), rsvc("api")], [nsobj()],
                                   [eps(), eps("api")]).desired
    old_web = stored(d[f"app/web-{C}"])
    old_web["spec"]["backend_port_mappings"] = []
    old_web["metadata"]["labels"]["extra"] = "kept"
    old_web["metadata"]["annotations"] = {"note": "kept"}
    gone = stored(mesh.meshendpoint_body(C, svc("old", uid="u-old"), []))
    other_cluster = stored(mesh.meshendpoint_body("c3", svc("old", uid="u-old"), []))
    plan = mesh.plan_meshendpoints(C, d, [old_web, gone, other_cluster])
    assert [mesh._key(b) for b in plan.create] == [f"app/api-{C}"]
    assert len(plan.replace) == 1
    cur, new = plan.replace[0]
    assert new["metadata"]["resourceVersion"] == "5" and new["metadata"]["labels"]["extra"] == "kept"
    assert new["metadata"]["annotations"] == {"note": "kept"}
    assert new["spec"]["backend_port_mappings"] == [m("10.242.0.21")]
    assert [mesh._key(o) for o in plan.delete] == [f"app/old-{C}"]  # c3's is not ours to delete


def test_plan_new_service_uid_replaces_owner_reference():
    d = mesh.desired_meshendpoints(C, [svc(uid="new-uid")], [rsvc()], [nsobj()], [eps()]).desired
    old = stored(mesh.meshendpoint_body(C, svc(uid="old-uid"), [m("10.242.0.21")]))
    plan = mesh.plan_meshendpoints(C, d, [old])
    assert len(plan.replace) == 1 and plan.replace[0][1]["metadata"]["ownerReferences"][0]["uid"] == "new-uid"


def test_handmade_meshendpoint_blocks_name_and_is_reported_never_touched():
    d = mesh.desired_meshendpoints(C, [svc()], [rsvc()], [nsobj()], [eps()]).desired
    hand = stored(d[f"app/web-{C}"])
    del hand["metadata"]["labels"][mesh.MANAGED_BY]
    hand2 = stored(mesh.meshendpoint_body(C, svc("x"), []))
    del hand2["metadata"]["labels"][mesh.MANAGED_BY]
    plan = mesh.plan_meshendpoints(C, d, [hand, hand2])
    assert plan.writes == 0
    assert [p.name for p in plan.problems] == [f"web-{C}"] and "hand-made" in plan.problems[0].message
    assert [p.name for p in mesh.handmade_problems([hand, hand2, stored(d[f"app/web-{C}"])])] == [f"web-{C}", f"x-{C}"]


def test_stale_status_patches_only_on_change():
    fresh = {"metadata": {"name": "a"}}
    assert mesh.stale_status(fresh, None) is None
    assert mesh.stale_status({**fresh, "status": {"stale": False}}, None) is None
    assert mesh.stale_status(fresh, "2025-01-01T00:00:00Z") == {"status": {"stale": True,
                                                                            "staleSince": "2025-01-01T00:00:00Z"}}
    stale = {**fresh, "status": {"stale": True, "staleSince": "2025-01-01T00:00:00Z"}}
    assert mesh.stale_status(stale, "2025-02-02T00:00:00Z") is None  # keeps the first staleSince
    assert mesh.stale_status(stale, None) == {"status": {"stale": False, "staleSince": None}}


# ---------------------------------------------------------------- nodes and CIDRs

def node(name, cidrs=None, ip="172.18.0.2", cidr=None):
    spec = {}
    if cidrs is not None:
        spec["podCIDRs"] = cidrs
    if cidr is not None:
        spec["podCIDR"] = cidr
    return {"metadata": {"name": name}, "spec": spec,
            "status": {"addresses": ([{"type": "InternalIP", "address": ip}] if ip else [])
                       + [{"type": "Hostname", "address": name}]}}


def test_remote_nodes_routing_data():
    probs = []
    nodes = [node("b", ["10.245.1.0/24", "fd00:245:1::/64"], "172.18.1.3"), node("a", cidr="10.245.0.0/24"),
             node("bad", ["10.245.2.1/24"]), node("noip", ["10.245.3.0/24"], ip=None)]
    out = mesh.remote_nodes(nodes, C, probs)
    assert out == [{"name": "a", "addresses": ["172.18.0.2"], "podCIDRs": ["10.245.0.0/24"]},
                   {"name": "b", "addresses": ["172.18.1.3"], "podCIDRs": ["10.245.1.0/24", "fd00:245:1::/64"]},
                   {"name": "bad", "addresses": ["172.18.0.2"], "podCIDRs": []}]
    fields = sorted((p.name, p.field) for p in probs)
    assert fields == [("bad", "spec.podCIDRs[0]"), ("noip", "status.addresses")]
    assert all(str(p).startswith(f"cluster {C}: Node ") for p in probs)


def test_cidr_conflicts():
    local = [node("l1", ["10.244.0.0/24"]), node("l2", ["10.244.1.0/24", "fd00:244::/64"])]
    ok = [node("r1", ["10.245.0.0/24"]), node("r2", ["fd00:245::/64"])]
    assert mesh.cidr_conflicts(C, ok, local, ["10.96.0.0/12"]) == []
    bad = [node("r1", ["10.244.1.128/25"]), node("r2", ["10.96.5.0/24"]), node("r3", ["fd00:244::/48"]),
           node("r4", ["10.0.0.0/8"])]
    out = mesh.cidr_conflicts(C, bad, local, ["10.96.0.0/12"])
    assert out == ["remote node r1 podCIDR 10.244.1.128/25 overlaps local node l2 podCIDR 10.244.1.0/24",
                   "remote node r2 podCIDR 10.96.5.0/24 overlaps local service CIDR 10.96.0.0/12",
                   "remote node r3 podCIDR fd00:244::/48 overlaps local node l2 podCIDR fd00:244::/64",
                   "remote node r4 podCIDR 10.0.0.0/8 overlaps local node l2 podCIDR 10.244.1.0/24"]


def test_cidr_conflict_containment_behind_a_later_start():
    # a wide local range that starts early must be found for a remote range far after its start
    local = [node("wide", ["10.0.0.0/8"]), node("narrow", ["10.1.0.0/24"])]
    assert len(mesh.cidr_conflicts(C, [node("r", ["10.200.0.0/24"])], local)) == 1


def test_cidr_conflicts_bad_service_cidr_reported():
    probs = []
    assert mesh.cidr_conflicts(C, [node("r", ["10.1.0.0/24"])], [], ["nope"], probs) == []
    assert probs and probs[0].field == "--service-cidr" and probs[0].name == C


# ---------------------------------------------------------------- Secret

def cluster(name=C, secret="kc", key=None):
    ref = {"name": secret}
    if key:
        ref["key"] = key
    return {"metadata": {"name": name}, "spec": {"secret": ref}}


KC = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "r", "cluster": {"server": "http://127.0.0.1:1"}}],
      "contexts": [{"name": "r", "context": {"cluster": "r", "user": "r"}}], "current-context": "r",
      "users": [{"name": "r", "user": {}}]}


def secret(data=None, name="kc"):
    return {"metadata": {"name": name, "namespace": "meshcni-system"},
            "data": {k: base64.b64encode(v).decode() for k, v in (data or {}).items()}}


def test_kubeconfig_from_secret():
    assert mesh.kubeconfig_from_secret(cluster(), secret({"config": yaml.safe_dump(KC).encode()}),
                                       "meshcni-system")["current-context"] == "r"
    assert mesh.kubeconfig_from_secret(cluster(key="kc2"), secret({"kc2": yaml.safe_dump(KC).encode()}), "ns")


@pytest.mark.parametrize("sec,reason,fragment", [
    (None, "SecretNotFound", "Secret meshcni-system/kc not found"),
    (secret({"other": b"x"}), "KeyNotFound", "no key 'config' in data (keys: other)"),
    (secret({"config": b"::: not yaml :::\n  - ["}), "InvalidKubeconfig", "data.config is not YAML"),
    (secret({"config": b"just a string"}), "InvalidKubeconfig", "not a kubeconfig"),
    (secret({"config": yaml.safe_dump(dict(KC, **{"current-context": "x"})).encode()}), "InvalidKubeconfig",
     "current-context 'x'"),
    (secret({"config": yaml.safe_dump(dict(KC, clusters=[])).encode()}), "InvalidKubeconfig", "no cluster"),
    ({"metadata": {"name": "kc"}, "data": {"config": "***"}}, "InvalidKubeconfig", "not base64"),
])
def test_kubeconfig_errors_have_reasons(sec, reason, fragment):
    with pytest.raises(mesh.SecretError) as e:
        mesh.kubeconfig_from_secret(cluster(), sec, "meshcni-system")
    assert e.value.reason == reason and fragment in str(e.value)


def test_cluster_without_secret_name():
    with pytest.raises(mesh.SecretError) as e:
        mesh.kubeconfig_from_secret({"metadata": {"name": "x"}, "spec": {}}, None, "ns")
    assert e.value.reason == "InvalidSpec"


# ---------------------------------------------------------------- Cluster status

OK = mesh.Cond("True", "Resolved")
UP = mesh.Cond("True", "Reachable")
SYNCED = mesh.Cond("True", "Synced")
NOCONF = mesh.Cond("False", "NoConflict")


def obs(**kw):
    base = dict(secret=OK, reachable=UP, synced=SYNCED, conflict=NOCONF, meshed_services=2, remote_endpoints=5,
                last_sync_time="2025-01-01T00:00:00Z", nodes=[{"name": "n", "addresses": ["172.18.0.2"],
                                                                 "podCIDRs": ["10.245.0.0/24"]}])
    base.update(kw)
    return mesh.ClusterObservation(**base)


def conds(st):
    return {c["type"]: c for c in st["conditions"]}


def test_status_ready_and_fields():
    st = mesh.cluster_status(None, 3, obs(), "T1")
    c = conds(st)
    assert [x["type"] for x in st["conditions"]] == list(mesh.CONDITION_TYPES)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "Ready"
    assert c["CIDRConflict"]["status"] == "False"
    assert all(x["observedGeneration"] == 3 and x["lastTransitionTime"] == "T1" for x in st["conditions"])
    assert (st["observedGeneration"], st["meshedServices"], st["remoteEndpoints"], st["lastSyncTime"]) == \
        (3, 2, 5, "2025-01-01T00:00:00Z")
    assert st["nodes"][0]["name"] == "n"


def test_status_unchanged_keeps_transition_times_and_is_equal():
    st = mesh.cluster_status(None, 1, obs(), "T1")
    assert mesh.cluster_status(st, 1, obs(), "T2") == st


def test_status_transition_updates_only_changed_conditions():
    st = mesh.cluster_status(None, 1, obs(), "T1")
    down = mesh.cluster_status(st, 1, obs(reachable=mesh.Cond("False", "Unreachable", "connection refused")), "T2")
    c = conds(down)
    assert c["APIServerReachable"]["lastTransitionTime"] == "T2" and c["Ready"]["lastTransitionTime"] == "T2"
    assert c["Ready"]["reason"] == "Unreachable" and c["Ready"]["message"] == "connection refused"
    assert c["SecretResolved"]["lastTransitionTime"] == "T1"
    # a new message under the same status keeps the time (no flapping timestamps)
    again = mesh.cluster_status(down, 1, obs(reachable=mesh.Cond("False", "Unreachable", "timeout")), "T3")
    assert conds(again)["APIServerReachable"]["lastTransitionTime"] == "T2"


def test_status_ready_reason_is_first_failing_cause():
    st = mesh.cluster_status(None, 1, obs(secret=mesh.Cond("False", "SecretNotFound", "Secret x/y not found"),
                                          reachable=mesh.Cond("Unknown", "NoClient")), "T")
    assert conds(st)["Ready"]["reason"] == "SecretNotFound"
    st = mesh.cluster_status(None, 1, obs(conflict=mesh.Cond("True", "PodCIDROverlap", "remote node r1 ...")), "T")
    assert conds(st)["Ready"]["reason"] == "PodCIDROverlap" and conds(st)["Ready"]["status"] == "False"
    probs = mesh.condition_problems(C, st)
    assert [p.field for p in probs] == ["status.conditions[CIDRConflict]"]


def test_status_keeps_last_sync_time_when_not_given():
    st = mesh.cluster_status(None, 1, obs(), "T1")
    assert mesh.cluster_status(st, 1, obs(last_sync_time=None), "T2")["lastSyncTime"] == "2025-01-01T00:00:00Z"


def test_status_validates_against_the_crd_and_survives_pruning():
    from meshcni.apiserver import schema
    crd = next(d for d in yaml.safe_load_all(open("deploy/crds/clusters.yaml")) if d)
    sch = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    st = mesh.cluster_status(None, 1, obs(), "2025-01-01T00:00:00Z")
    obj = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": C},
           "spec": {"secret": {"name": "kc", "key": "config"}}, "status": st}
    assert schema.prune(sch, obj) == obj
    assert schema.validate(sch, obj) == []


def test_start_up_phases_are_not_reported_as_problems():
    connecting = mesh.Cond("Unknown", "Connecting", "connecting")
    st = mesh.cluster_status(None, 1, obs(reachable=connecting, synced=mesh.Cond("False", "Syncing"),
                                          conflict=mesh.Cond("Unknown", "NotSynced")), "T")
    assert conds(st)["Ready"]["reason"] == "Connecting" and mesh.condition_problems(C, st) == []
    down = mesh.cluster_status(st, 1, obs(reachable=mesh.Cond("False", "Unreachable", "refused (1)")), "T")
    again = mesh.cluster_status(st, 1, obs(reachable=mesh.Cond("False", "Unreachable", "reset (2)")), "T")
    (p1,), (p2,) = mesh.condition_problems(C, down), mesh.condition_problems(C, again)
    assert p1.key == p2.key and str(p1) != str(p2)  # one problem while it lasts, whatever the details


def test_memo_recomputes_only_what_changed():
    def rv(o, v):
        o["metadata"]["resourceVersion"] = v
        return o
    local = [rv(svc("a", uid="ua"), "1"), rv(svc("b", uid="ub"), "2")]
    remote = [rv(rsvc("a"), "1"), rv(rsvc("b"), "2")]
    slices = [rv(eps("a", addrs=("10.242.0.1",)), "3"), rv(eps("b", addrs=("10.242.0.2",)), "4")]
    memo = {}
    first = mesh.desired_meshendpoints(C, local, remote, [], slices, memo)
    assert set(memo) == {("app", "a"), ("app", "b")}
    slices[1] = rv(eps("b", addrs=("10.242.0.9",)), "5")
    second = mesh.desired_meshendpoints(C, local, remote, [], slices, memo)
    assert second.desired[f"app/a-{C}"] is first.desired[f"app/a-{C}"]  # reused
    assert ips_of(second, "b") == ["10.242.0.9"]
    assert second.desired == mesh.desired_meshendpoints(C, local, remote, [], slices).desired  # same as no memo
    # a new uid (Service re-created) is a new owner reference
    local[0] = rv(svc("a", uid="ua2"), "1")
    third = mesh.desired_meshendpoints(C, local, remote, [], slices, memo)
    assert third.desired[f"app/a-{C}"]["metadata"]["ownerReferences"][0]["uid"] == "ua2"
    # gone from the input: gone from the memo; opt-out is not hidden by the memo
    remote[1] = rv(rsvc("b", export="false"), "6")
    fourth = mesh.desired_meshendpoints(C, local[:1] + [local[1]], remote, [], slices, memo)
    assert list(fourth.desired) == [f"app/a-{C}"] and set(memo) == {("app", "a")}


def ips_of(res, name):
    return [m["ip"] for m in res.desired[f"app/{name}-{C}"]["spec"]["backend_port_mappings"]]


def test_ipv4_mapped_and_uppercase_ipv6_are_canonical():
    out = mappings(svc(), rsvc(), [eps(addrs=("FD00::A", "::ffff:10.0.0.1"), fam="IPv6")])
    assert [x["ip"] for x in out] == ["::ffff:10.0.0.1", "fd00::a"]


def test_ten_thousand_endpoints_are_cheap_with_the_memo():
    import time
    n = 1000
    local = [svc(f"s{i}", uid=f"u{i}") for i in range(n)]
    remote = [rsvc(f"s{i}") for i in range(n)]
    slices = [eps(f"s{i}", addrs=[f"10.{i // 256}.{i % 256}.{j}" for j in range(10)]) for i in range(n)]
    for o in local + remote + slices:
        o["metadata"]["resourceVersion"] = "1"
    memo = {}
    res = mesh.desired_meshendpoints(C, local, remote, [], slices, memo)
    assert res.remote_endpoints == 10 * n
    t = time.perf_counter()
    again = mesh.desired_meshendpoints(C, local, remote, [], slices, memo)
    assert again.desired == res.desired and time.perf_counter() - t < 1.0  # a loose bound: dict lookups only
