# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pure identity decisions: labels, names, id allocation, GC candidates, CIDR identities."""
import time

import pytest

from meshcni.controllers import identity as idm

pytestmark = pytest.mark.pure


def pod(ns, name, labels=None, **meta):
    m = {"namespace": ns, "name": name, **meta}
    if labels is not None:
        m["labels"] = labels
    return {"metadata": m}


def nsobj(name, labels=None):
    m = {"name": name}
    if labels is not None:
        m["labels"] = labels
    return {"metadata": m}


def managed(ns, labels, ident, created="2026-01-01T00:00:00Z", **meta):
    o = idm.identity_body(ns, labels, ident)
    o["metadata"].update(uid=f"uid-{o['metadata']['name']}-{ident}", creationTimestamp=created, **meta)
    return o


def test_unstable_labels_dropped_and_namespace_name_added():
    p = pod("app", "web-1", {"app": "web", "pod-template-hash": "abc", "controller-revision-hash": "r1",
                             "pod-template-generation": "3", "statefulset.kubernetes.io/pod-name": "web-1"})
    got = idm.identity_labels(p, None)
    assert got == {"namespaceLabels": {"kubernetes.io/metadata.name": "app"}, "podLabels": {"app": "web"}}
    # two replicas of one rollout and of the next share the identity
    q = pod("app", "web-2", {"app": "web", "pod-template-hash": "xyz"})
    assert idm.identity_name(idm.identity_labels(q, {})) == idm.identity_name(got)


def test_missing_labels():
    assert idm.identity_labels(pod("a", "p"), {})["podLabels"] == {}
    assert idm.identity_labels({"metadata": {"namespace": "a", "name": "p", "labels": None}}, None)["podLabels"] == {}


def test_names_deterministic_and_distinct():
    a = {"namespaceLabels": {"kubernetes.io/metadata.name": "a"}, "podLabels": {"x": "1", "y": "2"}}
    b = {"namespaceLabels": {"kubernetes.io/metadata.name": "a"}, "podLabels": {"y": "2", "x": "1"}}
    c = {"namespaceLabels": {"kubernetes.io/metadata.name": "a", "x": "1"}, "podLabels": {"y": "2"}}
    n = idm.identity_name(a)
    assert n == idm.identity_name(b) and n.startswith("id-") and len(n) == 19
    assert idm.identity_name(c) != n  # a namespace label is not a pod label
    assert idm.candidate_id(a) == idm.candidate_id(b)
    assert idm.POD_ID_MIN <= idm.candidate_id(a) <= idm.POD_ID_MAX


def test_ten_thousand_labels_fast():
    labels = {f"k{i:05d}.example.com/l": f"v{i}" for i in range(10000)}
    p = pod("big", "p", labels)
    t0 = time.perf_counter()
    create, keep, delete, problems = idm.desired_identities([p], [nsobj("big", {})], [])
    assert time.perf_counter() - t0 < 1.0
    assert len(create) == 1 and len(create[0]["spec"]["podLabels"]) == 10000 and not problems


def test_allocate_probes_past_used_and_wraps():
    labels = {"namespaceLabels": {}, "podLabels": {"a": "b"}}
    c = idm.candidate_id(labels)
    assert idm.allocate_id(labels, set()) == c
    assert idm.allocate_id(labels, {c, c + 1}) == c + 2 if c + 2 <= idm.POD_ID_MAX else True
    # a tiny range: the candidate is taken, probing wraps to the free slot
    lo, hi = 1000, 1003
    c = idm.candidate_id(labels, lo, hi)
    free = lo if c != lo else hi
    used = set(range(lo, hi + 1)) - {free}
    assert idm.allocate_id(labels, used, lo, hi) == free
    with pytest.raises(idm.RangeExhausted):
        idm.allocate_id(labels, set(range(lo, hi + 1)), lo, hi)


def test_existing_ids_kept_and_collisions_avoided():
    nss = [nsobj("a", {"kubernetes.io/metadata.name": "a"})]
    pods = [pod("a", "p1", {"app": "one"}), pod("a", "p2", {"app": "two"})]
    l1 = idm.identity_labels(pods[0], nss[0]["metadata"]["labels"])
    l2 = idm.identity_labels(pods[1], nss[0]["metadata"]["labels"])
    old = managed("a", l1, 20000000)  # not its hash candidate: persisted ids win over recomputation
    # a hand-made object sitting on l2's candidate id: not adopted, but not handed out twice either
    hand = {"metadata": {"namespace": "a", "name": "mine", "uid": "u-hand"}, "spec": {"id": idm.candidate_id(l2)}}
    create, keep, delete, problems = idm.desired_identities(pods, nss, [old, hand])
    assert keep == [old] and not delete
    assert len(create) == 1 and create[0]["spec"]["id"] != idm.candidate_id(l2)
    assert create[0]["metadata"]["labels"] == {idm.MANAGED_BY: idm.MANAGER, idm.ID_LABEL: str(create[0]["spec"]["id"])}
    assert any(p.name == "mine" and "hand-made" in p.message for p in problems)


