# SPDX-License-Identifier: MIT OR Apache-2.0
"""Map churn benchmarks: meshcni's numpy bulk path against per-element baselines.

Run (root, from the repo root)::

    python -m pytest benchmarks/ --benchmark-json benchmarks/out/map_churn.json
    python benchmarks/report.py benchmarks/out/map_churn.json --png benchmarks/out/map_churn.png

``MESHCNI_BENCH_SIZES=10000,100000`` restricts the hash-map sizes for a quick
run (default: 10k, 100k, 1M). The LPM benchmark always uses 100k prefixes
(``MESHCNI_BENCH_LPM`` overrides it).

Every benchmark uses ``benchmark.pedantic(..., setup=..., iterations=1)`` so
that preparing the map (creating a fresh one, refilling it) is never timed.

Methods (``extra_info["method"]``):

numpy-batch
    ``BpfMap.update/delete/dump`` on numpy arrays: BPF_MAP_*_BATCH, one (or a
    few) bpf() calls for the whole array.
loop-in-C
    ``BpfMap.update(..., mode="loop")``: the same call, but the C glue does
    one bpf_map_update_elem per entry.
per-element
    A Python ``for`` loop calling ``lib.mc_update_elem`` (one
    bpf_map_update_elem) per entry, with precomputed cffi pointers: what a
    Python agent without the bulk API would do, as fast as Python can do it.
c-ref
    ``benchmarks/bin/mapbench`` (benchmarks/c_ref/mapbench.c), a plain C
    libbpf program doing the same work on the same data. pytest-benchmark
    times the whole subprocess (start-up included); the program's own
    in-process timing of just the operation is in
    ``extra_info["inprocess_seconds"]`` and is what report.py compares.
reconcile (dump) / reconcile (cached)
    ``BpfMap.reconcile``; "cached" only when reconcile grows a cache option.

Data sets are identical to mapbench.c's (see its header): hash keys
``1..N`` (uint64), values ``key * 3``, max_entries ``ceil(1.1 * N)``; LPM
prefix i is ``(10.0.0.0 + 256*i)/(24 + i % 9)`` IPv4-mapped (prefixlen
+96), value ``{identity: i + 1, flags: 0}``.
"""
from __future__ import annotations

import inspect
import ipaddress
import json
import os
import statistics
import subprocess
import warnings

import numpy as np
import pytest

from meshcni._libbpf import ffi, lib
from meshcni.bpf import BpfMap
from meshcni.layout import MapSpec, map_specs

pytestmark = pytest.mark.kernel

ALL_SIZES = (10_000, 100_000, 1_000_000)


def _sizes():
    env = os.environ.get("MESHCNI_BENCH_SIZES", "").strip()
    if not env:
        return ALL_SIZES
    return tuple(int(s.replace("_", "")) for s in env.split(",") if s.strip())


SIZES = _sizes()
LPM_N = int(os.environ.get("MESHCNI_BENCH_LPM", "100000"))


def rounds(n: int) -> int:
    """Rounds per benchmark: enough for a stable median, the full run < 8 min."""
    if n <= 10_000:
        return 50
    if n <= 100_000:
        return 30
    return 8


def per_element_rounds(n: int) -> int:
    return 1 if n >= 1_000_000 else min(rounds(n), 10)


def max_entries(n: int) -> int:
    return (n * 11 + 9) // 10  # ceil(1.1 * n), as mapbench.c


# ---------------------------------------------------------------- data sets

_hash_cache: dict = {}


def hash_data(n: int):
    """keys 1..n, values keys * 3 (exactly mapbench.c's)."""
    if n not in _hash_cache:
        keys = np.arange(1, n + 1, dtype=np.uint64)
        _hash_cache.clear()  # keep at most one size resident
        _hash_cache[n] = (keys, keys * np.uint64(3))
    return _hash_cache[n]


def changed_1pct(values: np.ndarray) -> np.ndarray:
    """The same values with every 100th one changed (1%)."""
    new = values.copy()
    new[::100] += np.uint64(1)
    return new


