# SPDX-License-Identifier: MIT OR Apache-2.0
"""bpf/policy.bpf.c under BPF_PROG_TEST_RUN on hand-made frames (no network).

test_run gives the skb the loopback device (ifindex 1), so the local
endpoint is registered for ifindex 1. mc_from_pod = the pod's EGRESS
policy, mc_to_pod = its INGRESS policy.
"""
import ipaddress
import struct
import time

import pytest

from meshcni.datapath.policy import (DENY, EGRESS, INGRESS, DropEvents, PolicyEntry, PolicyProgram,
                                     addr16, ct_gc)

pytestmark = pytest.mark.kernel

OK, SHOT = 0, 2
POD, PEER, OTHER = 1000, 2000, 3000
POD4, PEER4, CIDR4 = "10.0.0.1", "10.0.1.1", "192.168.7.9"
POD6, PEER6 = "fd00::1", "fd00::1:1"
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def tcp(sport, dport, flags, payload=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport, dport, payload=b"x"):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(type_, code=0, ident=0, seq=0, rest=None):
    body = struct.pack("!HH", ident, seq) if rest is None else rest
    return struct.pack("!BBH", type_, code, 0) + body


def ip4(src, dst, proto, l4, options=b"", frag=0, mf=False, ident=1):
    ihl = 5 + len(options) // 4
    fo = (frag & 0x1FFF) | (0x2000 if mf else 0)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident, fo, 64, proto, 0,
                      ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return hdr + options + l4


def ip6(src, dst, nh, l4, ext=b""):
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), nh, 64,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + ext + l4


def eth(l3, v6=False):
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x86DD if v6 else 0x0800) + l3


def out4(l4, proto, dst=PEER4, **kw):  # leaving the pod
    return eth(ip4(POD4, dst, proto, l4, **kw))


def in4(l4, proto, src=PEER4, **kw):  # entering the pod
    return eth(ip4(src, POD4, proto, l4, **kw))


@pytest.fixture
def dp(pin_root):
    prog = PolicyProgram(pin_root)
    d = prog.datapath()
    d.set_endpoint(1, POD, POD4)
    d.set_ipcache({POD4 + "/32": POD, PEER4 + "/32": PEER, "192.168.0.0/16": OTHER,
                   POD6 + "/128": POD, PEER6 + "/128": PEER})
    d.prog = prog
    yield d
    d.close()
    prog.close()


def run(d, hook, pkt):
    return d.prog.obj.test_run(hook, pkt)[0]


def from_pod(d, pkt):
    return run(d, "mc_from_pod", pkt)


def to_pod(d, pkt):
    return run(d, "mc_to_pod", pkt)


def test_no_policy_passes_everything(dp):
    assert from_pod(dp, out4(tcp(1234, 80, SYN), TCP)) == OK
    assert to_pod(dp, in4(udp(53, 5353), UDP)) == OK
    assert to_pod(dp, eth(ip6(PEER6, POD6, TCP, tcp(1, 2, SYN)), v6=True)) == OK
    assert dp.drop_counts() == {}


def test_unknown_interface_is_not_ours(dp):
    dp.endpoints.clear()
    dp.apply([], [(POD, INGRESS), (POD, EGRESS)])
    assert to_pod(dp, in4(tcp(1, 80, SYN), TCP)) == OK


def test_enforced_without_allow_drops_counts_and_reports(dp):
    dp.apply([], [(POD, INGRESS)])
    with DropEvents(dp.obj.map("mc_events")) as ev:
        ev.poll(0)
        assert to_pod(dp, in4(tcp(40000, 80, SYN), TCP)) == SHOT
        # the other direction is still unenforced
        assert from_pod(dp, out4(tcp(40001, 80, SYN), TCP)) == OK
        got = ev.poll(100)
    counts = dp.drop_counts()
    assert counts["policy"][0] == 1 and counts["policy"][1] == 54
    assert len(got) == 1
    e = got[0]
    assert (e.saddr, e.daddr, e.sport, e.dport, e.proto) == (PEER4, POD4, 40000, 80, TCP)
    assert (e.src_identity, e.dst_identity, e.direction, e.reason, e.ifindex) == \
        (PEER, POD, INGRESS, "policy", 1)
    assert 0 < e.ts_ns <= time.monotonic_ns()


def test_allow_by_peer_identity_and_port(dp):
    dp.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=TCP, port=80)], [(POD, INGRESS)])
    assert to_pod(dp, in4(tcp(40000, 80, SYN), TCP)) == OK
    assert to_pod(dp, in4(tcp(40000, 81, SYN), TCP)) == SHOT           # other port
    assert to_pod(dp, in4(udp(40000, 80), UDP)) == SHOT                # other proto
    assert to_pod(dp, in4(tcp(40000, 80, SYN), TCP, src=CIDR4)) == SHOT  # other peer
    v6 = eth(ip6(PEER6, POD6, TCP, tcp(40000, 80, SYN)), v6=True)
    assert to_pod(dp, v6) == OK


def test_any_peer_and_any_proto(dp):
    dp.apply([PolicyEntry(POD, INGRESS, proto=UDP, port=53),
              PolicyEntry(POD, EGRESS, peer=PEER)], [(POD, INGRESS), (POD, EGRESS)])
    assert to_pod(dp, in4(udp(9, 53), UDP, src=CIDR4)) == OK
    assert to_pod(dp, in4(udp(9, 54), UDP, src=CIDR4)) == SHOT
    assert from_pod(dp, out4(tcp(9, 1, SYN), TCP)) == OK
    assert from_pod(dp, out4(icmp(8, ident=7), ICMP)) == OK
    assert from_pod(dp, out4(tcp(9, 1, SYN), TCP, dst=CIDR4)) == SHOT


