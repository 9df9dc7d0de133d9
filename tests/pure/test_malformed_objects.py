# SPDX-License-Identifier: MIT OR Apache-2.0
"""A table of malformed objects fed to every desired-state function (issue 15, hostile input).

The API server validates built-in and CRD schemas, so most of these never get
past it; a looser kube-apiserver, an old object stored before a schema
tightened, or a hand-edited etcd can still hand them to an informer. Each row
adds ONE malformed object to a valid world and runs everything the agent and
the controller compute from their caches: Services (+ MeshEndpoints), ipcache
and endpoints, NetworkPolicy, identities and CIDR identities, routes, and the
mesh controller's per-Cluster decision (Cluster + kubeconfig Secret).

Every row must:
- raise nothing;
- report a problem naming the object (kind, namespace, name) and the field;
- leave everything the valid objects produce in place (nothing else lost).
"""
import base64
import copy

import pytest
import yaml

from meshcni.controller.clustermesh import MeshConfig, Snapshot, decide
from meshcni.controllers import mesh
from meshcni.controllers.identity import (POD_ID_MIN, desired_cidr_identities, desired_identities, identity_body,
                                          identity_labels)
from meshcni.controllers.ipcache import desired_endpoints, desired_ipcache
from meshcni.controllers.netpol import compile_policies
from meshcni.controllers.routes import desired_routes
from meshcni.controllers.services import ServiceIDs, desired_services, remote_backends

pytestmark = pytest.mark.pure

NS = "app"
SECRET_NS = "meshcni-system"
CFG = MeshConfig(cluster_name="here", namespace=SECRET_NS, stale_grace=100.0)
T0 = 1_700_000_000.0
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWJ5dGVz.Zm9yZ2Vk"  # what must never be echoed back
KC = {"apiVersion": "v1", "kind": "Config",
      "clusters": [{"name": "r", "cluster": {"server": "https://192.0.2.1:6443"}}],
      "users": [{"name": "u", "user": {"token": TOKEN}}],
      "contexts": [{"name": "r", "context": {"cluster": "r", "user": "u"}}], "current-context": "r"}


