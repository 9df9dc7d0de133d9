# SPDX-License-Identifier: MIT OR Apache-2.0
"""The kernel LPM trie agrees with the pure-Python longest-prefix oracle."""
import ipaddress
import json
import os
import random
import subprocess
import sys

import pytest

from meshcni import cidr
from meshcni.bpf.typed import MeshMaps

pytestmark = pytest.mark.kernel


def test_lpm_lookups_match_the_oracle(pin_root):
    rnd = random.Random(11)
    prefixes = {}
    for _ in range(2000):
        if rnd.random() < 0.7:
            net = ipaddress.ip_network((rnd.getrandbits(32), rnd.randint(8, 32)), strict=False)
        else:
            net = ipaddress.ip_network((rnd.getrandbits(128), rnd.randint(16, 128)), strict=False)
        prefixes[net] = rnd.randint(1, 2**32 - 1)
    # the seed's ipBlock, as the controller will write it
    for p in cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}):
        prefixes[ipaddress.ip_network(p)] = 30002
    with MeshMaps(pin_root) as mm:
        assert mm.ipcache.insert_prefixes(list(prefixes), list(prefixes.values())) == len(prefixes)
        assert len(mm.ipcache) == len(prefixes)
        probes = [ipaddress.ip_address(rnd.getrandbits(32)) for _ in range(500)]
        probes += [ipaddress.ip_address(rnd.getrandbits(128)) for _ in range(200)]
        probes += [n.network_address for n in list(prefixes)[:300]]
        probes += [ipaddress.ip_address("10.96.1.1"), ipaddress.ip_address("10.95.255.255")]
        for ip in probes:
            assert mm.ipcache.lookup_ip(ip) == cidr.longest_prefix_match(prefixes, ip), ip
        stored = mm.ipcache.prefixes()
        assert stored == {str(n): v for n, v in prefixes.items()}


def test_reconcile_prefixes(pin_root):
    with MeshMaps(pin_root) as mm:
        want = {"10.1.0.0/16": 5, "2001:db8::/64": 6, "192.0.2.1/32": 7}
        r = mm.ipcache.reconcile_prefixes(want)
        assert r.added == 3
        want["10.1.0.0/16"] = 8
        del want["192.0.2.1/32"]
        r = mm.ipcache.reconcile_prefixes(want, cache=True)
        assert (r.added, r.changed, r.deleted) == (0, 1, 1)
        assert mm.ipcache.prefixes() == want


def test_cli_on_a_private_bpffs(pin_root):
    env = dict(os.environ, MESHCNI_BPF_ROOT=pin_root)
    run = lambda *a: subprocess.run([sys.executable, "-m", "meshcni.cli", *a], env=env,
                                    capture_output=True, text=True)
    r = run("maps", "create")
    assert r.returncode == 0, r.stderr
    with MeshMaps(pin_root) as mm:
        mm.ipcache.insert_prefixes(["198.51.100.0/24"], [42])
    r = run("maps", "list")
    assert r.returncode == 0 and "mc_ipcache" in r.stdout and "1 entries" in r.stdout
    r = run("maps", "dump", "mc_ipcache")
    row = json.loads(r.stdout.splitlines()[0])
    assert row["key"]["prefixlen"] == 120 and row["value"]["identity"] == 42
    assert row["key"]["addr"] in ("198.51.100.0", "::ffff:198.51.100.0")
    r = run("ipcache", "lookup", "198.51.100.9")
    assert r.returncode == 0 and "identity 42" in r.stdout
    r = run("maps", "dump", "nope")
    assert r.returncode == 2 and "no meshcni map 'nope'" in r.stderr
