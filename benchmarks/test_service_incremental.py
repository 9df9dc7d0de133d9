# SPDX-License-Identifier: MIT OR Apache-2.0
"""Service programming per event: the full rebuild vs the incremental path, side by side (issue 21).

    flock /tmp/meshcni-e2e.lock python -m pytest benchmarks/test_service_incremental.py --benchmark-only -q -s

Data: benchmarks/test_service_programming.py's (``N_FIT`` ClusterIP
Services x 10 ready endpoints, one IPv4 EndpointSlice each; 10k x 10 at the
default). Both paths start from maps that hold the whole state, each on its
own private bpffs, and see the same changes:

svcinc-one-slice
    one EndpointSlice replaced (endpoint 0 moves between two addresses; a
    different Service each round). ``full``: what the reconciler did before,
    ``desired_services`` over every Service and slice + ``frontend_conflicts``
    + ``ServiceDatapath.apply`` of the whole state (dumps and diffs every
    map). ``incremental``: the agent's Services reconciler as the Runner
    drives it: ``observe`` of the informer event, ``desired`` (only that
    Service recomputed), ``apply`` (``apply_delta``: its rows written against
    the in-memory mirror, no dump).
svcinc-churn-1pct
    1% of the endpoints change in one burst: endpoint 0 of every 10th slice
    (N_FIT/10 slice events), then one run. Same two methods.

Timed: wall time of the run (pytest-benchmark); ``extra_info["cpu_median"]``
is the process CPU time (``time.process_time``) of the same runs, the
figure the issue's target is stated in. After the benchmark the maps of
both methods are compared (decoded, backend ids aside): they must be equal.
"""
from __future__ import annotations

import gc
import logging
import os
import statistics
import sys
import time
from contextlib import ExitStack

import pytest

from meshcni import sandbox

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_service_programming import EPS, N_FIT, _via_json, endpoint_slice, service  # noqa: E402

pytestmark = pytest.mark.kernel
ROUNDS_ONE = 50
ROUNDS_CHURN = 5
RESULTS: dict = {}


@pytest.fixture(scope="module")
def root_ok():
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), mounts)")


class Store:
    """An informer's cache as reconcilers read it (``get`` by namespace/name, ``list``)."""

    def __init__(self, objs):
        self.items = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objs}

    def get(self, k):
        return self.items.get(k)

    def list(self):
        return list(self.items.values())

    def put(self, o):
        k = f"{o['metadata']['namespace']}/{o['metadata']['name']}"
        old = self.items.get(k)
        self.items[k] = o
        return old


def _moved(i: int, now: dict) -> dict:
    """Service i's slice with endpoint 0 at the other of two addresses than in ``now`` (its current slice)."""
    sl = endpoint_slice(i)
    a = [f"10.250.1.{i % 250 + 1}"]
    sl["endpoints"][0]["addresses"] = [f"10.250.2.{i % 250 + 1}"] if now["endpoints"][0]["addresses"] == a else a
    return _via_json([sl])[0]


class Paths:
    """The two methods on their own maps, fed the same events."""

    def __init__(self, stack: ExitStack):
        from meshcni.agent.agent import Metrics
        from meshcni.agent.reconcilers import Services
        from meshcni.controllers.services import ServiceIDs
        from meshcni.datapath.services import ServiceDatapath
        svcs = _via_json([service(i) for i in range(N_FIT)])
        slices = _via_json([endpoint_slice(i) for i in range(N_FIT)])
        self.full_caches = {"services": Store(svcs), "endpointslices": Store(slices)}
        self.inc_caches = {"services": Store(svcs), "endpointslices": Store(slices), "meshendpoints": Store([]),
                           "nodes": Store([])}
        roots = [os.path.join(stack.enter_context(sandbox.private_bpffs("meshcni-incbench-")), "meshcni")
                 for _ in range(2)]
        self.full_dp, inc_dp = ServiceDatapath(roots[0]), ServiceDatapath(roots[1])
        stack.callback(self.full_dp.close)
        stack.callback(inc_dp.close)
        self.full_ids = ServiceIDs()
        self.rec = Services(inc_dp, ServiceIDs(), Metrics(), logging.getLogger("bench"), resync_interval=1e9)
        self.run_full()
        self.run_inc([])
        assert self.rec.programmed and len(self.rec.programmed) == N_FIT

    def run_full(self):
        from meshcni.controllers.services import desired_services, frontend_conflicts
        c = self.full_caches
        svcs, problems = desired_services(c["services"].list(), c["endpointslices"].list(), self.full_ids)
        dropped = {b for _, b in frontend_conflicts(svcs)}
        self.full_dp.apply([s for s in svcs if s.name not in dropped])
        assert not problems

    def run_inc(self, events):
        rec, c = self.rec, self.inc_caches
        for cache, old, new in events:
            rec.observe(cache, old, new)
        return rec.apply(rec.desired(c).state)

    def feed(self, slices):
        """Put ``slices`` in both caches; the informer events of the incremental side."""
        events = []
        for sl in slices:
            self.full_caches["endpointslices"].put(sl)
            events.append(("endpointslices", self.inc_caches["endpointslices"].put(sl), sl))
        return events

    def catch_up(self, method):
        """The method not benchmarked did not see the changes: it catches up (the incremental side
        through its full path, as after a missed event), then both maps must say the same."""
        if method == "full":
            self.rec.index.invalidate()
            self.run_inc([])
        else:
            self.run_full()
        self.check_equal()

    def check_equal(self):
        from test_service_delta import decode
        assert decode(self.full_dp.maps) == decode(self.rec.datapath.maps)