def b64(s) -> str:
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def pod(name, labels, ip, ports=()):
    return {"metadata": {"name": name, "namespace": NS, "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def base_world() -> dict:
    nss = [{"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}}]
    pods = [pod("web-0", {"app": "web"}, "10.244.0.5", [("http", 8080)]),
            pod("client", {"role": "client"}, "10.244.0.6"),
            pod("victim", {"app": "victim"}, "10.244.0.7")]
    ns_labels = {NS: nss[0]["metadata"]["labels"]}
    ids = [identity_body(NS, identity_labels(p, ns_labels[NS]), POD_ID_MIN + 1000 + i) for i, p in enumerate(pods)]
    for i in ids:
        i["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "namespaces": nss, "pods": pods, "identities": ids, "cidridentities": [],
        "services": [{"metadata": {"name": "web", "namespace": NS},
                      "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}],
        "endpointslices": [{"metadata": {"name": "web-abc", "namespace": NS,
                                         "labels": {"kubernetes.io/service-name": "web"}},
                            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}]}],
        "meshendpoints": [],
        "networkpolicies": [{"metadata": {"name": "allow-web", "namespace": NS},
                             "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                                   "ports": [{"port": "http"}]}]}}],
        "nodes": [{"metadata": {"name": n, "creationTimestamp": f"2026-01-01T00:00:0{i}Z"},
                   "spec": {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]},
                   "status": {"addresses": [{"type": "InternalIP", "address": f"172.30.0.{10 + i}"}]}}
                  for i, n in enumerate(("n1", "n2"))],
        "clusters": [{"metadata": {"name": "east", "generation": 1, "finalizers": [mesh.FINALIZER]},
                      "spec": {"secret": {"name": "east-kc"}},
                      "status": {"nodes": [{"name": "e1", "addresses": ["172.31.0.10"],
                                            "podCIDRs": ["10.245.0.0/24"]}]}}],
        "secrets": [{"metadata": {"name": "east-kc", "namespace": SECRET_NS},
                     "data": {"config": b64(yaml.safe_dump(KC))}}],
        "records": [{"hostIfindex": 7, "podNamespace": NS, "podName": "web-0", "ips": ["10.244.0.5/32"],
                     "netnsCookie": 1}],
    }


def run_all(w: dict):
    """Everything computed from the caches; (outputs, problems)."""
    problems = []
    remote, p = remote_backends(w["meshendpoints"])
    problems += p
    svcs, p = desired_services(w["services"], w["endpointslices"], ServiceIDs(), remote=remote)
    problems += p
    ipc, p, _ = desired_ipcache(w["pods"], w["namespaces"], w["identities"], w["cidridentities"], w["nodes"], "n1")
    problems += p
    eps = desired_endpoints(w["records"], w["pods"], w["namespaces"], w["identities"])
    pol = compile_policies(w["networkpolicies"], w["pods"], w["namespaces"], w["identities"], w["cidridentities"])
    problems += pol.problems
    create, keep, delete, p = desired_identities(w["pods"], w["namespaces"], w["identities"])
    problems += p
    ccreate, ckeep, cdelete, p = desired_cidr_identities(w["networkpolicies"], w["cidridentities"])
    problems += p
    routes, p = desired_routes(w["nodes"], "n1", w["clusters"])
    problems += p
    secrets = {(s["metadata"].get("namespace"), s["metadata"].get("name")): s for s in w["secrets"]}
    plans = {}
    for c in w["clusters"]:
        name = (c.get("metadata") or {}).get("name")
        ref = (c.get("spec") or {}).get("secret") if isinstance(c.get("spec"), dict) else None
        sname = ref.get("name") if isinstance(ref, dict) else None
        sec = secrets.get((SECRET_NS, sname)) if isinstance(sname, str) else None
        plan = decide(Snapshot(name, c, sec, None, None, None, [], w["services"], w["nodes"], None, T0), CFG)
        plans[name] = plan
        problems += plan.problems
    out = {
        "services": {s.name: (sorted(map(str, s.frontends)), sorted(map(str, s.backends))) for s in svcs},
        "ipcache": ipc,
        "endpoints": eps,
        "policy": {(e.identity, e.direction, e.peer, e.proto, e.port) for e in pol.entries},
        "enforced": set(pol.enforced),
        "identities": {o["metadata"]["name"] for o in keep} | {o["metadata"]["name"] for o in create},
        "identity_deletes": {d["name"] for d in delete},
        "cidr": {o["metadata"]["name"] for o in ccreate} | {o["metadata"]["name"] for o, _ in ckeep},
        "routes": routes,
        "clusters": {n: (p.connect is not None, p.add_finalizer) for n, p in plans.items()},
    }
    return out, problems


BASE_OUT, BASE_PROBLEMS = run_all(base_world())


def svc(name, **spec):
    s = {"metadata": {"name": name, "namespace": NS},
         "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    s["spec"].update(spec)
    return s


def eps(name, **kw):
    s = {"metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": True}}]}
    s.update(kw)
    return s


def bad_pod(name, mutate):
    p = pod(name, {"app": name}, "10.244.0.50")
    mutate(p)
    return p


def netpol(name, **spec):
    s = {"podSelector": {"matchLabels": {"app": "victim"}},
         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}]}
    s.update(spec)
    return {"metadata": {"name": name, "namespace": NS}, "spec": s}


def rule(**r):
    return [dict({"from": [{"podSelector": {}}]}, **r)]


def cluster(name, spec=None, status=None):
    c = {"metadata": {"name": name, "generation": 1, "finalizers": [mesh.FINALIZER]},
         "spec": spec if spec is not None else {"secret": {"name": f"{name}-kc"}}}
    if status is not None:
        c["status"] = status
    return c


def with_secret(name, data=None, key="config", **extra):
    """A Cluster ``name`` plus its Secret holding ``data`` (bytes or str) under ``key``."""
    sec = {"metadata": {"name": f"{name}-kc", "namespace": SECRET_NS},
           "data": {key: b64(data) if data is not None else None}}
    sec.update(extra)
    return [("clusters", cluster(name)), ("secrets", sec)]


def set_in(path, value):
    def f(p):
        o = p
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = value
    return f


# (id, [(cache, object)], kind, name, field substring)
ROWS = [
    # --- Services
    ("svc-no-spec", [("services", {"metadata": {"name": "s1", "namespace": NS}})], "Service", "s1", "spec"),
    ("svc-spec-string", [("services", {"metadata": {"name": "s2", "namespace": NS}, "spec": "x"})],
     "Service", "s2", "spec"),
    ("svc-bad-clusterip", [("services", svc("s3", clusterIP="10.96.0.999"))], "Service", "s3", "spec.clusterIP"),
    ("svc-bad-second-clusterip", [("services", svc("s4", clusterIPs=["10.96.0.21", "nope"]))],
     "Service", "s4", "spec.clusterIPs[1]"),
    ("svc-port-too-big", [("services", svc("s5", ports=[{"port": 70000}]))], "Service", "s5", "spec.ports[0].port"),
    ("svc-port-string", [("services", svc("s6", ports=[{"port": "80"}]))], "Service", "s6", "spec.ports[0].port"),
    ("svc-bad-protocol", [("services", svc("s7", ports=[{"port": 81, "protocol": "ICMP"}]))],
     "Service", "s7", "spec.ports[0].protocol"),
    ("svc-ports-not-list", [("services", svc("s8", ports="80"))], "Service", "s8", "spec.ports"),
    ("svc-port-null", [("services", svc("s9", ports=[None]))], "Service", "s9", "spec.ports[0]"),
    ("svc-affinity-timeout", [("services", svc("s10", sessionAffinity="ClientIP",
                                               sessionAffinityConfig={"clientIP": {"timeoutSeconds": -5}}))],
     "Service", "s10", "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
    ("svc-affinity-config-string", [("services", svc("s11", sessionAffinity="ClientIP", sessionAffinityConfig="x"))],
     "Service", "s11", "spec.sessionAffinityConfig"),
    ("svc-annotations-list", [("services", dict(svc("s12"), metadata={"name": "s12", "namespace": NS,
                                                                      "annotations": ["a"]}))],
     "Service", "s12", "metadata.annotations"),
    ("svc-multicluster-yes", [("services", dict(svc("s13"), metadata={
        "name": "s13", "namespace": NS, "annotations": {"mesh-cni.dev/multi-cluster": "yes"}}))],
     "Service", "s13", "metadata.annotations[mesh-cni.dev/multi-cluster]"),
    # --- EndpointSlices (of the valid Service "web": its own backend must stay)
    ("eps-port-negative", [("endpointslices", eps("e1", ports=[{"name": "http", "port": -1, "protocol": "TCP"}]))],
     "EndpointSlice", "e1", "ports"),
    ("eps-endpoints-not-list", [("endpointslices", eps("e2", endpoints=5))], "EndpointSlice", "e2", "endpoints"),
    ("eps-endpoint-null", [("endpointslices", eps("e3", endpoints=[None]))], "EndpointSlice", "e3", "endpoints[0]"),
    ("eps-addresses-string", [("endpointslices", eps("e4", endpoints=[{"addresses": "10.244.0.9"}]))],
     "EndpointSlice", "e4", "endpoints[0].addresses"),
    ("eps-address-not-ip", [("endpointslices", eps("e5", endpoints=[{"addresses": ["ten.one"]}]))],
     "EndpointSlice", "e5", "endpoints[0].addresses[0]"),
    ("eps-conditions-string", [("endpointslices", eps("e6", endpoints=[{"addresses": ["10.244.0.9"],
                                                                       "conditions": "ready"}]))],
     "EndpointSlice", "e6", "endpoints[0].conditions"),
    ("eps-port-null", [("endpointslices", eps("e7", ports=[None]))], "EndpointSlice", "e7", "ports[0]"),
    ("eps-bad-address-type", [("endpointslices", eps("e8", addressType="IPv5"))],
     "EndpointSlice", "e8", "addressType"),
    # --- Pods
    ("pod-bad-podip", [("pods", bad_pod("p1", set_in(("status", "podIP"), "999.1.1.1")) | {
        "status": {"phase": "Running", "podIP": "999.1.1.1"}})], "Pod", "p1", "status.podIP"),
    ("pod-bad-podips", [("pods", bad_pod("p2", set_in(("status", "podIPs"), [{"ip": "x"}])))],
     "Pod", "p2", "status.podIPs[0]"),
    ("pod-podips-string", [("pods", bad_pod("p3", set_in(("status", "podIPs"), "10.244.0.51")))],
     "Pod", "p3", "status.podIPs"),
    ("pod-labels-list", [("pods", bad_pod("p4", set_in(("metadata", "labels"), ["app"])))],
     "Pod", "p4", "metadata.labels"),
    ("pod-status-string", [("pods", bad_pod("p5", set_in(("status",), "Running")))], "Pod", "p5", "status"),
    ("pod-spec-string", [("pods", bad_pod("p7", set_in(("spec",), "x")))], "Pod", "p7", "spec"),
    # --- NetworkPolicies (all select the "victim" pod; the web policy must stay whole)
    ("np-no-spec", [("networkpolicies", {"metadata": {"name": "n1", "namespace": NS}})],
     "NetworkPolicy", "n1", "spec"),
    ("np-matchlabels-list", [("networkpolicies", netpol("n2", podSelector={"matchLabels": ["app"]}))],
     "NetworkPolicy", "n2", "spec.podSelector.matchLabels"),
    ("np-bad-operator", [("networkpolicies", netpol("n3", ingress=[{"from": [{"podSelector": {"matchExpressions": [
        {"key": "role", "operator": "Like", "values": ["c"]}]}}]}]))],
     "NetworkPolicy", "n3", "spec.ingress[0].from[0].podSelector.matchExpressions[0]"),
    ("np-port-zero", [("networkpolicies", netpol("n4", ingress=rule(ports=[{"port": 0}])))],
     "NetworkPolicy", "n4", "spec.ingress[0].ports[0].port"),
    ("np-bad-protocol", [("networkpolicies", netpol("n5", ingress=rule(ports=[{"port": 80, "protocol": "ICMP"}])))],
     "NetworkPolicy", "n5", "spec.ingress[0].ports[0].protocol"),
    ("np-bad-cidr", [("networkpolicies", netpol("n6", ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]))],
     "NetworkPolicy", "n6", "spec.ingress[0].from[0].ipBlock"),
    ("np-ingress-string", [("networkpolicies", netpol("n7", ingress="all"))], "NetworkPolicy", "n7", "spec.ingress"),
    ("np-bad-policytype", [("networkpolicies", netpol("n8", policyTypes=["Sideways"]))],
     "NetworkPolicy", "n8", "spec.policyTypes[0]"),
    ("np-endport-below-port", [("networkpolicies", netpol("n9", ingress=rule(ports=[{"port": 90, "endPort": 80}])))],
     "NetworkPolicy", "n9", "spec.ingress[0].ports[0]"),
    ("np-except-outside", [("networkpolicies", netpol("n10", ingress=[{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]))], "NetworkPolicy", "n10", "ipBlock"),
    ("np-peer-string", [("networkpolicies", netpol("n11", ingress=[{"from": ["everyone"]}]))],
     "NetworkPolicy", "n11", "spec.ingress[0].from[0]"),
    # --- Nodes
    ("node-bad-podcidr", [("nodes", {"metadata": {"name": "n9"}, "spec": {"podCIDR": "10.244.9.0/33"},
                                     "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.19"}]}})],
     "Node", "n9", "spec.podCIDR"),
    ("node-bad-address", [("nodes", {"metadata": {"name": "n8"}, "spec": {"podCIDR": "10.244.8.0/24"},
                                     "status": {"addresses": [{"type": "InternalIP", "address": "nope"}]}})],
     "Node", "n8", "status.addresses"),
    # --- Clusters (their routes are computed by the agent, their plan by the controller)
    ("cluster-nodes-string", [("clusters", cluster("c1", status={"nodes": "e1"}))], "Cluster", "c1", "status.nodes"),
    ("cluster-node-bad-cidr", [("clusters", cluster("c2", status={"nodes": [
        {"name": "x", "addresses": ["172.31.0.20"], "podCIDRs": ["10.246.0.0/99"]}]}))],
     "Cluster", "c2", "status.nodes[0].podCIDRs[0]"),
    ("cluster-node-bad-address", [("clusters", cluster("c3", status={"nodes": [
        {"name": "x", "addresses": ["yes"], "podCIDRs": ["10.246.1.0/24"]}]}))],
     "Cluster", "c3", "status.nodes[0].addresses[0]"),
    ("cluster-no-secret-ref", [("clusters", cluster("c4", spec={}))], "Cluster", "c4", "spec.secret"),
    ("cluster-secret-key-int", [("clusters", cluster("c5", spec={"secret": {"name": "c5-kc", "key": 5}}))],
     "Cluster", "c5", "spec.secret.key"),
    ("cluster-spec-string", [("clusters", cluster("c6", spec="x"))], "Cluster", "c6", "spec"),
    ("cluster-grace-string", [("clusters", cluster("c7", spec={"secret": {"name": "c7-kc"},
                                                              "staleGracePeriodSeconds": "soon"}))],
     "Cluster", "c7", "spec.staleGracePeriodSeconds"),
    # --- Secrets (reported on their Cluster, naming the Secret and its key)
    ("secret-missing", [("clusters", cluster("k1"))], "Cluster", "k1", "Secret meshcni-system/k1-kc not found"),
    ("secret-not-base64", [("clusters", cluster("k2")),
                           ("secrets", {"metadata": {"name": "k2-kc", "namespace": SECRET_NS},
                                        "data": {"config": "%%" + TOKEN}})], "Cluster", "k2", "data.config"),
    ("secret-wrong-key", with_secret("k3", yaml.safe_dump(KC), key="kubeconfig"), "Cluster", "k3", "no key 'config'"),
    ("secret-not-yaml", with_secret("k4", "clusters: [\n  token: " + TOKEN + "\n  : {"), "Cluster", "k4",
     "data.config"),
    ("secret-yaml-scalar", with_secret("k5", TOKEN), "Cluster", "k5", "data.config"),
    ("secret-no-context", with_secret("k6", yaml.safe_dump(dict(KC, **{"current-context": "gone"}))),
     "Cluster", "k6", "data.config"),
    ("secret-no-server", with_secret("k7", yaml.safe_dump(dict(KC, clusters=[{"name": "r", "cluster": {}}]))),
     "Cluster", "k7", "data.config"),
    ("secret-data-null", with_secret("k8", None), "Cluster", "k8", "data.config"),
    ("secret-data-string", [("clusters", cluster("k9")), ("secrets", {
        "metadata": {"name": "k9-kc", "namespace": SECRET_NS}, "data": TOKEN})], "Cluster", "k9", "data"),
    ("secret-binary", with_secret("k10", b"\xff\xfe\x00" + TOKEN.encode()), "Cluster", "k10", "data.config"),
    ("secret-yaml-tag", with_secret("k11", "token: !" + TOKEN + " x\n"), "Cluster", "k11", "data.config"),
]


