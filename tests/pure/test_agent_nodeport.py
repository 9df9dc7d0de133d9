# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's side of NodePort: the Services reconciler reads its Node for the NodePort addresses and
reports clashes with their own Event reason; healthCheckNodePort answered over real HTTP on loopback."""
import json
import urllib.error
import urllib.request

import noext
import pytest

noext.require_extension("the agent's modules wire its datapath appliers, which load meshcni._libbpf")

from meshcni.agent.agent import event_reason  # noqa: E402
from meshcni.agent.healthcheck import HealthChecks
from meshcni.agent.reconcilers import Services
from meshcni.controllers.services import FRONTEND_CONFLICT, NODEPORT_CONFLICT, NodeContext, ServiceIDs
from meshcni.datapath.services import F_NODEPORT

pytestmark = pytest.mark.pure


class Cache:
    def __init__(self, items):
        self.items = list(items)

    def list(self):
        return list(self.items)


def node(name, *addrs):
    return {"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addrs]
                       + [{"type": "Hostname", "address": name}]}}


def svc(name, ip, node_port, created, **spec):
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": dict({"type": "NodePort", "clusterIP": ip, "clusterIPs": [ip],
                          "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": node_port}]}, **spec)}


def caches(services, slices=(), nodes=()):
    return {"services": Cache(services), "endpointslices": Cache(slices), "meshendpoints": Cache([]),
            "nodes": Cache(nodes)}


def test_services_reconciler_uses_its_nodes_addresses_and_the_cidr_filter():
    c = caches([svc("a", "10.96.0.10", 30080, "2026-01-01T00:00:00Z")],
               nodes=[node("n1", "172.30.1.10", "198.51.100.4"), node("n2", "172.30.1.11")])
    r = Services(None, ServiceIDs(), None, None, "n1")
    assert "nodes" in r.watches
    (s,), conflicts = r.desired(c).state
    assert [(f.ip, f.port) for f in s.frontends if f.flags & F_NODEPORT] == [
        ("172.30.1.10", 30080), ("198.51.100.4", 30080), ("0.0.0.0", 30080)]
    r = Services(None, ServiceIDs(), None, None, "n1", ["172.30.0.0/16", "bad"], lambda: ["172.30.9.9", "10.0.0.1"])
    d = r.desired(c)
    (s,), _ = d.state
    assert [f.ip for f in s.frontends if f.flags & F_NODEPORT] == ["172.30.1.10", "172.30.9.9", "0.0.0.0"]
    assert [(p.kind, p.name, p.message) for p in d.problems] == [
        ("Node", "n1", "--nodeport-addresses: 'bad' is not a CIDR")]


def test_etp_local_two_masters_of_one_address_are_not_a_clash():
    c = caches([svc("a", "10.96.0.10", 30080, "2026-01-01T00:00:00Z", externalTrafficPolicy="Local",
                    externalIPs=["198.51.100.7"])], nodes=[node("n1", "172.30.1.10")])
    d = Services(None, ServiceIDs(), None, None, "n1").desired(c)
    svcs, conflicts = d.state
    assert conflicts == [] and not d.problems
    assert sorted(s.name for s in svcs) == ["default/a:http/TCP/v4", "default/a:http/TCP/v4/local"]


def test_nodeport_clash_is_a_nodeportconflict_event():
    c = caches([svc("b", "10.96.0.11", 30080, "2026-02-01T00:00:00Z"), svc("a", "10.96.0.10", 30080,
                                                                          "2026-01-01T00:00:00Z")],
               nodes=[node("n1", "172.30.1.10")])
    d = Services(None, ServiceIDs(), None, None, "n1").desired(c)
    (p,) = d.problems
    assert (p.name, p.field, event_reason(p)) == ("b", "spec.ports[0].nodePort", NODEPORT_CONFLICT)


def test_externalip_equal_to_another_services_clusterip_is_reported_on_the_later_one():
    c = caches([svc("a", "10.96.0.10", 30080, "2026-01-01T00:00:00Z"),
                svc("b", "10.96.0.11", 30081, "2026-01-02T00:00:00Z", externalIPs=["10.96.0.10"])],
               nodes=[node("n1", "172.30.1.10")])
    c["services"].items[1]["spec"]["ports"][0]["port"] = 80
    d = Services(None, ServiceIDs(), None, None, "n1").desired(c)
    svcs, conflicts = d.state
    assert [s.name for s in svcs] == ["default/a:http/TCP/v4"] and conflicts
    assert [(p.name, event_reason(p)) for p in d.problems] == [("b", FRONTEND_CONFLICT)]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path="/healthz"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers["X-Load-Balancing-Endpoints"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers["X-Load-Balancing-Endpoints"]


def test_health_check_node_port_answers_like_kube_proxy():
    port = free_port()
    lb = svc("web", "10.96.0.10", 30080, "2026-01-01T00:00:00Z", externalTrafficPolicy="Local",
             healthCheckNodePort=port)
    lb["spec"]["type"] = "LoadBalancer"
    sl = {"metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
          "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
          "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "n1", "conditions": {"ready": True}},
                        {"addresses": ["10.244.1.5"], "nodeName": "n2", "conditions": {"ready": True}}]}
    r = Services(None, ServiceIDs(), None, None, "n1", ["127.0.0.0/8"], lambda: ["127.0.0.1"])
    hc = HealthChecks("n1", r.node_context)
    try:
        c = caches([lb], [sl], [node("n1", "172.30.1.10")])
        assert hc.apply(hc.desired(c).state) == {"healthChecks": 1, "listeners": 1, "failed": 0}
        assert _get(port) == (200, {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 1,
                                    "serviceProxyHealthy": True}, "1")
        sl["endpoints"][0]["conditions"]["ready"] = False
        hc.apply(hc.desired(c).state)
        code, body, n = _get(port, "/")
        assert (code, body["localEndpoints"], n) == (503, 0, "0")
        assert hc.view() == [{"port": port, "service": "default/web", "localEndpoints": 0}]
        lb["spec"]["externalTrafficPolicy"] = "Cluster"  # no health check any more: the listener goes
        assert hc.apply(hc.desired(c).state)["listeners"] == 0
        with pytest.raises(OSError):
            _get(port)
    finally:
        hc.close()
