# SPDX-License-Identifier: MIT OR Apache-2.0
"""bpf/nodeport.bpf.c under BPF_PROG_TEST_RUN: every translation path on hand-made frames.

test_run hands the program the loopback device (ifindex 1), so "lo" is
configured as the uplink. Frames carry correct checksums and every output is
parsed with its checksums checked (helpers/frames.py). The FIB lookup of a
redirect reads the test process's routes only; the verdict is what is checked.
"""
import os
import struct
import sys
import time

import pytest

from meshcni.bpf import MeshMaps
from meshcni.datapath.nodeport import Device, NodePortDatapath, UplinkConfig
from meshcni.datapath.policy import drop_counts

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
from frames import ACK, ICMP, ICMP6, SYN, TCP, UDP, Parsed, csum, eth, ip, l4, packet  # noqa: E402
from svcrows import write_frontend, write_ipcache, write_src_range  # noqa: E402

pytestmark = pytest.mark.kernel

OK, SHOT, REDIRECT = 0, 2, 7
NODE, NODE6 = "192.0.2.10", "2001:db8:a::10"
CLIENT, CLIENT6 = "198.51.100.7", "2001:db8:c::7"
LOCAL_POD, REMOTE_POD = "10.1.1.5", "10.1.2.7"
LOCAL_POD6, REMOTE_POD6 = "fd00:1:1::5", "fd00:1:2::7"
OTHER_NODE = "192.0.2.11"
OUTSIDE = "203.0.113.9"
PORT_MIN, PORT_MAX = 61000, 65535


@pytest.fixture
def np_(pin_root):
    maps = MeshMaps(pin_root)
    d = NodePortDatapath(pin_root, maps)
    d.write_config(UplinkConfig(
        devices=[Device("lo", NODE, NODE6)],
        local_pod_cidrs=["10.1.1.0/24", "fd00:1:1::/64"], pod_cidrs=["10.1.0.0/16", "fd00:1::/48"],
        service_cidrs=["10.96.0.0/12"], non_masquerade_cidrs=["192.168.0.0/16"]))
    write_ipcache(maps, {OTHER_NODE + "/32": 6, NODE + "/32": 1})
    write_frontend(maps, NODE, 30080, "tcp", 1, [(LOCAL_POD, 8080)], flags=("nodeport",))
    write_frontend(maps, NODE, 30081, "tcp", 2, [(REMOTE_POD, 8080)], flags=("nodeport",))
    write_frontend(maps, NODE, 30053, "udp", 3, [(REMOTE_POD, 53)], flags=("nodeport",))
    write_frontend(maps, NODE6, 30081, "tcp", 4, [(REMOTE_POD6, 8080)], flags=("nodeport",))
    write_frontend(maps, NODE6, 30080, "udp", 5, [(LOCAL_POD6, 53)], flags=("nodeport",))
    d.maps_ = maps
    yield d
    d.close()
    maps.close()


def run_in(d, frame):
    rc, out, _ = d.obj.test_run("mc_uplink_in", frame)
    return rc, out


def run_out(d, frame):
    rc, out, _ = d.obj.test_run("mc_uplink_out", frame)
    return rc, out


def test_local_backend_dnat_keeps_the_client_and_the_reply_is_reverse_dnated(np_):
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40000, 30080, flags=SYN))
    p = Parsed(out)
    assert rc == OK
    assert (p.src, p.sport, p.dst, p.dport) == (CLIENT, 40000, LOCAL_POD, 8080)
    rc, out = run_out(np_, packet(LOCAL_POD, CLIENT, TCP, 8080, 40000, flags=SYN | ACK))
    p = Parsed(out)
    assert rc == OK
    assert (p.src, p.sport, p.dst, p.dport) == (NODE, 30080, CLIENT, 40000)
    # later packets of the flow take the same translation
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40000, 30080, flags=ACK, payload=b"hello"))
    p = Parsed(out)
    assert (rc, p.dst, p.dport) == (OK, LOCAL_POD, 8080)