def test_end_port_range_boundaries(dp):
    dp.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=TCP, port=(1000, 2000))], [(POD, INGRESS)])
    assert len(dp.policy) < 20  # prefixes, not one entry per port
    for port, want in [(999, SHOT), (1000, OK), (1500, OK), (1023, OK), (1024, OK), (2000, OK),
                       (2001, SHOT), (65535, SHOT)]:
        assert to_pod(dp, in4(tcp(50000, port, SYN), TCP)) == want, port


def test_cidr_identity_via_ipcache_lpm(dp):
    dp.apply([PolicyEntry(POD, EGRESS, peer=OTHER, proto=TCP, port=443)], [(POD, EGRESS)])
    assert from_pod(dp, out4(tcp(5000, 443, SYN), TCP, dst="192.168.200.1")) == OK
    assert from_pod(dp, out4(tcp(5000, 443, SYN), TCP, dst="192.169.0.1")) == SHOT  # world
    dp.set_ipcache({"192.168.200.0/24": PEER})  # a longer prefix wins
    assert from_pod(dp, out4(tcp(5001, 443, SYN), TCP, dst="192.168.200.1")) == SHOT


def test_egress_deny_and_explicit_deny(dp):
    dp.apply([PolicyEntry(POD, EGRESS, proto=TCP),
              PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=22, action=DENY)], [(POD, EGRESS)])
    assert from_pod(dp, out4(tcp(5000, 80, SYN), TCP)) == OK
    assert from_pod(dp, out4(tcp(5000, 22, SYN), TCP)) == SHOT
    assert from_pod(dp, out4(udp(5000, 80), UDP)) == SHOT
    c = dp.drop_counts()
    assert c["policy_deny"][0] == 1 and c["policy"][0] == 1


def test_conntrack_reply_passes_reverse_syn_dropped(dp):
    # pod may connect out; nobody may connect in
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=80)], [(POD, INGRESS), (POD, EGRESS)])
    assert from_pod(dp, out4(tcp(40000, 80, SYN), TCP)) == OK
    assert to_pod(dp, in4(tcp(80, 40000, SYN | ACK), TCP)) == OK       # reply
    assert from_pod(dp, out4(tcp(40000, 80, ACK), TCP)) == OK
    assert to_pod(dp, in4(tcp(80, 40000, ACK, b"data"), TCP)) == OK
    # a new connection in the reverse direction, even on the same ports
    assert to_pod(dp, in4(tcp(80, 40000, SYN), TCP)) == SHOT
    assert to_pod(dp, in4(tcp(80, 40001, SYN), TCP)) == SHOT
    # a non-SYN packet with no connection is no reply either
    assert to_pod(dp, in4(tcp(81, 40000, ACK), TCP)) == SHOT
    k, v = dp.ct.dump()
    assert len(k) == 1
    assert int(v[0]["state"]) == 2 and int(v[0]["flags"]) & 1 and int(v[0]["packets"]) == 4
    assert bytes(k[0]["saddr"]) == addr16(POD4) and int(k[0]["dport"]) == 80 and int(k[0]["dir"]) == EGRESS
    assert int(v[0]["src_identity"]) == POD


def test_conntrack_tcp_states_and_timeouts(dp):
    dp.apply([PolicyEntry(POD, EGRESS, proto=TCP)], [(POD, INGRESS), (POD, EGRESS)])

    def entry():
        k, v = dp.ct.dump()
        assert len(k) == 1
        return int(v[0]["state"]), (int(v[0]["expires_ns"]) - time.monotonic_ns()) / 1e9

    from_pod(dp, out4(tcp(40000, 80, SYN), TCP))
    st, left = entry()
    assert st == 1 and 55 < left <= 60
    to_pod(dp, in4(tcp(80, 40000, SYN | ACK), TCP))
    st, left = entry()
    assert st == 2 and left > 21000
    assert to_pod(dp, in4(tcp(80, 40000, FIN | ACK), TCP)) == OK
    st, left = entry()
    assert st == 3 and left <= 10
    assert from_pod(dp, out4(tcp(40000, 80, FIN | ACK), TCP)) == OK
    # closing + a new SYN from the reverse side is still no reply
    assert to_pod(dp, in4(tcp(80, 40000, SYN), TCP)) == SHOT


def test_conntrack_udp_and_icmp_echo(dp):
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP, port=53), PolicyEntry(POD, EGRESS, proto=ICMP)],
             [(POD, INGRESS), (POD, EGRESS)])
    assert from_pod(dp, out4(udp(5353, 53), UDP)) == OK
    assert to_pod(dp, in4(udp(53, 5353), UDP)) == OK
    assert to_pod(dp, in4(udp(53, 5354), UDP)) == SHOT
    assert from_pod(dp, out4(icmp(8, ident=77), ICMP)) == OK
    assert to_pod(dp, in4(icmp(0, ident=77), ICMP)) == OK
    assert to_pod(dp, in4(icmp(0, ident=78), ICMP)) == SHOT
    assert to_pod(dp, in4(icmp(8, ident=77), ICMP)) == SHOT   # a request in is new


