# SPDX-License-Identifier: MIT OR Apache-2.0
"""Informer sync of 10k Services + 10k EndpointSlices (100k endpoints) from the project's API server.

    flock /tmp/meshcni-e2e.lock python -m pytest benchmarks/test_informer_sync.py --benchmark-only -q

The objects are test_service_programming.py's (``MESHCNI_BENCH_SVC_SERVICES``, default 10000,
one IPv4 slice of 10 ready endpoints per Service), created once in an in-process
``meshcni.apiserver.APIServer`` on loopback (untimed). Timed: a Services informer and an
EndpointSlices informer start and both report synced -- the API server encoding each list, the
HTTP transfer, decoding, and building the caches and their indexes, all in this process as in
the existing ``svcprog-informer`` benchmark.

``codec`` (``extra_info["method"]``):

stdlib
    the path before meshcni.fastjson: ``json.dumps`` in the server, ``json.loads`` in the
    informer, the garbage collector running throughout.
fastjson
    ``meshcni.fastjson``: orjson on both ends, the collector held off while a list is decoded
    and cached, ``managedFields`` dropped as objects are decoded.

``shape``: ``whole`` caches every object as served (one list call each, as the benchmark in
test_service_programming.py); ``agent`` is the agent's own informers (``trim_service`` /
``trim_endpointslice`` transforms, pages of 500).
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from contextlib import ExitStack

import pytest

from meshcni import fastjson

from test_service_programming import EPS, N_FULL, NS, _post_all, endpoint_slice, service

pytestmark = pytest.mark.kernel
ROUNDS = 5


@contextlib.contextmanager
def stdlib_codec():
    """The codec as it was: the standard library, the collector on."""
    saved = fastjson.loads, fastjson.dumps, fastjson.gc_paused
    fastjson.loads = json.loads
    fastjson.dumps = fastjson._std_dumps
    fastjson.gc_paused = contextlib.nullcontext
    try:
        yield
    finally:
        fastjson.loads, fastjson.dumps, fastjson.gc_paused = saved


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from kubernetes import client, config

    from meshcni.apiserver import APIServer

    with ExitStack() as stack:
        srv = stack.enter_context(APIServer(history=4 * N_FULL + 1000, watch_queue=4 * N_FULL))
        kc = srv.write_kubeconfig(str(tmp_path_factory.mktemp("informer") / "kubeconfig"))
        api = config.new_client_from_config(config_file=kc)
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        jobs = []
        for i in range(N_FULL):
            s = service(i)
            for f in ("uid", "resourceVersion", "creationTimestamp"):
                s["metadata"].pop(f)
            sl = endpoint_slice(i)
            for f in ("resourceVersion", "ownerReferences"):
                sl["metadata"].pop(f)
            jobs.append((f"/api/v1/namespaces/{NS}/services", json.dumps(s).encode()))
            jobs.append((f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", json.dumps(sl).encode()))
        _post_all(srv.url, jobs)
        yield core, disc


@pytest.mark.parametrize("shape", ["whole", "agent"])
@pytest.mark.parametrize("codec", ["stdlib", "fastjson"])
def test_informer_sync(benchmark, cluster, codec, shape):
    from meshcni.k8s.informer import Informer
    from meshcni.k8s.trim import trim_endpointslice, trim_service

    core, disc = cluster
    kw_s = dict(transform=trim_service, page_size=500) if shape == "agent" else {}
    kw_e = dict(transform=trim_endpointslice, page_size=500) if shape == "agent" else {}
    lists: list = []
    last: dict = {}

    def run():
        si = Informer(core.list_namespaced_service, namespace=NS, name="services", **kw_s)
        ei = Informer(disc.list_namespaced_endpoint_slice, namespace=NS, name="endpointslices", **kw_e)
        try:
            si.start()
            ei.start()
            assert si.wait_for_sync(120) and ei.wait_for_sync(120)
        finally:
            si.stop()
            ei.stop()
        lists.append((si.last_list_seconds, ei.last_list_seconds))
        last.update(si=si, ei=ei)

    benchmark.group = f"informer-sync-{shape}"
    benchmark.extra_info.update(method=codec, shape=shape, services=N_FULL, endpoints=N_FULL * EPS,
                                backend=fastjson.BACKEND if codec == "fastjson" else "json")
    with stdlib_codec() if codec == "stdlib" else contextlib.nullcontext():
        benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    si, ei = last["si"], last["ei"]
    assert len(si) == N_FULL and len(ei) == N_FULL
    eps = sum(len(o["endpoints"]) for o in ei.list())
    assert eps == N_FULL * EPS
    assert all("managedFields" not in o["metadata"] for o in ei.list())
    benchmark.extra_info.update(services_list_s=statistics.median(a for a, _ in lists),
                                slices_list_s=statistics.median(b for _, b in lists),
                                sync_s=benchmark.stats.stats.median, when=time.strftime("%Y-%m-%d %H:%M"))
