# SPDX-License-Identifier: MIT OR Apache-2.0
"""Bulk map programming against the real kernel: every meshcni map, both
paths (batch and per-element loop), and every error the library promises."""
import errno
import os
import socket

import numpy as np
import pytest

from meshcni import layout
from meshcni.bpf import EXIST, NOEXIST, BpfMap, open_or_create
from meshcni.errors import BpfError, MapFullError, PartialFailureError
from meshcni.layout import MapSpec

pytestmark = pytest.mark.kernel

KV_MAPS = [n for n, s in layout.map_specs().items() if s.key_struct]


def random_records(dtype, n, rng, unique_field_rows=True):
    raw = rng.integers(0, 256, size=(n, dtype.itemsize), dtype=np.uint8)
    return np.ascontiguousarray(raw).view(dtype).reshape(-1)


def valid_keys(spec, n, rng):
    """n distinct keys the kernel accepts for this map type."""
    dt = layout.dtype_of(spec.key_struct)
    keys = np.zeros(n, dt)
    if spec.type == 6:  # per-CPU array: indices
        keys[dt.names[0]] = np.arange(n) % spec.max_entries
        return keys
    raw = random_records(dt, n, rng)
    keys[:] = raw
    if spec.type == 11:  # LPM: a valid, full-length prefix
        keys["prefixlen"] = (dt.itemsize - 4) * 8
    # distinct: overwrite the first 4 bytes after any prefixlen with the row number
    first = dt.names[1] if spec.type == 11 else dt.names[0]
    view = keys.view(np.uint8).reshape(n, -1)
    off = dt.fields[first][1]
    view[:, off:off + 4] = np.arange(n, dtype=">u4").view(np.uint8).reshape(n, 4)
    return keys


@pytest.mark.parametrize("name", KV_MAPS)
@pytest.mark.parametrize("mode", ["batch", "loop"])
def test_round_trip_every_meshcni_map(pin_root, name, mode):
    spec = layout.map_specs()[name]
    rng = np.random.default_rng(7)
    n = min(500, spec.max_entries)
    with open_or_create(spec, pin_root) as m:
        keys = valid_keys(spec, n, rng)
        if spec.percpu:
            vals = np.ascontiguousarray(random_records(m.value_dtype, n * m.ncpus, rng)).reshape(n, m.ncpus)
        else:
            vals = random_records(m.value_dtype, n, rng)
        r = m.update(keys, vals, mode=mode)
        assert r.written == n and r.used_batch == (mode == "batch")
        got_k, got_v = m.dump(mode=mode)
        if spec.type == 6:
            assert len(got_k) == spec.max_entries
        else:
            assert len(got_k) == n
        order = {bytes(k): i for i, k in enumerate(keys.view(np.uint8).reshape(n, -1))}
        for k, v in zip(got_k.view(np.uint8).reshape(len(got_k), -1), got_v):
            i = order.get(bytes(k))
            if i is not None:
                assert bytes(np.ascontiguousarray(v)) == bytes(np.ascontiguousarray(vals[i]))
        found_v, found = m.lookup(keys)
        assert found.all()
        assert found_v.tobytes() == np.ascontiguousarray(vals).tobytes()
        if spec.type != 6:
            m.delete(keys, mode=mode)
            assert len(m) == 0
    assert os.path.exists(os.path.join(pin_root, name))


def test_ringbuf_map_is_created_and_pinned(pin_root):
    spec = layout.map_specs()["mc_events"]
    with open_or_create(spec, pin_root) as m:
        info = m.info()
        assert info.type == 27 and info.max_entries == spec.max_entries


def scratch(max_entries=64, type=1, ks=8, vs=8, flags=0):
    return BpfMap.create(MapSpec("scratch", type, ks, vs, max_entries, flags),
                         key_dtype=np.uint64, value_dtype=np.uint64)


def test_tuples_and_scalars_are_accepted():
    spec = layout.map_specs()["mc_backends"]
    with BpfMap.create(spec) as m:
        addr = socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1")
        m.update([5, 6], [(addr, 8080, 6, 0, 0), (addr, 8081, 6, 0, 0)])
        v = m.get(6)
        assert int(v["port"]) == 8081 and bytes(v["addr"]) == addr
        assert m.get(7) is None
        with pytest.raises(TypeError, match="mc_backends"):
            m.update([1], [("nope",)])


