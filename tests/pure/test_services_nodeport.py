# SPDX-License-Identifier: MIT OR Apache-2.0
"""NodePort, externalIPs, LoadBalancer IPs, traffic policies and source ranges: the desired frontends
(controllers/services.py) and their map rows (datapath/services.py), per the issue 20 map contract."""
import ipaddress

import numpy as np
import pytest

from meshcni.controllers.services import (NODEPORT_CONFLICT, NOT_SERVED, NodeContext, ServiceIDs, desired_services,
                                          health_checks, nodeport_addresses)
from meshcni.controllers.model import (F_ETP_LOCAL, F_EXTERNAL, F_ITP_LOCAL, F_NODEPORT, F_SRC_RANGES, F_TWO_SCOPES,
                                       SCOPE_EXT, SCOPE_INT, Backend, Frontend, Service)


def build_tables(*a, **kw):
    from meshcni.datapath.services import build_tables as bt
    return bt(*a, **kw)


def service_error():
    from meshcni.datapath.services import ServiceError
    return ServiceError

pytestmark = pytest.mark.pure

NODE = NodeContext("n1", ("172.30.1.10", "fd30::10"))


def svc(name="web", ns="default", ips=("10.96.0.10",), type="NodePort", node_port=30080, status=None,
        created="2026-01-01T00:00:00Z", **spec):
    port = {"name": "http", "port": 80, "protocol": "TCP"}
    if node_port is not None:
        port["nodePort"] = node_port
    out = {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
           "spec": dict({"type": type, "clusterIP": ips[0], "clusterIPs": list(ips), "ports": [port]}, **spec)}
    if status is not None:
        out["status"] = status
    return out


