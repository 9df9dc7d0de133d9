# SPDX-License-Identifier: MIT OR Apache-2.0
"""Identities across meshed clusters at scale: remote pods -> RemoteIdentities -> an agent's ipcache.

    python -m pytest benchmarks/test_mesh_identities.py --benchmark-only -q -s

Setup (untimed, measured once): ``R`` remote clusters (default 3, ``MESHCNI_BENCH_XID_REMOTES``), each
an in-process ``APIServer`` with ``PODS`` pods (3000, ``MESHCNI_BENCH_XID_PODS``) in ``SETS`` label
sets (300, ``MESHCNI_BENCH_XID_SETS``), running, with addresses; the local cluster the same (its own
pods and label sets), a NetworkPolicy on the local ``app-0`` pods admitting the pods of the odd
label sets of every cluster (``mesh-cni.dev/cluster`` Exists). The real ``meshcni controller``
(no leader election) meshes the ``R`` Clusters and makes the local Identities; a real in-process
``Agent`` (private bpffs, private cgroup2 child, routes off) programs everything.

Measured once: seconds until every RemoteIdentity exists, the controller's API writes for them,
RemoteIdentity objects vs remote pods, the agent's ipcache entries and policy rows, and the process
RSS growth over the controller's and the agent's start (everything runs in one process, so the
controller's figure also holds the local API server's copy of what it wrote).

Timed (group ``xid-relabel``), ``ROUNDS`` (20) rounds of two relabels, in alternating order:

local
    a local pod's ``app`` label moves from an even label set to the next (odd, admitted) one,
    until the agent's ipcache apply has returned with that pod's address -> the new set's id
    (the policy admitting it is already in place: this is when the pod gets admitted);
remote
    the same relabel of a remote cluster's pod on its API server: remote watch -> controller ->
    two RemoteIdentity replaces -> the agent's watch -> ipcache apply.
"""
from __future__ import annotations

import gc
import http.client
import ipaddress
import json
import os
import statistics
import threading
import time
from contextlib import ExitStack

import pytest

from meshcni import sandbox

pytestmark = pytest.mark.kernel

R = int(os.environ.get("MESHCNI_BENCH_XID_REMOTES", "3"))
PODS = int(os.environ.get("MESHCNI_BENCH_XID_PODS", "3000"))
SETS = int(os.environ.get("MESHCNI_BENCH_XID_SETS", "300"))
ROUNDS = int(os.environ.get("MESHCNI_BENCH_XID_ROUNDS", "20"))
NS = "bench"
CTL_NS = "meshcni-system"
CRDS = os.path.join(os.path.dirname(__file__), "..", "deploy", "crds")
CL = "mesh-cni.dev/cluster"
G, V = "mesh-cni.dev", "v1alpha1"
RESULTS: dict = {}


def pod_ip(cluster: int, i: int) -> str:
    # cluster 0 is local: 10.244/16; remote c: 10.(244+c)/16
    return str(ipaddress.IPv4Address((10 << 24) | ((244 + cluster) << 16) | (i + 10)))


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p-{i:05d}", "namespace": NS, "labels": {"app": f"app-{i % SETS}"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}