def test_remote_backend_dnat_snat_and_reply(np_):
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40001, 30081, flags=SYN))
    p = Parsed(out)
    assert rc == REDIRECT
    assert (p.src, p.dst, p.dport) == (NODE, REMOTE_POD, 8080)
    assert PORT_MIN <= p.sport <= PORT_MAX
    natport = p.sport
    rc, out = run_in(np_, packet(REMOTE_POD, NODE, TCP, 8080, natport, flags=SYN | ACK))
    p = Parsed(out)
    assert rc == REDIRECT
    assert (p.src, p.sport, p.dst, p.dport) == (NODE, 30081, CLIENT, 40001)
    # the same client flow keeps its port; another client port gets another
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40001, 30081, flags=ACK))
    assert Parsed(out).sport == natport
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40002, 30081, flags=SYN))
    assert Parsed(out).sport != natport


def test_udp_snat_with_and_without_checksum(np_):
    for zero in (False, True):
        rc, out = run_in(np_, packet(CLIENT, NODE, UDP, 5000 + zero, 30053, zero_udp_csum=zero))
        p = Parsed(out)
        assert rc == REDIRECT and (p.src, p.dst, p.dport) == (NODE, REMOTE_POD, 53)
        assert (p.payload[6:8] == b"\0\0") == zero  # a zero checksum stays "none"
        rc, out = run_in(np_, packet(REMOTE_POD, NODE, UDP, 53, p.sport, zero_udp_csum=zero))
        q = Parsed(out)
        assert rc == REDIRECT and (q.src, q.sport, q.dst, q.dport) == (NODE, 30053, CLIENT, 5000 + zero)


def test_ipv6_snat_and_dnat(np_):
    rc, out = run_in(np_, packet(CLIENT6, NODE6, TCP, 40000, 30081, flags=SYN))
    p = Parsed(out)
    assert rc == REDIRECT and (p.src, p.dst, p.dport) == (NODE6, REMOTE_POD6, 8080)
    rc, out = run_in(np_, packet(REMOTE_POD6, NODE6, TCP, 8080, p.sport, flags=SYN | ACK))
    q = Parsed(out)
    assert rc == REDIRECT and (q.src, q.sport, q.dst, q.dport) == (NODE6, 30081, CLIENT6, 40000)
    rc, out = run_in(np_, packet(CLIENT6, NODE6, UDP, 7000, 30080))
    p = Parsed(out)
    assert rc == OK and (p.src, p.dst, p.dport) == (CLIENT6, LOCAL_POD6, 53)
    rc, out = run_out(np_, packet(LOCAL_POD6, CLIENT6, UDP, 53, 7000))
    q = Parsed(out)
    assert rc == OK and (q.src, q.sport) == (NODE6, 30080)


def test_etp_local_never_snats(np_):
    # eTP Local's EXT scope holds this node's backends; even a backend outside
    # the local pod CIDR is only DNATed, the client's address kept
    write_frontend(np_.maps_, NODE, 30082, "tcp", 6, [(REMOTE_POD, 8080)], flags=("nodeport", "etp_local",
                                                                                  "two_scopes"))
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40003, 30082, flags=SYN))
    p = Parsed(out)
    assert rc == OK and (p.src, p.sport, p.dst, p.dport) == (CLIENT, 40003, REMOTE_POD, 8080)


def test_no_backends_drop_and_source_ranges(np_):
    write_frontend(np_.maps_, NODE, 30083, "tcp", 7, [], flags=("nodeport", "etp_local", "two_scopes"))
    write_frontend(np_.maps_, "198.51.100.100", 80, "tcp", 8, [(LOCAL_POD, 8080)], flags=("external", "src_ranges"))
    write_src_range(np_.maps_, 8, "198.51.100.0/28")
    assert run_in(np_, packet(CLIENT, NODE, TCP, 40004, 30083))[0] == SHOT
    rc, out = run_in(np_, packet(CLIENT, "198.51.100.100", TCP, 40005, 80))
    assert rc == OK and Parsed(out).dst == LOCAL_POD
    assert run_in(np_, packet("198.51.100.77", "198.51.100.100", TCP, 40005, 80))[0] == SHOT
    drops = drop_counts(np_.maps_.map("mc_drops"))
    assert drops["no_backend"][0] == 1 and drops["source_range"][0] == 1


