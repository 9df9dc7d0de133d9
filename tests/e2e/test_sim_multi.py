# SPDX-License-Identifier: MIT OR Apache-2.0
"""Several agent-enabled clusters in one state root (issue 17, the simulator's part).

Two clusters, one node each, with a meshcni agent and controller, share the module's state
root and so its underlay. Every component of both must serve and both must enforce
NetworkPolicy; a component in a restart loop makes `sim status` say "not ready" with its last
log line.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client, config
from testutil import eventually, sim

pytestmark = pytest.mark.e2e

PROBE = ("import socket,sys\n"
         "try:\n"
         "    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1.5); print(s.recv(200).decode().strip())\n"
         "except OSError as e:\n"
         "    print('failed:', e); sys.exit(1)\n")


def wait(pred, timeout=30.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.2)


def api(root, name):
    c = client.Configuration()
    config.load_kube_config(config_file=os.path.join(root, name, "kubeconfig"), client_configuration=c)
    return client.ApiClient(c)


def status(root):
    return {r["name"]: r for r in json.loads(sim(root, "status", "-o", "json").stdout)}


def components(root, name):
    with open(os.path.join(root, name, "components.json")) as f:
        return {c["name"]: c for c in json.load(f)["components"]}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiroot")
    try:
        sim(root, "up", "--name", "a", "--nodes", "1")
        sim(root, "up", "--name", "b", "--nodes", "1")
        yield root
    finally:
        sim(root, "down", "--all", check=False)
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith("mcsim-")]
        from meshcni.sim.topology import underlay_ns
        assert underlay_ns(str(root)) not in left


def pod(name, labels, port=None):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "sim", "ports": [
                {"name": "http", "containerPort": port, "protocol": "TCP"}] if port else []}]}}


def connect(root, name, frm, ip, port):
    p = sim(root, "exec", "--name", name, f"default/{frm}", "--", sys.executable, "-c", PROBE, ip, str(port),
            check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def test_two_agent_clusters_both_serve_and_enforce_policy(two, tmp_path):
    st = status(two)
    assert st["a"]["ready"] and st["b"]["ready"], st
    for name in ("a", "b"):
        comps = components(two, name)
        assert comps["controller"]["ready"] and comps[f"agent/{name}-node1"]["ready"], comps
        assert comps["controller"]["restarts"] == 0, comps["controller"]
        log = (two / name / "logs" / "controller.log").read_text()
        assert "Address already in use" not in log
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "srv-from-client", "namespace": "default"},
              "spec": {"podSelector": {"matchLabels": {"app": "srv"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}
    f = tmp_path / "objs.yaml"
    f.write_text(yaml.safe_dump_all([pod("srv", {"app": "srv"}, 8080), pod("cli", {"role": "client"}),
                                     pod("intruder", {"role": "other"}), policy]))
    for name in ("a", "b"):
        sim(two, "apply", "--name", name, "-f", str(f))
    for name in ("a", "b"):
        core = client.CoreV1Api(api(two, name))
        for p in ("srv", "cli", "intruder"):
            wait(lambda p=p: (core.read_namespaced_pod(p, "default").status.phase == "Running"), what=f"{name}/{p}")
        # the cluster's own controller made the identities (in b it used to crash-loop)
        custom = client.CustomObjectsApi(api(two, name))
        wait(lambda: len(custom.list_cluster_custom_object("mesh-cni.dev", "v1alpha1", "identities")["items"]) >= 3,
             what=f"identities in {name}")
        ip = core.read_namespaced_pod("srv", "default").status.pod_ip
        assert wait(lambda: connect(two, name, "cli", ip, 8080), what=f"{name}: cli -> srv") == "default/srv"
        # the policy really drops in both clusters
        wait(lambda: connect(two, name, "intruder", ip, 8080) is None, what=f"{name}: intruder blocked")
        assert connect(two, name, "cli", ip, 8080) == "default/srv"


def test_default_cidrs_do_not_overlap_and_an_explicit_overlap_is_refused(two):
    st = status(two)
    assert (st["a"]["podCIDR"], st["a"]["serviceCIDR"]) == ("10.244.0.0/16", "10.96.0.0/16")
    assert (st["b"]["podCIDR"], st["b"]["serviceCIDR"]) == ("10.245.0.0/16", "10.97.0.0/16")
    core_b = client.CoreV1Api(api(two, "b"))
    assert core_b.read_node("b-node1").spec.pod_cidr == "10.245.0.0/24"
    for args, needle in [
        (["--pod-cidr", "10.245.0.0/16"], "--pod-cidr 10.245.0.0/16 overlaps the pod CIDR 10.245.0.0/16 of cluster b"),
        (["--pod-cidr", "10.96.0.0/20"], "overlaps the service CIDR 10.96.0.0/16 of cluster a"),
        (["--service-cidr", "10.244.128.0/20"], "--service-cidr 10.244.128.0/20 overlaps the pod CIDR 10.244.0.0/16 "
                                                 "of cluster a"),
    ]:
        p = sim(two, "up", "--name", "c", "--nodes", "1", "--no-agent", *args, check=False)
        assert p.returncode == 1 and needle in p.stderr, (args, p.stderr)
        assert not (two / "c").exists()
    # an explicit range that fits is taken; the other one is still picked free
    sim(two, "up", "--name", "c", "--nodes", "1", "--no-agent", "--pod-cidr", "10.250.0.0/16")
    try:
        st = status(two)
        assert (st["c"]["podCIDR"], st["c"]["serviceCIDR"]) == ("10.250.0.0/16", "10.98.0.0/16")
    finally:
        sim(two, "down", "--name", "c")


def test_nodes_and_controllers_reach_each_other_across_clusters(two):
    """One bridge: every node and controller reaches the other cluster's nodes and its API server
    (the address `sim mesh` hands to the other cluster's controller)."""
    comps_a, comps_b = components(two, "a"), components(two, "b")
    ip_b = client.CoreV1Api(api(two, "b")).read_node("b-node1").status.addresses[0].address
    ip_a = client.CoreV1Api(api(two, "a")).read_node("a-node1").status.addresses[0].address
    healthz = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    for ns, ip in ((comps_a["agent/a-node1"]["netns"], ip_b), (comps_b["agent/b-node1"]["netns"], ip_a),
                   (comps_a["controller"]["netns"], ip_b)):
        # the other node's agent answers on its node IP (the DaemonSet's 0.0.0.0 metrics address)
        port = comps_a["agent/a-node1"]["metricsPort"]
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", healthz, f"http://{ip}:{port}/healthz"],
                           capture_output=True, text=True, timeout=30)
        assert p.stdout.strip() == "ok", (ns, ip, p.stdout, p.stderr)
    server = yaml.safe_load((two / "b" / "kubeconfig-node").read_text())["clusters"][0]["cluster"]["server"]
    code = ("import json,sys,urllib.request\n"
            "print([n['metadata']['name'] for n in json.load(urllib.request.urlopen(sys.argv[1] + '/api/v1/nodes', "
            "timeout=5))['items']])")
    out = subprocess.run(["ip", "netns", "exec", comps_a["controller"]["netns"], sys.executable, "-c", code, server],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "['b-node1']", out.stderr


def test_sim_mesh_stores_each_node_kubeconfig_and_cluster_both_ways(two):
    import base64
    custom = {n: client.CustomObjectsApi(api(two, n)) for n in ("a", "b")}
    core = {n: client.CoreV1Api(api(two, n)) for n in ("a", "b")}
    out = sim(two, "mesh", "a", "b")
    assert "4 objects written" in out.stdout, out.stdout
    for here, other in (("a", "b"), ("b", "a")):
        sec = core[here].read_namespaced_secret(f"mesh-remote-{other}-kubeconfig", "meshcni-system")
        kc = base64.b64decode(sec.data["config"])
        assert kc == (two / other / "kubeconfig-node").read_bytes()
        assert b"172.30.0.1:" in kc and b"127.0.0.1" not in kc
        cl = custom[here].get_cluster_custom_object("mesh-cni.dev", "v1alpha1", "clusters", other)
        assert cl["spec"]["secret"] == {"name": f"mesh-remote-{other}-kubeconfig", "key": "config"}
        # the kubeconfig works from where the controller runs
        ctl_ns = components(two, here)["controller"]["netns"]
        server = yaml.safe_load(kc)["clusters"][0]["cluster"]["server"]
        code = ("import json,sys,urllib.request\n"
                "print([n['metadata']['name'] for n in json.load(urllib.request.urlopen(sys.argv[1] + "
                "'/api/v1/nodes', timeout=5))['items']])")
        p = subprocess.run(["ip", "netns", "exec", ctl_ns, sys.executable, "-c", code, server], capture_output=True,
                           text=True, timeout=30)
        assert p.stdout.strip() == f"['{other}-node1']", p.stderr
    rv = core["a"].read_namespaced_secret("mesh-remote-b-kubeconfig", "meshcni-system").metadata.resource_version
    out = sim(two, "mesh", "b", "a")
    assert "0 objects written, 4 unchanged" in out.stdout, out.stdout
    assert core["a"].read_namespaced_secret("mesh-remote-b-kubeconfig",
                                            "meshcni-system").metadata.resource_version == rv
    for args, needle in ((["mesh", "a"], "at least two"), (["mesh", "a", "zz"], "cluster zz is not up"),
                         (["mesh", "a", "a"], "named twice")):
        p = sim(two, *args, check=False)
        assert p.returncode == 1 and needle in p.stderr, (args, p.stderr)
    out = sim(two, "unmesh", "a", "b")
    assert "4 objects deleted" in out.stdout, out.stdout
    for here, other in (("a", "b"), ("b", "a")):
        assert not [c for c in custom[here].list_cluster_custom_object("mesh-cni.dev", "v1alpha1", "clusters")["items"]]
        assert not [x for x in core[here].list_namespaced_secret("meshcni-system").items
                    if x.metadata.name.startswith("mesh-remote-")]


def test_apiserver_stop_and_start_is_seen_from_the_underlay_only(two):
    """`sim apiserver stop` is the remote API server gone for nodes and other clusters' controllers;
    `start` brings it back on the same address, so every kubeconfig and mesh Secret stays valid."""
    server = yaml.safe_load((two / "b" / "kubeconfig-node").read_text())["clusters"][0]["cluster"]["server"]
    ctl_ns = components(two, "a")["controller"]["netns"]
    code = ("import sys,urllib.request\n"
            "try:\n"
            "    print(urllib.request.urlopen(sys.argv[1] + '/healthz', timeout=3).status)\n"
            "except OSError as e:\n"
            "    print('down', e)\n")

    def from_a():
        return subprocess.run(["ip", "netns", "exec", ctl_ns, sys.executable, "-c", code, server],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    assert from_a() == "200"
    out = sim(two, "apiserver", "stop", "--name", "b")
    assert "stopped" in out.stdout
    try:
        assert from_a().startswith("down")
        assert [n.metadata.name for n in client.CoreV1Api(api(two, "b")).list_node().items] == ["b-node1"]
    finally:
        out = sim(two, "apiserver", "start", "--name", "b")
    assert "started" in out.stdout and from_a() == "200"
    assert sim(two, "apiserver", "start", "--name", "zz", check=False).returncode == 1


def test_a_restart_loop_makes_status_not_ready_with_the_log_line(two):
    """The original bug, made on purpose: something else holds b's controller metrics port."""
    from meshcni.cni.link import entered
    ctl = components(two, "b")["controller"]
    pid = ctl["pid"]
    blocker = None
    try:
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while blocker is None and time.monotonic() < end:  # take the port before the restart binds it
            with entered(f"/run/netns/{ctl['netns']}"):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("0.0.0.0", ctl["metricsPort"]))
                    s.listen(1)
                    blocker = s
                except OSError:
                    s.close()
                    time.sleep(0.01)
        assert blocker is not None, "could not take the controller's port"

        def looping():
            r = status(two)["b"]
            return r if not r["ready"] and any("restart loop" in p for p in r["problems"]) else None
        r = wait(looping, timeout=40, what="b not ready with a restart loop")
        line = next(p for p in r["problems"] if p.startswith("controller:"))
        assert "Address already in use" in line, r
        table = sim(two, "status").stdout
        assert "not ready" in table and "Address already in use" in table, table
        assert status(two)["a"]["ready"]  # the other cluster is not affected
    finally:
        if blocker is not None:
            blocker.close()
    wait(lambda: status(two)["b"]["ready"], timeout=60, what="b ready again once the port is free")