def eps(name="web", ns="default", nodes=(("10.244.0.5", "n1"), ("10.244.1.7", "n2")), fam="IPv4", tag=""):
    return {"metadata": {"name": f"{name}-{fam}{tag}", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": fam, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "nodeName": n, "conditions": {"ready": True}} for a, n in nodes]}


ALL = [Backend("10.244.0.5", 8080), Backend("10.244.1.7", 8080)]
LOCAL = [Backend("10.244.0.5", 8080)]


def by_name(out):
    return {s.name: s for s in out}


def test_nodeport_frontend_per_node_address_and_the_wildcard_all_backends():
    out, probs = desired_services([svc()], [eps()], ServiceIDs(), node=NODE)
    assert probs == []
    (s,) = out
    assert s.name == "default/web:http/TCP/v4"
    assert s.frontends == [Frontend("10.96.0.10", 80, "tcp"),
                           Frontend("172.30.1.10", 30080, "tcp", F_NODEPORT, SCOPE_EXT),
                           Frontend("0.0.0.0", 30080, "tcp", F_NODEPORT, SCOPE_EXT)]
    assert s.backends == ALL


def test_clusterip_service_is_unchanged_by_the_node():
    plain = svc(type="ClusterIP", node_port=None)
    a, _ = desired_services([plain], [eps()], ServiceIDs(), node=NODE)
    b, _ = desired_services([plain], [eps()], ServiceIDs())
    assert [(s.name, s.frontends, s.backends) for s in a] == [(s.name, s.frontends, s.backends) for s in b]
    assert a[0].frontends == [Frontend("10.96.0.10", 80, "tcp")]


def test_etp_local_two_scopes_local_backends_outside_every_backend_inside():
    out, probs = desired_services([svc(externalTrafficPolicy="Local", externalIPs=["198.51.100.7"])], [eps()],
                                  ServiceIDs(), node=NODE)
    assert probs == []
    d = by_name(out)
    cl, loc = d["default/web:http/TCP/v4"], d["default/web:http/TCP/v4/local"]
    assert cl.backends == ALL and loc.backends == LOCAL
    ext_flags = F_ETP_LOCAL | F_TWO_SCOPES
    assert loc.frontends == [Frontend("172.30.1.10", 30080, "tcp", F_NODEPORT | ext_flags, SCOPE_EXT),
                             Frontend("0.0.0.0", 30080, "tcp", F_NODEPORT | ext_flags, SCOPE_EXT),
                             Frontend("198.51.100.7", 80, "tcp", F_EXTERNAL | ext_flags, SCOPE_EXT)]
    assert cl.frontends == [Frontend("10.96.0.10", 80, "tcp"),
                            Frontend("172.30.1.10", 30080, "tcp", F_NODEPORT | F_TWO_SCOPES, SCOPE_INT),
                            Frontend("0.0.0.0", 30080, "tcp", F_NODEPORT | F_TWO_SCOPES, SCOPE_INT),
                            Frontend("198.51.100.7", 80, "tcp", F_EXTERNAL | F_TWO_SCOPES, SCOPE_INT)]
    assert cl.svc_id != loc.svc_id


def test_etp_local_node_without_local_backends_gets_count_zero():
    out, _ = desired_services([svc(externalTrafficPolicy="Local")], [eps(nodes=(("10.244.1.7", "n2"),))],
                              ServiceIDs(), node=NODE)
    assert by_name(out)["default/web:http/TCP/v4/local"].backends == []
    assert by_name(out)["default/web:http/TCP/v4"].backends == [Backend("10.244.1.7", 8080)]


def test_itp_local_clusterip_both_scopes_local_backends_only():
    out, probs = desired_services([svc(type="ClusterIP", node_port=None, internalTrafficPolicy="Local")], [eps()],
                                  ServiceIDs(), node=NODE)
    assert probs == []
    (s,) = out
    assert s.name == "default/web:http/TCP/v4" and s.backends == LOCAL
    assert s.frontends == [Frontend("10.96.0.10", 80, "tcp", F_ITP_LOCAL | F_TWO_SCOPES, SCOPE_EXT),
                           Frontend("10.96.0.10", 80, "tcp", F_ITP_LOCAL | F_TWO_SCOPES, SCOPE_INT)]


def test_itp_local_with_nodeport_cluster_keeps_every_backend_for_the_nodeport():
    out, _ = desired_services([svc(internalTrafficPolicy="Local")], [eps()], ServiceIDs(), node=NODE)
    d = by_name(out)
    assert d["default/web:http/TCP/v4"].backends == LOCAL  # the clusterIP's group keeps the plain name
    assert d["default/web:http/TCP/v4/cluster"].backends == ALL
    assert all(f.flags == F_NODEPORT for f in d["default/web:http/TCP/v4/cluster"].frontends)


def test_loadbalancer_ingress_ips_with_source_ranges_nodeport_unfiltered():
    s = svc(type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.x"},
                                                                      {"ip": "203.0.113.10", "ipMode": "Proxy"}]}},
            loadBalancerSourceRanges=["198.51.100.0/24", " 192.0.2.1/32", "nonsense"])
    out, probs = desired_services([s], [eps()], ServiceIDs(), node=NODE)
    assert [(p.field, p.reason) for p in probs] == [("spec.loadBalancerSourceRanges[2]", "")]
    (d,) = out
    flags = {(f.ip, f.port): f.flags for f in d.frontends}
    assert flags == {("10.96.0.10", 80): 0, ("172.30.1.10", 30080): F_NODEPORT, ("0.0.0.0", 30080): F_NODEPORT,
                     ("203.0.113.9", 80): F_EXTERNAL | F_SRC_RANGES}
    assert d.src_ranges == [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("192.0.2.1/32")]


@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_all_source_ranges_bad_fails_closed():
    s = svc(type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
            loadBalancerSourceRanges=["x"])
    (d,), probs = desired_services([s], [eps()], ServiceIDs(), node=NODE)
    assert any(f.flags & F_SRC_RANGES for f in d.frontends) and d.src_ranges == ()
    t = build_tables([d], _ids([d]))
    assert len(t.src_keys) == 0 and [p.field for p in probs] == ["spec.loadBalancerSourceRanges[0]"]


