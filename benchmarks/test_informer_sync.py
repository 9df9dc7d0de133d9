# SPDX-License-Identifier: MIT OR Apache-2.0
"""Informer sync of 10k Services + 10k EndpointSlices (100k endpoints) from the project's API server.

    flock /tmp/meshcni-e2e.lock python -m pytest benchmarks/test_informer_sync.py --benchmark-only -q

The objects are test_service_programming.py's (``MESHCNI_BENCH_SVC_SERVICES``, default 10000,
one IPv4 slice of 10 ready endpoints per Service), created once in an in-process
``meshcni.apiserver.APIServer`` on loopback (untimed). Timed: a Services informer and an
EndpointSlices informer start and both report synced -- the API server encoding each list, the
HTTP transfer, decoding, and building the caches and their indexes, all in this process as in
the existing ``svcprog-informer`` benchmark.

Each round syncs once with each codec, old first (the pairs are what
``extra_info["ratio_median"]`` compares):

stdlib
    the path before meshcni.fastjson: ``json.dumps`` in the server, ``json.loads`` in the
    informer, the garbage collector running throughout, and the store's list as it was (every
    page sorts and scans all keys; the function is kept below and patched in).
fastjson
    ``meshcni.fastjson``: orjson on both ends, the collector held off while a list is decoded
    and cached, ``managedFields`` dropped as objects are decoded; paged lists bisect keys
    sorted once per write.

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
ROUNDS = 7


@contextlib.contextmanager
def stdlib_codec():
    """The path as it was: the standard library, the collector on, every page sorting all keys."""
    from meshcni.apiserver.store import Store
    saved = fastjson.loads, fastjson.dumps, fastjson.gc_paused, Store.list
    fastjson.loads = json.loads
    fastjson.dumps = fastjson._std_dumps
    fastjson.gc_paused = contextlib.nullcontext
    Store.list = _list_sorting_every_page
    try:
        yield
    finally:
        fastjson.loads, fastjson.dumps, fastjson.gc_paused, Store.list = saved


# meshcni.apiserver.store.Store.list before keys were sorted once per write (verbatim)
import base64  # noqa: E402  (names the old body uses)

from meshcni.apiserver import resources as res  # noqa: E402
from meshcni.apiserver.store import bad_request  # noqa: E402


def _list_sorting_every_page(self, rt, ns, labels, fields, limit=0, cont=None):
    """(items, resourceVersion, continue token, remaining count) of the current state."""
    with self.lock:
        if ns and rt.namespaced and ("", ns) not in self.objects[res.NAMESPACE_KEY]:
            # a real server lists an empty collection for a missing namespace
            return [], str(self.rv), "", None
        objs = self.objects.get(rt.key, {})
        keys = sorted(objs)
        rv = self.rv
        start = None
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode() + b"=="))
                start = tuple(tok["start"])
                if len(start) != 2 or not all(isinstance(x, str) for x in start):
                    raise ValueError("not a key")  # keys are (namespace, name): compared below
            except (ValueError, KeyError, TypeError):
                raise bad_request(f'invalid continue token "{cont}"') from None
        items = []
        last = None
        more = False
        remaining = 0
        for k in keys:
            if start is not None and k <= start:
                continue
            if ns and rt.namespaced and k[0] != ns:
                continue
            o = objs[k]
            if not labels.empty and not labels.matches(o["metadata"].get("labels")):
                continue
            if not fields.empty and not fields.matches(o):
                continue
            if limit and len(items) >= limit:
                more = True
                remaining += 1
                continue
            items.append(o)
            last = k
    token = ""
    if more:
        token = base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": list(last)}).encode()
                                         ).decode().rstrip("=")
    return items, str(rv), token, (remaining if more else None)


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


def _sync_once(core, disc, shape):
    """Start a Services and an EndpointSlices informer, wait for both to sync: seconds, informers."""
    from meshcni.k8s.informer import Informer
    from meshcni.k8s.trim import trim_endpointslice, trim_service

    kw_s = dict(transform=trim_service, page_size=500) if shape == "agent" else {}
    kw_e = dict(transform=trim_endpointslice, page_size=500) if shape == "agent" else {}
    si = Informer(core.list_namespaced_service, namespace=NS, name="services", **kw_s)
    ei = Informer(disc.list_namespaced_endpoint_slice, namespace=NS, name="endpointslices", **kw_e)
    t = time.perf_counter()
    try:
        si.start()
        ei.start()
        assert si.wait_for_sync(300) and ei.wait_for_sync(300)
        took = time.perf_counter() - t
    finally:
        si.stop()
        ei.stop()
    return took, si, ei


@pytest.mark.parametrize("shape", ["whole", "agent"])
def test_informer_sync(benchmark, cluster, shape):
    """Old and new path alternating round by round (this VM's speed drifts over seconds when
    shared): the benchmark's own timing is the new path; extra_info holds both series and the
    per-round ratios."""
    core, disc = cluster
    old, new = [], []
    last: dict = {}

    def pair():
        with stdlib_codec():
            old.append(_sync_once(core, disc, shape)[0])
        t, si, ei = _sync_once(core, disc, shape)
        new.append(t)
        last.update(si=si, ei=ei)

    benchmark.group = f"informer-sync-{shape}"
    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    si, ei = last["si"], last["ei"]
    assert len(si) == N_FULL and len(ei) == N_FULL
    assert sum(len(o["endpoints"]) for o in ei.list()) == N_FULL * EPS
    assert all("managedFields" not in o["metadata"] for o in ei.list())
    old, new = old[-ROUNDS:], new[-ROUNDS:]  # the warm-up round's pair is not counted
    benchmark.extra_info.update(
        shape=shape, services=N_FULL, endpoints=N_FULL * EPS, backend=fastjson.BACKEND,
        stdlib_s=old, fastjson_s=new, stdlib_median=statistics.median(old),
        fastjson_median=statistics.median(new),
        ratio_median=statistics.median(o / n for o, n in zip(old, new)),
        timed="one stdlib sync then one fastjson sync per round (pair)")


_MEM_SCRIPT = r"""
import contextlib, gc, json, sys
sys.path.insert(0, sys.argv[1])
from kubernetes import client
from meshcni import fastjson
from meshcni.k8s import Informer, api_client
from meshcni.k8s.trim import trim_pod
if sys.argv[3] == "stdlib":
    fastjson.loads, fastjson.dumps, fastjson.gc_paused = json.loads, fastjson._std_dumps, contextlib.nullcontext
