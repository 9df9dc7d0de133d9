# SPDX-License-Identifier: MIT OR Apache-2.0
"""The multi-cluster mesh end to end (issue 17): two simulated clusters meshed by `sim mesh`.

east and west (one node each, agents and controllers) share the module's state root, so
their nodes share the underlay bridge and their pod and service CIDRs differ. Service
`web` exists in both; the backends are named after their cluster (the pod server answers
with its namespace/name), so every answer says which cluster served it. Everything is
real: `sim mesh` stores each cluster's node kubeconfig as a Secret and a Cluster in the
other, each controller watches the other cluster's API server and writes MeshEndpoints,
each agent programs them into its socket LB and routes the other cluster's pod CIDRs.

Tests run in file order and share the clusters; each leaves the mesh as it found it,
except the last two (API server outage, Cluster deleted).
"""
import json
import os
import subprocess
import sys
import time

import pytest
from kubernetes import client, config

from test_agent import COUNT, sim, wait


pytestmark = pytest.mark.e2e
G, V = "mesh-cni.dev", "v1alpha1"
MESHED = {"mesh-cni.dev/multi-cluster": "true"}
GRACE = 6  # staleGracePeriodSeconds of the Clusters in the outage test


def kube(root, name):
    c = client.Configuration()
    config.load_kube_config(config_file=os.path.join(root, name, "kubeconfig"), client_configuration=c)
    api = client.ApiClient(c)
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def pod(name, labels, port=None):
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{
        "name": "app", "image": "sim", "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        if port else []}]}}


def running(core, name):
    try:
        p = core.read_namespaced_pod(name, "default")
    except client.ApiException:
        return None
    return p if p.status.phase == "Running" and p.status.pod_ip else None


class Mesh:
    def __init__(self, root):
        self.root = root
        self.core, self.custom = {}, {}
        for n in ("east", "west"):
            self.core[n], self.custom[n] = kube(root, n)

    def cip(self, name):
        return self.core[name].read_namespaced_service("web", "default").spec.cluster_ip

    def counts(self, frm, ip, port=80, n=30):
        out = sim(self.root, "exec", "--name", frm, "default/client", "--", sys.executable, "-c", COUNT, ip, str(port),
                  str(n))
        return json.loads(out.stdout)

    def answers(self, frm, n=30):
        return set(self.counts(frm, self.cip(frm), n=n))

    def meshendpoints(self, name):
        return {m["metadata"]["name"]: m for m in
                self.custom[name].list_namespaced_custom_object(G, V, "default", "meshendpoints")["items"]}

    def cluster(self, here, other):
        try:
            return self.custom[here].get_cluster_custom_object(G, V, "clusters", other)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def condition(self, here, other, kind):
        cl = self.cluster(here, other) or {}
        return next((c["status"] for c in (cl.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

    def node_routes(self, name):
        """The agent's routes (protocol 191) in the cluster's node."""
        comps = json.loads((self.root / name / "components.json").read_text())["components"]
        ns = next(c["netns"] for c in comps if c["name"] == f"agent/{name}-node1")
        return subprocess.run(["ip", "-n", ns, "route", "show", "proto", "191"], capture_output=True,
                              text=True).stdout

    def set_ready(self, cluster, name, ready):
        self.core[cluster].patch_namespaced_pod(name, "default", {"metadata": {"annotations": {
            "sim.mesh-cni.dev/not-ready": None if ready else "true"}}})


EAST = {"default/web-east-0"}
WEST = {"default/web-west-0", "default/web-west-1"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshroot")
    try:
        sim(root, "up", "--name", "east", "--nodes", "1")
        sim(root, "up", "--name", "west", "--nodes", "1")
        m = Mesh(root)
        backends = {"east": ["web-east-0"], "west": ["web-west-0", "web-west-1"]}
        for n in ("east", "west"):
            m.core[n].create_namespaced_service("default", {"metadata": {"name": "web", "annotations": MESHED},
                                                            "spec": {"selector": {"app": "web"}, "ports": [
                                                                {"name": "http", "port": 80, "targetPort": "http"}]}})
            for b in backends[n]:
                m.core[n].create_namespaced_pod("default", pod(b, {"app": "web"}, 8080))
            m.core[n].create_namespaced_pod("default", pod("client", {"role": "client"}))
        for n in ("east", "west"):
            for p in backends[n] + ["client"]:
                wait(lambda n=n, p=p: running(m.core[n], p), timeout=60, what=f"{n}/{p}")
        sim(root, "mesh", "east", "west")
        yield m
    finally:
        sim(root, "down", "--all", check=False)
        from meshcni.sim.topology import underlay_ns
        assert underlay_ns(str(root)) not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                            text=True).stdout


def test_clusterip_reaches_backends_in_both_clusters(mesh):
    for here, other in (("east", "west"), ("west", "east")):
        wait(lambda: mesh.condition(here, other, "Ready") == "True", timeout=30, what=f"Cluster {other} Ready in {here}")
        me = wait(lambda: mesh.meshendpoints(here).get(f"web-{other}"), what=f"MeshEndpoint web-{other} in {here}")
        labels = me["metadata"]["labels"]
        assert labels["kubernetes.io/service-name"] == "web" and labels["mesh-cni.dev/cluster-owner"] == other
        assert labels["app.kubernetes.io/managed-by"] == "meshcni-controller"
        owner = me["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Service", "web", mesh.core[here].read_namespaced_service("web", "default").metadata.uid)
        remote_ips = {p.status.pod_ip for p in mesh.core[other].list_namespaced_pod(
            "default", label_selector="app=web").items}
        assert {(x["ip"], x["service_port"], x["backend_port"], x["protocol"])
                for x in me["spec"]["backend_port_mappings"]} == {(ip, 80, 8080, "TCP") for ip in remote_ips}
    wait(lambda: mesh.answers("east", 40) == EAST | WEST, what="east's ClusterIP answered from both clusters")
    wait(lambda: mesh.answers("west", 40) == EAST | WEST, what="west's ClusterIP answered from both clusters")


def test_a_pod_reaches_a_pod_in_the_other_cluster_by_ip(mesh):
    for here, other, target in (("east", "west", "web-west-0"), ("west", "east", "web-east-0")):
        ip = running(mesh.core[other], target).status.pod_ip
        assert wait(lambda: mesh.counts(here, ip, 8080, 3) == {f"default/{target}": 3},
                    what=f"{here}/client -> {other}/{target} {ip}")
        # routed by the agent from the other cluster's Cluster status.nodes, not by the simulator
        assert mesh.core[other].read_node(f"{other}-node1").spec.pod_cidr in mesh.node_routes(here)


def test_remote_backends_follow_scaling(mesh):
    mesh.core["west"].create_namespaced_pod("default", pod("web-west-2", {"app": "web"}, 8080))
    wait(lambda: running(mesh.core["west"], "web-west-2"), what="web-west-2")
    wait(lambda: len(mesh.meshendpoints("east")["web-west"]["spec"]["backend_port_mappings"]) == 3,
         what="3 mappings in east")
    wait(lambda: "default/web-west-2" in mesh.answers("east", 40), what="east reaches the new remote backend")
    mesh.core["west"].delete_namespaced_pod("web-west-2", "default")
    wait(lambda: len(mesh.meshendpoints("east")["web-west"]["spec"]["backend_port_mappings"]) == 2,
         what="2 mappings in east")
    wait(lambda: mesh.answers("east", 40) == EAST | WEST, what="the removed remote backend gone from east")
    # a remote backend that is not ready is not a backend
    mesh.set_ready("west", "web-west-1", False)
    wait(lambda: len(mesh.meshendpoints("east")["web-west"]["spec"]["backend_port_mappings"]) == 1,
         what="the not-ready remote backend left out")
    mesh.set_ready("west", "web-west-1", True)
    wait(lambda: len(mesh.meshendpoints("east")["web-west"]["spec"]["backend_port_mappings"]) == 2,
         what="the remote backend back when ready")


def test_affinity_local_fails_over_to_the_remote_and_back(mesh):
    east = mesh.core["east"]
    east.patch_namespaced_service("web", "default", {"metadata": {"annotations": {"mesh-cni.dev/affinity": "local"}}})
    try:
        wait(lambda: mesh.counts("east", mesh.cip("east")) == {"default/web-east-0": 30}, what="local only")
        mesh.set_ready("east", "web-east-0", False)
        wait(lambda: mesh.answers("east") == WEST, what="failover to west")
        mesh.set_ready("east", "web-east-0", True)
        wait(lambda: mesh.counts("east", mesh.cip("east")) == {"default/web-east-0": 30}, what="back to local")
    finally:
        mesh.set_ready("east", "web-east-0", True)
        east.patch_namespaced_service("web", "default", {"metadata": {"annotations": {"mesh-cni.dev/affinity": None}}})
    wait(lambda: mesh.answers("east", 40) == EAST | WEST, what="both again (affinity none)")


def test_annotation_removed_takes_the_remote_backends_away(mesh):
    east = mesh.core["east"]
    east.patch_namespaced_service("web", "default", {"metadata": {"annotations": {"mesh-cni.dev/multi-cluster": None}}})
    try:
        wait(lambda: "web-west" not in mesh.meshendpoints("east"), what="MeshEndpoint web-west deleted")
        wait(lambda: mesh.answers("east") == EAST, what="east answers alone")
        assert "web-east" in mesh.meshendpoints("west")  # west still meshes its own Service
    finally:
        east.patch_namespaced_service("web", "default", {"metadata": {"annotations": MESHED}})
    wait(lambda: "web-west" in mesh.meshendpoints("east"), what="MeshEndpoint back with the annotation")
    wait(lambda: mesh.answers("east", 40) == EAST | WEST, what="both again")


def test_remote_api_server_stopped_stale_then_removed_then_back(mesh):
    mesh.custom["east"].patch_cluster_custom_object(G, V, "clusters", "west",
                                                    {"spec": {"staleGracePeriodSeconds": GRACE}})
    sim(mesh.root, "apiserver", "stop", "--name", "west")
    try:
        wait(lambda: mesh.condition("east", "west", "APIServerReachable") == "False", timeout=20,
             what="west unreachable from east")
        assert mesh.condition("east", "west", "Ready") == "False"
        # within the grace: kept, marked stale, still a backend (west's pods still run)
        me = mesh.meshendpoints("east").get("web-west")
        assert me is not None, "removed before the grace period ran out"
        me = wait(lambda: ((mesh.meshendpoints("east").get("web-west") or {}).get("status") or {}).get("stale"),
                  timeout=3, what="web-west marked stale") and mesh.meshendpoints("east")["web-west"]
        assert me["status"].get("staleSince"), me
        assert mesh.answers("east", 10) & WEST, "the remote backends must serve during the grace period"
        wait(lambda: "web-west" not in mesh.meshendpoints("east"), timeout=GRACE + 15,
             what="MeshEndpoint removed after the grace period")
        cl = mesh.cluster("east", "west")
        assert not (cl.get("status") or {}).get("nodes"), cl.get("status")
        wait(lambda: mesh.answers("east") == EAST, what="east answers alone after the grace")
        pod_cidr = mesh.core["west"].read_node("west-node1").spec.pod_cidr
        wait(lambda: pod_cidr not in mesh.node_routes("east"), what="the route to west's pods withdrawn")
    finally:
        sim(mesh.root, "apiserver", "start", "--name", "west")
    wait(lambda: mesh.condition("east", "west", "APIServerReachable") == "True", timeout=30, what="west reachable")
    wait(lambda: "web-west" in mesh.meshendpoints("east"), timeout=30, what="MeshEndpoint back after the restart")
    wait(lambda: mesh.answers("east", 40) == EAST | WEST, timeout=30, what="both clusters answer again")


def test_cluster_deleted_takes_everything_it_made(mesh):
    pod_cidr = mesh.core["west"].read_node("west-node1").spec.pod_cidr
    assert pod_cidr in mesh.node_routes("east")
    mesh.custom["east"].delete_cluster_custom_object(G, V, "clusters", "west")
    wait(lambda: mesh.cluster("east", "west") is None, what="Cluster west gone (finalizer done)")
    assert not [m for m in mesh.meshendpoints("east").values()
                if m["metadata"]["labels"].get("mesh-cni.dev/cluster-owner") == "west"]
    wait(lambda: pod_cidr not in mesh.node_routes("east"), what="the route to west's pods gone")
    wait(lambda: mesh.answers("east") == EAST, what="east answers alone")
    # the other direction is untouched until it is unmeshed too
    assert "web-east" in mesh.meshendpoints("west")
    out = sim(mesh.root, "unmesh", "east", "west")
    assert "deleted" in out.stdout
    wait(lambda: not mesh.meshendpoints("west"), what="west's MeshEndpoints gone with its Cluster")
    wait(lambda: mesh.answers("west") == WEST, what="west answers alone")
