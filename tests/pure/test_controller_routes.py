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
