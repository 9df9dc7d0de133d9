# SPDX-License-Identifier: MIT OR Apache-2.0
"""Multi-cluster mesh controller at scale: Cluster -> MeshEndpoints, and remote change latency.

Run (no root needed, from the repo root)::

    python -m pytest benchmarks/test_mesh_controller.py --benchmark-only \\
        --benchmark-json benchmarks/out/mesh_controller.json

Data: three in-process API servers on loopback, "local" and two remotes
("east", "west"). Each remote has ``MESHCNI_BENCH_MESH_SERVICES`` Services
(default 1000) in namespace ``app``, each with one EndpointSlice of 10 ready
endpoints; the local cluster has the same Services annotated
``mesh-cni.dev/multi-cluster: "true"``. The controller is the real
``meshcni controller`` process (leader election off), so its memory is its own.

What is timed (``benchmark.group``):

mesh-sync
    from both Clusters created (their Secrets already there) until all
    2 x N MeshEndpoints exist and both Clusters report Ready with N meshed
    Services. ``extra_info``: ``writes`` (resourceVersions the local server
    handed out meanwhile: every create, update, status patch and Event),
    ``writes_by_verb`` (the controller's own counter), ``rss_mib`` and
    ``peak_rss_mib`` of the controller process.
mesh-latency
    a remote EndpointSlice's endpoint address changed (PUT through the
    client) until a local informer sees the MeshEndpoint carrying it, one
    change per round; ``floor`` is the same write + watch path within the
    local server (a ConfigMap changed, seen by a local informer): what the
    remote path costs on top of one watch hop. ``extra_info`` has median and
    p99 in ms.
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml
from kubernetes import client

from meshcni.apiserver import APIServer
from meshcni.controllers import mesh
from meshcni.k8s import Informer, api_client

pytestmark = pytest.mark.pure

N = int(os.environ.get("MESHCNI_BENCH_MESH_SERVICES", "1000"))
EPS = 10
ROUNDS = int(os.environ.get("MESHCNI_BENCH_MESH_ROUNDS", "30"))
CRDS = "deploy/crds"
MEP_KEY = ("mesh-cni.dev", "meshendpoints")
REMOTES = {"east": 245, "west": 246}   # second octet of each remote's pod addresses


def _rt(store, group, plural):
    return store.types[(group, plural)]


def _ip(octet, i, j):
    n = i * EPS + j
    return f"10.{octet}.{n // 256}.{n % 256}"


def _slice(octet, i, first=None):
    eps = [{"addresses": [first if (j == 0 and first) else _ip(octet, i, j)], "conditions": {"ready": True}}
           for j in range(EPS)]
    return {"metadata": {"name": f"s{i:04d}-abc", "labels": {mesh.SERVICE_NAME_LABEL: f"s{i:04d}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}


def _seed_remote(srv, octet):
    st = srv.store
    st.create(_rt(st, "", "namespaces"), "", {"metadata": {"name": "app"}})
    st.create(_rt(st, "", "nodes"), "", {"metadata": {"name": "n1"}, "spec": {"podCIDR": f"10.{octet}.0.0/16",
                                                                           "podCIDRs": [f"10.{octet}.0.0/16"]},
                                        "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.{octet}.2"}]}})
    svc, es = _rt(st, "", "services"), _rt(st, "discovery.k8s.io", "endpointslices")
    for i in range(N):
        st.create(svc, "app", {"metadata": {"name": f"s{i:04d}"},
                               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        st.create(es, "app", _slice(octet, i))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].split("} ")
            out[labels.split('"')[1]] = float(value)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh")
    big = dict(history=8 * N + 1000, watch_queue=8 * N + 1000, bookmark_interval=1.0)
    local = APIServer(crd_dir=CRDS, **big).start()
    remotes = {name: APIServer(crd_dir=CRDS, **big).start() for name in REMOTES}
    proc = None
    try:
        st = local.store
        for ns in ("meshcni-system", "app"):
            st.create(_rt(st, "", "namespaces"), "", {"metadata": {"name": ns}})
        st.create(_rt(st, "", "nodes"), "", {"metadata": {"name": "l1"}, "spec": {"podCIDR": "10.244.0.0/16",
                                                                               "podCIDRs": ["10.244.0.0/16"]}})
        svc = _rt(st, "", "services")
        for i in range(N):
            st.create(svc, "app", {"metadata": {"name": f"s{i:04d}", "annotations": {mesh.MULTI_CLUSTER: "true"}},
                                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        for name, octet in REMOTES.items():
            _seed_remote(remotes[name], octet)
            kc = remotes[name].write_kubeconfig(str(tmp / f"{name}.kubeconfig"))
            st.create(_rt(st, "", "secrets"), "meshcni-system",
                      {"metadata": {"name": f"{name}-kc"}, "stringData": {"config": open(kc).read()}})
        kc = local.write_kubeconfig(str(tmp / "local.kubeconfig"))
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "meshcni.cli", "controller", f"--kubeconfig={kc}",
                                 "--no-leader-elect", f"--metrics-address=127.0.0.1:{port}",
                                 "--namespace=meshcni-system", "--cluster-name=local",
                                 "--service-cidr=10.96.0.0/12", "--log-level=warning"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "controller.log", "w"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"controller did not get ready: {open(tmp / 'controller.log').read()[-2000:]}")
            time.sleep(0.05)
        api = api_client(kc)
        yield {"local": local, "remotes": remotes, "proc": proc, "port": port, "api": api, "tmp": tmp}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for srv in [local, *remotes.values()]:
            srv.stop()


def _ready(cluster):
    st = cluster.get("status") or {}
    ready = next((c for c in st.get("conditions") or () if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and st.get("meshedServices") == N


def _sync(env):
    if "sync" in env:
        return env["sync"]
    local = env["local"]
    st = local.store
    rt = _rt(st, "mesh-cni.dev", "clusters")
    rv0 = int(st.rv)
    t0 = time.perf_counter()
    for name in REMOTES:
        st.create(rt, "", {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
                           "spec": {"secret": {"name": f"{name}-kc"}}})
    while True:
        meps = st.objects.get(MEP_KEY, {})
        if len(meps) == 2 * N and all(_ready(c) for c in st.objects[rt.key].values()):
            break
        if time.perf_counter() - t0 > 600:
            pytest.fail(f"{len(meps)} of {2 * N} MeshEndpoints after 600 s")
        time.sleep(0.01)
    env["sync"] = {"seconds": time.perf_counter() - t0, "rv0": rv0}
    return env["sync"]


def _count(env):
    """After the sync (untimed): check every MeshEndpoint, count writes, read the controller's memory."""
    st = env["local"].store
    rv0 = env["sync"].pop("rv0", None)
    if rv0 is None:
        return env["sync"]
    time.sleep(1.0)  # let trailing status writes land before counting
    bad = [k for k, o in st.objects[MEP_KEY].items() if len(o["spec"]["backend_port_mappings"]) != EPS]
    assert not bad, f"{len(bad)} MeshEndpoints without {EPS} backends, e.g. {bad[:3]}"
    env["sync"].update({"writes": int(st.rv) - rv0 - len(REMOTES),
                   "writes_by_verb": _metric(env["port"], "meshcni_mesh_api_writes_total"),
                   "rss_mib": round(_rss_mib(env["proc"].pid), 1),
                   "peak_rss_mib": round(_rss_mib(env["proc"].pid, "VmHWM"), 1),
                   "meshendpoints": len(st.objects[MEP_KEY]), "backends": 2 * N * EPS})
    return env["sync"]


