# SPDX-License-Identifier: MIT OR Apache-2.0
"""Faults in the simulator, with figures (issue 15's fault table, docs/reliability.md).

One 2-node cluster for the module (real agents, controller, kubelets, the real CNI plugin):

- the node-facing API server stopped during Service and NetworkPolicy churn
  (``sim apiserver stop|start``; loopback keeps serving, so the churn is
  written while nodes and the controller cannot see it): every map the
  control plane writes is byte-identical on both nodes for the whole outage,
  a client's ClusterIP loop never fails, and after the return both agents
  converge on the churn; the time to converge is printed and recorded;
- agents SIGKILLed N times in a row under a ClusterIP connection loop.

``MESHCNI_OUTAGE_SECONDS`` (default 15) and ``MESHCNI_AGENT_RESTARTS``
(default 10) set the sizes; docs/reliability.md has the long-run figures.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from kubernetes import client, config
from testutil import eventually, sim

from meshcni.bpf import MeshMaps
from meshcni.cni.endpoints import AgentClient

pytestmark = pytest.mark.e2e

NAME = "f"
NODES = (f"{NAME}-node1", f"{NAME}-node2")
OUTAGE = float(os.environ.get("MESHCNI_OUTAGE_SECONDS", "15"))
RESTARTS = int(os.environ.get("MESHCNI_AGENT_RESTARTS", "10"))
# what the control plane writes; conntrack, affinity, NAT and fragment state move with traffic
CONTROL_MAPS = ("mc_svc", "mc_backends", "mc_revnat", "mc_maglev", "mc_ipcache", "mc_endpoints", "mc_policy",
                "mc_enforce")
LOOP = ("import socket,sys,time\n"
        "ok=bad=0; errs={}; end=time.time()+float(sys.argv[3])\n"
        "while time.time()<end:\n"
        "    try:\n"
        "        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); s.recv(200); s.close(); ok+=1\n"
        "    except OSError as e:\n"
        "        bad+=1; errs[str(e)]=errs.get(str(e),0)+1\n"
        "    time.sleep(0.02)\n"
        "print(__import__('json').dumps({'ok':ok,'bad':bad,'errors':errs}))\n")


def wait(pred, timeout=60.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.2)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultroot")
    try:
        sim(root, "up", "--name", NAME, "--nodes", "2")
        c = client.Configuration()
        config.load_kube_config(config_file=os.path.join(root, NAME, "kubeconfig"), client_configuration=c)
        api = client.ApiClient(c)
        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        for i, node in enumerate(NODES):
            core.create_namespaced_pod("default", pod(f"web-{i}", {"app": "web"}, 8080, node))
        core.create_namespaced_pod("default", pod("client", {"role": "client"}, None, NODES[0]))
        core.create_namespaced_service("default", svc("web"))
        net.create_namespaced_network_policy("default", netpol("web-from-client", 80))
        for n in ("web-0", "web-1", "client"):
            wait(lambda n=n: running(core, n), what=n)
        cip = core.read_namespaced_service("web", "default").spec.cluster_ip
        yield root, core, net, cip
    finally:
        sim(root, "down", "--all", check=False)
        assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                    if n.startswith("mcsim-") and str(root) in n]


def pod(name, labels, port, node):
    spec = {"nodeName": node, "containers": [{"name": "app", "image": "sim", "ports": [
        {"name": "http", "containerPort": port, "protocol": "TCP"}] if port else []}]}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def svc(name, port=80):
    return {"metadata": {"name": name}, "spec": {"selector": {"app": "web"},
                                                 "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}


def netpol(name, port):
    return {"metadata": {"name": name}, "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": "http"} if port == 80 else {"port": port}]}]}}


def running(core, name):
    try:
        p = core.read_namespaced_pod(name, "default")
    except client.ApiException:
        return None
    return p if p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) else None


def node_dir(root, node):
    return root / NAME / "nodes" / node


def agent(root, node):
    return AgentClient(str(node_dir(root, node) / "run" / "agent.sock"), timeout=5)


def dump(root):
    """Every control-plane map of both nodes, as sorted (key, value) bytes."""
    out = {}
    for node in NODES:
        with MeshMaps(str(node_dir(root, node) / "bpf" / "meshcni")) as m:
            for name in CONTROL_MAPS:
                k, v = m.map(name).dump()
                out[(node, name)] = sorted((bytes(a.tobytes()), bytes(b.tobytes())) for a, b in zip(k, v))
    return out


def programmed(root, node):
    """(Service names, NetworkPolicy names) the node's agent programmed last."""
    a = agent(root, node)
    names = {s["name"].split(":")[0] for s in a._call("GET", "/v1/services")}
    pols = set(a._call("GET", "/v1/policy").get("perPolicy") or {})
    return names, pols


