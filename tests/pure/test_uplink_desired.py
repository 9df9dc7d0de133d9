# SPDX-License-Identifier: MIT OR Apache-2.0
"""The uplink's desired state: Nodes + flags -> addresses and ranges; ranges -> LPM rows."""
import noext
import pytest

noext.require_extension("the uplink's rows are laid out in layout.h's dtypes (meshcni._libbpf)")

from meshcni import layout  # noqa: E402
from meshcni.agent.uplink import UplinkOptions, desired_uplink  # noqa: E402
from meshcni.datapath.nodeport import UplinkConfig, nat_cidr_rows  # noqa: E402
from meshcni.datapath.policy import addr16  # noqa: E402

pytestmark = pytest.mark.pure
C = layout.constants()
LOCAL, POD, SVC, NOMASQ = (C["MC_NAT_CIDR_LOCAL_POD"], C["MC_NAT_CIDR_POD"], C["MC_NAT_CIDR_SERVICE"],
                           C["MC_NAT_CIDR_NO_MASQ"])


def node(name, cidrs, addrs=()):
    return {"metadata": {"name": name}, "spec": {"podCIDRs": cidrs},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addrs]}}


def test_own_addresses_local_and_cluster_pod_cidrs():
    nodes = [node("n2", ["10.1.2.0/24"], [("InternalIP", "192.0.2.11")]),
             node("n1", ["10.1.1.0/24", "fd00:1:1::/64"],
                  [("Hostname", "n1"), ("ExternalIP", "203.0.113.1"), ("InternalIP", "192.0.2.10")])]
    d = desired_uplink(nodes, "n1", UplinkOptions(non_masquerade_cidrs=("192.168.0.0/16",)))
    assert d.problems == []
    s = d.state
    assert s.addrs == ["192.0.2.10", "203.0.113.1"]  # InternalIP first
    assert s.local_pod_cidrs == ["10.1.1.0/24", "fd00:1:1::/64"]
    assert s.pod_cidrs == ["10.1.1.0/24", "10.1.2.0/24", "fd00:1:1::/64"]


def test_bad_input_is_a_problem_naming_the_object_and_field():
    nodes = [node("n1", ["10.1.1.0/24"], [("InternalIP", "nope")]), node("n2", ["10.300.0.0/16"])]
    d = desired_uplink(nodes, "n1", UplinkOptions(non_masquerade_cidrs=("x/8",)))
    got = {(p.name, p.field) for p in d.problems}
    assert got == {("n1", "status.addresses"), ("n2", "spec.podCIDRs"), ("n1", "--non-masquerade-cidr")}
    assert d.state.addrs == [] and d.state.pod_cidrs == ["10.1.1.0/24"]


def test_meshed_clusters_pod_cidrs_are_never_masqueraded():
    # a pod reaching a remote cluster's pod keeps its address: the remote NetworkPolicy selects it by identity
    nodes = [node("n1", ["10.1.1.0/24"], [("InternalIP", "192.0.2.10")])]
    clusters = [{"metadata": {"name": "west"},
                 "status": {"nodes": [{"name": "w1", "addresses": ["192.0.2.20"], "podCIDRs": ["10.2.1.0/24"]},
                                      {"name": "w2", "addresses": ["192.0.2.21"], "podCIDRs": ["bad"]}]}},
                {"metadata": {"name": "new"}}]  # no status yet
    d = desired_uplink(nodes, "n1", UplinkOptions(), clusters)
    assert d.state.pod_cidrs == ["10.1.1.0/24", "10.2.1.0/24"]
    assert d.state.local_pod_cidrs == ["10.1.1.0/24"]
    assert [(p.kind, p.name, p.field) for p in d.problems] == [("Cluster", "west", "status.nodes[1].podCIDRs")]


def test_no_own_node_yet_is_no_state():
    assert desired_uplink([node("n2", [])], "n1", UplinkOptions()).state is None


def test_lpm_rows_carry_the_flags_of_every_containing_range():
    rows = nat_cidr_rows(UplinkConfig(local_pod_cidrs=["10.1.1.0/24"], pod_cidrs=["10.1.0.0/16"],
                                      service_cidrs=["10.96.0.0/12"], non_masquerade_cidrs=["10.0.0.0/8"]))
    assert rows == {(96 + 24, addr16("10.1.1.0")): LOCAL | POD | NOMASQ,
                    (96 + 16, addr16("10.1.0.0")): POD | NOMASQ,
                    (96 + 12, addr16("10.96.0.0")): SVC | NOMASQ,
                    (96 + 8, addr16("10.0.0.0")): NOMASQ}
    v6 = nat_cidr_rows(UplinkConfig(local_pod_cidrs=["fd00:1:1::/64"], pod_cidrs=["fd00:1::/48"]))
    assert v6[(64, addr16("fd00:1:1::"))] == LOCAL | POD and v6[(48, addr16("fd00:1::"))] == POD
    with pytest.raises(ValueError, match="non-masquerade CIDR: 'x' is not a CIDR"):
        nat_cidr_rows(UplinkConfig(non_masquerade_cidrs=["x"]))