def test_cluster_created_to_all_meshendpoints(benchmark, env):
    benchmark.group = "mesh-sync"
    benchmark.pedantic(lambda: _sync(env), rounds=1, iterations=1)
    result = _count(env)
    benchmark.extra_info.update(result)
    print(f"\nmesh sync: {result}")


class _Seen:
    """A local informer's handler: wakes the waiter when ``want(obj)`` holds for the awaited key."""

    def __init__(self):
        self.key, self.want, self.event = None, None, threading.Event()

    def expect(self, key, want):
        self.event.clear()
        self.key, self.want = key, want

    def __call__(self, *args):
        obj = args[-1]
        m = obj.get("metadata") or {}
        if self.want is not None and f"{m.get('namespace')}/{m.get('name')}" == self.key and self.want(obj):
            self.want = None
            self.event.set()


def _latencies(benchmark, change, rounds):
    lat = []

    def one(i):
        t = time.perf_counter()
        change(i)
        lat.append(time.perf_counter() - t)
    it = iter(range(10 ** 6))
    benchmark.pedantic(lambda: one(next(it)), rounds=rounds, iterations=1)
    ms = sorted(x * 1000 for x in lat)
    benchmark.extra_info.update(median_ms=round(statistics.median(ms), 2),
                                p99_ms=round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2))
    return ms


def test_remote_slice_change_to_meshendpoint(benchmark, env):
    benchmark.group = "mesh-latency"
    _sync(env)
    _count(env)
    custom = client.CustomObjectsApi(env["api"])
    seen = _Seen()
    inf = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "meshendpoints", name="bench-meps")
    inf.add_handler(seen, seen)
    inf.start()
    assert inf.wait_for_sync(60)
    rapi = api_client(env["remotes"]["east"].write_kubeconfig(str(env["tmp"] / "east-bench.kubeconfig")))
    disc = client.DiscoveryV1Api(rapi)

    def change(i):
        svc = i % N
        new = f"10.250.{i // 256 % 256}.{i % 256}"
        seen.expect(f"app/s{svc:04d}-east", lambda o: any(m["ip"] == new for m in o["spec"]["backend_port_mappings"]))
        cur = env["remotes"]["east"].store.objects[("discovery.k8s.io", "endpointslices")][("app", f"s{svc:04d}-abc")]
        body = _slice(REMOTES["east"], svc, first=new)
        body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        disc.replace_namespaced_endpoint_slice(f"s{svc:04d}-abc", "app", body, _preload_content=False)
        if not seen.event.wait(30):
            raise AssertionError(f"MeshEndpoint s{svc:04d}-east never carried {new}")
    try:
        ms = _latencies(benchmark, change, ROUNDS)
    finally:
        inf.stop()
    benchmark.extra_info["path"] = "remote PUT -> remote watch -> controller -> local PUT -> local watch"
    print(f"\nremote change -> MeshEndpoint: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms")


def test_local_watch_floor(benchmark, env):
    benchmark.group = "mesh-latency"
    core = client.CoreV1Api(env["api"])
    core.create_namespaced_config_map("app", {"metadata": {"name": "floor"}, "data": {"v": "0"}})
    seen = _Seen()
    inf = Informer(core.list_config_map_for_all_namespaces, name="bench-floor")
    inf.add_handler(seen, seen)
    inf.start()
    assert inf.wait_for_sync(60)

    def change(i):
        v = str(i + 1)
        seen.expect("app/floor", lambda o: (o.get("data") or {}).get("v") == v)
        core.replace_namespaced_config_map("floor", "app", {"metadata": {"name": "floor"}, "data": {"v": v}},
                                           _preload_content=False)
        if not seen.event.wait(30):
            raise AssertionError("ConfigMap change never seen")
    try:
        ms = _latencies(benchmark, change, ROUNDS)
    finally:
        inf.stop()
    benchmark.extra_info["path"] = "local PUT -> local watch"
    print(f"\nlocal watch floor: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms")
