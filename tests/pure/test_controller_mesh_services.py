# SPDX-License-Identifier: MIT OR Apache-2.0
"""MeshEndpoints merged into meshed Services' backends: the rules of CONTRACT/issue 17, one test each."""
import pytest

from meshcni.controllers.services import ServiceIDs, desired_services, remote_backends
from meshcni.controllers.model import Backend

pytestmark = pytest.mark.pure

MANAGED = {"app.kubernetes.io/managed-by": "meshcni-controller"}


def svc(name="web", ns="app", ips=("10.96.0.10",), ports=None, meshed=True, affinity=None, **ann):
    a = dict(ann)
    if meshed:
        a["mesh-cni.dev/multi-cluster"] = "true"
    if affinity is not None:
        a["mesh-cni.dev/affinity"] = affinity
    return {"metadata": {"name": name, "namespace": ns, **({"annotations": a} if a else {})},
            "spec": {"clusterIP": ips[0], "clusterIPs": list(ips),
                     "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def eps(svc_name="web", ns="app", addrs=("10.244.0.5",), port=8080, name="http", proto="TCP", fam="IPv4",
        ready=True, slice_name=None):
    return {"metadata": {"name": slice_name or f"{svc_name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": fam, "ports": [{"name": name, "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addrs]}


def mep(cluster="c2", service="web", ns="app", mappings=(), managed=True, name=None, **labels):
    lab = {"kubernetes.io/service-name": service, "mesh-cni.dev/cluster-owner": cluster, **labels}
    if managed:
        lab.update(MANAGED)
    return {"metadata": {"name": name or f"{service}-{cluster}", "namespace": ns, "labels": lab},
            "spec": {"backend_port_mappings": [dict(x) if isinstance(x, dict) else x for x in mappings]}}


def m(ip, service_port=80, backend_port=8080, protocol="TCP"):
    return {"ip": ip, "service_port": service_port, "backend_port": backend_port, "protocol": protocol}


def run(services, slices, meps):
    remote, p1 = remote_backends(meps)
    out, p2 = desired_services(services, slices, ServiceIDs(), remote=remote)
    return {s.name: s for s in out}, p1 + p2


def test_meshed_port_gets_local_and_remote_backends_with_their_cluster():
    by, probs = run([svc()], [eps()], [mep("c2", mappings=[m("10.242.0.21")]),
                                       mep("c3", mappings=[m("10.243.0.7", backend_port=9090)])])
    assert probs == []
    s = by["app/web:http/TCP/v4"]
    assert s.backends == [Backend("10.242.0.21", 8080), Backend("10.243.0.7", 9090), Backend("10.244.0.5", 8080)]
    assert s.clusters == {Backend("10.242.0.21", 8080): "c2", Backend("10.243.0.7", 9090): "c3"}


def test_mappings_match_by_service_port_number_and_protocol_per_family():
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    by, probs = run([svc(ips=("10.96.0.10", "fd00::10"), ports=ports)], [],
                    [mep(mappings=[m("10.242.0.21", 80, 8080), m("10.242.0.21", 53, 5353, "UDP"),
                                   m("10.242.0.22", 53, 5353, "TCP"),       # no TCP port 53 on the Service
                                   m("10.242.0.23", 81, 8081),              # no port 81
                                   m("fd42::21", 80, 8080)])])
    assert probs == []
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.242.0.21", 8080)]
    assert by["app/web:dns/UDP/v4"].backends == [Backend("10.242.0.21", 5353)]
    assert by["app/web:http/TCP/v6"].backends == [Backend("fd42::21", 8080)]
    assert by["app/web:dns/UDP/v6"].backends == []


def test_mesh_endpoint_feeds_only_its_service_in_its_namespace():
    by, _ = run([svc("web", "app"), svc("web", "other", ips=("10.96.0.11",)), svc("api", "app", ips=("10.96.0.12",))],
                [], [mep(service="web", ns="app", mappings=[m("10.242.0.21")])])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.242.0.21", 8080)]
    assert by["other/web:http/TCP/v4"].backends == [] and by["app/api:http/TCP/v4"].backends == []


def test_non_meshed_service_ignores_mesh_endpoints():
    for s in (svc(meshed=False), svc(meshed=False, **{"mesh-cni.dev/multi-cluster": "false"})):
        by, probs = run([s], [eps()], [mep(mappings=[m("10.242.0.21")])])
        assert probs == []
        s = by["app/web:http/TCP/v4"]
        assert s.backends == [Backend("10.244.0.5", 8080)] and s.clusters is None


def test_bad_multi_cluster_value_is_reported_and_not_meshed():
    by, probs = run([svc(meshed=False, **{"mesh-cni.dev/multi-cluster": "yes"})], [eps()],
                    [mep(mappings=[m("10.242.0.21")])])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]
    assert [(p.kind, p.name, p.field) for p in probs] == [
        ("Service", "web", "metadata.annotations[mesh-cni.dev/multi-cluster]")]


def test_hand_made_mesh_endpoint_is_reported_and_never_used():
    hand = mep("c9", mappings=[m("10.249.0.1")], managed=False)
    other = mep("c8", mappings=[m("10.248.0.1")], managed=False, **{"app.kubernetes.io/managed-by": "helm"})
    by, probs = run([svc()], [eps()], [hand, other])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]
    assert {(p.kind, p.namespace, p.name, p.field) for p in probs} == {
        ("MeshEndpoint", "app", "web-c9", "metadata.labels[app.kubernetes.io/managed-by]"),
        ("MeshEndpoint", "app", "web-c8", "metadata.labels[app.kubernetes.io/managed-by]")}
    assert "made by hand, never used" in str(probs[0])


def test_bad_mappings_are_reported_by_field_and_only_they_are_left_out():
    bad = mep(mappings=[m("10.242.0.999"), m("10.242.0.2", service_port=0), m("10.242.0.3", backend_port=70000),
                        m("10.242.0.4", protocol="ICMP"), "nope", m("10.242.0.5", protocol="SCTP"),
                        m("10.242.0.6")])
    by, probs = run([svc()], [], [bad])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.242.0.6", 8080)]
    got = {(p.kind, p.name, p.field) for p in probs}
    f = "spec.backend_port_mappings"
    assert got == {("MeshEndpoint", "web-c2", f"{f}[0].ip"), ("MeshEndpoint", "web-c2", f"{f}[1].service_port"),
                   ("MeshEndpoint", "web-c2", f"{f}[2].backend_port"), ("MeshEndpoint", "web-c2", f"{f}[3].protocol"),
                   ("MeshEndpoint", "web-c2", f"{f}[4]")}  # SCTP: skipped like SCTP Service ports, not an error
    assert "MeshEndpoint app/web-c2: spec.backend_port_mappings[0].ip: '10.242.0.999' is not an IP address" in \
        {str(p) for p in probs}


def test_mesh_endpoint_without_service_or_cluster_label_is_reported():
    no_svc = mep(mappings=[m("10.242.0.1")], name="x")
    del no_svc["metadata"]["labels"]["kubernetes.io/service-name"]
    no_cl = mep(mappings=[m("10.242.0.2")], name="y")
    del no_cl["metadata"]["labels"]["mesh-cni.dev/cluster-owner"]
    by, probs = run([svc()], [], [no_svc, no_cl, {"metadata": {"name": "z", "namespace": "app", "labels": MANAGED},
                                                 "spec": {"backend_port_mappings": "x"}}])
    assert by["app/web:http/TCP/v4"].backends == []
    assert {(p.name, p.field) for p in probs} == {("x", "metadata.labels[kubernetes.io/service-name]"),
                                                  ("y", "metadata.labels[mesh-cni.dev/cluster-owner]"),
                                                  ("z", "metadata.labels[kubernetes.io/service-name]")}
    # a managed, labelled one with a non-list spec is reported on its field
    _, probs = run([svc()], [], [{**mep(), "spec": {"backend_port_mappings": "x"}}])
    assert [p.field for p in probs] == ["spec.backend_port_mappings"]


def test_empty_or_missing_mappings_are_no_backends_and_no_problem():
    by, probs = run([svc()], [eps()], [mep(), {**mep("c3"), "spec": {}}])
    assert probs == [] and by["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]


def test_affinity_none_is_the_default_and_all_backends_are_equal():
    for aff in (None, "none"):
        by, probs = run([svc(affinity=aff)], [eps()], [mep(mappings=[m("10.242.0.21")])])
        assert probs == [] and len(by["app/web:http/TCP/v4"].backends) == 2


def test_affinity_local_fails_over_only_while_no_local_backend_is_ready_and_comes_back():
    meps = [mep(mappings=[m("10.242.0.21")])]
    ready, _ = run([svc(affinity="local")], [eps()], meps)
    assert ready["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]
    assert ready["app/web:http/TCP/v4"].clusters is None
    down, _ = run([svc(affinity="local")], [eps(ready=False)], meps)            # local not ready: failover
    assert down["app/web:http/TCP/v4"].backends == [Backend("10.242.0.21", 8080)]
    assert down["app/web:http/TCP/v4"].clusters == {Backend("10.242.0.21", 8080): "c2"}
    gone, _ = run([svc(affinity="local")], [], meps)                             # no slice at all: failover
    assert gone["app/web:http/TCP/v4"].backends == [Backend("10.242.0.21", 8080)]
    back, _ = run([svc(affinity="local")], [eps(addrs=("10.244.0.9",))], meps)   # one returns: back home
    assert back["app/web:http/TCP/v4"].backends == [Backend("10.244.0.9", 8080)]


def test_affinity_local_is_decided_per_port_and_family():
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    by, _ = run([svc(affinity="local", ports=ports, ips=("10.96.0.10", "fd00::10"))], [eps()],  # local: v4 http only
                [mep(mappings=[m("10.242.0.21"), m("10.242.0.21", 53, 5353, "UDP"), m("fd42::21")])])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]
    assert by["app/web:dns/UDP/v4"].backends == [Backend("10.242.0.21", 5353)]
    assert by["app/web:http/TCP/v6"].backends == [Backend("fd42::21", 8080)]


def test_affinity_remote_uses_local_only_while_no_remote_backend_exists():
    by, _ = run([svc(affinity="remote")], [eps()], [mep(mappings=[m("10.242.0.21")])])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.242.0.21", 8080)]
    by, _ = run([svc(affinity="remote")], [eps()], [mep(mappings=[])])
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.244.0.5", 8080)]


def test_bad_affinity_is_reported_and_none_used():
    by, probs = run([svc(affinity="nearest")], [eps()], [mep(mappings=[m("10.242.0.21")])])
    assert len(by["app/web:http/TCP/v4"].backends) == 2
    assert [(p.kind, p.field) for p in probs] == [("Service", "metadata.annotations[mesh-cni.dev/affinity]")]


def test_backend_both_local_and_remote_is_programmed_once_and_counts_as_local():
    by, _ = run([svc()], [eps()], [mep(mappings=[m("10.244.0.5"), m("10.242.0.21")])])
    s = by["app/web:http/TCP/v4"]
    assert s.backends == [Backend("10.242.0.21", 8080), Backend("10.244.0.5", 8080)]
    assert s.clusters == {Backend("10.242.0.21", 8080): "c2"}


def test_ipv6_mapping_text_is_canonicalised():
    by, probs = run([svc(ips=("fd00::10",))], [], [mep(mappings=[m("FD42:0::21")])])
    assert probs == [] and by["app/web:http/TCP/v6"].backends == [Backend("fd42::21", 8080)]


def test_without_remote_the_result_is_what_it_was():
    """remote=None and remote={} give exactly the local-only answer, for a meshed Service too."""
    for s in (svc(), svc(meshed=False)):
        a, _ = desired_services([s], [eps()], ServiceIDs())
        b, _ = desired_services([s], [eps()], ServiceIDs(), remote={})
        assert [(x.name, x.backends, x.clusters) for x in a] == [(x.name, x.backends, x.clusters) for x in b]
        assert a[0].backends == [Backend("10.244.0.5", 8080)] and a[0].clusters is None