def sctp(sport, dport, vtag=1):
    return struct.pack("!HHII", sport, dport, vtag, 0) + b"\x01\x00\x00\x04"  # an empty INIT-ish chunk


def test_sctp_ports_policy_and_conntrack(dp):
    SCTP = 132
    dp.apply([PolicyEntry(POD, INGRESS, proto=SCTP, port=(3868, 3870)), PolicyEntry(POD, EGRESS, proto=SCTP, port=38412)],
             [(POD, INGRESS), (POD, EGRESS)])
    assert to_pod(dp, in4(sctp(5000, 3868), SCTP)) == OK
    assert to_pod(dp, in4(sctp(5000, 3870), SCTP)) == OK
    assert to_pod(dp, in4(sctp(5000, 3871), SCTP)) == SHOT            # outside the endPort range
    assert to_pod(dp, in4(udp(5000, 3868), UDP)) == SHOT              # same port, other protocol
    assert from_pod(dp, out4(sctp(3868, 5000), SCTP)) == OK           # the reply of the admitted flow
    assert from_pod(dp, out4(sctp(7000, 38412), SCTP)) == OK
    assert to_pod(dp, in4(sctp(38412, 7000), SCTP)) == OK             # its reply
    assert from_pod(dp, out4(sctp(7000, 38413), SCTP)) == SHOT
    assert to_pod(dp, in4(sctp(5000, 3868)[:8], SCTP)) == SHOT        # truncated common header: malformed


def test_conntrack_v6(dp):
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=443)], [(POD, INGRESS), (POD, EGRESS)])
    assert from_pod(dp, eth(ip6(POD6, PEER6, TCP, tcp(41000, 443, SYN)), v6=True)) == OK
    assert to_pod(dp, eth(ip6(PEER6, POD6, TCP, tcp(443, 41000, SYN | ACK)), v6=True)) == OK
    assert to_pod(dp, eth(ip6(PEER6, POD6, TCP, tcp(443, 41000, SYN)), v6=True)) == SHOT


def test_icmp_error_related_to_tracked_flow(dp):
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP)], [(POD, INGRESS), (POD, EGRESS)])
    sent = ip4(POD4, PEER4, UDP, udp(6000, 7000))
    assert from_pod(dp, eth(sent)) == OK
    unreach = icmp(3, 3, rest=b"\0" * 4 + sent[:28])
    assert to_pod(dp, in4(unreach, ICMP, src="10.9.9.9")) == OK
    other = ip4(POD4, PEER4, UDP, udp(6001, 7000))
    assert to_pod(dp, in4(icmp(3, 3, rest=b"\0" * 4 + other[:28]), ICMP, src="10.9.9.9")) == SHOT
    # v6: packet too big about a tracked flow
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP)], [(POD, INGRESS), (POD, EGRESS)])
    sent6 = ip6(POD6, PEER6, UDP, udp(6000, 7000))
    assert from_pod(dp, eth(sent6, v6=True)) == OK
    ptb = icmp(2, 0, rest=struct.pack("!I", 1280) + sent6[:48])
    assert to_pod(dp, eth(ip6(PEER6, POD6, ICMP6, ptb), v6=True)) == OK


def test_ndp_always_passes(dp):
    dp.apply([], [(POD, INGRESS), (POD, EGRESS)])
    ns = icmp(135, rest=b"\0" * 4 + bytes(16))
    assert to_pod(dp, eth(ip6("fe80::1", POD6, ICMP6, ns), v6=True)) == OK
    assert from_pod(dp, eth(ip6(POD6, "ff02::1:ff00:1", ICMP6, ns), v6=True)) == OK


def test_non_ip_passes(dp):
    dp.apply([], [(POD, INGRESS), (POD, EGRESS)])
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    assert to_pod(dp, arp) == OK


def test_truncated_headers_are_dropped_as_malformed(dp):
    pkt = out4(tcp(1, 2, SYN), TCP)
    # (BPF_PROG_TEST_RUN itself refuses a frame shorter than its IP header,
    # so a truncated L3 header is shown by an IHL that runs past the end.)
    # Even unenforced: a broken header is never passed on.
    long_ihl = bytearray(out4(b"", TCP))
    long_ihl[14] = 0x4F
    assert from_pod(dp, bytes(long_ihl)) == SHOT
    # truncated L4 header
    assert from_pod(dp, pkt[:14 + 20 + 10]) == SHOT
    assert from_pod(dp, out4(b"\0\1", UDP)) == SHOT
    # bad IHL / version
    bad = bytearray(pkt)
    bad[14] = 0x43
    assert from_pod(dp, bytes(bad)) == SHOT
    bad[14] = 0x65
    assert from_pod(dp, bytes(bad)) == SHOT
    v6 = eth(ip6(POD6, PEER6, TCP, tcp(1, 2, SYN)), v6=True)
    assert from_pod(dp, v6[:14 + 40 + 10]) == SHOT
    # an extension header running past the end
    assert from_pod(dp, eth(ip6(POD6, PEER6, 60, b"\x06\x10"), v6=True)) == SHOT
    assert dp.drop_counts()["malformed"][0] == 7