def lpm_spec() -> MapSpec:
    return map_specs()["mc_ipcache"]


def lpm_data(n: int, key_dtype, value_dtype):
    """Prefix i = (10.0.0.0 + 256*i)/(24 + i%9), IPv4-mapped; value identity i+1."""
    i = np.arange(n, dtype=np.uint64)
    keys = np.zeros(n, key_dtype)
    keys["prefixlen"] = (96 + 24 + i % 9).astype(np.uint32)
    addr = (np.uint64(0x0A000000) + np.uint64(256) * i).astype(">u4")
    keys["addr"][:, 10:12] = 0xFF
    keys["addr"][:, 12:16] = addr.view(np.uint8).reshape(n, 4)
    values = np.zeros(n, value_dtype)
    values["identity"] = (i + 1).astype(np.uint32)
    return keys, values


def lpm_cidrs(n: int):
    i = np.arange(n, dtype=np.uint64)
    addr = (np.uint64(0x0A000000) + np.uint64(256) * i).tolist()
    return [f"{ipaddress.IPv4Address(a)}/{24 + k % 9}" for k, a in enumerate(addr)]


# ---------------------------------------------------------------- helpers

class Maps:
    """Maps a benchmark creates; the current one is closed when replaced."""

    def __init__(self):
        self.current: BpfMap | None = None

    def fresh(self, spec: MapSpec, **kw) -> BpfMap:
        self.close()
        self.current = BpfMap.create(spec, **kw)
        return self.current

    def close(self):
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture
def maps(bpf_ready):
    m = Maps()
    yield m
    m.close()


def new_hash(maps: Maps, n: int) -> BpfMap:
    return maps.fresh(MapSpec("bench", 1, 8, 8, max_entries(n)), key_dtype=np.uint64,
                      value_dtype=np.uint64)


def check_hash_contents(m: BpfMap, keys: np.ndarray, values: np.ndarray) -> None:
    ks, vs = m.dump()
    assert len(ks) == len(keys), f"map holds {len(ks)} entries, expected {len(keys)}"
    order = np.argsort(ks)
    assert np.array_equal(ks[order], keys)  # keys are 1..n, already sorted
    assert np.array_equal(vs[order], values)


def tag(benchmark, op: str, n: int, method: str) -> None:
    """Group and describe a benchmark; must run before benchmark.pedantic()."""
    benchmark.group = f"{op}-{n}"
    benchmark.extra_info.update(op=op, entries=n, method=method)


def hash_pointers(keys: np.ndarray, values: np.ndarray):
    return (ffi.cast("uint64_t *", ffi.from_buffer(keys)),
            ffi.cast("uint64_t *", ffi.from_buffer(values)))


def per_element_hash(fd: int, kp, vp, n: int) -> None:
    """One bpf_map_update_elem per entry, driven from Python."""
    f = lib.mc_update_elem
    for i in range(n):
        f(fd, kp + i, vp + i, 0)


def per_element_bytes(fd: int, kp, vp, n: int, ksize: int, vsize: int) -> None:
    f = lib.mc_update_elem
    for ko, vo in zip(range(0, n * ksize, ksize), range(0, n * vsize, vsize)):
        f(fd, kp + ko, vp + vo, 0)


