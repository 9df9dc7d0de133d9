# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's Services and Routes reconcilers read the mesh's caches (desired() on plain lists)."""
import pytest

import noext

noext.require_extension("the agent's reconcilers module wires its datapath appliers, which load meshcni._libbpf")

from meshcni.agent.reconcilers import Routes, Services  # noqa: E402
from meshcni.controllers.model import Backend  # noqa: E402
from meshcni.controllers.services import ServiceIDs  # noqa: E402

pytestmark = pytest.mark.pure


class Cache:
    def __init__(self, items):
        self.items = list(items)

    def list(self):
        return list(self.items)


SVC = {"metadata": {"name": "web", "namespace": "app", "annotations": {"mesh-cni.dev/multi-cluster": "true"}},
       "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
SLICE = {"metadata": {"name": "web-1", "namespace": "app", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}]}


def mep(name, managed=True):
    labels = {"kubernetes.io/service-name": "web", "mesh-cni.dev/cluster-owner": "c2"}
    if managed:
        labels["app.kubernetes.io/managed-by"] = "meshcni-controller"
    return {"metadata": {"name": name, "namespace": "app", "labels": labels},
            "spec": {"backend_port_mappings": [{"ip": "10.245.0.7", "service_port": 80, "backend_port": 8080,
                                                "protocol": "TCP"}]}}


def test_services_reconciler_watches_and_merges_managed_meshendpoints():
    r = Services(None, ServiceIDs(), None, None)
    assert "meshendpoints" in r.watches
    d = r.desired({"services": Cache([SVC]), "endpointslices": Cache([SLICE]),
                   "meshendpoints": Cache([mep("web-c2"), mep("web-hand", managed=False)])})
    (svc,), conflicts = d.state
    assert conflicts == [] and svc.backends == [Backend("10.244.0.5", 8080), Backend("10.245.0.7", 8080)]
    assert [(p.kind, p.name) for p in d.problems] == [("MeshEndpoint", "web-hand")]
    r.programmed = [svc]  # what apply() keeps for the view
    (v,) = r.view()
    assert v["backendClusters"] == {"10.245.0.7:8080": "c2"} and v["backends"] == ["10.244.0.5:8080",
                                                                                    "10.245.0.7:8080"]


def test_routes_reconciler_watches_clusters_and_routes_their_nodes():
    r = Routes(None, "n1")
    assert set(r.watches) == {"nodes", "clusters"}
    nodes = [{"metadata": {"name": n}, "spec": {"podCIDR": c},
              "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
             for n, c, ip in (("n1", "10.244.0.0/24", "172.30.1.10"), ("n2", "10.244.1.0/24", "172.30.1.11"))]
    cl = {"metadata": {"name": "c2"}, "spec": {"secret": {"name": "s"}},
          "status": {"nodes": [{"name": "c2-n1", "addresses": ["172.30.2.10"], "podCIDRs": ["10.245.0.0/24"]}]}}
    d = r.desired({"nodes": Cache(nodes), "clusters": Cache([cl])})
    assert d.state == {"10.244.1.0/24": "172.30.1.11", "10.245.0.0/24": "172.30.2.10"} and not d.problems


def test_the_controllers_meshendpoints_are_what_the_agent_programs():
    """Both halves of the contract on one example: the controller's generator (controllers/mesh.py)
    writes, the agent's merge reads, nothing is lost or reported in between; ports matched by name
    (the remote's number differs), a UDP port, a v6 address joins the v6 Service."""
    from meshcni.controllers.mesh import desired_meshendpoints
    local = {"metadata": {"name": "web", "namespace": "app", "uid": "u1", "resourceVersion": "1",
                          "annotations": {"mesh-cni.dev/multi-cluster": "true"}},
             "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                {"name": "dns", "port": 53, "protocol": "UDP"}]}}
    remote = {"metadata": {"name": "web", "namespace": "app", "resourceVersion": "7"},
              "spec": {"ports": [{"name": "http", "port": 8000, "protocol": "TCP"},
                                 {"name": "dns", "port": 53, "protocol": "UDP"}]}}
    slices = [{"metadata": {"name": f"web-{f}", "namespace": "app", "resourceVersion": "8",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": f, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                                           {"name": "dns", "port": 5353, "protocol": "UDP"}],
               "endpoints": [{"addresses": [a], "conditions": {"ready": True}}]}
              for f, a in (("IPv4", "10.245.0.7"), ("IPv6", "fd42::7"))]
    res = desired_meshendpoints("c2", [local], [remote], [{"metadata": {"name": "app"}}], slices)
    assert not res.problems and len(res.desired) == 1
    r = Services(None, ServiceIDs(), None, None)
    d = r.desired({"services": Cache([local]), "endpointslices": Cache([]),
                   "meshendpoints": Cache(res.desired.values())})
    assert not d.problems
    by = {s.name: s for s in d.state[0]}
    assert by["app/web:http/TCP/v4"].backends == [Backend("10.245.0.7", 8080)]
    assert by["app/web:dns/UDP/v4"].backends == [Backend("10.245.0.7", 5353)]
    assert by["app/web:http/TCP/v6"].backends == [Backend("fd42::7", 8080)]
    assert by["app/web:http/TCP/v4"].clusters == {Backend("10.245.0.7", 8080): "c2"}
