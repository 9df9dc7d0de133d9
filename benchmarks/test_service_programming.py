# SPDX-License-Identifier: MIT OR Apache-2.0
"""Service programming (control plane): API objects -> programmed maps, vs iptables-restore.

    python -m pytest benchmarks/test_service_programming.py --benchmark-only -q -s

Data (generated here, plain dicts of the shape an informer hands out):
``N_FULL`` (default 10000) ClusterIP Services, one TCP port 80 each,
clusterIP 10.96.x.y (the i-th address after 10.96.0.10), and per Service one
IPv4 EndpointSlice with ``EPS`` (10) ready endpoints 10.244.x.y:8080, so
100k backends at the default.

Map capacity: ``mc_svc`` holds one master + one slot entry per backend per
frontend (11 entries per Service here) and ``mc_backends`` one entry per
backend; both are 262,144 (layout.h), so 10k x 10 (110k svc entries, 100k
backends) fits and ``N_FIT`` == ``N_FULL``. ``N_FIT`` stays derived from the
layout (the largest multiple of 100 that fits both maps with room for the 1%
churn) so a smaller layout or a larger MESHCNI_BENCH_SVC_SERVICES still runs.
The pure ``desired_services`` step is also timed at N_FULL, and the
iptables-restore baseline runs at both sizes; ratios use N_FIT on both sides.

Benchmarks (``benchmark.group``):

svcprog-desired-full
    ``desired_services`` alone at N_FULL (pure Python, no maps).
svcprog-first
    ``desired_services`` + ``ServiceDatapath(pin_root).apply`` at N_FIT into
    empty maps on a fresh private bpffs each round (mount + map creation in
    setup, untimed). ``extra_info`` splits desired vs apply.
svcprog-churn
    maps hold N_FIT Services; 1% of the endpoints (endpoint 0 of every 10th
    slice, alternating between two addresses per round) change; timed:
    desired + apply of the whole new state.
svcprog-informer
    (1 round) the N_FIT Services and slices exist in a real ``APIServer`` on
    loopback (created untimed, POSTed raw); timed: two ``Informer``s start and
    sync, then desired + apply into empty maps.
svcprog-iptables-fit / svcprog-iptables-full
    the same Services as kube-proxy iptables-mode nat rules (KUBE-SERVICES ->
    KUBE-SVC-x with ``statistic --mode random --probability 1/k`` per endpoint
    -> KUBE-SEP-x MARK-MASQ + DNAT), one ``ip netns exec NS iptables-restore``
    into a test-made netns (fresh per round, untimed); timed: subprocess wall
    time. Rule text generated untimed.
svcprog-memory
    one subprocess: VmRSS after imports, then informer caches (real
    ``Informer`` objects, filled through ``_replace`` from ``json.loads`` of a
    list body, as a list does) of N_FULL Services, N_FULL slices, ``N_PODS``
    pods of a realistic shape, then the desired list. Reports KiB per pod and
    the whole at N_FULL services / N_FULL*EPS backends.

Safety: iptables only inside netns made here (deleted on exit); bpffs only
private mounts (unmounted on exit); the API server listens on 127.0.0.1.
"""
from __future__ import annotations

import gc
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from meshcni import layout, sandbox

pytestmark = pytest.mark.kernel

N_FULL = int(os.environ.get("MESHCNI_BENCH_SVC_SERVICES", "10000"))
EPS = 10
N_PODS = int(os.environ.get("MESHCNI_BENCH_SVC_PODS", "10000"))
NS = "bench"
ROUNDS = 3

