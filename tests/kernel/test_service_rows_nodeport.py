# SPDX-License-Identifier: MIT OR Apache-2.0
"""The control plane's NodePort/external rows in the real maps, and served by the real socket LB.

desired_services (the agent's pure function) -> ServiceDatapath.apply (the encoder) -> pinned mc_svc and
mc_lb_src_ranges; then connect()s from a test cgroup in a netns with only `lo` up (backends on loopback,
frontends in documentation ranges: anything not rewritten is unroutable), so both halves of the issue 20
contract are checked together. Same safety as test_sock_lb.py.
"""
import ipaddress
import os
import sys

import pytest

from meshcni.bpf import MeshMaps
from meshcni.controllers.services import NodeContext, ServiceIDs, desired_services
from meshcni.datapath import ServiceDatapath, SockLB
from meshcni.datapath.services import F_ETP_LOCAL, F_EXTERNAL, F_NODEPORT, F_SRC_RANGES, F_TWO_SCOPES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
from svcrows import write_ipcache  # noqa: E402
from test_sock_lb import probe  # noqa: E402

pytestmark = pytest.mark.kernel

B = [("127.0.0.1", 9001), ("127.0.0.1", 9002)]  # 9001 on this node (n1), 9002 on n2
NODE = NodeContext("n1", ("203.0.113.1",))
OTHER_NODE = "203.0.113.7"
LB_IP, XIP, CIP_ITP = "198.51.100.20", "198.51.100.21", "198.51.100.30"


def svc(name, ip, type="ClusterIP", node_port=None, status=None, **spec):
    port = {"name": "http", "port": 80, "protocol": "TCP"}
    if node_port:
        port["nodePort"] = node_port
    out = {"metadata": {"name": name, "namespace": "t"},
           "spec": dict({"type": type, "clusterIP": ip, "clusterIPs": [ip], "ports": [port]}, **spec)}
    if status:
        out["status"] = status
    return out


def slice_(name):
    return {"metadata": {"name": name, "namespace": "t", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 0, "protocol": "TCP"}],
            "endpoints": []}


def slices(names):
    out = []
    for n in names:
        s = slice_(n)
        # one slice per backend port: the two loopback backends differ by port
        for (ip, port), node in zip(B, ("n1", "n2")):
            out.append({**s, "metadata": {**s["metadata"], "name": f"{n}-{port}"},
                        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                        "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}]})
    return out


SERVICES = [
    svc("lb", "198.51.100.10", "LoadBalancer", 30080, {"loadBalancer": {"ingress": [{"ip": LB_IP}]}},
        externalTrafficPolicy="Local", loadBalancerSourceRanges=["192.0.2.0/24"]),
    svc("xip", "198.51.100.11", externalIPs=[XIP]),
    svc("itp", CIP_ITP, internalTrafficPolicy="Local"),
]


@pytest.fixture
def env(pin_root, cgroup2_child, netns):
    import subprocess
    maps = MeshMaps(pin_root)
    dp = ServiceDatapath(maps)
    lb = SockLB(pin_root)
    lb.attach(cgroup2_child)
    ns = netns("mcnp")
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    try:
        yield maps, dp, cgroup2_child, ns
    finally:
        lb.detach(cgroup2_child)
        lb.close()
        dp.close()
        maps.close()


def _a16(ip):
    a = ipaddress.ip_address(ip)
    return (b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def test_rows_in_the_maps_and_source_ranges_follow_the_service(env):
    maps, dp, _, _ = env
    out, probs = desired_services(SERVICES, slices(["lb", "xip", "itp"]), ServiceIDs(), node=NODE)
    assert probs == []
    dp.apply(out)
    k, v = maps.svc.dump()
    masters = {(bytes(a["addr"]), int(a["port"]), int(a["scope"])): (int(b["flags"]), int(b["count"]))
               for a, b in zip(k, v) if a["slot"] == 0}
    assert masters[(_a16(LB_IP), 80, 0)] == (F_EXTERNAL | F_SRC_RANGES | F_ETP_LOCAL | F_TWO_SCOPES, 1)
    assert masters[(_a16(LB_IP), 80, 1)] == (F_EXTERNAL | F_TWO_SCOPES, 2)
    assert masters[(_a16("203.0.113.1"), 30080, 0)] == (F_NODEPORT | F_ETP_LOCAL | F_TWO_SCOPES, 1)
    assert masters[(_a16("0.0.0.0"), 30080, 1)] == (F_NODEPORT | F_TWO_SCOPES, 2)
    loc = next(s.svc_id for s in out if s.name == "t/lb:http/TCP/v4/local")
    rk, _ = maps.lb_src_ranges.dump()
    assert {(int(r["prefixlen"]), int(r["svc_id"]), bytes(r["addr"])) for r in rk} == {
        (32 + 96 + 24, loc, _a16("192.0.2.0"))}
    # the ranges go with the field
    SERVICES_NO_RANGES = [dict(SERVICES[0], spec={**SERVICES[0]["spec"], "loadBalancerSourceRanges": []})] + \
        SERVICES[1:]
    out, _ = desired_services(SERVICES_NO_RANGES, slices(["lb", "xip", "itp"]), ServiceIDs(), node=NODE)
    dp.apply(out)
    assert len(maps.lb_src_ranges.dump()[0]) == 0


def test_in_cluster_clients_through_the_encoders_rows(env):
    maps, dp, cg, ns = env
    out, _ = desired_services(SERVICES, slices(["lb", "xip", "itp"]), ServiceIDs(), node=NODE)
    dp.apply(out)
    write_ipcache(maps, {f"{OTHER_NODE}/32": 6, "203.0.113.1/32": 1})
    lb_ip, np_self, np_other, xip, itp = probe(cg, ns, B, [
        {"op": "tcp", "ip": LB_IP, "port": 80, "n": 30},            # eTP Local: in-cluster sees every backend
        {"op": "tcp", "ip": "203.0.113.1", "port": 30080, "n": 30},  # this node's NodePort row
        {"op": "tcp", "ip": OTHER_NODE, "port": 30080, "n": 30},     # another node's address: the wildcard
        {"op": "tcp", "ip": XIP, "port": 80, "n": 30},               # an externalIP, eTP Cluster
        {"op": "tcp", "ip": CIP_ITP, "port": 80, "n": 10}])          # iTP Local: this node's backend only
    for t in (lb_ip, np_self, np_other, xip):
        assert t["errors"] == [] and set(t["hits"]) == {0, 1}, t
    assert itp["errors"] == [] and set(itp["hits"]) == {0}
