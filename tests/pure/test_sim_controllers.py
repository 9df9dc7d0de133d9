# SPDX-License-Identifier: MIT OR Apache-2.0
"""The simulator's controllers as pure functions: scheduling, ClusterIPs, EndpointSlices."""
import pytest

from meshcni.sim import controllers as c
from meshcni.sim.topology import SimError, plan_nodes

pytestmark = pytest.mark.pure


def node(name, ready=True, taint=None):
    return {"metadata": {"name": name}, "spec": {"taints": [taint] if taint else []},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name, ns="default", labels=None, ip=None, ready=True, node_name=None, ports=(), deleting=False, phase=None):
    p = {"metadata": {"name": name, "namespace": ns, "labels": labels or {}, "uid": f"uid-{name}",
                      "creationTimestamp": f"2026-01-01T00:00:0{len(name) % 10}Z"},
         "spec": {"containers": [{"name": "app", "ports": [{"name": n, "containerPort": p, "protocol": pr}
                                                           for n, p, pr in ports]}]},
         "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if ip:
        p["status"].update(podIP=ip, podIPs=[{"ip": ip}], phase=phase or "Running")
    if node_name:
        p["spec"]["nodeName"] = node_name
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return p


def svc(name="web", ns="default", selector=None, ports=None, **spec):
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": dict({"selector": selector if selector is not None else {"app": "web"},
                          "ports": ports or [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
                         **spec)}


def test_schedule_round_robin_over_ready_untainted_nodes():
    nodes = [node("n1"), node("n2"), node("n3", ready=False), node("n4", taint={"key": "x", "effect": "NoSchedule"})]
    pods = [pod("a"), pod("bb"), pod("ccc"), pod("bound", node_name="n1"), pod("dddd", deleting=True)]
    binds, cur = c.schedule(pods, nodes)
    assert binds == [("default/a", "n1"), ("default/bb", "n2"), ("default/ccc", "n1")] and cur == 3
    assert c.schedule([pod("x")], [node("n1", ready=False)]) == ([], 0)


def test_slices_resolve_named_ports_per_pod_and_conditions():
    pods = [pod("w1", labels={"app": "web"}, ip="10.0.0.1", ports=[("http", 8080, "TCP")]),
            pod("w2", labels={"app": "web"}, ip="10.0.0.2", ports=[("http", 9090, "TCP")], ready=False),
            pod("w3", labels={"app": "web"}, ip="10.0.0.3", ports=[("http", 8080, "TCP")], deleting=True),
            pod("other", labels={"app": "db"}, ip="10.0.0.9"),
            pod("pending", labels={"app": "web"}),
            pod("done", labels={"app": "web"}, ip="10.0.0.8", phase="Succeeded"),
            pod("elsewhere", ns="x", labels={"app": "web"}, ip="10.0.0.7")]
    slices = c.desired_slices(svc(), pods)
    got = {(s["ports"][0]["port"], e["addresses"][0], e["conditions"]["ready"], e["conditions"]["terminating"])
           for s in slices for e in s["endpoints"]}
    assert got == {(8080, "10.0.0.1", True, False), (9090, "10.0.0.2", False, False), (8080, "10.0.0.3", False, True)}
    assert len(slices) == 2 and all(s["metadata"]["labels"][c.SERVICE_NAME_LABEL] == "web" for s in slices)
    assert c.desired_slices(svc(selector={}), pods) == []  # no selector: someone else's endpoints


def test_slice_diff_only_touches_managed_slices():
    want = c.desired_slices(svc(), [pod("w1", labels={"app": "web"}, ip="10.0.0.1", ports=[("http", 8080, "TCP")])])
    foreign = {"metadata": {"name": "manual", "namespace": "default", "labels": {}, "resourceVersion": "3"}}
    stale = dict(want[0], metadata=dict(want[0]["metadata"], name="web-old", resourceVersion="2"))
    create, update, delete = c.slice_diff([foreign, stale], want)
    assert [s["metadata"]["name"] for s in create] == [want[0]["metadata"]["name"]]
    assert update == [] and [s["metadata"]["name"] for s in delete] == ["web-old"]
    cur = dict(want[0], endpoints=[], metadata=dict(want[0]["metadata"], resourceVersion="5"))
    _, update, _ = c.slice_diff([cur], want)
    assert update[0]["metadata"]["resourceVersion"] == "5"


def test_plan_nodes():
    nodes = plan_nodes("c", 3, 2, "10.244.0.0/16", "/tmp/r")
    assert [(n.name, n.ip, n.pod_cidr) for n in nodes] == [("c-node1", "172.30.3.10", "10.244.0.0/24"),
                                                           ("c-node2", "172.30.3.11", "10.244.1.0/24")]
    assert nodes[0].netns != plan_nodes("c", 3, 2, "10.244.0.0/16", "/tmp/other")[0].netns
    with pytest.raises(SimError, match="room for only 4"):
        plan_nodes("c", 1, 5, "10.244.0.0/22", "/tmp/r")