def test_wildcard_and_clusterip_rows_are_not_the_uplinks(np_):
    write_frontend(np_.maps_, "0.0.0.0", 30090, "tcp", 9, [(LOCAL_POD, 8080)], flags=("nodeport",))
    write_frontend(np_.maps_, "10.96.0.10", 80, "tcp", 10, [(LOCAL_POD, 8080)])
    for dst, port in ((NODE, 30090), ("10.96.0.10", 80)):
        frame = packet(CLIENT, dst, TCP, 40006, port)
        assert run_in(np_, frame) == (OK, frame)


def test_affinity_keyed_by_client_address(np_):
    bs = [("10.1.1.%d" % i, 8080) for i in range(10, 18)]
    write_frontend(np_.maps_, NODE, 30084, "tcp", 11, bs, flags=("nodeport", "affinity"), affinity_timeout=60)
    got = {Parsed(run_in(np_, packet(CLIENT, NODE, TCP, 41000 + i, 30084))[1]).dst for i in range(20)}
    assert len(got) == 1
    others = {Parsed(run_in(np_, packet("198.51.100.%d" % (20 + i), NODE, TCP, 41000, 30084))[1]).dst
              for i in range(20)}
    assert len(others) > 1


def test_masquerade_and_reply(np_):
    rc, out = run_out(np_, packet(LOCAL_POD, OUTSIDE, TCP, 61234, 80, flags=SYN))
    p = Parsed(out)
    assert rc == OK and (p.src, p.dst, p.dport) == (NODE, OUTSIDE, 80)
    assert p.sport == 61234  # kept when free and in the NAT range
    rc, out = run_out(np_, packet(LOCAL_POD, OUTSIDE, UDP, 5353, 53))
    u = Parsed(out)
    assert rc == OK and u.src == NODE and PORT_MIN <= u.sport <= PORT_MAX
    rc, out = run_in(np_, packet(OUTSIDE, NODE, TCP, 80, p.sport, flags=SYN | ACK))
    q = Parsed(out)
    assert rc == OK and (q.src, q.sport, q.dst, q.dport) == (OUTSIDE, 80, LOCAL_POD, 61234)
    rc, out = run_in(np_, packet(OUTSIDE, NODE, UDP, 53, u.sport))
    q = Parsed(out)
    assert rc == OK and (q.dst, q.dport) == (LOCAL_POD, 5353)


def test_no_masquerade_inside_the_cluster_or_when_off(np_):
    for dst in (REMOTE_POD, "10.96.0.10", "192.168.3.4", OTHER_NODE, NODE):
        frame = packet(LOCAL_POD, dst, TCP, 50000, 80)
        assert run_out(np_, frame) == (OK, frame), dst
    frame = packet("10.9.9.9", OUTSIDE, TCP, 50000, 80)  # not a pod of this node
    assert run_out(np_, frame) == (OK, frame)
    np_.write_config(UplinkConfig(devices=[Device("lo", NODE, NODE6, masquerade=False)],
                                  local_pod_cidrs=["10.1.1.0/24"], pod_cidrs=["10.1.0.0/16"]))
    frame = packet(LOCAL_POD, OUTSIDE, TCP, 50001, 80)
    assert run_out(np_, frame) == (OK, frame)


def test_masquerade_icmp_echo(np_):
    rc, out = run_out(np_, packet(LOCAL_POD, OUTSIDE, ICMP, icmp_type=8, ident=777))
    p = Parsed(out)
    assert rc == OK and p.src == NODE and PORT_MIN <= p.ident <= PORT_MAX
    rc, out = run_in(np_, packet(OUTSIDE, NODE, ICMP, icmp_type=0, ident=p.ident))
    q = Parsed(out)
    assert rc == OK and (q.dst, q.ident, q.icmp_type) == (LOCAL_POD, 777, 0)