def test_ip_options_are_skipped(dp):
    dp.apply([PolicyEntry(POD, EGRESS, proto=TCP, port=80)], [(POD, EGRESS)])
    opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    assert from_pod(dp, out4(tcp(1, 80, SYN), TCP, options=opts)) == OK
    assert from_pod(dp, out4(tcp(1, 81, SYN), TCP, options=opts)) == SHOT
    # v6 hop-by-hop + dest-opts extension headers are walked
    hbh = bytes([60, 0]) + b"\x01\x04\0\0\0\0"
    dst = bytes([TCP, 0]) + b"\x01\x04\0\0\0\0"
    assert from_pod(dp, eth(ip6(POD6, PEER6, 0, tcp(1, 80, SYN), ext=hbh + dst), v6=True)) == OK
    assert from_pod(dp, eth(ip6(POD6, PEER6, 0, tcp(1, 81, SYN), ext=hbh + dst), v6=True)) == SHOT


def test_fragments(dp):
    """A later fragment takes its first fragment's ports (mc_frag) and meets the same verdict;
    one whose first fragment was not seen is dropped where the direction is enforced."""
    rest = b"\0" * 16
    # unenforced: fragments pass, first seen or not
    assert from_pod(dp, out4(rest, UDP, frag=3, ident=99)) == OK
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP, port=53),
              PolicyEntry(POD, INGRESS, peer=PEER, proto=UDP, port=53)], [(POD, EGRESS), (POD, INGRESS)])
    # admitted datagram: first, middle and last fragment all pass
    assert from_pod(dp, out4(udp(5000, 53, b"q" * 64), UDP, mf=True, ident=7)) == OK
    assert from_pod(dp, out4(rest, UDP, frag=9, mf=True, ident=7)) == OK
    assert from_pod(dp, out4(rest, UDP, frag=18, ident=7)) == OK
    # denied datagram: its later fragments are denied by the same policy, not passed
    assert from_pod(dp, out4(udp(5000, 54, b"q" * 64), UDP, mf=True, ident=8)) == SHOT
    assert from_pod(dp, out4(rest, UDP, frag=9, ident=8)) == SHOT
    # no first fragment seen: dropped as a fragment; the key includes the addresses
    assert from_pod(dp, out4(rest, UDP, frag=9, ident=9)) == SHOT
    assert from_pod(dp, out4(rest, UDP, frag=9, ident=7, dst=CIDR4)) == SHOT
    # ingress, from the admitted peer
    assert to_pod(dp, in4(udp(6000, 53, b"a" * 64), UDP, mf=True, ident=300)) == OK
    assert to_pod(dp, in4(rest, UDP, frag=9, ident=300)) == OK
    # IPv6: the fragment header's 32-bit identification
    first6 = struct.pack("!BBHI", UDP, 0, 1, 0x12345678)       # offset 0, M set
    later6 = struct.pack("!BBHI", UDP, 0, 9 << 3, 0x12345678)
    stray6 = struct.pack("!BBHI", UDP, 0, 9 << 3, 0x12345679)
    assert from_pod(dp, eth(ip6(POD6, PEER6, 44, udp(5000, 53, b"q" * 64), ext=first6), v6=True)) == OK
    assert from_pod(dp, eth(ip6(POD6, PEER6, 44, rest, ext=later6), v6=True)) == OK
    assert from_pod(dp, eth(ip6(POD6, PEER6, 44, rest, ext=stray6), v6=True)) == SHOT
    counts = dp.drop_counts()
    assert counts["fragment"][0] == 3
    assert counts["policy"][0] == 2
    frag = dp.obj.map("mc_frag")
    keys, vals = frag.dump()
    got = {(int(k["id"]), int(v["sport"]), int(v["dport"])) for k, v in zip(keys, vals)}
    assert {(7, 5000, 53), (8, 5000, 54), (300, 6000, 53), (0x12345678, 5000, 53)} <= got


def test_tcp_fragment_overlapping_the_ports_is_malformed(dp):
    # RFC 1858: an IPv4 TCP fragment at offset 1 (8 bytes) would rewrite the ports on reassembly
    assert from_pod(dp, out4(b"\0" * 16, TCP, frag=1, ident=5)) == SHOT
    assert dp.drop_counts()["malformed"][0] == 1


def test_unknown_l4(dp):
    sctp = struct.pack("!HHII", 1, 80, 0, 0)
    assert from_pod(dp, out4(sctp, 132)) == OK  # unenforced
    dp.ct.clear()  # (that packet opened a tracked flow)
    dp.apply([PolicyEntry(POD, EGRESS, proto=TCP)], [(POD, EGRESS)])
    assert from_pod(dp, out4(sctp, 132)) == SHOT
    assert from_pod(dp, out4(b"", 253)) == SHOT  # no L4 bytes at all: still policy, not malformed
    dp.apply([PolicyEntry(POD, EGRESS, proto=132)], [(POD, EGRESS)])
    assert from_pod(dp, out4(sctp, 132)) == OK
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER)], [(POD, EGRESS)])
    assert from_pod(dp, out4(b"", 253)) == OK
    assert dp.drop_counts()["policy"][0] == 2


def test_ct_gc_deletes_only_expired(dp):
    dp.apply([PolicyEntry(POD, EGRESS)], [(POD, EGRESS)])
    for p in range(20):
        assert from_pod(dp, out4(udp(10000 + p, 53), UDP)) == OK
    k, v = dp.ct.dump()
    assert len(k) == 20
    # age half of them into the past
    v["expires_ns"][:10] = 1
    dp.ct.update(k[:10], v[:10])
    assert ct_gc(dp.ct, batch=3) == 10
    assert len(dp.ct) == 10
    assert ct_gc(dp.ct) == 0
    # everything expires "later"
    assert ct_gc(dp.ct, now_ns=time.monotonic_ns() + 61 * 10**9) == 10


