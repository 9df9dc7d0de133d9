# SPDX-License-Identifier: MIT OR Apache-2.0
"""nodePort and healthCheckNodePort allocation with kube-apiserver's semantics, through the real
``kubernetes`` client against the in-process API server (a small node port range to see its edges)."""
import json

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from meshcni.apiserver import APIServer

pytestmark = pytest.mark.pure

RANGE = range(30000, 30010)


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    with APIServer(node_port_range="30000-30009") as srv:
        path = tmp_path_factory.mktemp("kc") / "kubeconfig"
        srv.write_kubeconfig(str(path))
        yield client.CoreV1Api(config.new_client_from_config(config_file=str(path)))


@pytest.fixture
def ns(core, request):
    name = "np-" + request.node.name.replace("_", "-").lower()[5:50].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    yield name
    for s in core.list_namespaced_service(name).items:
        core.delete_namespaced_service(s.metadata.name, name)


def svc(name, type="NodePort", ports=None, **spec):
    return {"metadata": {"name": name},
            "spec": dict({"type": type, "selector": {"app": name},
                          "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}]}, **spec)}


def invalid(e: ApiException):
    assert e.status == 422, e.body
    body = json.loads(e.body)
    assert body["reason"] == "Invalid"
    return [(c["field"], c["message"]) for c in body["details"]["causes"]]


def test_absent_node_port_is_allocated_in_range_and_released_on_delete(core, ns):
    s = core.create_namespaced_service(ns, svc("a"))
    np_ = s.spec.ports[0].node_port
    assert np_ in RANGE and s.spec.health_check_node_port is None
    core.delete_namespaced_service("a", ns)
    again = core.create_namespaced_service(ns, svc("b", ports=[{"port": 80, "nodePort": np_}]))
    assert again.spec.ports[0].node_port == np_


def test_asked_for_port_out_of_range_or_taken_is_422_naming_the_field(core, ns):
    core.create_namespaced_service(ns, svc("a", ports=[{"port": 80, "nodePort": 30005}]))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("b", ports=[{"port": 80, "nodePort": 30005}]))
    assert invalid(e.value) == [("spec.ports[0].nodePort", "Invalid value: 30005: provided port is already allocated")]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("c", ports=[{"name": "x", "port": 80},
                                                           {"name": "y", "port": 81, "nodePort": 31000}]))
    assert invalid(e.value) == [("spec.ports[1].nodePort", "Invalid value: 31000: provided port is not in the valid "
                                 "range. The range of valid ports is 30000-30009")]
    # the refused create took nothing: the port it would have picked is still free
    assert core.create_namespaced_service(ns, svc("d")).spec.ports[0].node_port in RANGE


def test_one_port_number_over_tcp_and_udp_shares_its_node_port(core, ns):
    s = core.create_namespaced_service(ns, svc("dns", ports=[{"name": "udp", "port": 53, "protocol": "UDP"},
                                                             {"name": "tcp", "port": 53, "protocol": "TCP"}]))
    assert s.spec.ports[0].node_port == s.spec.ports[1].node_port


def test_type_change_to_clusterip_releases_the_node_port_and_back_allocates(core, ns):
    s = core.create_namespaced_service(ns, svc("a"))
    np_ = s.spec.ports[0].node_port
    s = core.patch_namespaced_service("a", ns, {"spec": {"type": "ClusterIP"}})
    assert s.spec.ports[0].node_port is None
    other = core.create_namespaced_service(ns, svc("b", ports=[{"port": 80, "nodePort": np_}]))
    assert other.spec.ports[0].node_port == np_
    s = core.patch_namespaced_service("a", ns, {"spec": {"type": "NodePort"}})
    assert s.spec.ports[0].node_port in RANGE and s.spec.ports[0].node_port != np_


def test_update_keeps_its_own_port_and_cannot_take_anothers(core, ns):
    a = core.create_namespaced_service(ns, svc("a"))
    b = core.create_namespaced_service(ns, svc("b"))
    kept = core.patch_namespaced_service("a", ns, {"spec": {"sessionAffinity": "ClientIP"}})
    assert kept.spec.ports[0].node_port == a.spec.ports[0].node_port
    body = core.read_namespaced_service("a", ns)
    body.spec.ports[0].node_port = b.spec.ports[0].node_port
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_service("a", ns, body)
    assert invalid(e.value)[0][0] == "spec.ports[0].nodePort"
    # the replace that omits nodePort keeps the allocated one (the client sends what it read, minus it)
    body = core.read_namespaced_service("a", ns)
    body.spec.ports[0].node_port = None
    assert core.replace_namespaced_service("a", ns, body).spec.ports[0].node_port == a.spec.ports[0].node_port


def test_health_check_node_port_for_loadbalancer_with_etp_local(core, ns):
    s = core.create_namespaced_service(ns, svc("lb", type="LoadBalancer", externalTrafficPolicy="Local"))
    hc = s.spec.health_check_node_port
    assert hc in RANGE and hc != s.spec.ports[0].node_port
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("lb2", type="LoadBalancer", externalTrafficPolicy="Local",
                                               healthCheckNodePort=hc))
    assert invalid(e.value) == [("spec.healthCheckNodePort", f"Invalid value: {hc}: provided port is already "
                                 "allocated")]
    s = core.patch_namespaced_service("lb", ns, {"spec": {"externalTrafficPolicy": "Cluster"}})
    assert s.spec.health_check_node_port is None
    # released: another Service may ask for it now
    s2 = core.create_namespaced_service(ns, svc("lb3", type="LoadBalancer", externalTrafficPolicy="Local",
                                                healthCheckNodePort=hc))
    assert s2.spec.health_check_node_port == hc
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("np", healthCheckNodePort=30001))
    assert invalid(e.value)[0][0] == "spec.healthCheckNodePort"


def test_loadbalancer_without_node_ports_and_source_ranges_validated(core, ns):
    s = core.create_namespaced_service(ns, svc("lb", type="LoadBalancer", allocateLoadBalancerNodePorts=False,
                                               loadBalancerSourceRanges=["198.51.100.0/24"]))
    assert s.spec.ports[0].node_port is None
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("bad", type="LoadBalancer", loadBalancerSourceRanges=["nope"]))
    assert invalid(e.value)[0][0] == "spec.loadBalancerSourceRanges[0]"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, svc("np", loadBalancerSourceRanges=["198.51.100.0/24"]))
    assert invalid(e.value)[0][0] == "spec.loadBalancerSourceRanges"


def test_range_exhausted_is_an_error_not_a_duplicate(core, ns):
    made = []
    with pytest.raises(ApiException) as e:
        for i in range(len(RANGE) + 1):
            made.append(core.create_namespaced_service(ns, svc(f"s{i}")).spec.ports[0].node_port)
    assert sorted(made) == list(RANGE)
    assert e.value.status == 500 and "node port range 30000-30009 exhausted" in e.value.body
