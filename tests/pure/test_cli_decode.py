# SPDX-License-Identifier: MIT OR Apache-2.0
"""The decoders behind ``meshcni bpf policy/ct list`` and ``identity list`` (no kernel: numpy rows).

The kernel-tier twin (tests/kernel/test_cli_inspect.py) runs the commands on
real pins; here the decoding is checked against the encoder it inverts.
"""
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import noext

noext.require_extension("the decoders read rows in layout.h's dtypes, read from meshcni._libbpf")

from meshcni import layout  # noqa: E402
from meshcni.bpf import decode  # noqa: E402
from meshcni.datapath.policy import ALLOW, DENY, EGRESS, INGRESS, PolicyEntry, addr16, build_policy  # noqa: E402

pytestmark = pytest.mark.pure
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
C = layout.constants()


def test_lpm_bits_agree_with_the_prefix_constants():
    peer = decode.lpm_bits("mc_policy_key", C["MC_POLICY_PREFIX_PEER"])
    assert (peer["identity"], peer["dir"], peer["peer"], peer["proto"], peer["port"]) == (32, 8, 32, 0, 0)
    proto = decode.lpm_bits("mc_policy_key", C["MC_POLICY_PREFIX_PROTO"])
    assert (proto["peer"], proto["proto"], proto["port"]) == (32, 8, 0)
    full = decode.lpm_bits("mc_policy_key", C["MC_POLICY_KEY_BITS"])
    assert full["port"] == 16 and sum(full.values()) == C["MC_POLICY_KEY_BITS"]
    ipc = decode.lpm_bits("mc_ipcache_key", 120)
    assert ipc == {"addr": 120}


def _reencode(r):
    """A decoded row back to build_policy's key tuple."""
    d = INGRESS if r["direction"] == "ingress" else EGRESS
    port = r["port"] or 0
    return (r["prefixlen"], r["identity"], d, r["peer"] or 0, r["proto_num"] or 0, port)


def test_decode_policy_inverts_build_policy():
    rnd = random.Random(7)
    entries = []
    for _ in range(300):
        proto = rnd.choice([None, 6, 17, 132])
        port = None
        if proto is not None:
            port = rnd.choice([None, rnd.randrange(65536)] + [tuple(sorted(rnd.sample(range(65536), 2)))])
        entries.append(PolicyEntry(rnd.choice([16777216, 16777300, 5000]), rnd.choice([INGRESS, EGRESS]),
                                   peer=rnd.choice([None, 1, 6, 300, 16777400]), proto=proto, port=port,
                                   action=rnd.choice([ALLOW, ALLOW, DENY]), rule_id=rnd.randrange(100)))
    pk, pv, ek, ev = build_policy(entries, [(16777216, INGRESS), (5000, EGRESS)])
    rows = decode.decode_policy(pk, pv)
    assert len(rows) == len(pk)
    want = {tuple(int(k[f]) for f in ("prefixlen", "identity", "dir", "peer", "proto", "port")):
            ("allow" if v["action"] == ALLOW else "deny", int(v["rule_id"])) for k, v in zip(pk, pv)}
    assert {_reencode(r): (r["action"], r["rule_id"]) for r in rows} == want
    # every range entry is exactly covered by the decoded blocks of its key
    for e in entries:
        if not isinstance(e.port, tuple):
            continue
        d = "ingress" if e.direction == INGRESS else "egress"
        ports = set()
        for r in rows:
            if (r["identity"], r["direction"], r["peer"], r["proto_num"]) == (e.identity, d, e.peer, e.proto) \
                    and r["port"] is not None:
                assert r["port_end"] - r["port"] + 1 == 1 << (16 - r["port_prefix"])
                ports |= set(range(r["port"], r["port_end"] + 1))
        assert set(range(e.port[0], e.port[1] + 1)) <= ports
    assert decode.decode_enforce(ek, ev) == [{"identity": 5000, "direction": "egress", "enforced": True},
                                          {"identity": 16777216, "direction": "ingress", "enforced": True}]