def test_expired_entry_is_not_a_reply(dp):
    dp.apply([PolicyEntry(POD, EGRESS)], [(POD, INGRESS), (POD, EGRESS)])
    assert from_pod(dp, out4(udp(5000, 53), UDP)) == OK
    k, v = dp.ct.dump()
    v["expires_ns"][:] = 1
    dp.ct.update(k, v)
    assert to_pod(dp, in4(udp(53, 5000), UDP)) == SHOT


def test_apply_is_minimal_and_switches_enforcement_safely(dp):
    entries = [PolicyEntry(POD, INGRESS, peer=PEER, proto=TCP, port=(1000, 2000))]
    rp, re_ = dp.apply(entries, [(POD, INGRESS)])
    assert rp.added == len(dp.policy) and re_.added == 1
    rp, re_ = dp.apply(entries, [(POD, INGRESS)])
    assert rp.writes == 0 and re_.writes == 0
    rp, re_ = dp.apply([], [])
    assert len(dp.policy) == 0 and len(dp.enforce) == 0
    assert to_pod(dp, in4(tcp(1, 5, SYN), TCP)) == OK


def test_ct_gc_thread_runs_on_its_interval(dp):
    from meshcni.datapath.policy import CTGC
    dp.apply([PolicyEntry(POD, EGRESS)], [(POD, EGRESS)])
    for p in range(5):
        from_pod(dp, out4(udp(20000 + p, 53), UDP))
    k, v = dp.ct.dump()
    v["expires_ns"][:3] = 1
    dp.ct.update(k[:3], v[:3])
    gc = CTGC(dp.ct, interval=0.05, batch=2).start()
    try:
        deadline = time.time() + 5
        while gc.deleted < 3 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        gc.stop()
    assert gc.deleted == 3 and len(dp.ct) == 2


def test_nat_gc_thread_is_the_conntrack_sweeper(dp):
    # mc_nat rows carry the conntrack value's expires_ns: the same sweeper serves, in its own thread
    from meshcni.datapath.nodeport import NatGC
    dp.apply([PolicyEntry(POD, EGRESS)], [(POD, EGRESS)])
    for p in range(4):
        from_pod(dp, out4(udp(21000 + p, 53), UDP))
    k, v = dp.ct.dump()
    v["expires_ns"][:2] = 1
    dp.ct.update(k[:2], v[:2])
    gc = NatGC(dp.ct, interval=0.05).start()
    try:
        assert gc.nat is dp.ct and gc._t.name == "meshcni-nat-gc"
        deadline = time.time() + 5
        while gc.deleted < 2 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        gc.stop()
    assert gc.deleted == 2 and len(dp.ct) == 2


def test_cli_prints_drop_reasons(dp, pin_root, capsys):
    from meshcni.cli import main
    dp.apply([], [(POD, INGRESS)])
    assert to_pod(dp, in4(tcp(1, 80, SYN), TCP)) == SHOT
    assert main(["drops", "--root", pin_root]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split()[1:] for ln in out[1:]}
    assert rows["policy"] == ["1", "54"]
    assert rows["malformed"] == ["0", "0"] and "fragment" in rows and "policy_deny" in rows


def test_pod_to_pod_on_one_node_meets_both_policies(dp):
    """The sender's egress CT entry must not carry the packet past the
    receiver's ingress policy (the CT key's dir). test_run has one ifindex,
    so the endpoint behind it is switched between the two pods."""
    POD_B = 1001
    dp.set_ipcache({PEER4 + "/32": POD_B})
    dp.apply([PolicyEntry(POD, EGRESS, peer=POD_B, proto=TCP, port=80)],
             [(POD, EGRESS), (POD_B, INGRESS)])
    assert from_pod(dp, out4(tcp(40000, 80, SYN), TCP)) == OK     # A's egress: allowed
    dp.set_endpoint(1, POD_B, PEER4)                              # now the hook is B's
    syn_in = eth(ip4(POD4, PEER4, TCP, tcp(40000, 80, SYN)))
    assert to_pod(dp, syn_in) == SHOT                             # B's ingress: no allow
    assert dp.drop_counts()["policy"][0] == 1
    dp.apply([PolicyEntry(POD, EGRESS, peer=POD_B, proto=TCP, port=80),
              PolicyEntry(POD_B, INGRESS, peer=POD, proto=TCP, port=80)],
             [(POD, EGRESS), (POD, INGRESS), (POD_B, INGRESS), (POD_B, EGRESS)])  # replies need CT
    assert to_pod(dp, syn_in) == OK
    # B's reply leaves B (B's from_pod: a reply of B's INGRESS entry)...
    assert from_pod(dp, eth(ip4(PEER4, POD4, TCP, tcp(80, 40000, SYN | ACK)))) == OK
    dp.set_endpoint(1, POD, POD4)
    # ...and enters A (A's to_pod: a reply of A's EGRESS entry)
    assert to_pod(dp, in4(tcp(80, 40000, SYN | ACK), TCP)) == OK
    k, _ = dp.ct.dump()
    assert sorted(int(x) for x in k["dir"]) == [INGRESS, EGRESS]


