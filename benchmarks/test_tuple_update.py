# SPDX-License-Identifier: MIT OR Apache-2.0
"""Bulk update from Python tuples, packing included, beside the C batch reference.

Run (root, from the repo root; under the machine-wide lock for numbers)::

    flock /tmp/meshcni-e2e.lock python -m pytest benchmarks/test_tuple_update.py \\
        --benchmark-json benchmarks/out/tuples.json
    python benchmarks/report_tuples.py benchmarks/out/tuples.json

``MESHCNI_BENCH_TUPLE_SIZES=100000`` restricts the sizes (default 100k and 1M).

Maps and data are mapbench.c's (benchmarks/c_ref): a preallocated hash of 8-byte
keys/values, keys ``1..N``, values ``3 * key``; and the ``mc_ipcache`` LPM trie,
prefix i ``(10.0.0.0 + 256*i)/(24 + i % 9)`` IPv4-mapped, value ``i + 1``. The
Python side holds the same rows as lists of tuples -- hash: key ``(k, 0)`` of
``{u32 lo; u32 hi}`` and value ``(3k, 0)`` of ``{u32 identity; u32 flags}``, the
same bytes as mapbench's u64s; LPM: ``(prefixlen, 16 address bytes)`` and
``(identity, 0)`` -- built once per size, outside the timing.

Methods (``extra_info["method"]``), each timed from the rows to the map written:

c-batch
    ``mapbench --op update`` / ``--op lpm-batch``: one ``bpf_map_update_batch``
    from C arrays; its in-process time of that call alone (``inprocess_median``).
tuples-compiled
    ``BpfMap.update(list_of_tuples, list_of_tuples)``: the compiled packer
    (``_fastmap.Packer``) builds the records, then one batch call.
tuples-python
    the packer this replaced: numpy converting row by row
    (``meshcni.bpf.maps.records_py``), then the same batch call.
numpy-array
    ``BpfMap.update`` on ready numpy arrays: the batch call alone.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess

import numpy as np
import pytest

from meshcni.bpf import BpfMap
from meshcni.bpf.maps import records_py
from meshcni.layout import MapSpec, dtype_of, map_specs

pytestmark = pytest.mark.kernel

SIZES = tuple(int(s) for s in os.environ.get("MESHCNI_BENCH_TUPLE_SIZES", "100000,1000000").split(",") if s)
METHODS = ["c-batch", "tuples-compiled", "numpy-array", "tuples-python"]
HASH_KEY = np.dtype([("lo", "<u4"), ("hi", "<u4")])
HASH_VALUE = np.dtype([("identity", "<u4"), ("flags", "<u4")])


def rounds(n: int, method: str) -> int:
    if method == "tuples-python":
        return 1 if n >= 1_000_000 else 3
    return 3 if n >= 1_000_000 else 10


_data: dict = {}


def data(kind: str, n: int):
    """(key tuples, value tuples, key array, value array), one (kind, n) resident."""
    if (kind, n) not in _data:
        _data.clear()
        i = np.arange(n, dtype=np.uint64)
        if kind == "hash":
            keys = [(k, 0) for k in range(1, n + 1)]
            values = [(3 * k, 0) for k in range(1, n + 1)]
        else:
            addr = (np.uint64(0x0A000000) + np.uint64(256) * i).astype(">u4").tobytes()
            pre = b"\0" * 10 + b"\xff\xff"
            keys = [(120 + j % 9, pre + addr[4 * j:4 * j + 4]) for j in range(n)]
            values = [(j + 1, 0) for j in range(n)]
        spec = spec_for(kind, n)
        kd, vd = dtypes(kind)
        _data[(kind, n)] = (keys, values, records_py(keys, kd), records_py(values, vd), spec)
    return _data[(kind, n)]


def spec_for(kind: str, n: int) -> MapSpec:
    if kind == "hash":
        return MapSpec("bench", 1, 8, 8, (n * 11 + 9) // 10)
    return map_specs()["mc_ipcache"].with_(max_entries=max(n, 1))


def dtypes(kind: str):
    if kind == "hash":
        return HASH_KEY, HASH_VALUE
    spec = map_specs()["mc_ipcache"]
    return dtype_of(spec.key_struct), dtype_of(spec.value_struct)


def run_c(binary, op: str, n: int) -> float:
    proc = subprocess.run([str(binary), "--entries", str(n), "--op", op, "--repeat", "1"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mapbench --op {op} --entries {n} failed ({proc.returncode}): {proc.stderr}")
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["op"] == op and line["entries"] == n, proc.stdout
    return float(line["seconds"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["hash", "lpm"])
def test_update_from_tuples(benchmark, request, bpf_ready, kind, n, method):
    keys, values, karr, varr, spec = data(kind, n)
    benchmark.group = f"tuples-{kind}-{n}"
    benchmark.extra_info.update(op=f"tuples-{kind}", entries=n, method=method)
    r = rounds(n, method)
    if method == "c-batch":
        binary = request.getfixturevalue("mapbench_bin")
        op = "update" if kind == "hash" else "lpm-batch"
        inproc: list = []
        benchmark.pedantic(lambda: inproc.append(run_c(binary, op, n)), rounds=r, iterations=1)
        benchmark.extra_info.update(inprocess_seconds=inproc, inprocess_median=statistics.median(inproc))
        return
    kd, vd = dtypes(kind)
    holder: dict = {}

    def setup():
        if "m" in holder:
            holder["m"].close()
        holder["m"] = BpfMap.create(spec, key_dtype=kd, value_dtype=vd)
        return (), {}

    if method == "tuples-compiled":
        def target():
            return holder["m"].update(keys, values)
    elif method == "tuples-python":
        def target():
            return holder["m"].update(records_py(keys, kd), records_py(values, vd))
    else:
        def target():
            return holder["m"].update(karr, varr)
    try:
        res = benchmark.pedantic(target, setup=setup, rounds=r, iterations=1)
        assert res.written == n and res.used_batch
        # once, outside the timing: the map holds exactly the rows
        ks, vs = holder["m"].dump()
        assert len(ks) == n
        got = dict(zip(map(bytes, ks.view(np.uint8).reshape(n, -1)), map(bytes, vs.view(np.uint8).reshape(n, -1))))
        want = dict(zip(map(bytes, karr.view(np.uint8).reshape(n, -1)), map(bytes, varr.view(np.uint8).reshape(n, -1))))
        assert got == want
    finally:
        if "m" in holder:
            holder["m"].close()