def _icmp_err(src, dst, quoted: bytes, v6=False):
    """An ICMP error (port unreachable) from src to dst quoting an IP packet."""
    proto = ICMP6 if v6 else ICMP
    body = b"\0\0\0\0" + quoted[:48 if v6 else 28]
    return eth(ip(src, dst, proto, l4(src, dst, proto, icmp_type=1 if v6 else 3, icmp_body=body)))


def test_icmp_error_for_a_snat_flow_reaches_the_client_translated(np_):
    rc, out = run_in(np_, packet(CLIENT, NODE, UDP, 5100, 30053))
    natport = Parsed(out).sport
    sent = out[14:]  # what this node sent to the backend
    rc, out = run_in(np_, _icmp_err(REMOTE_POD, NODE, sent))
    p = Parsed(out)
    assert rc == REDIRECT and (p.src, p.dst) == (NODE, CLIENT)
    inner = p.inner()  # the client's own packet as it sent it
    assert (inner.src, inner.sport, inner.dst, inner.dport) == (CLIENT, 5100, NODE, 30053)
    assert natport != 5100


def test_icmp_error_from_a_local_backend_is_reverse_dnated(np_):
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40010, 30080, flags=SYN))
    received = out[14:]  # what the pod got
    rc, out = run_out(np_, _icmp_err(LOCAL_POD, CLIENT, received))
    p = Parsed(out)
    assert rc == OK and (p.src, p.dst) == (NODE, CLIENT)
    inner = p.inner()
    assert (inner.src, inner.sport, inner.dst, inner.dport) == (CLIENT, 40010, NODE, 30080)


def test_icmp_error_for_a_masqueraded_flow_reaches_the_pod(np_):
    rc, out = run_out(np_, packet(LOCAL_POD, OUTSIDE, UDP, 5400, 9999))
    sent = out[14:]
    rc, out = run_in(np_, _icmp_err("203.0.113.1", NODE, sent))
    p = Parsed(out)
    assert rc == OK and (p.src, p.dst) == ("203.0.113.1", LOCAL_POD)
    inner = p.inner()
    assert (inner.src, inner.sport, inner.dst, inner.dport) == (LOCAL_POD, 5400, OUTSIDE, 9999)


def test_icmpv6_error_for_a_snat_flow(np_):
    rc, out = run_in(np_, packet(CLIENT6, NODE6, TCP, 40020, 30081, flags=SYN))
    rc, out = run_in(np_, _icmp_err(REMOTE_POD6, NODE6, out[14:], v6=True))
    p = Parsed(out)
    assert rc == REDIRECT and p.dst == CLIENT6
    inner = p.inner()
    assert (inner.src, inner.sport, inner.dst, inner.dport) == (CLIENT6, 40020, NODE6, 30081)


def test_fragments_of_a_masqueraded_datagram_follow_the_first(np_):
    payload = b"y" * 40
    udp_all = l4(LOCAL_POD, OUTSIDE, UDP, 5500, 53, payload=payload)
    first = eth(ip(LOCAL_POD, OUTSIDE, UDP, udp_all[:24], ident=99, mf=True))
    later = eth(ip(LOCAL_POD, OUTSIDE, UDP, udp_all[24:], ident=99, frag=3))
    rc, out = run_out(np_, first)
    p = Parsed(out, check_l4=False)
    assert rc == OK and p.src == NODE
    natport = p.sport
    rc, out2 = run_out(np_, later)
    q = Parsed(out2, check_l4=False)
    assert rc == OK and q.src == NODE and q.frag == 3
    # reassembled, the datagram's checksum is right for the new addresses and port
    whole = out[14 + 20:] + out2[14 + 20:]
    assert struct.unpack("!H", whole[:2])[0] == natport
    ph = bytes(map(int, NODE.split("."))) + bytes(map(int, OUTSIDE.split("."))) + struct.pack("!BBH", 0, UDP,
                                                                                              len(whole))
    assert csum(ph + whole) == 0
    # a later fragment whose first was never seen passes untouched
    stray = eth(ip(LOCAL_POD, OUTSIDE, UDP, b"z" * 16, ident=100, frag=3))
    assert run_out(np_, stray) == (OK, stray)