_C = layout.constants()
# svc entries per Service = EPS slots + 1 master; backends need +1% for churn (union during apply)
N_FIT = min(N_FULL, _C["MC_SVC_MAX"] // (EPS + 1), int(_C["MC_BACKENDS_MAX"] / (EPS * 1.02))) // 100 * 100

RESULTS: dict = {}


# ---------------------------------------------------------------- data

def _ip4(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def cluster_ip(i: int) -> str:
    return _ip4((10 << 24 | 96 << 16) + 10 + i)


def pod_ip(g: int) -> str:
    return _ip4((10 << 24 | 244 << 16) + g)


def service(i: int, allocated: bool = True) -> dict:
    spec = {"type": "ClusterIP", "selector": {"app": f"app-{i:05d}"}, "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    if allocated:
        spec.update(clusterIP=cluster_ip(i), clusterIPs=[cluster_ip(i)], ipFamilies=["IPv4"],
                    ipFamilyPolicy="SingleStack", internalTrafficPolicy="Cluster")
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i:05d}", "namespace": NS, "uid": f"00000000-0000-4000-8000-{i:012d}",
                         "resourceVersion": str(2 * i + 1), "creationTimestamp": "2026-12-02T00:00:00Z",
                         "labels": {"app": f"app-{i:05d}"}},
            "spec": spec}


def endpoint_slice(i: int, churn: int = 0) -> dict:
    """Slice of service i; ``churn`` != 0 moves endpoint 0 of every 10th slice (1% of endpoints)."""
    eps = []
    for j in range(EPS):
        g = i * EPS + j
        ip = pod_ip(g) if not (churn and j == 0 and i % 10 == 0) else pod_ip(200_000 + churn * 20_000 + i // 10)
        eps.append({"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                    "nodeName": f"node-{g % 100:03d}", "zone": "zone-a",
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": f"app-{i:05d}-{j:02d}",
                                  "uid": f"10000000-0000-4000-8000-{g:012d}"}})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i:05d}-abcde", "namespace": NS, "generateName": f"svc-{i:05d}-",
                         "resourceVersion": str(2 * i + 2),
                         "labels": {"kubernetes.io/service-name": f"svc-{i:05d}",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": f"svc-{i:05d}",
                                              "uid": f"00000000-0000-4000-8000-{i:012d}",
                                              "controller": True, "blockOwnerDeletion": True}]},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def pod(g: int) -> dict:
    """A pod as the API returns it (one container, typical status), ~2.3 KB of JSON."""
    i, j = divmod(g, EPS)
    name = f"app-{i:05d}-{j:02d}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": f"10000000-0000-4000-8000-{g:012d}",
                         "resourceVersion": str(100_000 + g), "creationTimestamp": "2026-12-02T00:00:00Z",
                         "generateName": f"app-{i:05d}-", "labels": {"app": f"app-{i:05d}",
                                                                     "pod-template-hash": "7d9f8c6b5"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": f"app-{i:05d}-7d9f8c6b5", "controller": True,
                                              "blockOwnerDeletion": True,
                                              "uid": f"20000000-0000-4000-8000-{i:012d}"}]},
            "spec": {"nodeName": f"node-{g % 100:03d}", "serviceAccountName": "default", "restartPolicy": "Always",
                     "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                     "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                                     "imagePullPolicy": "IfNotPresent",
                                     "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                   "limits": {"memory": "256Mi"}},
                                     "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                                                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File"}],
                     "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                         {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                         {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 300}]},
            "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": f"192.168.{g % 100 // 250}.{g % 100 + 1}",
                       "podIP": pod_ip(g), "podIPs": [{"ip": pod_ip(g)}], "startTime": "2026-12-02T00:00:01Z",
                       "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-12-02T00:00:02Z"}
                                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                       "containerStatuses": [{"name": "app", "ready": True, "started": True, "restartCount": 0,
                                              "image": "registry.example/app:1.2.3",
                                              "imageID": "registry.example/app@sha256:" + "ab" * 32,
                                              "containerID": "containerd://" + hashlib.sha256(
                                                  str(g).encode()).hexdigest(),
                                              "state": {"running": {"startedAt": "2026-12-02T00:00:02Z"}}}]}}


def _via_json(objs):
    # what an informer caches: json.loads of a list body, not the generator's shared objects
    return json.loads(json.dumps({"items": objs}))["items"]


# ---------------------------------------------------------------- kube-proxy rules

