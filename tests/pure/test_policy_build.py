# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired policy -> mc_policy / mc_enforce arrays (no kernel)."""
import random

import pytest

import noext

noext.require_extension("build_policy lays rows out in layout.h's dtypes, read from meshcni._libbpf")

from meshcni.datapath.policy import (ALLOW, DENY, EGRESS, INGRESS, PolicyEntry, build_policy,  # noqa: E402
                                     drop_reasons, port_blocks)

pytestmark = pytest.mark.pure


def covered(blocks):
    out = set()
    for start, bits in blocks:
        size = 1 << (16 - bits)
        assert start % size == 0, "block not aligned"
        out.update(range(start, start + size))
    return out


@pytest.mark.parametrize("lo,hi", [(0, 65535), (80, 80), (1, 65534), (1000, 2000), (32768, 32768),
                                   (0, 0), (65535, 65535), (1024, 2047)])
def test_port_blocks_exact_and_minimal(lo, hi):
    b = port_blocks(lo, hi)
    assert covered(b) == set(range(lo, hi + 1))
    assert len(b) <= 30
    if (lo, hi) == (1024, 2047):
        assert b == [(1024, 6)]
    if (lo, hi) == (0, 65535):
        assert b == [(0, 0)]


def test_port_blocks_random_ranges():
    rnd = random.Random(7)
    for _ in range(300):
        lo = rnd.randrange(65536)
        hi = rnd.randrange(lo, 65536)
        b = port_blocks(lo, hi)
        assert covered(b) == set(range(lo, hi + 1)) and len(b) <= 30
        assert sum(1 << (16 - bits) for _, bits in b) == hi - lo + 1  # disjoint


def test_port_blocks_refuse_bad_ranges():
    for lo, hi in [(10, 9), (-1, 5), (0, 65536)]:
        with pytest.raises(ValueError):
            port_blocks(lo, hi)


def test_build_policy_prefix_lengths():
    pk, pv, ek, ev = build_policy([
        PolicyEntry(100, INGRESS),                              # any peer, any proto
        PolicyEntry(100, INGRESS, peer=200, proto=6),           # any port
        PolicyEntry(100, EGRESS, peer=200, proto=17, port=53),  # one port
        PolicyEntry(100, EGRESS, proto=6, port=(8000, 8003), rule_id=9),
    ], [(100, INGRESS), (100, EGRESS), (100, EGRESS)])
    rows = {(int(k["prefixlen"]), int(k["dir"]), int(k["peer"]), int(k["proto"]), int(k["port"]))
            for k in pk}
    assert rows == {(96, INGRESS, 0, 0, 0), (112, INGRESS, 200, 6, 0), (128, EGRESS, 200, 17, 53),
                    (126, EGRESS, 0, 6, 8000)}
    assert set(pv["action"].tolist()) == {ALLOW}
    assert len(ek) == 2 and set(ev["enforced"].tolist()) == {1}
    assert pk.dtype.fields["identity"][0].byteorder == ">"  # the trie reads network order


def test_deny_is_sticky_and_port_needs_proto():
    pk, pv, _, _ = build_policy([PolicyEntry(1, INGRESS, peer=5, proto=6, port=80, action=DENY),
                                 PolicyEntry(1, INGRESS, peer=5, proto=6, port=80)], [])
    assert len(pk) == 1 and pv[0]["action"] == DENY
    with pytest.raises(ValueError):
        build_policy([PolicyEntry(1, INGRESS, port=80)], [])


def test_drop_reason_names():
    names = drop_reasons()
    assert names[1] == "policy" and "malformed" in names.values() and "fragment" in names.values()


def test_fit_policy_fails_closed_for_the_groups_that_do_not_fit():
    from meshcni.datapath.policy import EGRESS, INGRESS, PolicyEntry, fit_policy, policy_rows
    small = [PolicyEntry(10, INGRESS, peer=1), PolicyEntry(10, INGRESS, peer=20, proto=6, port=80)]
    big = [PolicyEntry(11, INGRESS, peer=1)] + [PolicyEntry(11, INGRESS, peer=p, proto=6, port=80)
                                                 for p in range(100, 110)]
    ranged = [PolicyEntry(12, EGRESS, peer=1), PolicyEntry(12, EGRESS, proto=17, port=(1000, 2000))]
    enforced = {(10, INGRESS), (11, INGRESS), (12, EGRESS), (13, INGRESS)}
    everything = small + big + ranged
    n = policy_rows(everything)
    assert n == 2 + 11 + 1 + 8  # endPort 1000-2000 is 8 prefixes
    # fits: unchanged
    e, enf, closed = fit_policy(everything, enforced, n)
    assert e == everything and enf == enforced and closed == []
    # one row short: the largest group (11 ingress) is closed to host-only, the rest intact
    e, enf, closed = fit_policy(everything, enforced, n - 1)
    assert closed == [(11, INGRESS)] and enf == enforced
    assert [x for x in e if x.identity == 11] == [PolicyEntry(11, INGRESS, peer=1)]
    assert set(small + ranged) <= set(e) and policy_rows(e) <= n - 1
    # very small: everything with entries closed, each keeps its host row
    e, enf, closed = fit_policy(everything, enforced, 3)
    assert sorted(closed) == [(10, INGRESS), (11, INGRESS), (12, EGRESS)]
    assert sorted((x.identity, x.peer) for x in e) == [(10, 1), (11, 1), (12, 1)]
    with pytest.raises(ValueError):
        fit_policy(everything, enforced, 2)