@pytest.fixture(scope="module")
def paths(root_ok):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "kernel"))
    with ExitStack() as stack:
        yield Paths(stack)


def _bench(benchmark, group, method, rounds, run_one, prepare):
    """``prepare(k)`` (untimed: the objects an informer would have decoded) -> the argument of ``run_one``."""
    cpu = []

    def timed(arg):
        c0 = time.process_time()
        out = run_one(arg)
        cpu.append(time.process_time() - c0)
        return out

    k = [0]

    def setup():
        k[0] += 1
        gc.collect()
        return (prepare(k[0]),), {}

    benchmark.group = group
    benchmark.extra_info.update(method=method, services=N_FIT, backends=N_FIT * EPS)
    benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(cpu_median=statistics.median(cpu), cpu_p99=sorted(cpu)[int(0.99 * (len(cpu) - 1))])
    RESULTS[(group, method)] = dict(median=med, cpu=statistics.median(cpu), cpu_max=max(cpu))


@pytest.mark.parametrize("method", ["full", "incremental"])
def test_one_slice(benchmark, paths, method):
    def prepare(k):
        i = (k * 7919) % N_FIT
        return _moved(i, paths.inc_caches["endpointslices"].get(f"bench/svc-{i:05d}-abcde"))

    def one(sl):
        ev = paths.feed([sl])
        if method == "full":
            paths.run_full()
        else:
            out = paths.run_inc(ev)
            assert out["path"] == "delta" and out["changed"] == 1, out

    rounds = ROUNDS_ONE if method == "incremental" else 5
    _bench(benchmark, "svcinc-one-slice", method, rounds, one, prepare)
    paths.catch_up(method)


@pytest.mark.parametrize("method", ["full", "incremental"])
def test_churn_1pct(benchmark, paths, method):
    pre = {f: _via_json([endpoint_slice(i, f) for i in range(0, N_FIT, 10)]) for f in (1, 2)}

    def prepare(k):
        now = paths.inc_caches["endpointslices"].get("bench/svc-00000-abcde")["endpoints"][0]["addresses"]
        return pre[2 if now == pre[1][0]["endpoints"][0]["addresses"] else 1]

    def one(slices):
        ev = paths.feed(slices)
        if method == "full":
            paths.run_full()
        else:
            out = paths.run_inc(ev)
            assert out["path"] == "delta" and out["changed"] == N_FIT // 10

    _bench(benchmark, "svcinc-churn-1pct", method, ROUNDS_CHURN, one, prepare)
    paths.catch_up(method)


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if not RESULTS:
        return
    print("\n\nService programming per event, 10 backends per Service, N =", N_FIT)
    print(f"{'case':<22}{'method':<13}{'wall median':>14}{'CPU median':>14}{'CPU max':>12}")
    for (g, m), r in sorted(RESULTS.items()):
        print(f"{g:<22}{m:<13}{r['median'] * 1e3:>11.2f} ms{r['cpu'] * 1e3:>11.2f} ms{r['cpu_max'] * 1e3:>9.2f} ms")