elif sys.argv[3] == "fastjson-gc-on":  # orjson, the collector left running: which part costs memory
    fastjson.gc_paused = contextlib.nullcontext
def rss():
    gc.collect()
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
core = client.CoreV1Api(api_client(sys.argv[2]))
core.list_namespace()  # connection pool and client code paths warm before the baseline
base = rss()
inf = Informer(core.list_pod_for_all_namespaces, name="pods", transform=trim_pod, page_size=500)
inf.start()
assert inf.wait_for_sync(300)
after = rss()
print(json.dumps({"base": base, "after": after, "n": len(inf)}))
inf.stop()
"""


@pytest.mark.parametrize("codec", ["stdlib", "fastjson", "fastjson-gc-on"])
def test_agent_pod_cache_memory(benchmark, tmp_path, codec):
    """The agent's pod informer (trim_pod, pages of 500) in its own process, synced from the API
    server: VmRSS growth per cached Pod. Pods as test_service_programming.pod() gives them, plus
    a real cluster's managedFields (loaded as a snapshot: the store serves them as stored)."""
    import subprocess
    import sys
    from pathlib import Path

    from meshcni.apiserver import APIServer, write_kubeconfig
    from test_service_programming import N_PODS, pod

    managed = [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-12-02T00:00:00Z",
                "fieldsType": "FieldsV1", "subresource": "status",
                "fieldsV1": {"f:status": {"f:conditions": {f"k:{{\"type\":\"{t}\"}}": {
                    ".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}
                    for t in ("ContainersReady", "Initialized", "PodScheduled", "Ready")},
                    "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {},
                    "f:podIPs": {".": {}, "k:{\"ip\":\"10.244.0.1\"}": {".": {}, "f:ip": {}}},
                    "f:startTime": {}}}}]
    objs = [{"group": "", "plural": "namespaces", "object": {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "uid": "ns", "resourceVersion": "1"}}}]
    for g in range(N_PODS):
        p = pod(g)
        p["metadata"]["managedFields"] = managed
        objs.append({"group": "", "plural": "pods", "object": p})
    res = {}
    with APIServer() as srv:
        srv.store.load({"resourceVersion": 200_000 + N_PODS, "objects": objs})
        kc = write_kubeconfig(str(tmp_path / "kc"), srv.url)

        def run():
            p = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(Path(__file__).resolve().parents[1]), kc,
                                codec], capture_output=True, text=True, check=True, timeout=600)
            res.update(json.loads(p.stdout.strip().splitlines()[-1]))

        benchmark.group = "informer-pod-memory"
        benchmark.pedantic(run, rounds=1, iterations=1)
    assert res["n"] == N_PODS
    per_pod = (res["after"] - res["base"]) / N_PODS
    benchmark.extra_info.update(method=codec, pods=N_PODS, rss_kib=res, kib_per_pod=per_pod,
                                timed="subprocess wall time: start, list 10k pods in pages, sync")
