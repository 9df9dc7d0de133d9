# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agents' side of the multi-cluster mesh in the simulator, without the mesh controller.

One cluster with agents. The test writes what ``meshcni controller`` would:
MeshEndpoints carrying its managed-by label, and a Cluster's ``status.nodes``.
The "remote" backends are pods of this cluster that the Service's selector
does not pick: they can only be reached through the MeshEndpoint, so an
answer from one over the ClusterIP is proof that the mesh backends are
programmed. Real connections from a client pod through the socket LB.

The MeshEndpoints name Cluster ``c2`` as their owner and that Cluster exists
(with no Secret behind it): a mesh controller deletes managed MeshEndpoints
whose Cluster does not exist, and keeps everything of a Cluster it cannot
reach yet, so the test holds with or without one running.
"""
import json
import os
import subprocess
import sys

import pytest
from kubernetes import client, config

from test_agent import COUNT, pod, running, sim, wait

pytestmark = pytest.mark.e2e
G, V = "mesh-cni.dev", "v1alpha1"
NAME = "mm"
MANAGED = {"app.kubernetes.io/managed-by": "meshcni-controller"}


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshagentroot")
    try:
        sim(root, "up", "--name", NAME, "--nodes", "2")
        c = client.Configuration()
        config.load_kube_config(config_file=os.path.join(root, NAME, "kubeconfig"), client_configuration=c)
        api = client.ApiClient(c)
        core = client.CoreV1Api(api)
        core.create_namespaced_service("default", {"metadata": {"name": "mweb", "annotations": {
            "mesh-cni.dev/multi-cluster": "true"}}, "spec": {
            "selector": {"app": "mweb"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        for name, labels in (("mweb-0", {"app": "mweb"}), ("far-0", {"app": "far"}), ("far-1", {"app": "far"})):
            core.create_namespaced_pod("default", pod(name, labels, 8080))
        core.create_namespaced_pod("default", pod("client", {"role": "client"}))
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(G, V, "clusters", {
            "apiVersion": f"{G}/{V}", "kind": "Cluster", "metadata": {"name": "c2"},
            "spec": {"secret": {"name": "mesh-remote-c2-kubeconfig", "key": "config"}}})
        for name in ("mweb-0", "far-0", "far-1", "client"):
            wait(lambda n=name: running(core, n), timeout=60, what=name)
        yield root, core, custom
    finally:
        sim(root, "down", "--all", check=False)
        assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                    if n.startswith("mcsim-") and str(root) in n]


def counts(root, ip, n=30):
    out = sim(root, "exec", "--name", NAME, "default/client", "--", sys.executable, "-c", COUNT, ip, "80", str(n))
    return json.loads(out.stdout)


def mesh_endpoint(name, cluster, ips, managed=True):
    labels = {"kubernetes.io/service-name": "mweb", "mesh-cni.dev/cluster-owner": cluster}
    if managed:
        labels.update(MANAGED)
    return {"apiVersion": f"{G}/{V}", "kind": "MeshEndpoint", "metadata": {"name": name, "labels": labels},
            "spec": {"backend_port_mappings": [{"ip": ip, "service_port": 80, "backend_port": 8080, "protocol": "TCP"}
                                               for ip in ips]}}


def node_netns(root, node):
    from meshcni.sim.topology import plan_nodes
    c = json.loads((root / NAME / "config.json").read_text())
    return next(n.netns for n in plan_nodes(NAME, c["index"], c["nodes"], c["pod_cidr"], str(root)) if n.name == node)


def test_remote_backends_affinity_failover_and_hand_made_ignored(cl):
    root, core, custom = cl
    cip = core.read_namespaced_service("mweb", "default").spec.cluster_ip
    far0, far1 = (running(core, n).status.pod_ip for n in ("far-0", "far-1"))
    wait(lambda: counts(root, cip, 10) == {"default/mweb-0": 10}, what="the local backend only")
    owner = core.read_namespaced_service("mweb", "default").metadata
    me = mesh_endpoint("mweb-c2", "c2", [far0])
    me["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": "mweb", "uid": owner.uid,
                                          "controller": True}]
    custom.create_namespaced_custom_object(G, V, "default", "meshendpoints", me)
    # affinity none (no annotation): local and remote answer
    wait(lambda: set(counts(root, cip)) == {"default/mweb-0", "default/far-0"}, what="local + remote backends")

    # a hand-made MeshEndpoint: reported on the object, never a backend
    custom.create_namespaced_custom_object(G, V, "default", "meshendpoints",
                                           mesh_endpoint("mweb-hand", "c9", [far1], managed=False))

    def event():
        return [e for e in core.list_namespaced_event("default").items
                if e.involved_object.kind == "MeshEndpoint" and e.involved_object.name == "mweb-hand"
                and e.source.component == "meshcni-agent"]
    ev = wait(event, what="an Event on mweb-hand")
    assert ev[0].type == "Warning" and "made by hand" in ev[0].message
    assert "default/far-1" not in counts(root, cip, 40)

    # the agent's view names the cluster of the remote backend
    sock = str(root / NAME / "nodes" / f"{NAME}-node1" / "run" / "agent.sock")

    def cli(*a):
        p = subprocess.run([sys.executable, "-m", "meshcni.cli", *a, "--socket", sock], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout
    (svc,) = [s for s in json.loads(cli("service", "list", "-o", "json")) if s["name"] == "default/mweb:http/TCP/v4"]
    assert svc["backendClusters"] == {f"{far0}:8080": "c2"} and len(svc["backends"]) == 2
    assert f"{far0}:8080 (c2)" in cli("service", "list")

    # affinity local: local only while it is ready; failover to the remote and back
    core.patch_namespaced_service("mweb", "default", {"metadata": {"annotations": {"mesh-cni.dev/affinity": "local"}}})
    wait(lambda: counts(root, cip) == {"default/mweb-0": 30}, what="local only (affinity local)")
    core.patch_namespaced_pod("mweb-0", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": "true"}}})
    wait(lambda: counts(root, cip) == {"default/far-0": 30}, what="failover to the remote backend")
    core.patch_namespaced_pod("mweb-0", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": None}}})
    wait(lambda: counts(root, cip) == {"default/mweb-0": 30}, what="back to the local backend")

    # not meshed any more: MeshEndpoints are ignored even when the local backend is gone
    core.patch_namespaced_service("mweb", "default", {"metadata": {"annotations": {
        "mesh-cni.dev/multi-cluster": None, "mesh-cni.dev/affinity": None}}})
    core.patch_namespaced_pod("mweb-0", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": "true"}}})
    wait(lambda: counts(root, cip, 10) == {"failed": 10}, what="no backend at all (refused)")
    core.patch_namespaced_pod("mweb-0", "default", {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": None}}})


def test_cluster_status_nodes_become_routes_in_every_node_and_go_with_the_cluster(cl):
    """Last in the module: deleting Cluster c2 also takes its MeshEndpoints (a controller's finalizer)."""
    root, core, custom = cl
    # next hops on the underlay (on-link from every node); the prefix is outside this cluster's pod CIDR
    custom.patch_cluster_custom_object_status(G, V, "clusters", "c2", {"status": {"nodes": [
        {"name": "c2-node1", "addresses": ["172.30.250.10"], "podCIDRs": ["10.250.7.0/24"]}]}})

    def routes(node):
        return subprocess.run(["ip", "-n", node_netns(root, node), "route", "show", "proto", "191"],
                              capture_output=True, text=True).stdout
    cidr = {n: core.read_node(n).spec.pod_cidr for n in (f"{NAME}-node1", f"{NAME}-node2")}
    other = {f"{NAME}-node1": cidr[f"{NAME}-node2"], f"{NAME}-node2": cidr[f"{NAME}-node1"]}
    for node in (f"{NAME}-node1", f"{NAME}-node2"):
        wait(lambda n=node: "10.250.7.0/24 via 172.30.250.10" in routes(n), what=f"the remote route on {node}")
        assert f"{other[node]} via" in routes(node)  # the other local node's route stays
    custom.delete_cluster_custom_object(G, V, "clusters", "c2")
    for node in (f"{NAME}-node1", f"{NAME}-node2"):
        wait(lambda n=node: "10.250.7.0/24" not in routes(n), what=f"the remote route gone on {node}")
        assert f"{other[node]} via" in routes(node)