def _chain(prefix: str, s: str) -> str:
    return f"{prefix}-" + hashlib.sha256(s.encode()).hexdigest()[:16].upper()


def kube_proxy_rules(n: int) -> str:
    """iptables-restore input: the nat table of kube-proxy's iptables mode for the first n Services."""
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    svc_rules, per = [], []
    for i in range(n):
        vip, name = cluster_ip(i), f"{NS}/svc-{i:05d}:http"
        svc = _chain("KUBE-SVC", name)
        chains.append(f":{svc} - [0:0]")
        svc_rules.append(f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                         f"-m tcp --dport 80 -j {svc}")
        per.append(f'-A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                   f"-m tcp --dport 80 -j KUBE-MARK-MASQ")
        for j in range(EPS):
            ip = pod_ip(i * EPS + j)
            sep = _chain("KUBE-SEP", f"{name}/{ip}")
            chains.append(f":{sep} - [0:0]")
            left = EPS - j
            prob = f" -m statistic --mode random --probability {1 / left:.11f}" if left > 1 else ""
            per.append(f'-A {svc} -m comment --comment "{name} -> {ip}:8080"{prob} -j {sep}')
            per.append(f'-A {sep} -s {ip}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            per.append(f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {ip}:8080')
    return "\n".join(["*nat", *chains,
                      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                      '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                      '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
                      "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
                      "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                      "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
                      "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" "
                      "-j MASQUERADE --random-fully",
                      *svc_rules, *per, "COMMIT", ""])


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def root_ok():
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), mounts, network namespaces)")


@pytest.fixture(scope="module")
def data():
    return {"svcs": _via_json([service(i) for i in range(N_FULL)]),
            "slices": _via_json([endpoint_slice(i) for i in range(N_FULL)]),
            "churn": {c: _via_json([endpoint_slice(i, c) for i in range(N_FIT)]) for c in (1, 2)}}


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if RESULTS:
        _print_summary()


def _count_backends(desired) -> int:
    return sum(len(s.backends) for s in desired)


def _fresh_datapath(stack: ExitStack):
    from meshcni.datapath.services import ServiceDatapath
    root = os.path.join(stack.enter_context(sandbox.private_bpffs("meshcni-svcbench-")), "meshcni")
    dp = ServiceDatapath(root)
    stack.callback(dp.close)
    return dp


def _program(dp, svcs, slices, ids, split: list):
    from meshcni.controllers.services import desired_services
    t0 = time.perf_counter()
    desired, problems = desired_services(svcs, slices, ids)
    t1 = time.perf_counter()
    dp.apply(desired)
    t2 = time.perf_counter()
    assert not problems, problems[:3]
    split.append((t1 - t0, t2 - t1, _count_backends(desired)))
    return desired


def _check_maps(dp, n: int):
    k, _ = dp.maps.svc.dump()
    assert len(k) == n * (EPS + 1), len(k)
    bk, _ = dp.maps.backends.dump()
    assert len(bk) == n * EPS, len(bk)


# ---------------------------------------------------------------- benchmarks

def test_desired_full(benchmark, data):
    from meshcni.controllers.services import ServiceIDs, desired_services
    out = []
    benchmark.group = "svcprog-desired-full"
    benchmark.pedantic(lambda: out.append(desired_services(data["svcs"], data["slices"], ServiceIDs())),
                       rounds=ROUNDS, iterations=1)
    desired, problems = out[-1]
    assert not problems and len(desired) == N_FULL and _count_backends(desired) == N_FULL * EPS
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(services=N_FULL, backends=N_FULL * EPS, backends_per_s=N_FULL * EPS / med,
                                timed="desired_services only (pure, no maps)")
    RESULTS["desired_full"] = med