def test_noexist_reports_each_existing_row_and_writes_the_rest():
    with scratch() as m:
        m.update(np.array([1, 3], np.uint64), np.array([10, 30], np.uint64))
        keys = np.array([0, 1, 2, 3, 4], np.uint64)
        with pytest.raises(PartialFailureError) as ei:
            m.update(keys, keys * 100, flags=NOEXIST)
        e = ei.value
        assert e.written == 3 and e.failed_rows == [1, 3]
        assert {f.errno_name for f in e.failures} == {"EEXIST"}
        assert "map scratch" in str(e) and "EEXIST at rows [1, 3]" in str(e)
        k, v = m.dump()
        assert dict(zip(k.tolist(), v.tolist())) == {0: 0, 1: 10, 2: 200, 3: 30, 4: 400}


def test_exist_fails_missing_rows():
    with scratch() as m:
        m.update(np.array([1], np.uint64), np.array([1], np.uint64))
        with pytest.raises(PartialFailureError) as ei:
            m.update(np.array([1, 2], np.uint64), np.array([7, 7], np.uint64), flags=EXIST)
        assert ei.value.failed_rows == [1] and ei.value.failures[0].errno == errno.ENOENT
        assert m.get(np.uint64(1)) == 7


@pytest.mark.parametrize("mode", ["batch", "loop"])
def test_map_full_names_map_capacity_and_progress(mode):
    with scratch(max_entries=100) as m:
        keys = np.arange(150, dtype=np.uint64)
        with pytest.raises(MapFullError) as ei:
            m.update(keys, keys, mode=mode)
        e = ei.value
        assert e.capacity == 100 and e.written == 100 and e.stopped_at == 100
        assert "map scratch is full (max_entries 100" in str(e)
        assert len(m) == 100


def test_lpm_trie_full_is_map_full():
    spec = layout.map_specs()["mc_ipcache"].with_(max_entries=10)
    with BpfMap.create(spec) as m:
        keys = np.zeros(12, m.key_dtype)
        keys["prefixlen"] = 128
        keys["addr"][:, 15] = np.arange(12)
        with pytest.raises(MapFullError) as ei:
            m.update(keys, np.zeros(12, m.value_dtype))
        assert ei.value.written == 10 and ei.value.failures[0].errno == errno.ENOSPC


def test_bad_lpm_prefix_is_a_per_row_einval():
    spec = layout.map_specs()["mc_ipcache"]
    with BpfMap.create(spec) as m:
        keys = np.zeros(3, m.key_dtype)
        keys["prefixlen"] = [128, 129, 64]
        keys["addr"][:, 0] = [1, 2, 3]
        with pytest.raises(PartialFailureError) as ei:
            m.update(keys, np.zeros(3, m.value_dtype))
        assert ei.value.failed_rows == [1] and ei.value.failures[0].errno == errno.EINVAL
        assert len(m) == 2


def test_delete_missing_keys():
    with scratch() as m:
        m.update(np.array([1, 2], np.uint64), np.array([1, 2], np.uint64))
        with pytest.raises(PartialFailureError) as ei:
            m.delete(np.array([1, 5, 2], np.uint64))
        assert ei.value.failed_rows == [1] and ei.value.written == 2
        m.update(np.array([1], np.uint64), np.array([1], np.uint64))
        r = m.delete(np.array([1, 9], np.uint64), missing_ok=True)
        assert r.written == 1 and len(m) == 0


def test_auto_falls_back_to_the_c_loop_where_batch_is_refused():
    # devmap_hash has no batch ops in the kernel (ENOTSUPP) but takes
    # per-element updates: auto mode must find that out and still work
    spec = MapSpec("devhash", 25, 4, 4, 8)
    with BpfMap.create(spec, key_dtype=np.uint32, value_dtype=np.uint32) as m:
        lo = socket.if_nametoindex("lo")
        with pytest.raises(BpfError) as ei:
            m.update(np.array([1], np.uint32), np.array([lo], np.uint32), mode="batch")
        assert ei.value.errno == errno.EOPNOTSUPP
        r = m.update(np.array([1, 2, 3], np.uint32), np.array([lo] * 3, np.uint32))
        assert r.written == 3 and not r.used_batch
        k, v = m.dump()
        assert sorted(k.tolist()) == [1, 2, 3] and set(v.tolist()) == {lo}
        assert m.delete(np.array([1, 2], np.uint32)).written == 2
        assert m.dump()[0].tolist() == [3]