def test_cidr_identity_with_except_carved_out_and_drops_one_for_one(dp):
    # ipBlock 198.51.100.0/24 except 198.51.100.128/26, as the controller
    # will write it: the CIDR identity's prefixes from cidr.ipblock_prefixes
    from meshcni import cidr
    CIDR_ID = 30001
    prefixes = cidr.ipblock_prefixes({"cidr": "198.51.100.0/24", "except": ["198.51.100.128/26"]})
    dp.set_ipcache({p: CIDR_ID for p in prefixes})
    dp.apply([PolicyEntry(POD, EGRESS, peer=CIDR_ID, proto=TCP, port=443)], [(POD, EGRESS)])
    attempts = {"198.51.100.1": OK, "198.51.100.127": OK, "198.51.100.128": SHOT,
                "198.51.100.150": SHOT, "198.51.100.191": SHOT, "198.51.100.192": OK,
                "198.51.100.255": OK, "203.0.113.1": SHOT}
    with DropEvents(dp.obj.map("mc_events")) as ev:
        ev.poll(0)
        for i, (dst, want) in enumerate(attempts.items()):
            assert from_pod(dp, out4(tcp(6000 + i, 443, SYN), TCP, dst=dst)) == want, dst
        got = ev.poll(100)
    dropped = [d for d, w in attempts.items() if w == SHOT]
    assert dp.drop_counts()["policy"][0] == len(dropped)
    assert sorted(e.daddr for e in got) == sorted(dropped)
    assert {e.dst_identity for e in got} == {2}  # carved out -> world


def test_icmp_of_the_other_family_is_unknown_l4(dp):
    """Found by fuzzing: ICMPv6 types were honoured inside IPv4 (protocol 58), so an IPv4
    packet whose first byte was 135 (neighbour solicitation) passed every policy and reached
    raw sockets; ICMPv4 error types inside IPv6 (next header 1) were treated as errors."""
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP)], [(POD, INGRESS), (POD, EGRESS)])
    ns = icmp(135, rest=b"\0" * 4 + bytes(16))
    assert to_pod(dp, in4(ns, ICMP6)) == SHOT
    assert from_pod(dp, out4(ns, ICMP6)) == SHOT
    # an "ICMPv4 unreachable" in IPv6 quoting a tracked flow is not related to it
    sent6 = ip6(POD6, PEER6, UDP, udp(6000, 7000))
    assert from_pod(dp, eth(sent6, v6=True)) == OK
    unreach = icmp(3, 3, rest=b"\0" * 4 + sent6[:48])
    assert to_pod(dp, eth(ip6(PEER6, POD6, ICMP, unreach), v6=True)) == SHOT
    # the real ones still work
    assert to_pod(dp, eth(ip6("fe80::1", POD6, ICMP6, ns), v6=True)) == OK
    ptb = icmp(2, 0, rest=struct.pack("!I", 1280) + sent6[:48])
    assert to_pod(dp, eth(ip6(PEER6, POD6, ICMP6, ptb), v6=True)) == OK
    assert dp.drop_counts()["policy"][0] == 3


def test_ipv6_extension_chain_past_the_walk_limit_is_malformed(dp):
    """Found by fuzzing: past 4 extension headers the program took the 5th header's type
    for the L4 protocol, so "allow anything to PEER except TCP/22" let TCP/22 through behind
    five destination-options headers (the stack walks them all), and the pseudo-protocol
    opened a conntrack entry that admitted any reply hidden the same way."""
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER),
              PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=22, action=DENY)],
             [(POD, INGRESS), (POD, EGRESS)])

    def chain(n, l4_proto):
        hbh = bytes([60 if n > 1 else l4_proto, 0]) + b"\x01\x04\0\0\0\0"
        dsts = [bytes([60 if i < n - 2 else l4_proto, 0]) + b"\x01\x04\0\0\0\0" for i in range(n - 1)]
        return hbh + b"".join(dsts)

    four = eth(ip6(POD6, PEER6, 0, tcp(1, 22, SYN), ext=chain(4, TCP)), v6=True)
    assert from_pod(dp, four) == SHOT                                   # walked: the deny holds
    assert from_pod(dp, eth(ip6(POD6, PEER6, 0, tcp(1, 80, SYN), ext=chain(4, TCP)), v6=True)) == OK
    five = eth(ip6(POD6, PEER6, 0, tcp(2, 22, SYN), ext=chain(5, TCP)), v6=True)
    assert from_pod(dp, five) == SHOT
    # no pseudo-flow: a reply hidden behind the same chain is not admitted either
    assert to_pod(dp, eth(ip6(PEER6, POD6, 0, udp(9, 9999), ext=chain(5, UDP)), v6=True)) == SHOT
    c = dp.drop_counts()
    assert c["policy_deny"][0] == 1 and c["malformed"][0] == 2


