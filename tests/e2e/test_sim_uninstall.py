# SPDX-License-Identifier: MIT OR Apache-2.0
"""`meshcni uninstall` on a simulated node, as the chart's uninstall mode runs it.

A 2-node cluster with agents up and pods running; the node's agent is stopped
(its DaemonSet pod replaced by the uninstall mode's), then the uninstall init
container, rendered by Helm from the chart with `uninstall=true`, run
in the node's network namespace with its mounts mapped onto that node's paths. Afterwards the node
holds nothing of meshcni: no program on its cgroup, no tc filter on any
link, no pin, no CNI plugin or config, no route of protocol 191, no state.
A second run removes nothing, the other node is untouched, and the
simulator's own teardown still removes everything.
"""
import json
import os
import subprocess
import time

import pytest
from kubernetes import client, config

pytestmark = pytest.mark.e2e
CHART = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "charts", "meshcni")


def uninstall_container():
    import helm_python as helm  # helm-python-sdk: the real Helm engine, offline
    import yaml
    helm.disable_logging()
    with helm.Chart.load(CHART) as c:
        out = c.render({"uninstall": True}, name="meshcni", namespace="meshcni-system")
    ds = yaml.safe_load(out["meshcni/templates/agent/daemonset.yaml"])
    pod = ds["spec"]["template"]["spec"]
    (init,) = [c for c in pod["initContainers"] if c["name"] == "uninstall"]
    return pod, init


def sh(*cmd):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, timeout=60).stdout


def leftovers(cl, n):
    """What of meshcni is on node ``n``, by looking at the node itself (not asking meshcni)."""
    node_dir = os.path.join(cl.dir, "nodes", n.name)
    cni = cl._cni_dir(n)
    cgroup = json.loads(sh("bpftool", "-j", "cgroup", "show", os.path.join(cl.cgroup_root, n.name)).strip() or "[]")
    tc = {}
    for link in json.loads(sh("ip", "-n", n.netns, "-j", "link", "show")):
        for hook in ("ingress", "egress"):
            f = json.loads(sh("tc", "-n", n.netns, "-j", "filter", "show", "dev", link["ifname"], hook).strip() or "[]")
            if f:
                tc[f"{link['ifname']}/{hook}"] = len(f)
    ls = lambda d: sorted(os.listdir(d)) if os.path.isdir(d) else []  # noqa: E731
    return {"cgroupPrograms": [p["name"] for p in cgroup], "tcFilters": tc,
            # maps.debug/progs.debug: the kernel's own iterators in every bpffs mount (bpf_preload)
            "pins": [x for x in ls(os.path.join(node_dir, "bpf")) if x not in ("maps.debug", "progs.debug")],
            "cniBin": ls(os.path.join(cni, "bin")), "cniConf": ls(os.path.join(cni, "net.d")),
            "routes": sh("ip", "-n", n.netns, "route", "show", "proto", "191").split("\n")[:-1]
            + sh("ip", "-n", n.netns, "-6", "route", "show", "proto", "191").split("\n")[:-1],
            "state": ls(os.path.join(node_dir, "run")), "ipam": ls(os.path.join(node_dir, "ipam"))}


@pytest.fixture
def cluster(tmp_path):
    from meshcni.sim.cluster import Cluster, ClusterConfig
    cl = Cluster(ClusterConfig(name="un", nodes=2, agent=True, state_root=str(tmp_path)))
    try:
        cl.up(progress=lambda s: None)
        yield cl
    finally:
        made = [n.netns for n in cl.nodes] + ([cl.controller_node.netns] if cl.controller_node else [])
        cl.down()  # the simulator's own teardown, after the uninstall removed part of what it made
        assert not set(made) & set(sh("ip", "netns", "list").split()), made
        assert not os.path.exists(os.path.join(str(tmp_path), "un"))


def test_uninstall_on_a_node_leaves_nothing_of_meshcni(cluster):
    cl = cluster
    n1, n2 = cl.nodes
    c = client.Configuration()
    config.load_kube_config(config_file=cl.kubeconfig, client_configuration=c)
    core = client.CoreV1Api(client.ApiClient(c))
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    for i, node in enumerate((n1.name, n1.name, n2.name)):
        core.create_namespaced_pod("default", {"metadata": {"name": f"web-{i}", "labels": {"app": "web"}}, "spec": {
            "nodeName": node, "containers": [{"name": "app", "image": "sim",
                                              "ports": [{"containerPort": 8080}]}]}})
    end = time.monotonic() + 30
    while not all((p.status.phase == "Running") for p in core.list_namespaced_pod("default").items):
        assert time.monotonic() < end, "pods not running within 30 s"
        time.sleep(0.2)

    before = leftovers(cl, n1)
    # not vacuous: each kind of thing the uninstall must remove is there first
    assert all(before[k] for k in before), before
    assert len([k for k in before["tcFilters"] if k.endswith("/ingress")]) >= 2  # both pods' interfaces

    cl.supervisor.remove(f"agent/{n1.name}")  # the DaemonSet's pod replaced by the uninstall mode's
    # its args, env and mounts mapped onto the node as the agent's are (meshcni.sim.podspec)
    argv, env = cl.node_process(n1, *uninstall_container())
    argv = ["ip", "netns", "exec", n1.netns, "env"] + [f"{k}={v}" for k, v in env.items()] + argv
    t0 = time.monotonic()
    done = json.loads(sh(*argv, "-o", "json"))
    took = time.monotonic() - t0
    assert done["cgroupLinks"] > 0 and done["routes"] == 1 and done["pins"] > 0
    assert set(done["tcFilters"]) == {k.split("/")[0] for k in before["tcFilters"]}

    after = leftovers(cl, n1)
    assert after == {"cgroupPrograms": [], "tcFilters": {}, "pins": [], "cniBin": [], "cniConf": [], "routes": [],
                     "state": [], "ipam": []}, (after, took)

    again = json.loads(sh(*argv, "-o", "json"))
    assert again == {"cgroupLinks": 0, "tcFilters": {}, "routes": 0, "pins": 0, "state": 0, "ipam": 0,
                     "cni": {"removed": [], "restored": []}}
    # the other node keeps its agent and everything of it
    other = leftovers(cl, n2)
    assert all(other[k] for k in other), other
