# SPDX-License-Identifier: MIT OR Apache-2.0
"""`meshcni sim` end to end: real namespaces, the real CNI plugin, the API server over HTTP.

Every cluster here lives under a temporary state root, so its underlay,
nodes and pods are its own (nothing shared with a cluster a user runs), and
`sim down` is asserted to leave nothing: namespaces, cgroups, mounts,
processes.
"""
import json
import os
import subprocess
import sys

import pytest
import yaml
from kubernetes import client, config
from testutil import eventually, sim

pytestmark = pytest.mark.e2e

PROBE = ("import socket,sys\n"
         "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); print(s.recv(200).decode().strip())\n")


def leftovers(root, names=("a", "b")):
    """Namespaces, mounts and processes that belong to clusters under ``root``."""
    from meshcni.sim.topology import underlay_ns
    ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if str(root) in line.split()[1]]
    # daemons, agents, pod servers: every process of ours has the state root in its argv
    procs = subprocess.run(["pgrep", "-f", "--", str(root)], capture_output=True, text=True).stdout.split()
    mine = {n for n in ns if n == underlay_ns(str(root))}
    dirs = [d for d in os.listdir(root) if not d.startswith(".")] if os.path.isdir(root) else []
    with open("/proc/self/mounts") as f:
        cg2 = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    cgroups = [os.path.join(m, d) for m in cg2 for d in os.listdir(m)
               if d in {f"meshcni-sim-{c}" for c in names}]
    return {"underlay": sorted(mine), "mounts": mounts, "daemons": procs, "state": dirs, "cgroups": cgroups}


def api(root, name):
    c = client.Configuration()
    config.load_kube_config(config_file=os.path.join(root, name, "kubeconfig"), client_configuration=c)
    return client.ApiClient(c)


def wait(pred, timeout=30.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.2)


