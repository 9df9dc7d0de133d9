# SPDX-License-Identifier: MIT OR Apache-2.0
"""Nodes -> routes to the other nodes' pod CIDRs, bad input included."""
import pytest

from meshcni.controllers.routes import desired_routes

pytestmark = pytest.mark.pure


def node(name, cidrs, ips):
    return {"metadata": {"name": name}, "spec": {"podCIDRs": list(cidrs)},
            "status": {"addresses": [{"type": "InternalIP", "address": a} for a in ips] +
                       [{"type": "Hostname", "address": name}]}}


def test_routes_to_every_other_node_per_family():
    nodes = [node("n1", ["10.244.0.0/24", "fd00:0::/64"], ["172.30.1.10", "fd30::10"]),
             node("n2", ["10.244.1.0/24", "fd00:1::/64"], ["172.30.1.11", "fd30::11"]),
             node("n3", ["10.244.2.0/24"], ["172.30.1.12"])]
    routes, probs = desired_routes(nodes, "n1")
    assert routes == {"10.244.1.0/24": "172.30.1.11", "fd00:1::/64": "fd30::11", "10.244.2.0/24": "172.30.1.12"}
    assert probs == []


def test_overlapping_and_broken_nodes_are_reported_and_skipped():
    nodes = [node("a", ["10.244.0.0/24"], ["172.30.1.10"]),
             node("b", ["10.244.0.0/25"], ["172.30.1.11"]),      # overlaps a's
             node("c", ["not-a-cidr"], ["172.30.1.12"]),
             node("d", ["fd00:9::/64"], ["172.30.1.13"]),         # no IPv6 InternalIP
             node("e", ["10.244.5.0/24"], ["172.30.1.15"])]
    routes, probs = desired_routes(nodes, "a")
    assert routes == {"10.244.5.0/24": "172.30.1.15"}
    got = {(p.name, p.field) for p in probs}
    assert got == {("b", "spec.podCIDR"), ("c", "spec.podCIDRs[0]"), ("d", "status.addresses")}
    assert "overlaps the podCIDR of Node a" in str(next(p for p in probs if p.name == "b"))


def cluster(name, nodes, conflict=None, created="2026-12-01T00:00:00Z", deleting=False):
    conds = [] if conflict is None else [{"type": "CIDRConflict", "status": conflict, "reason": "x",
                                          "message": "", "lastTransitionTime": created}]
    meta = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"metadata": meta, "spec": {"secret": {"name": f"mesh-remote-{name}-kubeconfig", "key": "config"}},
            "status": {"conditions": conds,
                       "nodes": [{"name": n, "addresses": list(a), "podCIDRs": list(c)} for n, a, c in nodes]}}


LOCAL = [node("n1", ["10.244.0.0/24"], ["172.30.1.10"]), node("n2", ["10.244.1.0/24"], ["172.30.1.11"])]


def test_remote_nodes_are_routed_via_their_address_of_the_same_family_beside_local_ones():
    b = cluster("b", [("b-node1", ["172.30.2.10", "fd30::2:10"], ["10.245.0.0/24", "fd01:0::/64"]),
                      ("b-node2", ["172.30.2.11"], ["10.245.1.0/24"])])
    routes, probs = desired_routes(LOCAL, "n1", [b])
    assert probs == []
    assert routes == {"10.244.1.0/24": "172.30.1.11", "10.245.0.0/24": "172.30.2.10", "fd01::/64": "fd30::2:10",
                      "10.245.1.0/24": "172.30.2.11"}


def test_cidr_conflict_true_contributes_nothing_false_or_unknown_does():
    nodes = [("c-node1", ["172.30.3.10"], ["10.246.0.0/24"])]
    assert desired_routes(LOCAL, "n1", [cluster("c", nodes, conflict="True")]) == ({"10.244.1.0/24": "172.30.1.11"},
                                                                                   [])
    for st in ("False", "Unknown"):
        routes, _ = desired_routes(LOCAL, "n1", [cluster("c", nodes, conflict=st)])
        assert routes["10.246.0.0/24"] == "172.30.3.10"


def test_a_cluster_being_deleted_or_without_status_contributes_nothing():
    nodes = [("c-node1", ["172.30.3.10"], ["10.246.0.0/24"])]
    bare = {"metadata": {"name": "d"}, "spec": {"secret": {"name": "s", "key": "config"}}}
    routes, probs = desired_routes(LOCAL, "n1", [cluster("c", nodes, deleting=True), bare])
    assert routes == {"10.244.1.0/24": "172.30.1.11"} and probs == []


def test_remote_overlapping_a_local_node_or_an_older_remote_is_reported_and_left_out():
    old = cluster("b", [("b-node1", ["172.30.2.10"], ["10.245.0.0/24"])], created="2026-12-01T00:00:00Z")
    new = cluster("a", [("a-node1", ["172.30.3.10"], ["10.245.0.128/25"]),      # inside b's
                        ("a-node2", ["172.30.3.11"], ["10.244.0.0/16"]),        # covers the local nodes'
                        ("a-node3", ["172.30.3.12"], ["10.246.0.0/24"])], created="2026-12-01T00:00:01Z")
    routes, probs = desired_routes(LOCAL, "n2", [new, old])                    # order of the list does not matter
    assert routes == {"10.244.0.0/24": "172.30.1.10", "10.245.0.0/24": "172.30.2.10", "10.246.0.0/24": "172.30.3.12"}
    got = {(p.kind, p.name, p.field): p.message for p in probs}
    assert set(got) == {("Cluster", "a", "status.nodes[0].podCIDRs[0]"), ("Cluster", "a", "status.nodes[1].podCIDRs[0]")}
    assert "overlaps the podCIDR of node b-node1 of Cluster b" in got[("Cluster", "a", "status.nodes[0].podCIDRs[0]")]
    assert "overlaps the podCIDR of Node n1" in got[("Cluster", "a", "status.nodes[1].podCIDRs[0]")]


def test_remote_overlapping_this_nodes_own_cidr_is_left_out():
    routes, probs = desired_routes(LOCAL, "n1", [cluster("b", [("x", ["172.30.2.10"], ["10.244.0.0/24"])])])
    assert "10.244.0.0/24" not in routes and [p.field for p in probs] == ["status.nodes[0].podCIDRs[0]"]


def test_bad_remote_node_data_is_reported_by_cluster_and_field():
    b = cluster("b", [("b1", ["not-an-ip", "172.30.2.10"], ["nope", "10.245.0.0/24"]),
                      ("b2", ["172.30.2.11"], ["fd01:2::/64"])])                # no IPv6 address
    b["status"]["nodes"].append("garbage")
    routes, probs = desired_routes(LOCAL, "n1", [b])
    assert routes == {"10.244.1.0/24": "172.30.1.11", "10.245.0.0/24": "172.30.2.10"}
    assert {(p.name, p.field) for p in probs} == {("b", "status.nodes[0].addresses[0]"),
                                                  ("b", "status.nodes[0].podCIDRs[0]"),
                                                  ("b", "status.nodes[1].addresses"), ("b", "status.nodes[2]")}
    c = cluster("c", [])
    c["status"]["nodes"] = "x"
    assert [p.field for p in desired_routes(LOCAL, "n1", [c])[1]] == ["status.nodes"]