def test_bytes_past_the_ip_length_are_not_read(dp):
    """Found by fuzzing: the program read headers past the IP total length (IPv6 payload
    length), from bytes the receiving stack trims away. An ICMP error whose quoted packet lay
    in that padding passed as related to a tracked flow, though the stack sees no quote."""
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP), PolicyEntry(POD, INGRESS, peer=PEER, proto=UDP, port=53)],
             [(POD, INGRESS), (POD, EGRESS)])
    sent = ip4(POD4, PEER4, UDP, udp(6000, 7000))
    assert from_pod(dp, eth(sent)) == OK
    err = in4(icmp(3, 3, rest=b"\0" * 4 + sent[:28]), ICMP, src="10.9.9.9")
    assert to_pod(dp, err) == OK                                  # related, quote inside the datagram

    def total_length(frame, n):
        b = bytearray(frame)
        b[16:18] = struct.pack("!H", n)
        return bytes(b)

    assert to_pod(dp, total_length(err, 20 + 8)) == SHOT          # quote only in the padding
    # an L4 header past the end: malformed, even where the policy would admit it
    dns = in4(udp(5353, 53), UDP)
    assert to_pod(dp, dns) == OK
    assert to_pod(dp, total_length(dns, 20 + 4)) == SHOT
    # a total length longer than the frame, or shorter than the header: malformed
    assert to_pod(dp, total_length(dns, 200)) == SHOT
    assert to_pod(dp, total_length(dns, 19)) == SHOT
    # 0 = the skb's length (BIG TCP / GSO: the stack does the same), handled as usual
    assert to_pod(dp, total_length(dns, 0)) == OK
    # IPv6: the payload length bounds the extension headers and the L4 header
    dns6 = eth(ip6(PEER6, POD6, UDP, udp(5353, 53)), v6=True)
    assert to_pod(dp, dns6) == OK
    short6 = bytearray(dns6)
    short6[18:20] = struct.pack("!H", 4)
    assert to_pod(dp, bytes(short6)) == SHOT
    c = dp.drop_counts()
    assert c["policy"][0] == 1 and c["malformed"][0] == 4


def test_fragment_ports_are_per_hook(dp):
    """Found by fuzzing: mc_frag was keyed without the hook, so a later fragment sent by the
    pod took the ports of a first fragment that had come *in* on the other hook (dropped
    there), and met the egress policy with them. A datagram is reassembled by whoever its
    fragments travel to: one direction."""
    dp.apply([PolicyEntry(POD, EGRESS, proto=UDP, port=53)], [(POD, INGRESS), (POD, EGRESS)])
    first = in4(udp(5000, 53, b"q" * 64), UDP, mf=True, ident=77)
    assert to_pod(dp, first) == SHOT                                  # ingress: nothing admitted
    later = eth(ip4(PEER4, POD4, UDP, b"\0" * 16, frag=9, ident=77))
    assert from_pod(dp, later) == SHOT                                # no first fragment on this hook
    # the same datagram on one hook still gets its ports
    assert from_pod(dp, eth(ip4(PEER4, POD4, UDP, udp(5000, 53, b"q" * 64), mf=True, ident=78))) == OK
    assert from_pod(dp, eth(ip4(PEER4, POD4, UDP, b"\0" * 16, frag=9, ident=78))) == OK
    c = dp.drop_counts()
    assert c["policy"][0] == 1 and c["fragment"][0] == 1


def test_icmp_pairs_only_what_linux_conntrack_pairs(dp):
    """Non-echo ICMP carried ports 0, so after the pod sent any unpaired ICMP message to a
    peer, any unpaired ICMP message from that peer passed as its reply, and an echo reply the
    pod sent opened the way for the peer's echo request. Now a request (IPv4 echo, timestamp,
    info, address mask; ICMPv6 echo, node information query) opens a flow under its type and
    identifier, only its own reply type with that identifier comes back, replies open
    nothing, and every other non-error message meets the policy each time."""
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER)], [(POD, INGRESS), (POD, EGRESS)])
    # unpaired types: egress admits them, nothing comes back as a reply
    assert from_pod(dp, out4(icmp(9), ICMP)) == OK                    # router advertisement
    assert to_pod(dp, in4(icmp(9), ICMP)) == SHOT
    assert to_pod(dp, in4(icmp(10), ICMP)) == SHOT
    assert to_pod(dp, in4(icmp(14, ident=0), ICMP)) == SHOT           # a reply without request
    # each request type and its own reply, by identifier
    for req, rep in ((8, 0), (13, 14), (15, 16), (17, 18)):
        assert from_pod(dp, out4(icmp(req, ident=500 + req), ICMP)) == OK
        assert to_pod(dp, in4(icmp(rep, ident=501 + req), ICMP)) == SHOT   # other identifier
        others = [r for _q, r in ((8, 0), (13, 14), (15, 16), (17, 18)) if r != rep]
        for other in others:                                           # another pair's reply
            assert to_pod(dp, in4(icmp(other, ident=500 + req), ICMP)) == SHOT
        assert to_pod(dp, in4(icmp(rep, ident=500 + req), ICMP)) == OK
        assert to_pod(dp, in4(icmp(rep, ident=500 + req), ICMP)) == OK     # a second reply
    # a reply the pod sends opens nothing: the peer's request is a new flow
    assert from_pod(dp, out4(icmp(0, ident=9), ICMP)) == OK
    assert to_pod(dp, in4(icmp(8, ident=9), ICMP)) == SHOT
    # IPv6: echo and node information query pair; anything else does not
    out6 = lambda m: eth(ip6(POD6, PEER6, ICMP6, m), v6=True)  # noqa: E731
    in6 = lambda m: eth(ip6(PEER6, POD6, ICMP6, m), v6=True)   # noqa: E731
    assert from_pod(dp, out6(icmp(200))) == OK
    assert to_pod(dp, in6(icmp(200))) == SHOT
    assert to_pod(dp, in6(icmp(129, ident=0))) == SHOT
    assert from_pod(dp, out6(icmp(128, ident=31))) == OK
    assert to_pod(dp, in6(icmp(140, ident=31))) == SHOT
    assert to_pod(dp, in6(icmp(129, ident=31))) == OK
    assert from_pod(dp, out6(icmp(139, ident=32))) == OK
    assert to_pod(dp, in6(icmp(140, ident=32))) == OK
    # only requests left entries: ICMP entries are keyed (identifier, request type)
    keys, _ = dp.obj.map("mc_ct").dump()
    icmp_keys = {(int(k["proto"]), int(k["sport"]), int(k["dport"]))
                 for k in keys if int(k["proto"]) in (ICMP, ICMP6)}
    assert icmp_keys == {(ICMP, 508, 8), (ICMP, 513, 13), (ICMP, 515, 15), (ICMP, 517, 17),
                         (ICMP6, 31, 128), (ICMP6, 32, 139)}


