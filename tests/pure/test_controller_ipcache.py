# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pods, nodes, Identities and CIDRIdentities -> ipcache prefixes."""
import pytest

from meshcni.controllers.identity import MANAGED_BY, MANAGER, identity_labels, identity_name
from meshcni.controllers.ipcache import desired_ipcache, identity_of

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
    assert out == {"10.0.0.0/10": 300, "10.128.0.0/9": 300, "10.244.0.5/32": 16777300, "fd00::5/128": 16777300,
                   "172.30.1.10/32": 1, "172.30.1.11/32": 6}
    assert probs == [] and coll == 1
    assert identity_of(out, "10.200.1.1") == 300 and identity_of(out, "10.244.0.5") == 16777300


def test_garbage_pod_ip_is_reported():
    p = pod("g", "x", {"pod": "g"}, ["999.1.1.1"])
    out, probs, _ = desired_ipcache([p], [], [ident(p, {}, 16777400)], [], [], "n1")
    assert out == {} and [(x.name, x.field) for x in probs] == [("g", "status.podIP")]