def test_wrong_dtype_names_the_map():
    with scratch() as m, pytest.raises(TypeError, match="map scratch: keys array has dtype"):
        m.update(np.zeros(2, np.uint32), np.zeros(2, np.uint64))


def test_reconcile_fewest_writes_and_idempotent():
    with scratch(max_entries=1000) as m:
        m.update(np.arange(100, dtype=np.uint64), np.arange(100, dtype=np.uint64))
        want_k = np.arange(50, 150, dtype=np.uint64)
        want_v = want_k.copy()
        want_v[:10] += 1000  # rows 50..59 change
        r = m.reconcile(want_k, want_v)
        assert (r.added, r.changed, r.deleted, r.unchanged) == (50, 10, 50, 40)
        k, v = m.dump()
        assert dict(zip(k.tolist(), v.tolist())) == dict(zip(want_k.tolist(), want_v.tolist()))
        again = m.reconcile(want_k, want_v)
        assert again.writes == 0 and again.syscalls == 0
        cached = m.reconcile(want_k, want_v, cache=True)
        assert cached.writes == 0


def test_reconcile_cache_follows_changes_and_is_dropped_by_direct_writes():
    with scratch(max_entries=1000) as m:
        keys = np.arange(200, dtype=np.uint64)
        m.reconcile(keys, keys)
        vals = keys.copy()
        vals[[3, 150]] = 7
        r = m.reconcile(keys, vals, cache=True)
        assert (r.changed, r.added, r.deleted) == (2, 0, 0)
        m.delete(np.array([5], np.uint64))  # direct write: the cache is stale now
        r = m.reconcile(keys, vals, cache=True)
        assert r.added == 1  # it dumped the kernel map and saw key 5 missing
        assert dict(zip(*[a.tolist() for a in m.dump()])) == dict(zip(keys.tolist(), vals.tolist()))


def test_reconcile_rejects_repeated_keys_and_writes_nothing():
    with scratch() as m:
        m.update(np.array([1], np.uint64), np.array([1], np.uint64))
        with pytest.raises(ValueError, match="map scratch: reconcile: wanted entries repeat a key: rows 0 and 2"):
            m.reconcile(np.array([4, 5, 4], np.uint64), np.array([1, 2, 3], np.uint64))
        assert m.dump()[0].tolist() == [1]


def test_reconcile_deletes_first_when_the_map_could_not_hold_both():
    with scratch(max_entries=100) as m:
        m.update(np.arange(100, dtype=np.uint64), np.arange(100, dtype=np.uint64))
        want = np.arange(100, 200, dtype=np.uint64)
        r = m.reconcile(want, want)
        assert (r.added, r.deleted) == (100, 100)
        assert sorted(m.dump()[0].tolist()) == want.tolist()


def test_percpu_values_are_per_cpu():
    spec = layout.map_specs()["mc_drops"]
    with BpfMap.create(spec) as m:
        vals = np.zeros((1, m.ncpus), m.value_dtype)
        vals["packets"][0] = np.arange(m.ncpus) + 1
        m.update([3], vals)
        got = m.get(3)
        assert got["packets"].tolist() == list(range(1, m.ncpus + 1))
        assert int(got["packets"].sum()) == m.ncpus * (m.ncpus + 1) // 2


def test_dump_of_many_chunks_keeps_big_endian_fields(pin_root):
    """More entries than one dump chunk (65,536) with a big-endian key field:
    the dump must return the kernel's bytes (numpy's concatenate would make
    ``port`` native-endian), so reconciling the same state writes nothing and,
    above all, deletes nothing."""
    from meshcni.bpf.maps import rows
    spec = layout.map_specs()["mc_svc"]
    n = 70_000
    assert spec.max_entries > n
    with open_or_create(spec, pin_root) as m:
        assert m.key_dtype["port"].byteorder == ">"
        k = np.zeros(n, m.key_dtype)
        k["port"] = 80
        k["slot"] = np.arange(n) % 60_000
        k["addr"][:, 15] = np.arange(n) // 60_000
        v = np.zeros(n, m.value_dtype)
        m.update(k, v)
        dk, _ = m.dump()
        assert dk.dtype == m.key_dtype and len(dk) == n
        assert sorted(map(bytes, rows(dk))) == sorted(map(bytes, rows(k)))
        r = m.reconcile(k, v)
        assert (r.added, r.changed, r.deleted, r.unchanged) == (0, 0, 0, n)
        assert len(m) == n