def test_decode_ct():
    kdt, vdt = layout.dtype_of("mc_ct_key"), layout.dtype_of("mc_ct")
    k, v = np.zeros(3, kdt), np.zeros(3, vdt)
    now = 10**15
    for i, (s, t, sp, dp, proto, d, st, exp, fl) in enumerate([
            ("10.0.0.1", "10.0.1.1", 40000, 443, 6, EGRESS, C["MC_CT_STATE_ESTABLISHED"], now + 21600 * 10**9, 1),
            ("fd00::2", "fd00::1", 7, 8, 58, INGRESS, C["MC_CT_STATE_DATAGRAM"], now + 10**9 // 2, 0),
            ("10.0.0.9", "10.0.0.1", 1, 2, 17, INGRESS, C["MC_CT_STATE_DATAGRAM"], now - 10**9, 0)]):
        k[i]["saddr"], k[i]["daddr"] = np.frombuffer(addr16(s), np.uint8), np.frombuffer(addr16(t), np.uint8)
        k[i]["sport"], k[i]["dport"], k[i]["proto"], k[i]["dir"] = sp, dp, proto, d
        v[i]["expires_ns"], v[i]["state"], v[i]["flags"], v[i]["src_identity"] = exp, st, fl, 16777300
    live = decode.decode_ct(k, v, now)
    assert [(r["proto"], r["src"], r["sport"], r["dst"], r["dport"], r["direction"], r["state"], r["flags"],
             r["expires_in_s"]) for r in live] == [
        ("TCP", "10.0.0.1", 40000, "10.0.1.1", 443, "egress", "established", ["seen_reply"], 21600.0),
        ("ICMPv6", "fd00::2", 7, "fd00::1", 8, "ingress", "datagram", [], 0.5),
    ]
    every = decode.decode_ct(k, v, now, include_expired=True)
    assert len(every) == 3 and [(r["proto"], r["expired"]) for r in every] == [("TCP", False), ("UDP", True), ("ICMPv6", False)]
    assert decode.hostport("fd00::2", 7) == "[fd00::2]:7" and decode.hostport("10.0.0.1", 80) == "10.0.0.1:80"


def test_reserved_names_are_the_documented_ones():
    assert decode.reserved_names() == {0: "unknown", 1: "host", 2: "world", 6: "remote-node"}
    assert [decode.identity_kind(i) for i in (1, 255, 256, 15728639, 15728640, 16777215, 16777216, 2**32 - 1)] == \
        ["reserved", "reserved", "cidr", "cidr", "cidr-atom", "cidr-atom", "pod", "pod"]


def test_group_identities():
    rows = decode.group_identities({"10.0.0.0/8": 300, "::/0": 2, "0.0.0.0/0": 2, "fd00::/64": 300,
                                 "10.1.0.0/16": 300})
    assert rows == [
        {"identity": 2, "name": "world", "kind": "reserved", "prefixes": 2, "cidrs": ["0.0.0.0/0", "::/0"]},
        {"identity": 300, "name": None, "kind": "cidr", "prefixes": 3,
         "cidrs": ["10.0.0.0/8", "10.1.0.0/16", "fd00::/64"]},
    ]


@pytest.mark.parametrize("cmd,mentions", [("policy", "mc_enforce"), ("conntrack", "--all"),
                                          ("identity", "remote-node")])
def test_help(cmd, mentions):
    pr = subprocess.run([sys.executable, "-m", "meshcni.cli", cmd, "list", "--help"], capture_output=True,
                        text=True, timeout=60, env=ENV)
    assert pr.returncode == 0, pr.stderr
    assert "--root" in pr.stdout and "--output" in pr.stdout and mentions in pr.stdout
    top = subprocess.run([sys.executable, "-m", "meshcni.cli", "--help"], capture_output=True, text=True,
                         timeout=60, env=ENV).stdout
    assert f"meshcni {cmd} list" in top