def test_icmp_error_quoting_a_paired_request_is_related(dp):
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER)], [(POD, INGRESS), (POD, EGRESS)])
    sent = ip4(POD4, PEER4, ICMP, icmp(13, ident=44))
    assert from_pod(dp, eth(sent)) == OK
    assert to_pod(dp, in4(icmp(3, 1, rest=b"\0" * 4 + sent[:28]), ICMP, src="10.9.9.9")) == OK
    other = ip4(POD4, PEER4, ICMP, icmp(8, ident=44))                    # same id, another pair
    assert to_pod(dp, in4(icmp(3, 1, rest=b"\0" * 4 + other[:28]), ICMP, src="10.9.9.9")) == SHOT
    unpaired = ip4(POD4, PEER4, ICMP, icmp(9))
    assert from_pod(dp, eth(unpaired)) == OK
    assert to_pod(dp, in4(icmp(3, 1, rest=b"\0" * 4 + unpaired[:28]), ICMP, src="10.9.9.9")) == SHOT


def test_fragmented_icmp_keeps_its_pairing(dp):
    """A later fragment has no ICMP header: it is handled with its first fragment's pairing,
    so the fragments of a large echo reply pass, and those of an unpaired message do not."""
    dp.apply([PolicyEntry(POD, EGRESS, peer=PEER)], [(POD, INGRESS), (POD, EGRESS)])
    assert from_pod(dp, out4(icmp(8, ident=61), ICMP)) == OK
    assert to_pod(dp, in4(icmp(0, ident=61) + b"p" * 64, ICMP, mf=True, ident=5)) == OK
    assert to_pod(dp, in4(b"p" * 64, ICMP, frag=9, ident=5)) == OK
    assert from_pod(dp, out4(icmp(9) + b"p" * 64, ICMP, mf=True, ident=6)) == OK
    assert to_pod(dp, in4(icmp(9) + b"p" * 64, ICMP, mf=True, ident=6)) == SHOT
    assert to_pod(dp, in4(b"p" * 64, ICMP, frag=9, ident=6)) == SHOT


def test_ipv6_later_fragment_behind_another_extension_header(dp):
    """A first fragment with destination options after its fragment header: the later
    fragments' fragment header names dest-opts (60), not UDP, as the next header. They were
    looked up as protocol 60 and dropped; they now meet the first fragment's verdict."""
    dp.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=UDP, port=53),
              PolicyEntry(POD, EGRESS, peer=PEER, proto=UDP, port=53)], [(POD, INGRESS), (POD, EGRESS)])
    dstopts = bytes([UDP, 0]) + b"\x01\x04\0\0\0\0"

    def frag(off, more, ident):
        return struct.pack("!BBHI", 60, 0, (off << 3) | int(more), ident)

    def first(src, dst, dport, ident):
        return eth(ip6(src, dst, 44, udp(5000, dport, b"q" * 64), ext=frag(0, True, ident) + dstopts), v6=True)

    def later(src, dst, ident, off=9, more=False):
        return eth(ip6(src, dst, 44, b"r" * 64, ext=frag(off, more, ident)), v6=True)

    # ingress: admitted by the policy
    assert to_pod(dp, first(PEER6, POD6, 53, 0xA1)) == OK
    assert to_pod(dp, later(PEER6, POD6, 0xA1, 9, True)) == OK
    assert to_pod(dp, later(PEER6, POD6, 0xA1, 18)) == OK
    # denied datagram: its later fragments are denied too
    assert to_pod(dp, first(PEER6, POD6, 54, 0xA2)) == SHOT
    assert to_pod(dp, later(PEER6, POD6, 0xA2)) == SHOT
    # egress, then the fragmented answer admitted by conntrack (the DNS case)
    assert from_pod(dp, first(POD6, PEER6, 53, 0xB1)) == OK
    assert from_pod(dp, later(POD6, PEER6, 0xB1)) == OK
    answer = eth(ip6(PEER6, POD6, 44, udp(53, 5000, b"a" * 64), ext=frag(0, True, 0xC1) + dstopts), v6=True)
    assert to_pod(dp, answer) == OK
    assert to_pod(dp, later(PEER6, POD6, 0xC1)) == OK
    c = dp.drop_counts()
    assert c["policy"][0] == 2 and "fragment" not in c
    keys, vals = dp.obj.map("mc_frag").dump()
    got = {(int(k["id"]), int(k["proto"]), int(v["proto"])) for k, v in zip(keys, vals)}
    assert {(0xA1, 60, UDP), (0xA2, 60, UDP), (0xB1, 60, UDP), (0xC1, 60, UDP)} <= got