def test_unused_is_a_gc_candidate_and_unknown_namespace_skipped():
    nss = [nsobj("a", {})]
    l1 = idm.identity_labels(pod("a", "x", {"app": "gone"}), {})
    old = managed("a", l1, 30000000)
    create, keep, delete, problems = idm.desired_identities([pod("zz", "p", {"app": "x"})], nss, [old])
    assert not create and not keep
    assert [(d["name"], d["reason"], d["immediate"]) for d in delete] == [(old["metadata"]["name"], "unused", False)]


def test_duplicate_managed_ids_younger_repicks():
    nss = [nsobj("a", {})]
    pods = [pod("a", "p1", {"app": "one"}), pod("a", "p2", {"app": "two"})]
    l1, l2 = (idm.identity_labels(p, {}) for p in pods)
    older = managed("a", l1, 40000000, created="2026-01-01T00:00:00Z")
    younger = managed("a", l2, 40000000, created="2026-01-01T00:00:05Z")
    create, keep, delete, problems = idm.desired_identities(pods, nss, [younger, older])
    assert keep == [older]
    assert [(d["name"], d["reason"], d["immediate"]) for d in delete] == [(younger["metadata"]["name"],
                                                                            "id-collision", True)]
    assert len(create) == 1 and create[0]["metadata"]["name"] == younger["metadata"]["name"]
    assert create[0]["spec"]["id"] != 40000000
    assert any("also the id of" in p.message for p in problems)


def test_handmade_reserved_colliding_and_on_managed_name():
    nss = [nsobj("a", {})]
    p1 = pod("a", "p1", {"app": "one"})
    l1 = idm.identity_labels(p1, {})
    m1 = managed("a", l1, 50000000)
    zero = {"metadata": {"namespace": "a", "name": "zero"}, "spec": {"id": 0}}
    dup = {"metadata": {"namespace": "a", "name": "dup"}, "spec": {"id": 50000000}}
    p2 = pod("a", "p2", {"app": "two"})
    squat = {"metadata": {"namespace": "a", "name": idm.identity_name(idm.identity_labels(p2, {})), "uid": "s"},
             "spec": {"id": 60000000}}
    create, keep, delete, problems = idm.desired_identities([p1, p2], nss, [m1, zero, dup, squat])
    assert keep == [m1]  # the managed allocation wins
    msgs = {p.name: p.message for p in problems}
    assert "reserved" in msgs["zero"] and "managed allocation wins" in msgs["dup"]
    assert [d["name"] for d in delete] == [squat["metadata"]["name"]] and delete[0]["immediate"]
    # the squatter's id is never adopted
    assert len(create) == 1 and create[0]["spec"]["id"] != 60000000


def test_cidr_identities():
    pol = {"metadata": {"namespace": "a", "name": "np"},
           "spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}},
                                          {"ipBlock": {"cidr": "not-a-cidr"}},
                                          {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.0.2.0/24"]}}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}]}}
    create, keep, delete, problems = idm.desired_cidr_identities([pol], [])
    assert [p.field for p in problems] == ["spec.ingress[0].from[1].ipBlock", "spec.ingress[0].from[2].ipBlock"]
    by_cidr = {(c["spec"]["cidr"], tuple(c["spec"].get("except", []))): c for c in create}
    c8 = by_cidr[("10.0.0.0/8", ("10.96.0.0/12",))]
    assert set(c8["spec"]["cidrPrefixes"]) == {"10.0.0.0/10", "10.64.0.0/11", "10.112.0.0/12", "10.128.0.0/9"}
    assert by_cidr[("198.51.100.0/24", ())]["metadata"]["name"] == "cidr-198-51-100-0-24"
    ids = sorted(c["spec"]["id"] for c in create)
    assert ids == [256, 257]
    # stable: the existing objects are kept, nothing new; gone policy -> deleted at once
    existing = [dict(c, metadata=dict(c["metadata"], uid=f"u{i}")) for i, c in enumerate(create)]
    create2, keep2, delete2, _ = idm.desired_cidr_identities([pol], existing)
    assert not create2 and not delete2 and all(p is None for _, p in keep2)
    _, _, delete3, _ = idm.desired_cidr_identities([], existing)
    assert sorted(d["name"] for d in delete3) == sorted(c["metadata"]["name"] for c in create)


def test_cidr_handmade_wrong_prefixes_reported():
    hand = {"metadata": {"name": "mine"}, "spec": {"id": 900, "cidr": "10.0.0.0/8",
                                                    "cidrPrefixes": ["10.0.0.0/9", "10.128.0.0/9"]}}
    _, _, delete, problems = idm.desired_cidr_identities([], [hand])
    assert not delete  # left alone
    assert "spec.cidrPrefixes" in [p.field for p in problems if p.name == "mine"]