def pod(name, ns="default", labels=None, ports=(), node=None):
    spec = {"containers": [{"name": "app", "image": "sim",
                            "ports": [{"name": n, "containerPort": p, "protocol": pr} for n, p, pr in ports]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": spec}


def running(core, ns, name):
    try:
        p = core.read_namespaced_pod(name, ns)
    except client.ApiException:
        return None
    return p if p.status and p.status.phase == "Running" and p.status.pod_ip else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("simroot")
    try:
        out = sim(root, "up", "--name", "a", "--nodes", "2", "--no-agent")
        assert out.stdout.strip().splitlines()[-1] == os.path.join(root, "a", "kubeconfig")
        yield root
    finally:
        sim(root, "down", "--all", check=False)
        assert leftovers(root) == {"underlay": [], "mounts": [], "daemons": [], "state": [], "cgroups": []}


def write(tmp_path, docs, name="objs.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump_all(docs))
    return str(p)


def test_pods_on_two_nodes_reach_each_other_by_pod_ip(cluster, tmp_path):
    core = client.CoreV1Api(api(cluster, "a"))
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    assert nodes == ["a-node1", "a-node2"]
    assert {n.spec.pod_cidr for n in core.list_node().items} == {"10.244.0.0/24", "10.244.1.0/24"}
    sim(cluster, "apply", "--name", "a", "-f", write(tmp_path, [
        pod("srv", labels={"app": "srv"}, ports=[("http", 8080, "TCP"), ("dns", 5353, "UDP")], node="a-node2"),
        pod("cli", node="a-node1")]))
    srv = wait(lambda: running(core, "default", "srv"), what="srv running")
    wait(lambda: running(core, "default", "cli"), what="cli running")
    assert srv.status.pod_ip.startswith("10.244.1.") and srv.status.host_ip == "172.30.1.11"
    assert any(c.type == "Ready" and c.status == "True" for c in srv.status.conditions)
    out = sim(cluster, "exec", "--name", "a", "default/cli", "--", sys.executable, "-c", PROBE,
              srv.status.pod_ip, "8080")
    assert out.stdout.strip() == "default/srv"
    udp = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
           "s.sendto(b'hi',(sys.argv[1],5353)); print(s.recv(100).decode())\n")
    out = sim(cluster, "exec", "--name", "a", "default/cli", "--", sys.executable, "-c", udp, srv.status.pod_ip)
    assert out.stdout.strip() == "default/srv"
    # exit status passes through
    assert sim(cluster, "exec", "--name", "a", "default/cli", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    # the kubeconfig works for kubectl too
    kc = subprocess.run(["kubectl", "--kubeconfig", os.path.join(cluster, "a", "kubeconfig"), "get", "pods", "-o",
                         "name"], capture_output=True, text=True)
    if kc.returncode == 0 or "not found" not in kc.stderr:
        assert "pod/srv" in kc.stdout, kc.stderr


def test_pod_delete_removes_netns_cgroup_and_address(cluster, tmp_path):
    core = client.CoreV1Api(api(cluster, "a"))
    f = write(tmp_path, [pod("gone", node="a-node1")])
    sim(cluster, "apply", "--name", "a", "-f", f)
    p = wait(lambda: running(core, "default", "gone"), what="gone running")
    rec = json.loads((cluster / "a" / "pods" / "default_gone.json").read_text())
    assert os.path.exists(f"/run/netns/{rec['netns']}") and os.path.isdir(rec["cgroup"])
    alloc_file = cluster / "a" / "nodes" / "a-node1" / "cni" / "ipam" / "meshcni" / "allocations.json"
    def allocated():
        return {ip.split("/")[0] for a in json.loads(alloc_file.read_text())["allocations"].values() for ip in a["ips"]}
    assert p.status.pod_ip in allocated()
    sim(cluster, "delete", "--name", "a", "-f", f)
    wait(lambda: not os.path.exists(f"/run/netns/{rec['netns']}"), what="pod netns removed")
    wait(lambda: not os.path.isdir(rec["cgroup"]), what="pod cgroup removed")
    wait(lambda: p.status.pod_ip not in allocated(), what="address released")
    # the kubelet drops its record last (after the ledger update): wait for it as for the rest
    wait(lambda: not (cluster / "a" / "pods" / "default_gone.json").exists(), what="pod record removed")


def test_scheduler_spreads_and_endpointslices_follow_pods(cluster, tmp_path):
    core = client.CoreV1Api(api(cluster, "a"))
    disc = client.DiscoveryV1Api(api(cluster, "a"))
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]
    docs += [pod(f"web-{i}", "shop", {"app": "web"}, [("http", 8080 + i, "TCP")]) for i in range(3)]
    sim(cluster, "apply", "--name", "a", "-f", write(tmp_path, docs))
    pods = [wait(lambda i=i: running(core, "shop", f"web-{i}"), what=f"web-{i}") for i in range(3)]
    assert {p.spec.node_name for p in pods} == {"a-node1", "a-node2"}
    svc = core.read_namespaced_service("web", "shop")
    assert svc.spec.cluster_ip.startswith("10.96.")  # from the cluster's --service-cidr

    def endpoints():
        out = {}
        for s in disc.list_namespaced_endpoint_slice("shop", label_selector="kubernetes.io/service-name=web").items:
            for e in s.endpoints or []:
                out[e.addresses[0]] = (s.ports[0].port, e.conditions.ready)
        return out
    # a named targetPort resolves per pod: three ports, three slices
    want = {p.status.pod_ip: (8080 + i, True) for i, p in enumerate(pods)}
    wait(lambda: endpoints() == want, what="slices with all three")
    core.patch_namespaced_pod("web-1", "shop", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": "true"}}})
    want[pods[1].status.pod_ip] = (8081, False)
    wait(lambda: endpoints() == want, what="web-1 not ready")
    core.delete_namespaced_pod("web-2", "shop")
    del want[pods[2].status.pod_ip]
    wait(lambda: endpoints() == want, what="web-2 gone from slices")
    out = sim(cluster, "get", "endpointslices", "--name", "a", "-n", "shop")
    assert "8080" in out.stdout and "ENDPOINTS" in out.stdout


def test_bad_input_gives_one_line_and_applies_nothing(cluster, tmp_path):
    core = client.CoreV1Api(api(cluster, "a"))
    good = pod("fine-1")
    bad_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
               "spec": {"clusterIP": "10.96.0.999", "ports": [{"port": 80}]}}
    cases = [
        ("garbage.yaml", "kind: [unclosed\n", "not valid YAML"),
        ("unknown.yaml", yaml.safe_dump_all([good, {"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}]),
         "unknown kind Gizmo"),
        ("invalid.yaml", yaml.safe_dump_all([good, bad_svc]), 'spec.clusterIP: Invalid value: "10.96.0.999"'),
        ("noname.yaml", yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {}}), "needs metadata.name"),
        ("nons.yaml", yaml.safe_dump_all([pod("x", ns="nowhere")]), "namespace nowhere does not exist"),
    ]
    for fname, text, needle in cases:
        (tmp_path / fname).write_text(text)
        p = sim(cluster, "apply", "--name", "a", "-f", str(tmp_path / fname), check=False)
        assert p.returncode == 1 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, (fname, p.stderr)
    names = [x.metadata.name for x in core.list_namespaced_pod("default").items]
    assert "fine-1" not in names  # the good object before the bad one was not applied
    for args, needle in [
        (["apply", "--name", "a", "-f", str(tmp_path / "missing.yaml")], "no such file"),
        (["get", "gizmos", "--name", "a"], "unknown resource type"),
        (["exec", "--name", "a", "default/nope", "--", "true"], "not running"),
        (["exec", "--name", "a", "nope", "--", "true"], "NAMESPACE/NAME"),
        (["get", "pods", "--name", "zz"], "cluster zz is not up"),
        (["logs", "--name", "a", "kubelet-x"], "no log for"),
        (["up", "--name", "Bad_Name"], "--name"),
        (["up", "--name", "b", "--pod-cidr", "10.0.0.1/16"], "is not a CIDR"),
        (["up", "--name", "b", "--pod-cidr", "172.30.0.0/20"], "overlaps the underlay"),
        (["up", "--name", "b", "--nodes", "0"], "--nodes 0"),
    ]:
        p = sim(cluster, *args, check=False)
        assert p.returncode == 1 and needle in p.stderr, (args, p.stderr)
    assert "a" in sim(cluster, "status").stdout
    assert "API server" in sim(cluster, "logs", "--name", "a").stdout


def test_node_namespaces_reach_the_api_server(cluster):
    """Agents run inside node namespaces: the node kubeconfig must work from there."""
    cfg = yaml.safe_load((cluster / "a" / "kubeconfig-node").read_text())
    server = cfg["clusters"][0]["cluster"]["server"]
    assert server.startswith("http://172.30.0.1:")
    node_ns = json.loads((cluster / "a" / "config.json").read_text())
    from meshcni.sim.topology import plan_nodes
    ns = plan_nodes("a", node_ns["index"], 1, "10.244.0.0/16", str(cluster))[0].netns
    code = ("import json,sys,urllib.request\n"
            "print(len(json.load(urllib.request.urlopen(sys.argv[1] + '/api/v1/nodes', timeout=5))['items']))")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, server], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "2", out.stderr


def test_up_is_idempotent(cluster):
    out = sim(cluster, "up", "--name", "a", "--no-agent")
    assert "already up" in out.stdout


def test_two_clusters_side_by_side_then_one_goes(cluster, tmp_path):
    sim(cluster, "up", "--name", "b", "--nodes", "1", "--no-agent", "--pod-cidr", "10.245.0.0/16",
        "--service-cidr", "10.97.0.0/16")
    core_a, core_b = client.CoreV1Api(api(cluster, "a")), client.CoreV1Api(api(cluster, "b"))
    core_b.create_namespaced_pod("default", pod("only-in-b"))
    wait(lambda: running(core_b, "default", "only-in-b"), what="pod in b")
    assert "only-in-b" not in [p.metadata.name for p in core_a.list_namespaced_pod("default").items]
    assert [n.metadata.name for n in core_b.list_node().items] == ["b-node1"]
    ip = core_b.read_namespaced_pod("only-in-b", "default").status.pod_ip
    assert ip.startswith("10.245.0.")
    core_b.create_namespaced_service("default", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    assert core_b.read_namespaced_service("s", "default").spec.cluster_ip.startswith("10.97.")
    sim(cluster, "down", "--name", "b")
    # a is untouched: its pods still answer
    core_a.create_namespaced_pod("default", pod("after-b", ports=[("p", 9000, "TCP")], node="a-node2"))
    wait(lambda: running(core_a, "default", "after-b"), what="a still schedules")
    srv = running(core_a, "default", "srv")
    out = sim(cluster, "exec", "--name", "a", "default/after-b", "--", sys.executable, "-c", PROBE,
              srv.status.pod_ip, "8080")
    assert out.stdout.strip() == "default/srv"


def test_failed_up_leaves_nothing(tmp_path):
    root = tmp_path / "failroot"
    p = sim(root, "up", "--name", "f", "--nodes", "2", "--no-agent", check=False,
            env={"MESHCNI_SIM_FAIL_AFTER_UP": "1"})
    assert p.returncode == 1 and "failed" in p.stderr
    assert leftovers(root, ["f"]) == {"underlay": [], "mounts": [], "daemons": [], "state": [], "cgroups": []}


def test_down_after_the_daemon_was_killed(tmp_path):
    root = tmp_path / "killroot"
    sim(root, "up", "--name", "k", "--nodes", "1", "--no-agent")
    core = client.CoreV1Api(api(root, "k"))
    core.create_namespaced_pod("default", pod("orphan", ports=[("p", 80, "TCP")]))
    wait(lambda: running(core, "default", "orphan"), what="orphan running")
    pid = int((root / "k" / "daemon.pid").read_text())
    os.kill(pid, 9)
    wait(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z",
         what="daemon dead")
    out = sim(root, "down", "--name", "k")
    assert "cleaned up after the daemon" in out.stdout
    assert leftovers(root, ["k"]) == {"underlay": [], "mounts": [], "daemons": [], "state": [], "cgroups": []}
    assert not subprocess.run(["pgrep", "-f", "meshcni.sim.podserver --name default/orphan"]).returncode == 0


def test_down_with_stray_entries_in_the_state_root(tmp_path):
    """A file or a directory that is not a cluster must not stop the underlay's removal, and a
    ledger that cannot be read keeps the underlay and says so instead of calling the cluster down."""
    from meshcni.sim.topology import netns_exists, underlay_ns
    root = tmp_path / "strayroot"
    root.mkdir()
    (root / "notes.yaml").write_text("kind: Pod\n")
    (root / "junk").mkdir()
    (root / "junk" / "readme.txt").write_text("not a cluster\n")
    clean = {"underlay": [], "mounts": [], "daemons": [], "state": ["junk", "notes.yaml"], "cgroups": []}
    try:
        sim(root, "up", "--name", "s", "--nodes", "1", "--no-agent")
        out = sim(root, "down", "--name", "s")
        assert "cluster s is down" in out.stdout
        lo = leftovers(root, ["s"])
        lo["state"].sort()
        assert lo == clean
        sim(root, "up", "--name", "s", "--nodes", "1", "--no-agent")
        (root / "broken").mkdir()
        (root / "broken" / "ledger.json").write_text("{not json")
        p = sim(root, "down", "--name", "s", check=False)
        assert p.returncode == 1 and "cluster s is NOT fully down" in p.stderr, p.stderr
        assert os.path.join(str(root), "broken", "ledger.json") in p.stderr and "is down" not in p.stdout
        assert netns_exists(underlay_ns(str(root)))
        (root / "broken" / "ledger.json").unlink()
        (root / "broken").rmdir()
        assert "cluster s is down" in sim(root, "down", "--name", "s").stdout
        lo = leftovers(root, ["s"])
        lo["state"].sort()
        assert lo == clean
    finally:
        subprocess.run(["rm", "-rf", str(root / "broken")])
        sim(root, "down", "--all", check=False)
