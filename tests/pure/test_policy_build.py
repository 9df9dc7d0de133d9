# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired policy -> mc_policy / mc_enforce arrays (no kernel)."""
import random

import pytest

from meshcni.datapath.policy import (ALLOW, DENY, EGRESS, INGRESS, PolicyEntry, build_policy,
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
