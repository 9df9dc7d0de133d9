# SPDX-License-Identifier: MIT OR Apache-2.0
"""Bulk update from Python tuples and dicts on real maps: the compiled packer's
records reach the kernel byte for byte as numpy's would, a bad row anywhere
leaves the map untouched, and reconcile takes the same rows."""
import ipaddress
import random

import numpy as np
import pytest

from meshcni import layout
from meshcni.bpf import BpfMap, open_or_create
from meshcni.bpf.typed import IPCacheMap
from meshcni.bpf.maps import records_py

pytestmark = pytest.mark.kernel


def _rows(n, seed=3):
    rng = random.Random(seed)
    keys, values = [], []
    for i in range(n):
        if i % 3 == 0:
            addr = ipaddress.IPv4Address(0x0A000000 + i)
        elif i % 3 == 1:
            addr = ipaddress.IPv6Address((0x20010DB8 << 96) + i).packed
        else:
            addr = list(ipaddress.IPv6Address((0xFD00 << 112) + i).packed)
        keys.append((addr, rng.randrange(1, 65536), rng.choice((6, 17, 132)), 0, i % 2, 0))
        # dict rows; a field left out is zero
        v = {"backend_id": rng.randrange(1, 1 << 32), "count": rng.randrange(1 << 16)}
        if i % 2:
            v["flags"] = rng.randrange(256)
        values.append(v)
    return keys, values


def _dump_bytes(m):
    k, v = m.dump()
    ks = k.view(np.uint8).reshape(len(k), -1)
    vs = v.view(np.uint8).reshape(len(v), -1)
    return {bytes(a): bytes(b) for a, b in zip(ks, vs)}


@pytest.mark.parametrize("mode", ["batch", "loop"])
def test_svc_rows_from_tuples_and_dicts_reach_the_kernel_as_numpy_packs_them(pin_root, mode):
    spec = layout.map_specs()["mc_svc"]
    with open_or_create(spec, pin_root) as m:
        keys, values = _rows(3000)
        r = m.update(keys, values, mode=mode)
        assert r.written == len(keys)
        want_k = records_py(keys, m.key_dtype).view(np.uint8).reshape(len(keys), -1)
        want_v = np.concatenate([records_py([v], m.value_dtype) for v in values]).view(np.uint8) \
            .reshape(len(values), -1)
        assert _dump_bytes(m) == {bytes(a): bytes(b) for a, b in zip(want_k, want_v)}
        # an IPv4 address object went in as the unified ::ffff:a.b.c.d form
        v4 = m.get((ipaddress.ip_address("::ffff:10.0.0.0").packed,) + keys[0][1:])
        assert v4 is not None


def test_lpm_prefixes_from_tuples(pin_root):
    spec = layout.map_specs()["mc_ipcache"]
    with open_or_create(spec, pin_root, map_class=IPCacheMap) as m:
        nets = [ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(2000)]
        keys = [(96 + n.prefixlen, n.network_address) for n in nets]
        m.update(keys, [(i + 1, 0) for i in range(len(nets))])
        assert m.lookup_ip("10.3.7.9") == 3 * 256 + 7 + 1
        assert m.lookup_ip("10.200.0.1") is None
        assert len(m) == 2000


def test_a_bad_row_at_the_end_writes_nothing(pin_root):
    spec = layout.map_specs()["mc_ipcache"]
    with open_or_create(spec, pin_root) as m:
        m.update([(128, b"\0" * 15 + b"\x01")], [(7, 0)])
        before = _dump_bytes(m)
        keys = [(128, bytes([0] * 14 + [i >> 8, i & 255])) for i in range(2, 10_000)]
        values = [(i, 0) for i in range(len(keys))]
        values[-1] = (1 << 32, 0)
        with pytest.raises(TypeError, match=rf"map mc_ipcache: cannot convert values .*row {len(keys) - 1}, "
                                            r"field 'identity': Python integer 4294967296 out of bounds"):
            m.update(keys, values)
        keys[5] = (129.5, b"\0" * 16)  # a float numpy takes... and a key with 17 bytes it does not
        keys[6] = (128, b"\0" * 17)
        with pytest.raises(TypeError, match=r"cannot convert keys .*row 6, field 'addr'"):
            m.update(keys, [(i, 0) for i in range(len(keys))])
        assert _dump_bytes(m) == before


def test_reconcile_from_tuples_is_idempotent(pin_root):
    spec = layout.map_specs()["mc_backends"]
    with open_or_create(spec, pin_root) as m:
        addr = ipaddress.ip_address("fd00::1")
        want_k = list(range(1, 501))
        want_v = [(addr, 8000 + i, 6, 0, 0) for i in range(500)]
        r = m.reconcile(want_k, want_v, cache=True)
        assert r.added == 500
        assert m.reconcile(want_k, want_v, cache=True).writes == 0
        assert m.reconcile(want_k, want_v).writes == 0  # against a dump too
        v = m.get(42)
        assert bytes(v["addr"]) == addr.packed and int(v["port"]) == 8041


def test_plain_integer_maps_take_lists_of_ints():
    with BpfMap.create(layout.MapSpec("ints", 1, 8, 8, 100_000), key_dtype=np.uint64,
                       value_dtype=np.uint64) as m:
        keys = list(range(1, 50_001))
        m.update(keys, [k * 3 for k in keys])
        k, v = m.dump()
        assert len(k) == 50_000 and np.array_equal(v, k * np.uint64(3))
        m.update([2 ** 64 - 1], [np.uint64(5)])
        assert int(m.get(2 ** 64 - 1)) == 5