def test_dual_stack_nodeport_per_family_and_external_ip_of_a_missing_family_reported():
    s = svc(ips=("10.96.0.10", "fd00::10"), externalIPs=["2001:db8::5"])
    out, probs = desired_services([svc(name="v4only", ips=("10.96.0.11",), node_port=30081,
                                       externalIPs=["2001:db8::6"]), s],
                                  [eps(), eps(fam="IPv6", nodes=(("fd10::5", "n1"),))], ServiceIDs(), node=NODE)
    d = by_name(out)
    assert d["default/web:http/TCP/v6"].frontends == [
        Frontend("fd00::10", 80, "tcp"), Frontend("fd30::10", 30080, "tcp", F_NODEPORT),
        Frontend("::", 30080, "tcp", F_NODEPORT), Frontend("2001:db8::5", 80, "tcp", F_EXTERNAL)]
    assert {f.ip for f in d["default/web:http/TCP/v4"].frontends} == {"10.96.0.10", "172.30.1.10", "0.0.0.0"}
    assert [(p.name, p.field, p.reason) for p in probs] == [("v4only", "spec.externalIPs[0]", NOT_SERVED)]


def test_nodeport_clash_oldest_keeps_it_other_reported_and_keeps_its_clusterip():
    old = svc("old", created="2026-01-01T00:00:00Z")
    new = svc("new", ips=("10.96.0.20",), created="2026-02-01T00:00:00Z")
    out, probs = desired_services([new, old], [eps("old"), eps("new")], ServiceIDs(), node=NODE)
    d = by_name(out)
    assert [f.ip for f in d["default/new:http/TCP/v4"].frontends] == ["10.96.0.20"]
    assert len(d["default/old:http/TCP/v4"].frontends) == 3
    assert [(p.name, p.field, p.reason) for p in probs] == [("new", "spec.ports[0].nodePort", NODEPORT_CONFLICT)]
    assert "30080/TCP is already used by Service default/old" in probs[0].message


def test_bad_or_missing_nodeport_reported_clusterip_still_served():
    out, probs = desired_services([svc("a", node_port=None), svc("b", ips=("10.96.0.11",), node_port=70000)], [],
                                  ServiceIDs(), node=NODE)
    assert sorted((p.name, p.field, p.reason) for p in probs) == [("a", "spec.ports[0].nodePort", NOT_SERVED),
                                                                   ("b", "spec.ports[0].nodePort", NOT_SERVED)]
    assert sorted(f.ip for s in out for f in s.frontends) == ["10.96.0.10", "10.96.0.11"]


def test_external_ip_equal_to_node_address_and_port_is_served_once():
    out, probs = desired_services([svc(node_port=30080, externalIPs=["172.30.1.10"],
                                       ports=[{"name": "http", "port": 30080, "nodePort": 30080}])],
                                  [], ServiceIDs(), node=NODE)
    assert [p.field for p in probs] == ["spec.externalIPs[0]"]
    (s,) = out
    assert len({(f.ip, f.port, f.scope) for f in s.frontends}) == len(s.frontends)


def test_session_affinity_applies_to_nodeport_frontends():
    out, _ = desired_services([svc(sessionAffinity="ClientIP", externalTrafficPolicy="Local")], [eps()],
                              ServiceIDs(), node=NODE)
    assert {s.affinity_timeout for s in out} == {10800}


def test_nodeport_addresses_default_and_cidrs():
    node = {"status": {"addresses": [{"type": "InternalIP", "address": "172.30.1.10"},
                                     {"type": "Hostname", "address": "n1"},
                                     {"type": "ExternalIP", "address": "198.51.100.1"},
                                     {"type": "InternalIP", "address": "bogus"}]}}
    addrs, errs = nodeport_addresses(node)
    assert addrs == ("172.30.1.10", "198.51.100.1") and errs == ["Node status.addresses: 'bogus' is not an IP address"]
    addrs, errs = nodeport_addresses(node, ["172.30.0.0/16", "10.0.0.0/8", "nope"], ["10.1.2.3", "192.0.2.1"])
    assert addrs == ("172.30.1.10", "10.1.2.3")
    assert errs[-1] == "--nodeport-addresses: 'nope' is not a CIDR"


@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_health_checks_count_local_ready_endpoints():
    lb = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000)
    other = svc("other", type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000,
                created="2027-01-01T00:00:00Z")
    hc, probs = health_checks([lb, other, svc("np")], [eps(), eps(tag="b", nodes=(("10.244.0.6", "n1"),))], "n1")
    assert hc == {32000: ("default/web", 2)}
    assert [(p.name, p.reason) for p in probs] == [("other", NODEPORT_CONFLICT)]
    assert health_checks([lb], [eps()], "n3")[0] == {32000: ("default/web", 0)}