def test_program_first(benchmark, root_ok, data):
    from meshcni.controllers.services import ServiceIDs
    svcs, slices = data["svcs"][:N_FIT], data["slices"][:N_FIT]
    split: list = []
    with ExitStack() as outer:
        state = {}

        def setup():
            if "stack" in state:
                state["stack"].close()
            state["stack"] = outer.enter_context(ExitStack())
            state["dp"] = _fresh_datapath(state["stack"])
            gc.collect()

        benchmark.group = "svcprog-first"
        benchmark.pedantic(lambda: _program(state["dp"], svcs, slices, ServiceIDs(), split),
                           setup=setup, rounds=ROUNDS, iterations=1)
        _check_maps(state["dp"], N_FIT)
    med = benchmark.stats.stats.median
    d_med = statistics.median(s[0] for s in split)
    a_med = statistics.median(s[1] for s in split)
    benchmark.extra_info.update(services=N_FIT, backends=N_FIT * EPS, backends_per_s=N_FIT * EPS / med,
                                desired_seconds=[s[0] for s in split], apply_seconds=[s[1] for s in split],
                                desired_median=d_med, apply_median=a_med,
                                timed="desired_services + ServiceDatapath.apply into empty maps")
    RESULTS["first"] = dict(median=med, desired=d_med, apply=a_med)


def test_program_churn(benchmark, root_ok, data):
    from meshcni.controllers.services import ServiceIDs
    svcs = data["svcs"][:N_FIT]
    split: list = []
    with ExitStack() as stack:
        dp = _fresh_datapath(stack)
        ids = ServiceIDs()
        _program(dp, svcs, data["slices"][:N_FIT], ids, [])
        k = [0]

        def one():
            k[0] += 1
            _program(dp, svcs, data["churn"][1 + k[0] % 2], ids, split)

        benchmark.group = "svcprog-churn"
        benchmark.pedantic(one, setup=gc.collect, rounds=5, iterations=1)
        _check_maps(dp, N_FIT)
    med = benchmark.stats.stats.median
    changed = N_FIT // 10
    benchmark.extra_info.update(services=N_FIT, backends=N_FIT * EPS, changed_endpoints=changed,
                                desired_median=statistics.median(s[0] for s in split),
                                apply_median=statistics.median(s[1] for s in split),
                                timed="desired_services + apply of the whole state after 1% of endpoints moved")
    RESULTS["churn"] = dict(median=med, changed=changed,
                            desired=statistics.median(s[0] for s in split),
                            apply=statistics.median(s[1] for s in split))


