# SPDX-License-Identifier: MIT OR Apache-2.0
"""API server benchmarks: create, list and watch at cluster scale, over HTTP.

Run (no root needed, from the repo root)::

    python -m pytest benchmarks/test_apiserver.py --benchmark-only \\
        --benchmark-json benchmarks/out/apiserver.json

Data: ``MESHCNI_BENCH_SERVICES`` Services (default 10000) in one namespace,
and for each one EndpointSlice with 10 endpoints (so 100k endpoints by
default).

What is timed (``benchmark.group``):

create
    every Service and EndpointSlice POSTed by ``CLIENTS`` threads, each on
    one keep-alive ``http.client`` connection with a pre-serialised body,
    so the number is the server's create rate, not the python client's
    model building. ``extra_info["objects_per_s"]``.
list
    ``CoreV1Api.list_namespaced_service`` and
    ``DiscoveryV1Api.list_namespaced_endpoint_slice`` of everything,
    deserialised into client models (what an informer's relist costs);
    ``extra_info["raw_seconds"]`` is the same request with
    ``_preload_content=False`` (server + transfer + json only).
watch
    ``kubernetes.watch.Watch`` from the resourceVersion before the
    creation, until every ADDED event has arrived at the one client
    (Services and EndpointSlices, one watch each, deserialised).
    ``extra_info["events_per_s"]``.

Creation happens once per session (rounds=1); list and watch use a few
rounds over the same data.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time

import pytest
from kubernetes import client, config, watch

from meshcni.apiserver import APIServer

pytestmark = pytest.mark.pure

N_SERVICES = int(os.environ.get("MESHCNI_BENCH_SERVICES", "10000"))
ENDPOINTS_PER_SLICE = 10
CLIENTS = 4
NS = "bench"

_state: dict = {}


def _service(i):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i:05d}", "labels": {"app": f"a{i % 50}"}},
            "spec": {"selector": {"app": f"a{i % 50}"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def _slice(i):
    base = 10 << 24 | 244 << 16
    eps = []
    for j in range(ENDPOINTS_PER_SLICE):
        ip = base + i * ENDPOINTS_PER_SLICE + j
        eps.append({"addresses": [f"{ip >> 24 & 255}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}"],
                    "conditions": {"ready": True}, "nodeName": f"node-{j % 5}",
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": f"pod-{i}-{j}"}})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i:05d}-abcde", "labels": {"kubernetes.io/service-name": f"svc-{i:05d}"}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # the history must hold every creation event for the watch benchmark
    with APIServer(history=4 * N_SERVICES + 1000, watch_queue=4 * N_SERVICES) as srv:
        kc = srv.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "kubeconfig"))
        api = config.new_client_from_config(config_file=kc)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        _state["api"] = api
        yield srv


def _post_all(url, jobs):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    errors = []

    def worker(part):
        conn = http.client.HTTPConnection(host, int(port))
        for path, body in part:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                errors.append((path, r.status))
        conn.close()

    threads = [threading.Thread(target=worker, args=(jobs[k::CLIENTS],)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def _populate(srv):
    if "rv_before" in _state:
        return
    core = client.CoreV1Api(_state["api"])
    _state["rv_before"] = core.list_namespaced_service(NS).metadata.resource_version
    jobs = []
    for i in range(N_SERVICES):
        jobs.append((f"/api/v1/namespaces/{NS}/services", json.dumps(_service(i)).encode()))
        jobs.append((f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", json.dumps(_slice(i)).encode()))
    t0 = time.perf_counter()
    _post_all(srv.url, jobs)
    _state["create_seconds"] = time.perf_counter() - t0


def test_create(benchmark, server):
    benchmark.group = "create"
    benchmark.pedantic(_populate, args=(server,), rounds=1, iterations=1)
    n = 2 * N_SERVICES
    benchmark.extra_info.update(objects=n, services=N_SERVICES, endpointslices=N_SERVICES,
                                endpoints=N_SERVICES * ENDPOINTS_PER_SLICE, clients=CLIENTS,
                                seconds=_state["create_seconds"], objects_per_s=n / _state["create_seconds"])


@pytest.mark.parametrize("kind", ["services", "endpointslices"])
def test_list(benchmark, server, kind):
    _populate(server)
    api = _state["api"]
    fn = (client.CoreV1Api(api).list_namespaced_service if kind == "services"
          else client.DiscoveryV1Api(api).list_namespaced_endpoint_slice)
    benchmark.group = f"list-{kind}"
    out = benchmark.pedantic(fn, args=(NS,), rounds=3, iterations=1)
    assert len(out.items) == N_SERVICES
    t0 = time.perf_counter()
    raw = fn(NS, _preload_content=False)
    body = raw.data
    assert len(json.loads(body)["items"]) == N_SERVICES
    benchmark.extra_info.update(objects=N_SERVICES, raw_seconds=time.perf_counter() - t0, bytes=len(body),
                                objects_per_s=N_SERVICES / benchmark.stats.stats.median)


@pytest.mark.parametrize("kind", ["services", "endpointslices"])
def test_watch_from_before_creation(benchmark, server, kind):
    _populate(server)
    api = _state["api"]
    fn = (client.CoreV1Api(api).list_namespaced_service if kind == "services"
          else client.DiscoveryV1Api(api).list_namespaced_endpoint_slice)

    def run():
        w = watch.Watch()
        n = 0
        for ev in w.stream(fn, NS, resource_version=_state["rv_before"], timeout_seconds=300):
            assert ev["type"] == "ADDED"
            n += 1
            if n == N_SERVICES:
                w.stop()
        return n

    benchmark.group = f"watch-{kind}"
    got = benchmark.pedantic(run, rounds=2, iterations=1)
    assert got == N_SERVICES
    benchmark.extra_info.update(events=N_SERVICES, events_per_s=N_SERVICES / benchmark.stats.stats.median)