def loop(root, cip, seconds, out):
    p = sim(root, "exec", "--name", NAME, "default/client", "--", sys.executable, "-c", LOOP, cip, "80",
            str(seconds), check=False, timeout=seconds + 60)
    out["r"] = json.loads(p.stdout) if p.returncode == 0 else {"exec failed": p.stdout + p.stderr}


def test_apiserver_outage_during_churn(cl):
    root, core, net, cip = cl
    base_pols = {"default/web-from-client"}
    wait(lambda: all(programmed(root, n)[0] >= {"default/web"} and programmed(root, n)[1] == base_pols
                     for n in NODES), what="web and its policy programmed on both nodes")
    time.sleep(1.0)  # let the ipcache and policy reconcile the last identity writes
    base_svcs = programmed(root, NODES[0])[0]  # web, and the cluster's own (kubernetes) if it has one
    before = dump(root)
    assert before[(NODES[0], "mc_policy")] and before[(NODES[0], "mc_svc")]
    out = {}
    t = threading.Thread(target=loop, args=(root, cip, OUTAGE + 12, out))
    t.start()
    time.sleep(1.0)
    sim(root, "apiserver", "stop", "--name", NAME)
    t0 = time.monotonic()
    # churn through loopback while nodes and the controller see nothing
    n_svc = 12
    for i in range(n_svc):
        core.create_namespaced_service("default", svc(f"churn-{i}", 1000 + i))
        net.create_namespaced_network_policy("default", netpol(f"churn-{i}", 9000 + i))
    checks = 0
    half = t0 + OUTAGE / 2
    deleted = False
    while time.monotonic() - t0 < OUTAGE:
        if not deleted and time.monotonic() > half:
            for i in range(0, n_svc, 2):  # half of it goes again before anyone could see it
                core.delete_namespaced_service(f"churn-{i}", "default")
                net.delete_namespaced_network_policy(f"churn-{i}", "default")
            net.patch_namespaced_network_policy("churn-1", "default", {"spec": {"ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 9999}]}]}})
            deleted = True
        assert dump(root) == before, f"a map changed {time.monotonic() - t0:.1f} s into the outage"
        checks += 1
        time.sleep(1.0)
    want_svcs = base_svcs | {f"default/churn-{i}" for i in range(1, n_svc, 2)}
    want_pols = base_pols | {f"default/churn-{i}" for i in range(1, n_svc, 2)}
    sim(root, "apiserver", "start", "--name", NAME)
    t1 = time.monotonic()
    seen_web = []

    def converged():
        st = [programmed(root, n) for n in NODES]
        seen_web.append(all("default/web" in s for s, _ in st))
        last["st"] = st
        return all(s == want_svcs and p == want_pols for s, p in st)
    last = {}
    try:
        wait(converged, timeout=60, what="both agents converged on the churn")
    except AssertionError as e:
        raise AssertionError(f"{e}: want {sorted(want_svcs)} {sorted(want_pols)}, have {last.get('st')}") from None
    took = time.monotonic() - t1
    # and the datapath holds it: the churned Services' frontends and the changed policy are in the maps
    after = dump(root)
    assert all(seen_web), "the web Service left a node's programmed set after the return"
    for node in NODES:
        assert len(after[(node, "mc_svc")]) > len(before[(node, "mc_svc")])
        assert after[(node, "mc_policy")] != before[(node, "mc_policy")]
    t.join(OUTAGE + 90)
    r = out.get("r")
    print(f"outage {OUTAGE:.0f} s: {checks} map dumps identical on both nodes; converged {took:.2f} s after "
          f"the API server returned; client loop {r}")
    assert r and r.get("bad") == 0 and r.get("ok", 0) > 50, r
    assert took < 5.0, f"converged only after {took:.2f} s"


def node_netns(root, node):
    from meshcni.sim.topology import plan_nodes
    cfg = json.loads((root / NAME / "config.json").read_text())
    return next(n.netns for n in plan_nodes(NAME, cfg["index"], len(NODES), cfg.get("pod_cidr") or "10.244.0.0/16",
                                           str(root)) if n.name == node)


def allocated(root, node):
    """[IP] of every IPAM allocation on the node (a list: a duplicate shows)."""
    files = list((node_dir(root, node) / "ipam").glob("*/allocations.json"))
    assert len(files) == 1, files
    return [ip.split("/")[0] for a in json.loads(files[0].read_text())["allocations"].values() for ip in a["ips"]]


def veths(root, node):
    out = subprocess.run(["ip", "-n", node_netns(root, node), "-o", "link", "show", "type", "veth"],
                         capture_output=True, text=True, check=True).stdout
    return [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]


def pods_on(core, node, ns=None):
    items = core.list_namespaced_pod(ns).items if ns else core.list_pod_for_all_namespaces().items
    return [p for p in items if p.spec.node_name == node]


def test_agent_sigkilled_during_100_concurrent_adds(cl):
    root, core, net, cip = cl
    ns = "storm"
    n = int(os.environ.get("MESHCNI_STORM_PODS", "100"))
    core.create_namespace({"metadata": {"name": ns}})
    base = {node: sorted(p.status.pod_ip for p in pods_on(core, node)) for node in NODES}
    base_veths = {node: sorted(veths(root, node)) for node in NODES}  # the pods' and the node's uplink
    base_eps = {node: len(agent(root, node)._call("GET", "/v1/endpoints")) for node in NODES}
    pids = {node: agent_pid(root, node) for node in NODES}
    for i in range(n):
        core.create_namespaced_pod(ns, pod(f"s{i}", {"storm": "x"}, None, NODES[i % 2]))
    # both agents die while the kubelets' ADDs are in flight (4 at a time per node)
    eventually(lambda: sum(1 for p in core.list_namespaced_pod(ns).items if p.status.phase == "Running") >= 6,
               60, "the first ADDs done", interval=0.05)
    for node in NODES:
        os.kill(pids[node], signal.SIGKILL)
    t0 = time.monotonic()
    wait(lambda: sum(1 for p in core.list_namespaced_pod(ns).items if p.status.phase == "Running") == n,
         timeout=300, what=f"all {n} pods running")
    took = time.monotonic() - t0
    pods = core.list_namespaced_pod(ns).items
    ips = [p.status.pod_ip for p in pods]
    failed = [e for e in core.list_namespaced_event(ns).items if e.reason == "FailedCreatePodSandBox"]
    # every failure was a CNI error, and its pod runs now (succeeded on retry)
    assert all(e.message and ("CNI" in e.message or "meshcni" in e.message or "agent" in e.message)
               for e in failed), [e.message for e in failed][:5]
    assert len(set(ips)) == n and None not in ips
    for node in NODES:
        a = allocated(root, node)
        assert len(a) == len(set(a)), f"{node}: duplicate IPAM allocation"
    # delete them all: nothing of them may stay
    for p in pods:
        core.delete_namespaced_pod(p.metadata.name, ns)
    wait(lambda: not core.list_namespaced_pod(ns).items, timeout=180, what="storm pods gone")
    for node in NODES:
        wait(lambda node=node: sorted(allocated(root, node)) == base[node], timeout=60, what=f"{node}: IPs released")
        wait(lambda node=node: sorted(veths(root, node)) == base_veths[node], timeout=60, what=f"{node}: veths gone")
        wait(lambda node=node: len(agent(root, node)._call("GET", "/v1/endpoints")) == base_eps[node], timeout=60,
             what=f"{node}: endpoint records gone")
    wait(lambda: not [f for f in (root / NAME / "pods").iterdir() if f.name.startswith(f"{ns}_")], timeout=60,
         what="kubelet records gone")
    print(f"{n} pod ADDs, both agents SIGKILLed after the first few: all running {took:.1f} s after the kill; "
          f"{len(failed)} ADDs failed with a CNI error and succeeded on retry; {len(set(ips))} unique IPs; "
          f"after deleting them: 0 leaked IPs, veths, endpoint or kubelet records")


def agent_pid(root, node):
    out = subprocess.run(["pgrep", "-f", "--", f"--node-name={node} .*{root}"], capture_output=True,
                         text=True).stdout.split()
    return int(out[0]) if out else None


def test_agent_sigkilled_repeatedly_under_a_clusterip_loop(cl):
    root, core, net, cip = cl
    out = {}
    per_kill = 3.0
    t = threading.Thread(target=loop, args=(root, cip, RESTARTS * per_kill + 6, out))
    t.start()
    time.sleep(2.0)
    downtimes = []
    for i in range(RESTARTS):
        node = NODES[i % 2]
        pid = eventually(lambda: agent_pid(root, node), 30, f"agent of {node}", interval=0.1)
        os.kill(pid, signal.SIGKILL)  # no clean shutdown
        t0 = time.monotonic()
        eventually(lambda: (agent_pid(root, node) not in (None, pid)) and agent(root, node).healthy() is None,
                   60, f"agent of {node} back after kill {i + 1}", interval=0.1)
        downtimes.append(time.monotonic() - t0)
        time.sleep(max(0.0, per_kill - downtimes[-1]))
    t.join(RESTARTS * per_kill + 120)
    r = out.get("r")
    print(f"{RESTARTS} agent SIGKILLs; back (healthy) after {min(downtimes):.1f}-{max(downtimes):.1f} s "
          f"(mean {sum(downtimes) / len(downtimes):.1f} s); client loop {r}")
    assert r and r.get("bad") == 0 and r.get("ok", 0) > 100, r