def _post_all(url: str, jobs, clients: int = 4):
    import threading
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

    ts = [threading.Thread(target=worker, args=(jobs[k::clients],)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:5]


def test_informer_e2e(benchmark, root_ok, data, tmp_path):
    from kubernetes import client, config

    from meshcni.apiserver import APIServer
    from meshcni.controllers.services import ServiceIDs
    from meshcni.k8s.informer import Informer

    with ExitStack() as stack:
        srv = stack.enter_context(APIServer(history=4 * N_FIT + 1000, watch_queue=4 * N_FIT))
        api = config.new_client_from_config(config_file=srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        jobs = []
        for i in range(N_FIT):
            s = service(i)
            for f in ("uid", "resourceVersion", "creationTimestamp"):
                s["metadata"].pop(f)
            sl = endpoint_slice(i)
            for f in ("resourceVersion", "ownerReferences"):
                sl["metadata"].pop(f)
            jobs.append((f"/api/v1/namespaces/{NS}/services", json.dumps(s).encode()))
            jobs.append((f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", json.dumps(sl).encode()))
        t0 = time.perf_counter()
        _post_all(srv.url, jobs)
        create_s = time.perf_counter() - t0
        dp = _fresh_datapath(stack)
        split: list = []
        infs = []

        def run():
            si = Informer(core.list_namespaced_service, namespace=NS, name="services")
            ei = Informer(disc.list_namespaced_endpoint_slice, namespace=NS, name="endpointslices")
            infs.extend((si, ei))
            si.start()
            ei.start()
            t = time.perf_counter()
            assert si.wait_for_sync(120) and ei.wait_for_sync(120)
            split.append(time.perf_counter() - t)
            _program(dp, si.list(), ei.list(), ServiceIDs(), split)

        stack.callback(lambda: [i.stop() for i in infs])
        benchmark.group = "svcprog-informer"
        benchmark.pedantic(run, rounds=1, iterations=1)
        _check_maps(dp, N_FIT)
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(services=N_FIT, backends=N_FIT * EPS, backends_per_s=N_FIT * EPS / med,
                                create_seconds_untimed=create_s, sync_seconds=split[0],
                                desired_seconds=split[1][0], apply_seconds=split[1][1],
                                timed="2 informers start+sync (list over HTTP, json) + desired + apply")
    RESULTS["informer"] = dict(median=med, sync=split[0], desired=split[1][0], apply=split[1][1], create=create_s)


@pytest.mark.parametrize("size", ["fit", "full"])
def test_iptables_restore(benchmark, root_ok, size):
    n = N_FIT if size == "fit" else N_FULL
    rules = kube_proxy_rules(n)
    with ExitStack() as outer:
        state = {}

        def setup():
            if "stack" in state:
                state["stack"].close()
            state["stack"] = outer.enter_context(ExitStack())
            state["ns"] = state["stack"].enter_context(sandbox.netns("mcsvcb"))

        def restore():
            subprocess.run(["ip", "netns", "exec", state["ns"], "iptables-restore"], input=rules,
                           text=True, check=True, capture_output=True)

        benchmark.group = f"svcprog-iptables-{size}"
        benchmark.pedantic(restore, setup=setup, rounds=2 if size == "fit" else 1, iterations=1)
        out = subprocess.run(["ip", "netns", "exec", state["ns"], "iptables-save", "-t", "nat"],
                             check=True, capture_output=True, text=True).stdout
        assert out.count(" -j DNAT ") == n * EPS and out.count("-A KUBE-SERVICES ") == n
    med = benchmark.stats.stats.median
    nrules = rules.count("\n-A ")
    benchmark.extra_info.update(services=n, backends=n * EPS, rules=nrules, bytes=len(rules),
                                backends_per_s=n * EPS / med,
                                iptables=subprocess.run(["iptables", "--version"], capture_output=True,
                                                        text=True).stdout.strip(),
                                timed="wall time of one `ip netns exec NS iptables-restore` (fresh netns)")
    RESULTS[f"ipt_{size}"] = dict(median=med, rules=nrules, services=n)
    if size == "fit" and "first" in RESULTS:
        benchmark.extra_info["meshcni_speedup"] = med / RESULTS["first"]["median"]


_MEM_SCRIPT = r"""
import gc, json, os, sys
sys.path.insert(0, sys.argv[1])
from meshcni.k8s.informer import Informer
from meshcni.k8s.trim import trim_endpointslice, trim_pod, trim_service
from meshcni.controllers.services import ServiceIDs, desired_services
TRIM = sys.argv[5] == "trim"  # the agent's informer transforms, or whole objects (the old agent)
def rss():
    gc.collect()
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def load(path, name, fn):
    inf = Informer(lambda **kw: None, name=name)
    items = []
    with open(path, "rb") as f:  # one list page (500 objects, the agent's page size) per line
        for line in f:
            page = json.loads(line)
            items.extend(map(fn, page) if TRIM else page)
            del page
    inf._replace(items, "1")
    del items
    return inf
out = {"base": rss()}
keep = []
keep.append(load(sys.argv[2], "services", trim_service)); out["services"] = rss()
keep.append(load(sys.argv[3], "endpointslices", trim_endpointslice)); out["slices"] = rss()
d, p = desired_services(keep[0].list(), keep[1].list(), ServiceIDs())
keep.append(d); out["desired"] = rss()
keep.append(load(sys.argv[4], "pods", trim_pod)); out["pods"] = rss()
out["n"] = [len(keep[0]), len(keep[1]), len(d), sum(len(s.backends) for s in d), len(keep[3])]
print(json.dumps(out))
"""


@pytest.mark.parametrize("cache", ["trim", "whole"])
def test_agent_memory(benchmark, tmp_path, cache):
    paths = []
    for name, objs in (("services", [service(i) for i in range(N_FULL)]),
                       ("slices", [endpoint_slice(i) for i in range(N_FULL)]),
                       ("pods", [pod(g) for g in range(N_PODS)])):
        p = tmp_path / f"{name}.json"
        p.write_text("".join(json.dumps(objs[i:i + 500]) + "\n" for i in range(0, len(objs), 500)))
        paths.append(str(p))
    pod_json = (os.path.getsize(paths[2]) - N_PODS // 500) / N_PODS
    res = {}

    def run():
        p = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(Path(__file__).resolve().parents[1]), *paths,
                            cache],
                           capture_output=True, text=True, check=True, timeout=300)
        res.update(json.loads(p.stdout.strip().splitlines()[-1]))

    benchmark.group = "svcprog-memory"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert res["n"] == [N_FULL, N_FULL, N_FULL, N_FULL * EPS, N_PODS], res["n"]
    per_pod = (res["pods"] - res["desired"]) / N_PODS
    svc_state = res["desired"] - res["base"]
    total = res["pods"] - res["base"]
    benchmark.extra_info.update(rss_kib=res, pods=N_PODS, pod_json_bytes=pod_json, kib_per_pod=per_pod,
                                kib_services_state=svc_state, kib_total=total,
                                kib_total_per_pod=total / N_PODS, cache=cache,
                                timed="subprocess wall time (not the point: see rss_kib)")
    RESULTS["mem" if cache == "trim" else "mem_whole"] = dict(res=res, per_pod=per_pod, svc_state=svc_state, total=total, pod_json=pod_json)


# ---------------------------------------------------------------- summary

def _print_summary():
    r = RESULTS
    lines = ["", f"Service programming: {N_FULL} Services x {EPS} endpoints; datapath at N_FIT={N_FIT} "
                 f"(map capacity: mc_svc {_C['MC_SVC_MAX']}, mc_backends {_C['MC_BACKENDS_MAX']})",
             f"{'what':46} {'services':>8} {'backends':>8} {'median s':>9} {'backends/s':>11}"]

    def row(what, n, sec):
        lines.append(f"{what:46} {n:8d} {n * EPS:8d} {sec:9.4f} {n * EPS / sec:11,.0f}")
    if "desired_full" in r:
        row("desired_services only", N_FULL, r["desired_full"])
    if "first" in r:
        f = r["first"]
        row("meshcni first programming (desired+apply)", N_FIT, f["median"])
        lines.append(f"{'  of which desired / apply':46} {'':8} {'':8} {f['desired']:.4f} / {f['apply']:.4f}")
    if "informer" in r:
        i = r["informer"]
        row("informer sync + desired + apply", N_FIT, i["median"])
        lines.append(f"{'  sync / desired / apply (create untimed)':46} {'':8} {'':8} "
                     f"{i['sync']:.3f} / {i['desired']:.3f} / {i['apply']:.3f} ({i['create']:.1f} s)")
    for size in ("fit", "full"):
        if f"ipt_{size}" in r:
            row(f"iptables-restore ({r[f'ipt_{size}']['rules']} rules)", r[f"ipt_{size}"]["services"],
                r[f"ipt_{size}"]["median"])
    if "churn" in r:
        c = r["churn"]
        lines.append(f"1% churn ({c['changed']} endpoints moved): {c['median'] * 1e3:.1f} ms "
                     f"(desired {c['desired'] * 1e3:.1f} + apply {c['apply'] * 1e3:.1f})")
    if "first" in r and "ipt_fit" in r:
        lines.append(f"meshcni vs iptables-restore at {N_FIT} services: "
                     f"{r['ipt_fit']['median'] / r['first']['median']:.1f}x faster")
    if "mem" in r:
        m = r["mem"]
        lines.append(f"RSS (KiB): {m['res']}; per pod {m['per_pod']:.2f} KiB (pod JSON {m['pod_json']:.0f} B); "
                     f"services state {m['svc_state']} KiB; total {m['total']} KiB")
    print("\n".join(lines))