def _requests(url, jobs, clients=4, ok=(200, 201)):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    errors = []

    def worker(part):
        conn = http.client.HTTPConnection(host, int(port))
        for method, path, body, ctype in part:
            conn.request(method, path, json.dumps(body).encode(), {"Content-Type": ctype})
            r = conn.getresponse()
            r.read()
            if r.status not in ok:
                errors.append((path, r.status))
        conn.close()
    ts = [threading.Thread(target=worker, args=(jobs[k::clients],)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:5]


def fill(srv, cluster: int, with_node: bool):
    """PODS running pods with addresses in namespace NS of ``srv``."""
    jobs = [("POST", "/api/v1/namespaces", {"metadata": {"name": NS}}, "application/json")]
    _requests(srv.url, jobs, clients=1)
    jobs = [("POST", f"/api/v1/namespaces/{NS}/pods", pod(i), "application/json") for i in range(PODS)]
    _requests(srv.url, jobs)
    jobs = [("PATCH", f"/api/v1/namespaces/{NS}/pods/p-{i:05d}/status",
             {"status": {"phase": "Running", "podIP": pod_ip(cluster, i), "podIPs": [{"ip": pod_ip(cluster, i)}]}},
             "application/merge-patch+json") for i in range(PODS)]
    _requests(srv.url, jobs)
    node = {"metadata": {"name": "n1" if with_node else f"r{cluster}-n1"},
            "spec": {"podCIDR": f"10.{244 + cluster}.0.0/16", "podCIDRs": [f"10.{244 + cluster}.0.0/16"]},
            "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.{cluster}.2"}]}}
    _requests(srv.url, [("POST", "/api/v1/nodes", node, "application/json")], clients=1)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def policy() -> dict:
    odd = [f"app-{k}" for k in range(1, SETS, 2)]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "from-odd", "namespace": NS},
            "spec": {"podSelector": {"matchLabels": {"app": "app-0"}},
                     "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                         {"key": CL, "operator": "Exists"}, {"key": "app", "operator": "In", "values": odd}]}}]}]}}


class Probe:
    """Times one relabel: write -> the agent's ipcache apply returned with ``ip`` -> ``ident``."""

    def __init__(self, agent):
        self.done = threading.Event()
        self.want = None
        dp = agent.ipcache.ipcache
        orig = dp.apply

        def apply(prefixes, *a, **kw):
            r = orig(prefixes, *a, **kw)
            w = self.want
            if w is not None and not self.done.is_set() and prefixes.get(w[0]) == w[1]:
                self.t = time.perf_counter()
                self.done.set()
            return r
        dp.apply = apply  # the real apply runs; only its return is timed

    def arm(self, ip, ident):
        self.done.clear()
        self.want = (f"{ip}/32", ident)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), bpffs, cgroup2)")
    from kubernetes import client, config

    from meshcni.agent.agent import Agent, AgentConfig
    from meshcni.apiserver import APIServer
    from meshcni.controller import Controller, ControllerConfig
    tmp = tmp_path_factory.mktemp("xidbench")
    with ExitStack() as stack:
        hist = 4 * PODS + 10_000
        local = stack.enter_context(APIServer(crd_dir=CRDS, history=hist, watch_queue=hist))
        remotes = [stack.enter_context(APIServer(crd_dir=CRDS, history=hist, watch_queue=hist)) for _ in range(R)]
        fill(local, 0, with_node=True)
        for c, srv in enumerate(remotes, 1):
            fill(srv, c, with_node=False)
        kc = local.write_kubeconfig(str(tmp / "kubeconfig"))
        api = config.new_client_from_config(config_file=kc)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        client.NetworkingV1Api(api).create_namespaced_network_policy(NS, policy())
        core.create_namespace({"metadata": {"name": CTL_NS}})
        import base64
        for c, srv in enumerate(remotes, 1):
            rkc = open(srv.write_kubeconfig(str(tmp / f"remote-{c}"))).read()
            core.create_namespaced_secret(CTL_NS, {"metadata": {"name": f"c{c}-kc"},
                                                   "data": {"config": base64.b64encode(rkc.encode()).decode()}})
        gc.collect()
        rss0 = rss()
        ctl = Controller(ControllerConfig(kubeconfig=kc, leader_elect=False, metrics_address="127.0.0.1:0",
                                          cluster_name="c0", namespace=CTL_NS)).start()
        stack.callback(ctl.stop)
        t0 = time.perf_counter()
        for c in range(1, R + 1):
            custom.create_cluster_custom_object(G, V, "clusters", {
                "apiVersion": f"{G}/{V}", "kind": "Cluster", "metadata": {"name": f"c{c}"},
                "spec": {"secret": {"name": f"c{c}-kc"}}})

        def count():
            return len(custom.list_cluster_custom_object(G, V, "remoteidentities")["items"])
        deadline = time.monotonic() + 300
        while count() < R * SETS:
            assert time.monotonic() < deadline, f"{count()} of {R * SETS} RemoteIdentities after 300 s"
            time.sleep(0.2)
        t_rids = time.perf_counter() - t0
        while len(custom.list_cluster_custom_object(G, V, "identities")["items"]) < SETS:
            assert time.monotonic() < deadline, "local Identities"
            time.sleep(0.2)
        time.sleep(1.0)
        gc.collect()
        rss_ctl = rss() - rss0
        writes = {k: v for k, v in ctl.mesh.writes.items() if k.startswith("rid_")}

        bpf = stack.enter_context(sandbox.private_bpffs("meshcni-xidbench-"))
        cg = stack.enter_context(sandbox.private_cgroup2_child("meshcni-xidbench-"))
        pin_root = os.path.join(bpf, "meshcni")
        rss1 = rss()
        agent = Agent(AgentConfig(node_name="n1", kubeconfig=kc, bpf_root=pin_root, cgroup_root=cg,
                                  cni_bin_dir=str(tmp / "bin"), cni_conf_dir=str(tmp / "net.d"),
                                  socket=str(tmp / "agent.sock"), state_dir=str(tmp / "state"),
                                  ipam_dir=str(tmp / "ipam"), metrics_address="127.0.0.1:0", routes=False,
                                  sync_timeout=180, cluster_name="c0"))

        def stop():
            agent.stop()
            from meshcni.datapath.socklb import SockLB
            with SockLB(pin_root) as lb:
                lb.detach(cg)
        agent.start()
        stack.callback(stop)
        gc.collect()
        rss_agent = rss() - rss1
        RESULTS["setup"] = dict(remotes=R, pods_per_cluster=PODS, sets_per_cluster=SETS,
                                rids=count(), rid_writes=sum(writes.values()), rid_writes_by_verb=writes,
                                seconds_to_all_rids=round(t_rids, 2), ipcache=agent.ipcache.size,
                                policy_rows=agent.policy.stats.get("entries"),
                                controller_rss_mib=round(rss_ctl / 2 ** 20, 1),
                                agent_rss_mib=round(rss_agent / 2 ** 20, 1))
        print("\nsetup:", json.dumps(RESULTS["setup"]))
        rapis = []
        for c, srv in enumerate(remotes, 1):
            rapis.append(client.CoreV1Api(config.new_client_from_config(
                config_file=str(tmp / f"remote-{c}"))))
        yield {"agent": agent, "ctl": ctl, "core": core, "remote_core": rapis, "probe": Probe(agent)}