def test_nat_gc_removes_expired_entries_only(np_):
    run_out(np_, packet(LOCAL_POD, OUTSIDE, UDP, 5600, 53))                # UDP: 60 s
    _, out = run_out(np_, packet(LOCAL_POD, OUTSIDE, TCP, 5601, 80, flags=SYN))
    run_in(np_, packet(OUTSIDE, NODE, TCP, 80, Parsed(out).sport, flags=SYN | ACK))  # established: 6 h
    assert len(np_.nat) == 4
    now = time.monotonic_ns()
    assert np_.gc(now) == 0 and len(np_.nat) == 4
    assert np_.gc(now + 120 * 10 ** 9) == 2  # the UDP pair
    keys, vals = np_.nat.dump()
    assert set(keys["proto"].tolist()) == {TCP} and len(keys) == 2
    assert np_.gc(now + 7 * 3600 * 10 ** 9) == 2 and len(np_.nat) == 0


def test_tcp_timeouts_follow_the_connection(np_):
    def expiry(proto):
        keys, vals = np_.nat.dump()
        return sorted(int(v) for v in vals["expires_ns"][keys["proto"] == proto])

    run_in(np_, packet(CLIENT, NODE, TCP, 40100, 30080, flags=SYN))
    now = time.monotonic_ns()
    assert all(now < e <= now + 61 * 10 ** 9 for e in expiry(TCP))          # SYN: 60 s
    run_out(np_, packet(LOCAL_POD, CLIENT, TCP, 8080, 40100, flags=SYN | ACK))
    assert all(e > now + 3600 * 10 ** 9 for e in expiry(TCP))               # established: 6 h
    run_in(np_, packet(CLIENT, NODE, TCP, 40100, 30080, flags=0x04))        # RST
    now = time.monotonic_ns()
    assert all(e <= now + 11 * 10 ** 9 for e in expiry(TCP))                # closing: 10 s
    run_out(np_, packet(LOCAL_POD, CLIENT, TCP, 8080, 40100, flags=ACK))    # stays closing
    assert all(e <= now + 11 * 10 ** 9 for e in expiry(TCP))
    # the client reuses its port for a new connection: a SYN opens it again
    rc, out = run_in(np_, packet(CLIENT, NODE, TCP, 40100, 30080, flags=SYN))
    assert rc == OK and Parsed(out).dst == LOCAL_POD
    assert all(e > now + 30 * 10 ** 9 for e in expiry(TCP))


def test_replies_of_inbound_connections_to_a_pod_keep_its_address(np_):
    """Pod IPs are routed: an outside host may open a connection to a pod directly. The pod's
    replies are no new flows and are never masqueraded (TCP: only a SYN opens a masquerade;
    UDP: the pod veth's conntrack entry of the inbound flow says it is a reply)."""
    import numpy as np

    from meshcni import layout
    from svcrows import addr16
    frame = packet(LOCAL_POD, OUTSIDE, TCP, 80, 50123, flags=SYN | ACK)
    assert run_out(np_, frame) == (OK, frame)
    ct = np_.maps_.map("mc_ct")
    k = np.zeros(1, layout.dtype_of("mc_ct_key"))
    k[0]["saddr"] = np.frombuffer(addr16(OUTSIDE), np.uint8)
    k[0]["daddr"] = np.frombuffer(addr16(LOCAL_POD), np.uint8)
    k[0]["sport"], k[0]["dport"], k[0]["proto"], k[0]["dir"] = 5353, 53, UDP, 0  # entered the pod (INGRESS)
    v = np.zeros(1, layout.dtype_of("mc_ct"))
    v[0]["expires_ns"] = time.monotonic_ns() + 60 * 10 ** 9
    v[0]["state"] = 4
    ct.update(k, v)
    frame = packet(LOCAL_POD, OUTSIDE, UDP, 53, 5353)
    assert run_out(np_, frame) == (OK, frame)
    # the same pod opening its own UDP flow to that host is masqueraded
    assert Parsed(run_out(np_, packet(LOCAL_POD, OUTSIDE, UDP, 53, 5354))[1]).src == NODE