def run_mapbench(binary, op: str, n: int) -> float:
    """One mapbench subprocess, one repeat; returns its in-process seconds."""
    proc = subprocess.run([str(binary), "--entries", str(n), "--op", op, "--repeat", "1"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mapbench --op {op} --entries {n} failed ({proc.returncode}): {proc.stderr}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0]["op"] == op and lines[0]["entries"] == n, proc.stdout
    return float(lines[0]["seconds"])


def c_ref(benchmark, binary, op: str, n: int, r: int) -> None:
    inproc: list = []
    benchmark.pedantic(lambda: inproc.append(run_mapbench(binary, op, n)), rounds=r, iterations=1)
    benchmark.extra_info.update(inprocess_seconds=inproc, inprocess_median=statistics.median(inproc),
                                timed="subprocess wall time; inprocess_* is the operation alone")


def _reconcile_cache_kw():
    """Name of reconcile's cache switch, if this meshcni has one."""
    params = inspect.signature(BpfMap.reconcile).parameters
    for name in ("cache", "cached", "use_cache", "shadow"):
        if name in params:
            return name
    return None


CACHE_KW = _reconcile_cache_kw()
RECONCILE_METHODS = ["reconcile (dump)"] + (["reconcile (cached)"] if CACHE_KW else [])


def reconcile_kwargs(method: str) -> dict:
    if CACHE_KW is None:
        return {}
    return {CACHE_KW: method == "reconcile (cached)"}


# ---------------------------------------------------------------- hash: update

# c-ref first and next to numpy-batch: this machine's speed drifts over
# minutes, so the two methods the main target compares run back to back
UPDATE_METHODS = ["c-ref", "numpy-batch", "loop-in-C", "per-element"]


def bulk_update(benchmark, holder, fresh_map, keys, values, method):
    """Time BpfMap.update into a fresh map per round (numpy-batch or loop-in-C)."""
    n = len(keys)
    mode = "loop" if method == "loop-in-C" else "auto"

    def setup():
        holder["m"] = fresh_map()
        return (keys, values), {"mode": mode}

    res = benchmark.pedantic(lambda k, v, mode: holder["m"].update(k, v, mode=mode), setup=setup,
                             rounds=rounds(n), iterations=1)
    assert res.written == n
    assert res.used_batch == (method == "numpy-batch")
    benchmark.extra_info.update(used_batch=res.used_batch, syscalls=res.syscalls)


@pytest.mark.parametrize("method", UPDATE_METHODS)
@pytest.mark.parametrize("n", SIZES)
def test_update(benchmark, request, maps, n, method):
    """All n entries into a fresh, empty map each round."""
    keys, values = hash_data(n)
    holder = {}
    tag(benchmark, "update", n, method)
    if method == "c-ref":
        c_ref(benchmark, request.getfixturevalue("mapbench_bin"), "update", n, rounds(n))
        return
    if method == "per-element":
        kp, vp = hash_pointers(keys, values)

        def setup():
            holder["m"] = new_hash(maps, n)
            return (holder["m"].fd, kp, vp, n), {}

        benchmark.pedantic(per_element_hash, setup=setup, rounds=per_element_rounds(n), iterations=1)
    else:
        bulk_update(benchmark, holder, lambda: new_hash(maps, n), keys, values, method)
    check_hash_contents(holder["m"], keys, values)  # once, outside timing


# ---------------------------------------------------------------- hash: delete, dump

@pytest.mark.parametrize("n", SIZES)
def test_delete(benchmark, maps, n):
    """Delete all n entries (the map is refilled in setup)."""
    keys, values = hash_data(n)
    m = new_hash(maps, n)

    def setup():
        m.update(keys, values)
        return (keys,), {}

    tag(benchmark, "delete", n, "numpy-batch")
    res = benchmark.pedantic(m.delete, setup=setup, rounds=rounds(n), iterations=1)
    assert res.written == n
    benchmark.extra_info.update(used_batch=res.used_batch, syscalls=res.syscalls)
    assert len(m.dump()[0]) == 0


@pytest.mark.parametrize("n", SIZES)
def test_dump(benchmark, maps, n):
    keys, values = hash_data(n)
    m = new_hash(maps, n)
    m.update(keys, values)
    tag(benchmark, "dump", n, "numpy-batch")
    ks, vs = benchmark.pedantic(m.dump, rounds=rounds(n), iterations=1)
    assert len(ks) == n


# ---------------------------------------------------------------- hash: reconcile

@pytest.mark.parametrize("method", RECONCILE_METHODS)
@pytest.mark.parametrize("n", SIZES)
def test_reconcile_1pct(benchmark, maps, n, method):
    """Map holds the old values; reconcile to values with 1% changed (timed)."""
    keys, old = hash_data(n)
    new = changed_1pct(old)
    nchanged = len(keys[::100])
    kw = reconcile_kwargs(method)
    m = new_hash(maps, n)
    m.update(keys, old)
    if method == "reconcile (cached)":
        m.reconcile(keys, old, **kw)  # prime the cache (not timed)

    def setup():
        # back to the old values, through the same path so a cache stays true
        r = m.reconcile(keys, old, **kw)
        assert r.writes in (0, nchanged)
        return (keys, new), kw

    tag(benchmark, "reconcile-1pct", n, method)
    res = benchmark.pedantic(m.reconcile, setup=setup, rounds=rounds(n), iterations=1)
    assert (res.added, res.changed, res.deleted) == (0, nchanged, 0), res
    benchmark.extra_info.update(changed=res.changed, writes=res.writes, syscalls=res.syscalls)
    check_hash_contents(m, keys, new)


@pytest.mark.parametrize("method", RECONCILE_METHODS)
@pytest.mark.parametrize("n", SIZES)
def test_reconcile_unchanged(benchmark, maps, n, method):
    """Map already holds exactly the wanted contents: reconcile must write nothing."""
    keys, values = hash_data(n)
    kw = reconcile_kwargs(method)
    m = new_hash(maps, n)
    m.update(keys, values)
    if method == "reconcile (cached)":
        m.reconcile(keys, values, **kw)
    writes = []

    def target():
        r = m.reconcile(keys, values, **kw)
        writes.append(r.writes)
        return r

    tag(benchmark, "reconcile-unchanged", n, method)
    res = benchmark.pedantic(target, rounds=rounds(n), iterations=1)
    benchmark.extra_info.update(writes=max(writes), syscalls=res.syscalls)
    assert max(writes) == 0, f"reconcile with nothing changed wrote {writes}"
    check_hash_contents(m, keys, values)


# ---------------------------------------------------------------- LPM trie inserts

@pytest.fixture(scope="module")
def lpm_arrays(bpf_ready):
    spec = lpm_spec()
    probe = BpfMap.create(spec)
    kdt, vdt = probe.key_dtype, probe.value_dtype
    probe.close()
    keys, values = lpm_data(LPM_N, kdt, vdt)
    try:
        from meshcni import cidr
    except Exception:  # helper not there yet: the numpy encoding stands alone
        cidr = None
    if cidr is not None and hasattr(cidr, "lpm_keys"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no host bits may be set
            plen, addr = cidr.lpm_keys(lpm_cidrs(LPM_N))
        assert np.array_equal(plen, keys["prefixlen"]) and np.array_equal(addr, keys["addr"]), \
            "benchmark LPM keys differ from meshcni.cidr.lpm_keys"
    return spec, keys, values


def check_lpm_contents(m: BpfMap, keys: np.ndarray) -> None:
    ks, _ = m.dump()
    assert len(ks) == len(keys)
    assert set(ks.tobytes()[i:i + 20] for i in range(0, 20 * len(ks), 20)) == \
        set(keys.tobytes()[i:i + 20] for i in range(0, 20 * len(keys), 20))


@pytest.mark.parametrize("method", UPDATE_METHODS)
def test_lpm_insert(benchmark, request, maps, lpm_arrays, method):
    """All prefixes into a fresh, empty mc_ipcache-shaped LPM trie each round."""
    spec, keys, values = lpm_arrays
    n = len(keys)
    holder = {}
    tag(benchmark, "lpm-insert", n, method)
    if method == "c-ref":
        c_ref(benchmark, request.getfixturevalue("mapbench_bin"), "lpm", n, rounds(n))
        return
    if method == "per-element":
        kp = ffi.cast("uint8_t *", ffi.from_buffer(keys))
        vp = ffi.cast("uint8_t *", ffi.from_buffer(values))

        def setup():
            holder["m"] = maps.fresh(spec)
            return (holder["m"].fd, kp, vp, n, keys.itemsize, values.itemsize), {}

        benchmark.pedantic(per_element_bytes, setup=setup, rounds=per_element_rounds(n), iterations=1)
    else:
        bulk_update(benchmark, holder, lambda: maps.fresh(spec), keys, values, method)
    check_lpm_contents(holder["m"], keys)