def _ident(agent, cluster: int, app: str):
    """The id the agent holds for label set ``app`` of ``cluster`` (0 local)."""
    if cluster == 0:
        objs = agent.caches["identities"].list()
        return next(o["spec"]["id"] for o in objs if o["spec"]["podLabels"].get("app") == app)
    objs = agent.caches["remoteidentities"].list()
    return next(o["spec"]["id"] for o in objs
                if o["spec"]["cluster"] == f"c{cluster}" and o["spec"]["podLabels"].get("app") == app)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def test_relabel_to_enforcement(benchmark, mesh):
    agent, probe = mesh["agent"], mesh["probe"]
    samples = {"local": [], "remote": []}
    state = {"round": 0}

    def relabel(path, k):
        # pod i of an even set moves to the next (odd, admitted) set; each round another pod
        i = (2 * k * 7) % SETS + SETS * (k % max(1, PODS // SETS - 1))
        cluster = 0 if path == "local" else 1 + k % R
        api = mesh["core"] if cluster == 0 else mesh["remote_core"][cluster - 1]
        target = f"app-{i % SETS + 1}"
        ident = _ident(agent, cluster, target)
        time.sleep(0.05)  # the previous round's reconciles have returned
        probe.arm(pod_ip(cluster, i), ident)
        t0 = time.perf_counter()
        api.patch_namespaced_pod(f"p-{i:05d}", NS, {"metadata": {"labels": {"app": target}}})
        assert probe.done.wait(60), f"{path} relabel of p-{i:05d} never reached the ipcache"
        samples[path].append(probe.t - t0)
        api.patch_namespaced_pod(f"p-{i:05d}", NS, {"metadata": {"labels": {"app": f"app-{i % SETS}"}}})

    def pair():
        state["round"] += 1
        k = state["round"]
        for path in (("local", "remote") if k % 2 else ("remote", "local")):
            relabel(path, k)

    benchmark.group = "xid-relabel"
    benchmark.pedantic(pair, setup=lambda: None if gc.collect() is None else None, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(RESULTS["setup"])
    for path, xs in samples.items():
        RESULTS[path] = {"median_s": statistics.median(xs), "p99_s": _pct(xs, 99), "n": len(xs)}
        benchmark.extra_info.update({f"{path}_median_s": RESULTS[path]["median_s"],
                                     f"{path}_p99_s": RESULTS[path]["p99_s"]})
    print("relabel -> ipcache:", json.dumps({p: RESULTS[p] for p in ("local", "remote")}))
