# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent reads MeshEndpoints and Clusters (real API protocol, real maps).

The agent runs in-process against a real APIServer; its datapath is on a
private bpffs and its socket LB on a private cgroup2 child; routes off (the
routes it would add are read from ``desired_routes`` through its caches — the
e2e test checks them in a node namespace). MeshEndpoints are made here with the
controller's managed-by label, standing in for ``meshcni controller``.
"""
import ipaddress
import os

import pytest
from kubernetes import client, config

from meshcni.agent.agent import Agent, AgentConfig
from meshcni.apiserver import APIServer
from meshcni.bpf import MeshMaps
from testutil import eventually

pytestmark = pytest.mark.kernel
CRDS = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "crds")
G, V = "mesh-cni.dev", "v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": "meshcni-controller"}


def wait(pred, timeout=20.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.05)


def mep(name, cluster, ips, managed=True, service="web"):
    labels = {"kubernetes.io/service-name": service, "mesh-cni.dev/cluster-owner": cluster}
    if managed:
        labels.update(MANAGED)
    return {"apiVersion": f"{G}/{V}", "kind": "MeshEndpoint", "metadata": {"name": name, "labels": labels},
            "spec": {"backend_port_mappings": [{"ip": ip, "service_port": 80, "backend_port": 8080, "protocol": "TCP"}
                                               for ip in ips]}}


def map_backends(pin_root):
    """Addresses of every backend in mc_backends (what the socket LB can pick)."""
    with MeshMaps(pin_root) as m:
        _, v = m.backends.dump()
        return sorted(str(ipaddress.ip_address(bytes(x["addr"].tobytes())).ipv4_mapped) for x in v)


@pytest.fixture
def cluster(tmp_path, pin_root, cgroup2_child):
    srv = APIServer(crd_dir=CRDS).start()
    kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
    api = config.new_client_from_config(config_file=kc)
    core, disc, custom = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    core.create_node({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24"}})
    core.patch_node_status("n1", {"status": {"addresses": [{"type": "InternalIP", "address": "172.30.9.10"}]}})
    core.create_namespaced_service("default", {"metadata": {"name": "web", "annotations": {
        "mesh-cni.dev/multi-cluster": "true"}}, "spec": {
        "clusterIP": "10.96.50.1", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    disc.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}]})
    # present before the agent starts: it must not be ready without them
    custom.create_namespaced_custom_object(G, V, "default", "meshendpoints", mep("web-c2", "c2", ["10.245.0.7"]))
    agent = Agent(AgentConfig(node_name="n1", kubeconfig=kc, bpf_root=pin_root, cgroup_root=cgroup2_child,
                              cni_bin_dir=str(tmp_path / "bin"), cni_conf_dir=str(tmp_path / "net.d"),
                              socket=str(tmp_path / "agent.sock"), state_dir=str(tmp_path / "state"),
                              ipam_dir=str(tmp_path / "ipam"), metrics_address="127.0.0.1:0", routes=False,
                              sync_timeout=20))
    try:
        agent.start()
        yield agent, core, custom, pin_root
    finally:
        agent.stop()
        srv.stop()
        from meshcni.datapath.socklb import SockLB
        with SockLB(pin_root) as lb:
            lb.detach(cgroup2_child)


def view(agent):
    (s,) = [s for s in agent.programmed_services() if s["name"] == "default/web:http/TCP/v4"]
    return s


def test_ready_only_with_mesh_endpoints_in_the_maps_and_changes_follow(cluster):
    agent, core, custom, pin_root = cluster
    # start() returned = ready: the remote backend is already in the maps
    assert agent.ready.is_set()
    assert agent.status()["informers"]["meshendpoints"]["synced"] and agent.status()["informers"]["clusters"]["synced"]
    assert map_backends(pin_root) == ["10.244.0.5", "10.245.0.7"]
    assert view(agent)["backends"] == ["10.244.0.5:8080", "10.245.0.7:8080"]
    assert view(agent)["backendClusters"] == {"10.245.0.7:8080": "c2"}
    # a second cluster's MeshEndpoint, then a change to the first
    custom.create_namespaced_custom_object(G, V, "default", "meshendpoints", mep("web-c3", "c3", ["10.246.0.9"]))
    wait(lambda: "10.246.0.9:8080" in view(agent)["backends"], what="c3's backend")
    custom.patch_namespaced_custom_object(G, V, "default", "meshendpoints", "web-c2",
                                          {"spec": {"backend_port_mappings": [
                                              {"ip": "10.245.0.8", "service_port": 80, "backend_port": 8080,
                                               "protocol": "TCP"}]}})
    wait(lambda: view(agent)["backendClusters"] == {"10.245.0.8:8080": "c2", "10.246.0.9:8080": "c3"},
         what="c2's new backend")
    assert map_backends(pin_root) == ["10.244.0.5", "10.245.0.8", "10.246.0.9"]
    # a hand-made one is never programmed, and reported with an Event on it
    custom.create_namespaced_custom_object(G, V, "default", "meshendpoints",
                                           mep("web-hand", "c9", ["10.249.0.1"], managed=False))

    def event():
        return [e for e in core.list_namespaced_event("default").items
                if e.involved_object.kind == "MeshEndpoint" and e.involved_object.name == "web-hand"]
    (ev,) = [wait(event, what="an Event on the hand-made MeshEndpoint") and event()[0]]
    assert ev.type == "Warning" and "made by hand" in ev.message and ev.involved_object.api_version == f"{G}/{V}"
    assert "10.249.0.1" not in " ".join(map_backends(pin_root))
    # the owner cluster's MeshEndpoint goes: its backends go
    custom.delete_namespaced_custom_object(G, V, "default", "meshendpoints", "web-c3")
    wait(lambda: map_backends(pin_root) == ["10.244.0.5", "10.245.0.8"], what="c3's backend removed")
    # the annotation goes: the Service is local only, MeshEndpoints or not
    core.patch_namespaced_service("web", "default", {"metadata": {"annotations": {
        "mesh-cni.dev/multi-cluster": None}}})
    wait(lambda: map_backends(pin_root) == ["10.244.0.5"], what="local backends only")


def test_clusters_status_nodes_reach_the_routes(cluster):
    agent, core, custom, _ = cluster
    from meshcni.agent.reconcilers import Routes
    routes_of = Routes(None, "n1").desired  # the routes reconciler on the agent's live caches (routes are off here)
    clusters = agent.caches["clusters"]
    custom.create_cluster_custom_object(G, V, "clusters", {
        "apiVersion": f"{G}/{V}", "kind": "Cluster", "metadata": {"name": "c2"},
        "spec": {"secret": {"name": "mesh-remote-c2-kubeconfig", "key": "config"}}})
    custom.patch_cluster_custom_object_status(G, V, "clusters", "c2", {"status": {"nodes": [
        {"name": "c2-node1", "addresses": ["172.30.2.10"], "podCIDRs": ["10.245.0.0/24"]},
        {"name": "c2-node2", "addresses": ["172.30.2.11"], "podCIDRs": ["10.244.0.0/25"]}]}})  # overlaps n1's
    wait(lambda: clusters.list() and (clusters.list()[0].get("status") or {}).get("nodes"),
         what="the Cluster in the agent's cache")
    d = routes_of(agent.caches)
    routes, problems = d.state, d.problems
    assert routes == {"10.245.0.0/24": "172.30.2.10"}
    assert [(p.kind, p.name, p.field) for p in problems] == [("Cluster", "c2", "status.nodes[1].podCIDRs[0]")]
    # the controller found a CIDR conflict: nothing of c2 is routed
    custom.patch_cluster_custom_object_status(G, V, "clusters", "c2", {"status": {"conditions": [
        {"type": "CIDRConflict", "status": "True", "reason": "PodCIDROverlap", "message": "test",
         "lastTransitionTime": "2026-12-07T00:00:00Z"}]}})
    wait(lambda: (clusters.list()[0].get("status") or {}).get("conditions"), what="the condition cached")
    d = routes_of(agent.caches)
    assert (d.state, list(d.problems)) == ({}, [])
