# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pods, nodes, Identities and CIDRIdentities -> ipcache prefixes."""
import pytest

from meshcni.controllers.identity import MANAGED_BY, MANAGER, identity_labels, identity_name
from meshcni.controllers.identity import ATOM_ID_MAX, ATOM_ID_MIN
from meshcni.controllers.ipcache import cidr_atoms, desired_ipcache, identity_of

pytestmark = pytest.mark.pure


def pod(name, ns, labels, ips, phase="Running"):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "status": {"phase": phase, "podIP": ips[0] if ips else None, "podIPs": [{"ip": i} for i in ips]}}


def ident(p, ns_labels, i, managed=True):
    labels = identity_labels(p, ns_labels)
    return {"metadata": {"name": identity_name(labels), "namespace": p["metadata"]["namespace"],
                         "labels": {MANAGED_BY: MANAGER} if managed else {}},
            "spec": {"id": i, **labels}}


def cid(name, i, prefixes, managed=True):
    return {"metadata": {"name": name, "labels": {MANAGED_BY: MANAGER} if managed else {}},
            "spec": {"id": i, "cidr": prefixes[0], "cidrPrefixes": prefixes}}


def node(name, ip):
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def test_pods_nodes_and_cidrs():
    nss = [{"metadata": {"name": "x", "labels": {"ns": "x"}}}]
    a = pod("a", "x", {"pod": "a"}, ["10.244.0.5", "fd00::5"])
    b = pod("b", "x", {"pod": "b"}, ["10.244.1.7"])             # no Identity yet
    done = pod("c", "x", {"pod": "a"}, ["10.244.0.9"], phase="Succeeded")
    hand = pod("d", "x", {"pod": "d"}, ["10.244.0.10"])
    ids = [ident(a, {"ns": "x"}, 16777300), ident(hand, {"ns": "x"}, 16777301, managed=False)]
    cids = [cid("cidr-a", 300, ["10.0.0.0/10", "10.128.0.0/9"]), cid("cidr-b", 301, ["10.128.0.0/9"]),
            cid("cidr-hand", 302, ["192.0.2.0/24"], managed=False)]
    out, probs, coll = desired_ipcache([a, b, done, hand], nss, ids, cids,
                                       [node("n1", "172.30.1.10"), node("n2", "172.30.1.11")], "n1")
    # 10.128/9 is in both ipBlocks: an atom for {300, 301}
    atom = out["10.128.0.0/9"]
    assert ATOM_ID_MIN <= atom <= ATOM_ID_MAX
    assert out == {"10.0.0.0/10": 300, "10.128.0.0/9": atom, "10.244.0.5/32": 16777300,
                   "fd00::5/128": 16777300, "172.30.1.10/32": 1, "172.30.1.11/32": 6}
    assert probs == [] and coll == 1
    assert identity_of(out, "10.200.1.1") == atom and identity_of(out, "10.244.0.5") == 16777300
    assert identity_of(out, "10.1.0.1") == 300


def test_overlapping_cidr_identities_get_exact_atoms():
    # 192.0.2.0/24, 192.0.2.0/28 and 192.0.2.0/24 except 192.0.2.0/26; one IPv6 block on its own
    cids = [cid("wide", 300, ["192.0.2.0/24"]), cid("narrow", 301, ["192.0.2.0/28"]),
            cid("holed", 302, ["192.0.2.64/26", "192.0.2.128/25"]), cid("v6", 303, ["2001:db8::/32"])]
    atoms = cidr_atoms(cids)
    p = atoms.prefixes
    assert p["192.0.2.0/24"] == 300 and p["2001:db8::/32"] == 303
    assert atoms.members[p["192.0.2.0/28"]] == {300, 301}
    assert atoms.members[p["192.0.2.128/25"]] == {300, 302} and p["192.0.2.64/26"] == p["192.0.2.128/25"]
    assert len(atoms.members) == 2
    # what an address resolves to is a member of exactly the ipBlocks containing it
    for ip, blocks in (("192.0.2.10", {300, 301}), ("192.0.2.20", {300}), ("192.0.2.200", {300, 302})):
        got = identity_of(p, ip)
        assert {i for i in (300, 301, 302) if got in atoms.ids_for(i)} == blocks, ip
    # deterministic: every agent computes the same ids, whatever the order of the objects
    assert cidr_atoms(list(reversed(cids))).prefixes == p


def test_garbage_pod_ip_is_reported():
    p = pod("g", "x", {"pod": "g"}, ["999.1.1.1"])
    out, probs, _ = desired_ipcache([p], [], [ident(p, {}, 16777400)], [], [], "n1")
    assert out == {} and [(x.name, x.field) for x in probs] == [("g", "status.podIPs[0].ip")]
