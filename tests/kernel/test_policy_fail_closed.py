# SPDX-License-Identifier: MIT OR Apache-2.0
"""A policy map too small for the desired policy: which pods keep their policy is decided by the
``mesh-cni.dev/policy-priority`` annotation (then age, then size), each pod that loses it gets a
``PolicyFailClosed`` Event, and mc_policy / mc_enforce hold exactly that outcome.

The agent's real Policy reconciler on the Runner, real informers on the in-process API server,
the real policy object on a private bpffs; the agent is given fewer mc_policy rows than the map
has (its ``capacity``), so a handful of policies overflow it.
"""
from pathlib import Path

import pytest
from kubernetes import client

from meshcni.agent.agent import Metrics, event_reason
from meshcni.agent.reconcilers import MESH_WATCHES, POLICY_WATCHES, Policy
from meshcni.apiserver import APIServer
from meshcni.bpf.decode import decode_enforce, decode_policy
from meshcni.controllers.identity import identity_body, identity_labels
from meshcni.controllers.netpol import PRIORITY_ANNOTATION
from meshcni.datapath.policy import PolicyProgram
from meshcni.k8s import EventRecorder, Informer, Runner, api_client
from testutil import eventually

pytestmark = pytest.mark.kernel

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
NS = "x"
APPS = {"a": 16777301, "b": 16777302, "c": 16777303}  # app -> identity id (pod range)


def until(cond, timeout=15.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.05)


def policy(app, ports):
    """Ingress to app from the pods of app c on ``ports`` TCP ports: ``ports`` rows + the host allow."""
    return {"metadata": {"name": f"allow-{app}", "namespace": NS},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}],
                                  "ports": [{"protocol": "TCP", "port": 1000 + i} for i in range(ports)]}]}}


@pytest.fixture
def cluster(tmp_path):
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        net = client.NetworkingV1Api(api)
        core.create_namespace({"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}})
        for app, ident in APPS.items():
            pod = {"metadata": {"name": f"{app}1", "namespace": NS, "labels": {"app": app}},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}
            core.create_namespaced_pod(NS, pod)
            labels = identity_labels(pod, {"kubernetes.io/metadata.name": NS})
            custom.create_namespaced_custom_object("mesh-cni.dev", "v1alpha1", NS, "identities",
                                                   identity_body(NS, labels, ident))
        # a: 6 rows, b: 6 rows, c: 2 rows (+ the host allow of each: 1 row)
        for app, ports in (("a", 6), ("b", 6), ("c", 2)):
            net.create_namespaced_network_policy(NS, policy(app, ports))
        yield api, core


def test_priority_decides_who_fails_closed_and_each_pod_is_told(cluster, pin_root):
    api, core = cluster
    net, custom = client.NetworkingV1Api(api), client.CustomObjectsApi(api)
    lists = {"networkpolicies": net.list_network_policy_for_all_namespaces,
             "pods": core.list_pod_for_all_namespaces, "namespaces": core.list_namespace}
    caches = {n: Informer(f, name=n) for n, f in lists.items()}
    for n in ("identities", "cidridentities", "remoteidentities", "clusters"):
        caches[n] = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", n, name=n)
    assert set(caches) == set(POLICY_WATCHES + MESH_WATCHES)
    metrics = Metrics()
    with PolicyProgram(pin_root) as prog:
        dp = prog.datapath()
        # a 7, b 7, c 3 rows = 17: 11 rows hold c and one of a, b (+ the other's host allow)
        rec = Policy(dp, metrics, capacity=11)
        events = EventRecorder(core, "meshcni-agent", "node1", host="node1", reason=event_reason)
        runner = Runner("agent", caches, [rec], events, metrics.reconcile)
        try:
            runner.start()

            def closed():
                return sorted((f["identity"], f["direction"]) for f in rec.view().get("failClosed", []))

            def fail_events():
                return {(e.involved_object.name, e.reason) for e in core.list_namespaced_event(NS).items
                        if e.reason == "PolicyFailClosed"}

            # equal priority, same age (one second's timestamps): the size order, then id -> b closes
            assert closed() == [(APPS["b"], "ingress")]
            until(lambda: fail_events() == {("b1", "PolicyFailClosed")}, what="b1's Event")
            msg = [e.message for e in core.list_namespaced_event(NS).items if e.reason == "PolicyFailClosed"][0]
            assert "mc_policy (11 rows)" in msg and PRIORITY_ANNOTATION in msg

            def rows(ident):
                k, v = dp.policy.dump()
                return [r for r in decode_policy(k, v) if r["identity"] == ident]
            # b keeps exactly its host allow and stays enforced: closed, not open
            assert [(r["peer"], r["proto"]) for r in rows(APPS["b"])] == [(1, None)]
            assert len(rows(APPS["a"])) == 7 and len(rows(APPS["c"])) == 3
            k, v = dp.enforce.dump()
            assert {(r["identity"], r["direction"]) for r in decode_enforce(k, v)} >= \
                {(APPS["a"], "ingress"), (APPS["b"], "ingress"), (APPS["c"], "ingress")}
            assert metrics.fail_closed._value.get() == 1

            # b's owner raises its priority: b keeps its policy, a fails closed instead, and a1 is told
            core.patch_namespaced_pod("b1", NS, {"metadata": {"annotations": {PRIORITY_ANNOTATION: "10"}}})
            until(lambda: closed() == [(APPS["a"], "ingress")], what="a to fail closed instead of b")
            until(lambda: ("a1", "PolicyFailClosed") in fail_events(), what="a1's Event")
            assert len(rows(APPS["b"])) == 7 and [(r["peer"], r["proto"]) for r in rows(APPS["a"])] == [(1, None)]

            # a bad annotation is reported on the pod and counts as 0
            core.patch_namespaced_pod("c1", NS, {"metadata": {"annotations": {PRIORITY_ANNOTATION: "high"}}})
            until(lambda: any(e.involved_object.name == "c1" and PRIORITY_ANNOTATION in e.message
                              for e in core.list_namespaced_event(NS).items), what="c1's bad-annotation Event")
            assert closed() == [(APPS["a"], "ingress")]
        finally:
            runner.stop()
            dp.close()