# ---- the rows -------------------------------------------------------------------------------------------------

def _ids(services):
    ids, n = {}, 1
    from meshcni.datapath.services import backend_identity
    for s in services:
        for b in s.backends:
            k = backend_identity(b, 6)
            if k not in ids:
                ids[k] = n
                n += 1
    return ids


@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_rows_carry_scope_flags_and_source_ranges():
    out, _ = desired_services([svc(type="LoadBalancer", externalTrafficPolicy="Local", sessionAffinity="ClientIP",
                                   status={"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
                                   loadBalancerSourceRanges=["198.51.100.0/24", "2001:db8::/32"])],
                              [eps()], ServiceIDs(), node=NODE)
    t = build_tables(out, _ids(out))
    masters = t.svc_keys["slot"] == 0
    rows = {(bytes(k["addr"]), int(k["port"]), int(k["scope"])): (int(v["flags"]), int(v["count"]), int(v["svc_id"]))
            for k, v in zip(t.svc_keys[masters], t.svc_values[masters])}
    v4 = lambda a: b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(a).packed  # noqa: E731
    d = by_name(out)
    loc, cl = d["default/web:http/TCP/v4/local"].svc_id, d["default/web:http/TCP/v4"].svc_id
    assert rows[(v4("203.0.113.9"), 80, SCOPE_EXT)] == (1 | F_EXTERNAL | F_SRC_RANGES | F_ETP_LOCAL | F_TWO_SCOPES,
                                                        1, loc)
    assert rows[(v4("203.0.113.9"), 80, SCOPE_INT)] == (1 | F_EXTERNAL | F_TWO_SCOPES, 2, cl)
    assert rows[(v4("0.0.0.0"), 30080, SCOPE_EXT)] == (1 | F_NODEPORT | F_ETP_LOCAL | F_TWO_SCOPES, 1, loc)
    assert rows[(v4("10.96.0.10"), 80, SCOPE_EXT)] == (1, 2, cl)
    src = {(int(k["prefixlen"]), int(k["svc_id"]), bytes(k["addr"])) for k in t.src_keys}
    assert src == {(32 + 96 + 24, loc, v4("198.51.100.0")),
                   (32 + 32, loc, ipaddress.ip_address("2001:db8::").packed)}


@pytest.mark.parametrize("fe, msg", [
    (Frontend("10.0.0.1", 80, "tcp", 1), "frontend 0 flags 1 not a set of"),
    (Frontend("10.0.0.1", 80, "tcp", 4, 2), "frontend 0 scope 2 is not 0 (EXT) or 1 (INT)"),
])
@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_bad_flags_and_scope_name_the_frontend(fe, msg):
    with pytest.raises(service_error(), match=msg.replace("(", r"\(").replace(")", r"\)")):
        build_tables([Service("s", [fe], [], 1)], {})


@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_bad_source_range_names_the_service():
    with pytest.raises(service_error(), match=r"Service s: src_ranges\[0\] '10.0.0.1/8' is not a network"):
        build_tables([Service("s", [Frontend("10.0.0.1", 80, "tcp", F_EXTERNAL | F_SRC_RANGES)], [], 1,
                              src_ranges=["10.0.0.1/8"])], {})


@pytest.mark.extension  # the rows are laid out in layout.h's dtypes (meshcni._libbpf)
def test_same_frontend_at_two_scopes_is_not_a_clash_but_twice_at_one_is():
    a = Service("a", [Frontend("10.0.0.1", 80, "tcp", F_TWO_SCOPES, SCOPE_EXT)], [], 1)
    b = Service("b", [Frontend("10.0.0.1", 80, "tcp", F_TWO_SCOPES, SCOPE_INT)], [], 2)
    t = build_tables([a, b], {})
    assert sorted(t.svc_keys["scope"].tolist()) == [0, 1]
    with pytest.raises(service_error(), match="already used by Service a"):
        build_tables([a, Service("c", [Frontend("10.0.0.1", 80, "tcp")], [], 3)], {})
    assert np.all(t.svc_values["count"] == 0)