def test_fit_policy_order_is_rank_then_size_and_keeps_what_still_fits():
    """With ranks, groups are taken by rank (priority, age) before size; one that does not fit
    closes alone, and smaller ones after it are still programmed if they fit."""
    from meshcni.datapath.policy import INGRESS, PolicyEntry, fit_policy, policy_rows
    def group(ident, n):
        return [PolicyEntry(ident, INGRESS, peer=1)] + [PolicyEntry(ident, INGRESS, peer=p, proto=6, port=80)
                                                         for p in range(100, 100 + n - 1)]
    a, b, c = group(10, 5), group(11, 5), group(12, 2)
    everything = a + b + c
    enforced = {(10, INGRESS), (11, INGRESS), (12, INGRESS)}
    cap = policy_rows(a) + policy_rows(c) + 1  # room for one of a, b beside c (+ the closed one's host row)
    # without ranks: by size then id -> 12 (2), 10 (5) kept, 11 closed
    _, _, closed = fit_policy(everything, enforced, cap)
    assert closed == [(11, INGRESS)]
    # 11 has the higher priority: it keeps its policy, 10 (same size, lower rank) closes
    rank = {11: (-5, "2026-01-01T00:00:00Z"), 10: (0, "2025-01-01T00:00:00Z"), 12: (0, "2026-06-01T00:00:00Z")}
    e, _, closed = fit_policy(everything, enforced, cap, rank=rank)
    assert closed == [(10, INGRESS)]
    assert set(b + c) <= set(e)
    # same priority: the older identity (10) wins over the younger (11)
    rank = {10: (0, "2025-01-01T00:00:00Z"), 11: (0, "2026-01-01T00:00:00Z"), 12: (0, "2026-06-01T00:00:00Z")}
    _, _, closed = fit_policy(everything, enforced, cap, rank=rank)
    assert closed == [(11, INGRESS)]
    # the first in rank order does not fit at all: it closes, the later smaller ones still fit
    big = group(13, 20)
    rank = {13: (-9, "2020-01-01T00:00:00Z"), **rank}
    e, _, closed = fit_policy(everything + big, enforced | {(13, INGRESS)}, policy_rows(everything) + 1, rank=rank)
    assert closed == [(13, INGRESS)]
    assert set(everything) <= set(e)


def test_policy_ranks_priority_then_age_and_bad_annotations():
    from meshcni.controllers.identity import identity_labels, identity_name
    from meshcni.controllers.netpol import (FAIL_CLOSED_FIELD, PRIORITY_ANNOTATION, fail_closed_problems,
                                            policy_ranks)
    from meshcni.datapath.policy import EGRESS, INGRESS
    nss = [{"metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "x"}}}]

    def pod(name, app, created, prio=None):
        ann = {PRIORITY_ANNOTATION: prio} if prio is not None else {}
        return {"metadata": {"namespace": "x", "name": name, "labels": {"app": app}, "annotations": ann,
                             "creationTimestamp": created}}
    pods = [pod("a1", "a", "2026-03-01T00:00:00Z"), pod("a2", "a", "2026-01-01T00:00:00Z", "10"),
            pod("b1", "b", "2025-01-01T00:00:00Z", "high"), pod("c1", "c", "2026-02-01T00:00:00Z")]
    idents = []
    for i, app in enumerate("ab", start=1):
        lab = identity_labels(pods[0] if app == "a" else pods[2], nss[0]["metadata"]["labels"])
        idents.append({"metadata": {"namespace": "x", "name": identity_name(lab),
                                    "labels": {"app.kubernetes.io/managed-by": "meshcni-controller"}},
                       "spec": {"id": 100 + i}})
    r = policy_ranks(pods, nss, idents)
    # a: the highest priority of its pods and its oldest pod; b: bad annotation -> 0, reported
    assert r.rank == {101: (-10, "2026-01-01T00:00:00Z"), 102: (0, "2025-01-01T00:00:00Z")}
    assert r.pods == {101: [("x", "a1"), ("x", "a2")], 102: [("x", "b1")]}  # c1 has no identity yet
    assert len(r.problems) == 1 and r.problems[0].name == "b1" and PRIORITY_ANNOTATION in r.problems[0].field
    probs = fail_closed_problems([(101, INGRESS), (102, EGRESS)], r, 1000)
    assert [(p.kind, p.name, p.field) for p in probs] == [("Pod", "a1", FAIL_CLOSED_FIELD),
                                                          ("Pod", "a2", FAIL_CLOSED_FIELD),
                                                          ("Pod", "b1", FAIL_CLOSED_FIELD)]
    assert "ingress" in probs[0].message and "egress" in probs[2].message and "1000 rows" in probs[0].message
