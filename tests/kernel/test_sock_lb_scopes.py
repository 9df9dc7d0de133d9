# SPDX-License-Identifier: MIT OR Apache-2.0
"""The socket LB and issue 20's frontend kinds, with real connect()s.

Rows are written in the contract's shape (helpers/svcrows.py). Same safety as
test_sock_lb.py: programs on a child of a private cgroup2 mount, clients in a
test netns with only `lo` up, so anything not rewritten is unroutable.
"""
import os
import sys

import pytest

from meshcni.bpf import MeshMaps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
from svcrows import EXT, INT, write_frontend, write_ipcache, write_src_range  # noqa: E402
from test_sock_lb import probe  # noqa: E402

pytestmark = pytest.mark.kernel

B = [("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)]
B6 = [("::1", 9101), ("::1", 9102)]
NODE_SELF, NODE_OTHER, WORLD = "203.0.113.1", "203.0.113.7", "203.0.113.99"
NODE6 = "2001:db8:1::7"
ID_HOST, ID_REMOTE_NODE = 1, 6


@pytest.fixture
def maps(pin_root):
    m = MeshMaps(pin_root)
    yield m
    m.close()


@pytest.fixture
def lb(maps, sock_lb, cgroup2_child):
    return cgroup2_child


@pytest.fixture
def ns(netns):
    import subprocess
    n = netns("mclbs")
    subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
    return n


def tcp(ip, port, n):
    return {"op": "tcp", "ip": ip, "port": port, "n": n}


def test_two_scopes_in_cluster_clients_use_the_int_master(lb, maps, ns):
    # eTP Local: EXT holds this node's backend only, INT every backend
    write_frontend(maps, "198.51.100.20", 80, "tcp", 1, [B[0]], flags=("external", "etp_local", "two_scopes"))
    write_frontend(maps, "198.51.100.20", 80, "tcp", 1, [B[1], B[2]], scope=INT, first_id=201)
    (t,) = probe(lb, ns, B, [tcp("198.51.100.20", 80, 40)])
    assert t["errors"] == [] and set(t["hits"]) == {1, 2}
    assert t["peers"] == [["198.51.100.20", 80]] * 40


def test_itp_local_with_no_local_backend_refuses(lb, maps, ns):
    write_frontend(maps, "198.51.100.21", 80, "tcp", 2, B, flags=("two_scopes", "itp_local"))
    write_frontend(maps, "198.51.100.21", 80, "tcp", 2, [], scope=INT)
    (t,) = probe(lb, ns, B, [tcp("198.51.100.21", 80, 3)])
    assert t["errors"] == ["ECONNREFUSED"] * 3


def test_int_master_not_written_yet_serves_the_ext_backends(lb, maps, ns):
    write_frontend(maps, "198.51.100.22", 80, "tcp", 3, [B[0]], flags=("two_scopes",))
    (t,) = probe(lb, ns, B, [tcp("198.51.100.22", 80, 5)])
    assert t["errors"] == [] and set(t["hits"]) == {0}


def test_source_ranges_and_etp_do_not_restrict_in_cluster_clients(lb, maps, ns):
    # the ranges admit nobody in the netns; the socket LB never checks them
    write_frontend(maps, "198.51.100.23", 80, "tcp", 4, [B[2]], flags=("external", "src_ranges"))
    write_src_range(maps, 4, "192.0.2.0/24")
    (t,) = probe(lb, ns, B, [tcp("198.51.100.23", 80, 5)])
    assert t["errors"] == [] and set(t["hits"]) == {2}


def test_any_node_address_reaches_a_nodeport_through_the_wildcard(lb, maps, ns):
    write_frontend(maps, "0.0.0.0", 30080, "tcp", 5, [B[0], B[1]], flags=("nodeport",))
    write_frontend(maps, NODE_SELF, 30080, "tcp", 6, [B[2]], flags=("nodeport",))
    write_frontend(maps, "0.0.0.0", 30053, "udp", 7, [B[1]], flags=("nodeport",))
    write_frontend(maps, "::", 30080, "tcp", 8, [B6[1]], flags=("nodeport",))
    write_ipcache(maps, {NODE_SELF + "/32": ID_HOST, NODE_OTHER + "/32": ID_REMOTE_NODE,
                         NODE6 + "/128": ID_REMOTE_NODE})
    other, own, udp, v6, world, otherport = probe(lb, ns, B + B6, [
        tcp(NODE_OTHER, 30080, 30),
        tcp(NODE_SELF, 30080, 5),       # an explicit frontend wins over the wildcard
        {"op": "udp", "ip": NODE_OTHER, "port": 30053, "n": 3},
        tcp(NODE6, 30080, 3),
        tcp(WORLD, 30080, 1),           # not a node: no wildcard, plain (unroutable) connect
        tcp(NODE_OTHER, 30081, 1),      # a node, but no NodePort there
    ])
    assert other["errors"] == [] and set(other["hits"]) == {0, 1}
    assert other["peers"] == [[NODE_OTHER, 30080]] * 30
    assert own["errors"] == [] and set(own["hits"]) == {2}
    assert udp["errors"] == [] and set(udp["hits"]) == {1} and udp["srcs"] == [[NODE_OTHER, 30053]] * 3
    assert v6["errors"] == [] and set(v6["hits"]) == {4}
    assert world["errors"] == ["ENETUNREACH"]
    assert otherport["errors"] == ["ENETUNREACH"]


def test_wildcard_only_answers_for_nodeport_masters(lb, maps, ns):
    # an all-zero ClusterIP-shaped row is no NodePort: a node address does not reach it
    write_frontend(maps, "0.0.0.0", 30090, "tcp", 9, [B[0]])
    write_ipcache(maps, {NODE_OTHER + "/32": ID_REMOTE_NODE})
    (t,) = probe(lb, ns, B, [tcp(NODE_OTHER, 30090, 1)])
    assert t["errors"] == ["ENETUNREACH"]
