# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni policy list`` / ``conntrack list`` / ``identity list`` on real pins.

The maps are the ones policy.bpf.o pins in a private bpffs; entries go in
the way the agent writes them (PolicyDatapath.apply, set_ipcache) and, for
conntrack, by the datapath itself (BPF_PROG_TEST_RUN of a TCP SYN) plus a
few hand-written rows. The CLI runs as a subprocess, as an operator would.
"""
import ipaddress
import json
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from meshcni.datapath.policy import DENY, EGRESS, INGRESS, PolicyEntry, PolicyProgram, addr16, policy_rows

pytestmark = pytest.mark.kernel
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TCP, UDP, SYN = 6, 17, 0x02
HOST, WORLD, REMOTE = 1, 2, 6
POD, PEER = 16777300, 16777400     # pod identities
CIDR_ID, ATOM = 300, 15728700      # a CIDRIdentity and a CIDR atom
POD4, PEER4 = "10.0.0.1", "10.0.1.1"
POD6, PEER6 = "fd00::1", "fd00::1:1"

ENTRIES = [
    PolicyEntry(POD, INGRESS, peer=PEER, proto=TCP, port=80, rule_id=7),
    PolicyEntry(POD, INGRESS, proto=UDP, port=(8192, 16383), rule_id=8),  # one /3 block
    PolicyEntry(POD, INGRESS, peer=CIDR_ID, proto=TCP, port=(79, 81)),    # 79 + 80-81
    PolicyEntry(POD, EGRESS, peer=HOST),                                  # any proto
    PolicyEntry(POD, EGRESS, peer=PEER, proto=TCP, port=443),
    PolicyEntry(POD, EGRESS, peer=ATOM, proto=TCP, action=DENY),          # any port
]
ENFORCED = [(POD, INGRESS), (POD, EGRESS), (PEER, INGRESS)]
IPCACHE = {POD4 + "/32": POD, POD6 + "/128": POD, PEER4 + "/32": PEER, "192.168.0.0/16": CIDR_ID,
           "192.168.7.0/24": ATOM, "172.16.0.10/32": HOST, "172.16.0.11/32": REMOTE,
           "172.16.0.12/32": REMOTE, "2001:db8::11/128": REMOTE, "0.0.0.0/0": WORLD, "::/0": WORLD}


def cli(*args, check=True):
    env = {**os.environ, "MESHCNI_BPF_ROOT": "/nonexistent-default-root",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    pr = subprocess.run([sys.executable, "-m", "meshcni.cli", *args], capture_output=True, text=True,
                        timeout=120, env=env)
    if check:
        assert pr.returncode == 0, pr.stderr
    return pr


def table(text):
    """Rows of a _print_table table (columns split on 3+ spaces), header first."""
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines() if line.strip()]


def syn_out(src, dst, sport, dport):
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, SYN, 65535, 0, 0)
    l3 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, TCP, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x0800) + l3 + l4


@pytest.fixture
def dp(pin_root):
    prog = PolicyProgram(pin_root)
    d = prog.datapath()
    d.prog = prog
    d.set_endpoint(1, POD, POD4)  # test_run runs on lo (ifindex 1)
    d.set_ipcache(IPCACHE)
    d.apply(ENTRIES, ENFORCED)
    yield d
    d.close()
    prog.close()


def ct_put(d, rows):
    """Hand-written conntrack rows: (proto, src, sport, dst, dport, dir, state, expires_ns, flags)."""
    k = np.zeros(len(rows), d.ct.key_dtype)
    v = np.zeros(len(rows), d.ct.value_dtype)
    for i, (proto, s, sp, t, tp, dr, st, exp, fl) in enumerate(rows):
        k[i]["saddr"] = np.frombuffer(addr16(s), np.uint8)
        k[i]["daddr"] = np.frombuffer(addr16(t), np.uint8)
        k[i]["sport"], k[i]["dport"], k[i]["proto"], k[i]["dir"] = sp, tp, proto, dr
        v[i]["expires_ns"], v[i]["state"], v[i]["flags"] = exp, st, fl
        v[i]["packets"], v[i]["bytes"], v[i]["src_identity"] = 3, 300, PEER
    d.ct.update(k, v)


# ---------------------------------------------------------------- policy list

EXPECTED_POLICY = [
    # (identity, direction, peer, proto, port, port_end, port_prefix, prefixlen, action, rule_id)
    (POD, "egress", HOST, None, None, None, None, 96, "allow", 0),
    (POD, "egress", PEER, "TCP", 443, 443, 16, 128, "allow", 0),
    (POD, "egress", ATOM, "TCP", None, None, None, 112, "deny", 0),
    (POD, "ingress", None, "UDP", 8192, 16383, 3, 115, "allow", 8),
    (POD, "ingress", CIDR_ID, "TCP", 79, 79, 16, 128, "allow", 0),
    (POD, "ingress", CIDR_ID, "TCP", 80, 81, 15, 127, "allow", 0),
    (POD, "ingress", PEER, "TCP", 80, 80, 16, 128, "allow", 7),
]


def test_policy_list_json_decodes_every_row(dp, pin_root):
    got = json.loads(cli("policy", "list", "--root", pin_root, "-o", "json").stdout)
    rows = [(r["identity"], r["direction"], r["peer"], r["proto"], r["port"], r["port_end"], r["port_prefix"],
             r["prefixlen"], r["action"], r["rule_id"]) for r in got["policy"]]
    assert sorted(rows, key=repr) == sorted(EXPECTED_POLICY, key=repr)
    assert len(got["policy"]) == policy_rows(ENTRIES) == len(dp.policy)
    host = next(r for r in got["policy"] if r["peer"] == HOST)
    assert host["peer_name"] == "host" and host["proto_num"] is None
    assert next(r for r in got["policy"] if r["peer"] is None)["peer_name"] == "any"
    assert got["enforce"] == [
        {"identity": POD, "direction": "egress", "enforced": True},
        {"identity": POD, "direction": "ingress", "enforced": True},
        {"identity": PEER, "direction": "ingress", "enforced": True},
    ]


def test_policy_list_table(dp, pin_root):
    out = cli("policy", "list", "--root", pin_root).stdout
    pol, enf = out.split("\n\n")
    rows = table(pol)
    assert rows[0] == ["IDENTITY", "DIRECTION", "PEER", "PROTO", "PORT", "ACTION", "RULE"]
    body = rows[1:]
    assert len(body) == len(EXPECTED_POLICY)
    assert [str(POD), "egress", "1 (host)", "any", "any", "allow", "0"] in body
    assert [str(POD), "egress", str(ATOM), "TCP", "any", "deny", "0"] in body
    assert [str(POD), "ingress", "any", "UDP", "8192-16383", "allow", "8"] in body
    assert [str(POD), "ingress", str(CIDR_ID), "TCP", "79", "allow", "0"] in body
    assert [str(POD), "ingress", str(CIDR_ID), "TCP", "80-81", "allow", "0"] in body
    assert [str(POD), "ingress", str(PEER), "TCP", "80", "allow", "7"] in body
    assert table(enf) == [["IDENTITY", "DIRECTION", "ENFORCED"], [str(POD), "egress", "yes"],
                          [str(POD), "ingress", "yes"], [str(PEER), "ingress", "yes"]]


def test_policy_list_follows_apply(dp, pin_root):
    dp.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=UDP, port=53)], [(POD, INGRESS)])
    got = json.loads(cli("policy", "list", "--root", pin_root, "-o", "json").stdout)
    assert [(r["peer"], r["proto"], r["port"]) for r in got["policy"]] == [(PEER, "UDP", 53)]
    assert got["enforce"] == [{"identity": POD, "direction": "ingress", "enforced": True}]
    dp.apply([], [])
    assert json.loads(cli("policy", "list", "--root", pin_root, "-o", "json").stdout) == \
        {"policy": [], "enforce": []}
    assert table(cli("policy", "list", "--root", pin_root).stdout) == \
        [["IDENTITY", "DIRECTION", "PEER", "PROTO", "PORT", "ACTION", "RULE"],
         ["IDENTITY", "DIRECTION", "ENFORCED"]]


# ---------------------------------------------------------------- conntrack list

def test_conntrack_list_datapath_entry_and_expiry(dp, pin_root):
    # the datapath itself tracks an allowed egress SYN (POD -> PEER:443 is allowed above)
    assert dp.prog.obj.test_run("mc_from_pod", syn_out(POD4, PEER4, 40000, 443))[0] == 0
    now = time.monotonic_ns()
    ct_put(dp, [
        (UDP, PEER6, 5353, POD6, 53, INGRESS, 4, now + 30 * 10**9, 1),   # datagram, seen reply
        (UDP, PEER4, 9999, POD4, 53, INGRESS, 4, now - 5 * 10**9, 0),    # expired
    ])
    got = json.loads(cli("conntrack", "list", "--root", pin_root, "-o", "json").stdout)
    assert len(got) == 2  # the expired one is hidden
    tcp_e = next(r for r in got if r["proto"] == "TCP")
    assert (tcp_e["src"], tcp_e["sport"], tcp_e["dst"], tcp_e["dport"]) == (POD4, 40000, PEER4, 443)
    assert (tcp_e["direction"], tcp_e["state"], tcp_e["src_identity"], tcp_e["packets"], tcp_e["flags"]) == \
        ("egress", "syn_sent", POD, 1, [])
    assert 50 < tcp_e["expires_in_s"] <= 60 and not tcp_e["expired"]
    udp_e = next(r for r in got if r["proto"] == "UDP")
    assert (udp_e["src"], udp_e["sport"], udp_e["dst"], udp_e["dport"], udp_e["direction"]) == \
        (PEER6, 5353, POD6, 53, "ingress")
    assert (udp_e["state"], udp_e["flags"], udp_e["packets"], udp_e["bytes"]) == \
        ("datagram", ["seen_reply"], 3, 300)
    assert 20 < udp_e["expires_in_s"] <= 30

    every = json.loads(cli("conntrack", "list", "--root", pin_root, "--all", "-o", "json").stdout)
    assert len(every) == 3
    dead = next(r for r in every if r["expired"])
    assert (dead["src"], dead["sport"]) == (PEER4, 9999) and -60 < dead["expires_in_s"] < -4

    rows = table(cli("conntrack", "list", "--root", pin_root).stdout)
    assert rows[0] == ["PROTO", "SOURCE", "DESTINATION", "DIR", "STATE", "EXPIRES", "PACKETS", "BYTES",
                       "SRC IDENTITY", "FLAGS"]
    assert len(rows) == 3
    t = next(r for r in rows if r[0] == "TCP")
    assert t[:5] == ["TCP", f"{POD4}:40000", f"{PEER4}:443", "egress", "syn_sent"]
    assert re.fullmatch(r"\d+s", t[5]) and 50 < int(t[5][:-1]) <= 60
    assert t[6:] == ["1", "54", str(POD), "-"]
    u = next(r for r in rows if r[0] == "UDP")
    assert u[:5] == ["UDP", f"[{PEER6}]:5353", f"[{POD6}]:53", "ingress", "datagram"]
    assert u[-1] == "seen_reply"
    rows = table(cli("conntrack", "list", "--root", pin_root, "--all").stdout)
    assert any(r[1] == f"{PEER4}:9999" and r[5].startswith("expired ") for r in rows)


def test_conntrack_list_empty(dp, pin_root):
    assert json.loads(cli("conntrack", "list", "--root", pin_root, "-o", "json").stdout) == []
    assert len(table(cli("conntrack", "list", "--root", pin_root).stdout)) == 1


# ---------------------------------------------------------------- identity list

def test_identity_list(dp, pin_root):
    got = json.loads(cli("identity", "list", "--root", pin_root, "-o", "json").stdout)
    by = {r["identity"]: r for r in got}
    assert [r["identity"] for r in got] == sorted(set(IPCACHE.values()))
    assert {i: (r["name"], r["kind"], r["prefixes"]) for i, r in by.items()} == {
        HOST: ("host", "reserved", 1),
        WORLD: ("world", "reserved", 2),
        REMOTE: ("remote-node", "reserved", 3),
        CIDR_ID: (None, "cidr", 1),
        ATOM: (None, "cidr-atom", 1),
        POD: (None, "pod", 2),
        PEER: (None, "pod", 1),
    }
    assert by[REMOTE]["cidrs"] == ["172.16.0.11/32", "172.16.0.12/32", "2001:db8::11/128"]
    assert by[WORLD]["cidrs"] == ["0.0.0.0/0", "::/0"]

    rows = table(cli("identity", "list", "--root", pin_root).stdout)
    assert rows[0] == ["IDENTITY", "NAME", "KIND", "PREFIXES", "EXAMPLE"]
    assert ["6", "remote-node", "reserved", "3", "172.16.0.11/32 (+2)"] in rows
    assert ["1", "host", "reserved", "1", "172.16.0.10/32"] in rows
    assert [str(POD), "-", "pod", "2", f"{POD4}/32 (+1)"] in rows
    assert len(rows) == 1 + len(by)


# ---------------------------------------------------------------- errors

COMMANDS = [("policy", "list"), ("conntrack", "list"), ("identity", "list")]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_missing_root_is_a_clear_error(cmd, bpffs):
    root = os.path.join(bpffs, "nothing-here")
    pr = cli(*cmd, "--root", root, check=False)
    assert pr.returncode == 1 and pr.stdout == ""
    assert pr.stderr.startswith("meshcni: no pinned map mc_") and root in pr.stderr
    assert "Traceback" not in pr.stderr
    assert not os.path.exists(root)  # a read command creates nothing


@pytest.mark.parametrize("cmd,pin", [(("policy", "list"), "mc_enforce"), (("conntrack", "list"), "mc_ct"),
                                     (("identity", "list"), "mc_ipcache")], ids=lambda c: str(c))
def test_missing_pin_is_a_clear_error(cmd, pin, dp, pin_root):
    os.unlink(os.path.join(pin_root, pin))
    pr = cli(*cmd, "--root", pin_root, "-o", "json", check=False)
    assert pr.returncode == 1 and pr.stdout == ""
    assert os.path.join(pin_root, pin) in pr.stderr and "Traceback" not in pr.stderr
    assert not os.path.exists(os.path.join(pin_root, pin))


def test_wrong_map_at_pin_is_refused(pin_root, bpffs):
    from meshcni.bpf import BpfMap
    from meshcni.layout import map_specs
    os.makedirs(pin_root)
    spec = map_specs()["mc_backends"]  # a hash with a different key/value size at the ct's name
    with BpfMap.create(spec.with_(name="mc_ct", max_entries=4)) as m:
        m.pin(os.path.join(pin_root, "mc_ct"))
    pr = cli("conntrack", "list", "--root", pin_root, check=False)
    assert pr.returncode == 1 and os.path.join(pin_root, "mc_ct") in pr.stderr
    assert "expects lru_hash" in pr.stderr

