# SPDX-License-Identifier: MIT OR Apache-2.0
"""`meshcni agent` in the simulator: Services by ClusterIP through the socket LB, live.

One cluster with an agent per node (started with the DaemonSet's own args)
for the whole module; real pods, the real plugin, the real API protocol.
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

pytestmark = pytest.mark.e2e

COUNT = ("import socket,sys,collections\n"
         "c=collections.Counter()\n"
         "for _ in range(int(sys.argv[3])):\n"
         "    try:\n"
         "        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); c[s.recv(200).decode().strip()]+=1; s.close()\n"
         "    except OSError as e:\n"
         "        c['failed']+=1\n"
         "print(__import__('json').dumps(c))\n")
LOOP = ("import socket,sys,time\n"
        "ok=bad=0; end=time.time()+float(sys.argv[3])\n"
        "while time.time()<end:\n"
        "    try:\n"
        "        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); s.recv(200); s.close(); ok+=1\n"
        "    except OSError:\n"
        "        bad+=1\n"
        "    time.sleep(0.01)\n"
        "print(ok, bad)\n")


def wait(pred, timeout=30.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.2)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = tmp_path_factory.mktemp("agentroot")
    try:
        sim(root, "up", "--name", "m", "--nodes", "2")
        c = client.Configuration()
        config.load_kube_config(config_file=os.path.join(root, "m", "kubeconfig"), client_configuration=c)
        api = client.ApiClient(c)
        yield root, client.CoreV1Api(api)
    finally:
        sim(root, "down", "--all", check=False)
        assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                    if n.startswith("mcsim-") and str(root) in n]


def pod(name, labels, port=None, node=None):
    spec = {"containers": [{"name": "app", "image": "sim",
                            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}] if port else []}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def running(core, name):
    try:
        p = core.read_namespaced_pod(name, "default")
    except client.ApiException:
        return None
    return p if p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) else None


def counts(root, frm, ip, port, n=30):
    out = sim(root, "exec", "--name", "m", f"default/{frm}", "--", sys.executable, "-c", COUNT, ip, str(port), str(n))
    return json.loads(out.stdout)


def test_agents_are_ready_and_untainted(cl):
    root, core = cl
    for n in core.list_node().items:
        assert not [t for t in n.spec.taints or [] if t.key == "mesh-cni.dev/startup"]
    # the agent's argv is the DaemonSet's, host paths mapped onto the node
    log = (root / "m" / "logs" / "agent-m-node1.log").read_text()
    assert "ready" in log and "socket LB on cgroup" in log
    ns = json.loads((root / "m" / "config.json").read_text())
    from meshcni.sim.topology import plan_nodes
    node_ns = plan_nodes("m", ns["index"], 1, "10.244.0.0/16", str(root))[0].netns
    import yaml
    from meshcni.sim.cluster import DAEMONSET
    with open(DAEMONSET) as f:  # the chart's port, as the DaemonSet passes it
        args = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"][0]["args"]
    port = next(a for a in args if a.startswith("--metrics-address=")).rpartition(":")[2]
    code = ("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:%s/metrics',timeout=5).read().decode())"
            % port)
    out = subprocess.run(["ip", "netns", "exec", node_ns, sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=30).stdout
    assert 'meshcni_reconcile_total{controller="services",outcome="ok"}' in out
    routes = subprocess.run(["ip", "-n", node_ns, "route", "show", "proto", "191"], capture_output=True,
                            text=True).stdout
    assert "10.244.1.0/24 via 172.30." in routes  # the other node's podCIDR, owned by the agent
    assert "meshcni_map_capacity" in out


def test_service_routing_follows_scale_readiness_and_deletion(cl):
    root, core = cl
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    for i in range(2):
        core.create_namespaced_pod("default", pod(f"web-{i}", {"app": "web"}, 8080 + i))
    core.create_namespaced_pod("default", pod("client", {"role": "client"}))
    for name in ("web-0", "web-1", "client"):
        wait(lambda n=name: running(core, n), what=name)
    cip = core.read_namespaced_service("web", "default").spec.cluster_ip
    wait(lambda: set(counts(cl[0], "client", cip, 80)) == {"default/web-0", "default/web-1"}, what="2 backends")
    # scale up
    core.create_namespaced_pod("default", pod("web-2", {"app": "web"}, 8082))
    wait(lambda: set(counts(root, "client", cip, 80)) == {"default/web-0", "default/web-1", "default/web-2"},
         what="3 backends")
    # readiness off: no new connections to it
    core.patch_namespaced_pod("web-1", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": "true"}}})
    wait(lambda: set(counts(root, "client", cip, 80)) == {"default/web-0", "default/web-2"}, what="web-1 out")
    # deletion (scale down)
    core.delete_namespaced_pod("web-2", "default")
    wait(lambda: counts(root, "client", cip, 80) == {"default/web-0": 30}, what="only web-0")


def test_agent_restart_keeps_every_connection(cl):
    root, core = cl
    wait(lambda: running(core, "client"), what="client")
    cip = core.read_namespaced_service("web", "default").spec.cluster_ip
    out = {}

    def loop():
        p = sim(root, "exec", "--name", "m", "default/client", "--", sys.executable, "-c", LOOP, cip, "80", "8")
        out["r"] = p.stdout.split()

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(1.5)
    for node in ("m-node1", "m-node2"):
        pid = int(subprocess.run(["pgrep", "-f", "--", f"--node-name={node} .*{root}"], capture_output=True,
                                 text=True).stdout.split()[0])
        os.kill(pid, signal.SIGKILL)  # the worst case: no clean shutdown
    t.join(60)
    ok, bad = int(out["r"][0]), int(out["r"][1])
    assert ok > 50 and bad == 0, out
    # the supervisor brought the agents back, and they still program changes
    wait(lambda: (root / "m" / "logs" / "agent-m-node1.log").read_text().count(" ready") >= 2, what="agent back")
    core.patch_namespaced_pod("web-1", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": None}}})
    wait(lambda: set(counts(root, "client", cip, 80)) == {"default/web-0", "default/web-1"}, what="web-1 back")


def test_cli_reads_the_agent(cl):
    root, core = cl
    sock = str(root / "m" / "nodes" / "m-node1" / "run" / "agent.sock")

    def cli(*a):
        p = subprocess.run([sys.executable, "-m", "meshcni.cli", *a, "--socket", sock], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout
    st = json.loads(cli("status", "-o", "json"))
    assert st["node"] == "m-node1" and st["ready"] and st["informers"]["services"]["synced"]
    svcs = json.loads(cli("service", "list", "-o", "json"))
    web = [s for s in svcs if s["name"].startswith("default/web:http/TCP/v4")]
    assert web and web[0]["frontends"] == [f"{core.read_namespaced_service('web', 'default').spec.cluster_ip}:80/tcp"]
    eps = json.loads(cli("endpoint", "list", "-o", "json"))
    assert {e["podName"] for e in eps} <= {p.metadata.name for p in core.list_namespaced_pod("default").items}
    assert "FRONTEND" in cli("service", "list")
    # every local endpoint is in the tc programs' endpoint map, keyed by its host veth
    dump = subprocess.run([sys.executable, "-m", "meshcni.cli", "maps", "dump", "mc_endpoints", "--root",
                           str(root / "m" / "nodes" / "m-node1" / "bpf" / "meshcni")], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    rows = [json.loads(x) for x in dump.stdout.splitlines() if x.strip()]
    assert len(rows) == len(eps) and rows
    bad = subprocess.run([sys.executable, "-m", "meshcni.cli", "status", "--socket", str(root / "nope.sock")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not reachable" in bad.stderr


def test_bad_node_is_reported_with_an_event_and_nothing_else_breaks(cl):
    root, core = cl
    core.create_node({"metadata": {"name": "ghost"}, "spec": {"podCIDR": "10.244.0.0/25",
                                                               "taints": [{"key": "x", "effect": "NoSchedule"}]}})
    try:
        def event():
            evs = core.list_namespaced_event("default").items
            return [e for e in evs if e.involved_object.name == "ghost" and "overlaps" in (e.message or "")]
        ev = wait(event, what="an Event on Node ghost")
        assert ev[0].type == "Warning" and ev[0].source.component == "meshcni-agent"
        cip = core.read_namespaced_service("web", "default").spec.cluster_ip
        assert "failed" not in counts(root, "client", cip, 80, 10)
    finally:
        core.delete_node("ghost")


def test_identities_reach_the_ipcache_of_every_node(cl):
    root, core = cl
    api = core.api_client
    custom = client.CustomObjectsApi(api)
    web0 = running(core, "web-0")

    def ident():
        items = custom.list_namespaced_custom_object("mesh-cni.dev", "v1alpha1", "default", "identities")["items"]
        return [i for i in items if i["spec"]["podLabels"] == {"app": "web"}]
    ids = wait(ident, what="the Identity of app=web")
    assert len(ids) == 1 and ids[0]["spec"]["id"] >= 1 << 24
    want = ids[0]["spec"]["id"]
    for node in ("m-node1", "m-node2"):
        def looked_up(node=node):
            p = subprocess.run([sys.executable, "-m", "meshcni.cli", "ipcache", "lookup", web0.status.pod_ip,
                                "--root", str(root / "m" / "nodes" / node / "bpf" / "meshcni")],
                               capture_output=True, text=True)
            return p.stdout.strip().endswith(f"identity {want}")
        wait(looked_up, what=f"{node}'s ipcache has web-0's identity")
    lst = subprocess.run([sys.executable, "-m", "meshcni.cli", "ipcache", "list", "-o", "json", "--root",
                          str(root / "m" / "nodes" / "m-node1" / "bpf" / "meshcni")], capture_output=True, text=True)
    table = json.loads(lst.stdout)
    assert table[f"{web0.status.pod_ip}/32"] == want and 6 in table.values() and 1 in table.values()