def test_the_table_is_big_enough():
    kinds = {r[2] for r in ROWS}
    assert len(ROWS) >= 30 and {"Service", "EndpointSlice", "Pod", "NetworkPolicy", "Cluster"} <= kinds
    assert sum(1 for r in ROWS if r[0].startswith("secret-")) >= 8
    assert not BASE_PROBLEMS, BASE_PROBLEMS  # the valid world is valid
    assert BASE_OUT["services"] and BASE_OUT["policy"] and BASE_OUT["routes"] and BASE_OUT["clusters"]["east"][0]


def _contains(big, small) -> bool:
    if isinstance(small, dict):
        return all(k in big and big[k] == v for k, v in small.items())
    if isinstance(small, set):
        return small <= big
    if isinstance(small, list):
        return all(x in big for x in small)
    return big == small


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_malformed_object_is_reported_and_nothing_else_is_lost(row):
    rid, objs, kind, name, fld = row
    w = base_world()
    for cache, o in objs:
        w[cache].append(copy.deepcopy(o))
    out, problems = run_all(w)  # nothing may raise
    mine = [p for p in problems if p.kind == kind and p.name == name]
    assert mine, f"{rid}: no problem reported for {kind} {name}; got {[str(p) for p in problems]}"
    where = [p for p in mine if fld in p.field or fld in p.message]
    assert where, f"{rid}: the report does not name {fld!r}: {[str(p) for p in mine]}"
    assert all(p.field for p in mine)
    # the valid objects' results are all still there
    for k, v in BASE_OUT.items():
        if k == "identity_deletes":
            assert not (out[k] - v), f"{rid}: deletes a valid identity: {out[k] - v}"
            continue
        assert _contains(out[k], v), f"{rid}: {k} lost something: {v} -> {out[k]}"
    # no report carries the kubeconfig's token
    assert not [p for p in problems if TOKEN in str(p) or TOKEN[:20] in str(p)], rid
