# SPDX-License-Identifier: MIT OR Apache-2.0
"""trim_pod keeps everything the agent's controllers read: their output is the same on trimmed pods."""
import copy
import json
import pickle

import pytest

from meshcni.controllers.identity import MANAGED_BY, MANAGER, identity_labels, identity_name
from meshcni.controllers.ipcache import desired_endpoints, desired_ipcache
from meshcni.controllers.netpol import compile_policies
from meshcni.k8s.trim import trim_pod

pytestmark = pytest.mark.pure


def full_pod(i, ns="x", ip=None, **over):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"web-{i}", "namespace": ns, "uid": f"uid-{i}", "resourceVersion": str(100 + i),
                      "labels": {"app": "web", "pod-template-hash": "abc123", "tier": "front" if i % 2 else "back"},
                      "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 800 + "}"},
                      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc123",
                                           "uid": "rs", "controller": True}],
                      "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                         "fieldsV1": {"f:metadata": {"f:labels": {}}}}]},
         "spec": {"nodeName": f"node{i % 3}", "serviceAccountName": "default",
                  "containers": [{"name": "app", "image": "registry.example/web:1.2.3",
                                  "env": [{"name": f"E{j}", "value": "v" * 20} for j in range(10)],
                                  "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                                  "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                                  "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets"}]}],
                  "initContainers": [{"name": "init", "image": "busybox",
                                      "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}],
                  "volumes": [{"name": "token", "projected": {"sources": []}}],
                  "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]},
         "status": {"phase": "Running", "podIP": ip or f"10.244.0.{i + 2}", "podIPs": [{"ip": ip or f"10.244.0.{i + 2}"}],
                    "hostIP": "172.30.1.10", "qosClass": "Burstable", "startTime": "2026-12-03T00:00:00Z",
                    "conditions": [{"type": t, "status": "True"} for t in ("Ready", "Initialized", "PodScheduled")],
                    "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                           "image": "registry.example/web:1.2.3", "imageID": "sha256:" + "0" * 64,
                                           "containerID": "containerd://" + "1" * 64}]}}
    p.update(over)
    return p


def world():
    nss = [{"metadata": {"name": "x", "labels": {"ns": "x", "kubernetes.io/metadata.name": "x"}}}]
    pods = [full_pod(i) for i in range(6)]
    pods.append(full_pod(6, ip="999.0.0.1"))                   # garbage IP: still reported
    pods.append(full_pod(7, spec={"hostNetwork": True, "nodeName": "node1"}))
    pods.append(full_pod(8, status={"phase": "Succeeded", "podIP": "10.244.0.50"}))
    ids = []
    for p in pods:
        labels = identity_labels(p, nss[0]["metadata"]["labels"])
        name = identity_name(labels)
        if not [i for i in ids if i["metadata"]["name"] == name]:
            ids.append({"metadata": {"name": name, "namespace": "x", "labels": {MANAGED_BY: MANAGER}},
                        "spec": {"id": 16777300 + len(ids), **labels}})
    pols = [{"metadata": {"name": "p", "namespace": "x"}, "spec": {
        "podSelector": {"matchLabels": {"tier": "front"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "back"}}}], "ports": [{"port": "http"},
                                                                                               {"port": "metrics"}]}],
        "egress": [{"ports": [{"port": "http"}]}]}}]
    nodes = [{"metadata": {"name": "node0"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.30.1.10"}]}}]
    return nss, pods, ids, pols, nodes


def test_controllers_see_the_same_on_trimmed_pods():
    nss, pods, ids, pols, nodes = world()
    trimmed = [trim_pod(copy.deepcopy(p)) for p in pods]
    a = compile_policies(pols, pods, nss, ids, [])
    b = compile_policies(pols, trimmed, nss, ids, [])
    assert a.entries == b.entries and a.enforced == b.enforced and len(a.entries) > 2
    assert [str(x) for x in a.problems] == [str(x) for x in b.problems]
    ia, pa, _ = desired_ipcache(pods, nss, ids, [], nodes, "node0")
    ib, pb, _ = desired_ipcache(trimmed, nss, ids, [], nodes, "node0")
    assert ia == ib and [str(x) for x in pa] == [str(x) for x in pb] and pa  # the garbage IP, reported
    recs = [{"hostIfindex": 5, "podNamespace": "x", "podName": "web-1", "ips": ["10.244.0.3/32"]}]
    assert desired_endpoints(recs, pods, nss, ids) == desired_endpoints(recs, trimmed, nss, ids)


def test_trimmed_pod_is_a_fraction_of_the_full_one():
    p = full_pod(1)
    t = trim_pod(p)
    assert len(pickle.dumps(t)) * 5 < len(pickle.dumps(p))
    assert t["metadata"]["labels"] == p["metadata"]["labels"] and t["spec"]["nodeName"] == "node1"
    assert t["spec"]["initContainers"] == [{"ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}]
    json.dumps(t)  # still plain JSON data


@pytest.mark.parametrize("bad", [None, [], "x", {"metadata": "nope"}, {"metadata": {}, "spec": [], "status": 3},
                                 {"metadata": {"labels": ["a"]}, "spec": {"containers": "no"},
                                  "status": {"podIPs": "no"}}])
def test_garbage_passes_through_for_the_controllers_to_report(bad):
    out = trim_pod(bad)
    if isinstance(bad, dict):
        for k in ("spec", "status"):
            if k in bad and not isinstance(bad[k], dict):
                assert out[k] == bad[k]
    else:
        assert out is bad


def test_services_controller_sees_the_same_on_trimmed_services_and_slices():
    from meshcni.controllers.services import ServiceIDs, desired_services
    from meshcni.k8s.trim import trim_endpointslice, trim_service
    noise = {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}" * 300,
                             "mesh-cni.dev/global": "true"},
             "managedFields": [{"manager": "kubectl"}], "uid": "u", "resourceVersion": "7"}
    svcs = [{"metadata": {"name": f"s{i}", "namespace": "d", **noise},
             "spec": {"clusterIP": f"10.96.0.{i + 1}", "clusterIPs": [f"10.96.0.{i + 1}"], "type": "ClusterIP",
                      "selector": {"app": f"s{i}"}, "sessionAffinity": "ClientIP" if i == 1 else "None",
                      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}} if i == 1 else None,
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}
            for i in range(4)]
    svcs.append({"metadata": {"name": "bad", "namespace": "d"}, "spec": {"clusterIP": "10.96.0.999",
                                                                         "ports": [{"port": 70000}]}})
    svcs.append({"metadata": {"name": "ext", "namespace": "d"}, "spec": {"type": "ExternalName",
                                                                         "externalName": "example.org"}})
    svcs.append({"metadata": {"name": "nospec", "namespace": "d"}})
    slices = [{"metadata": {"name": f"s{i}-x", "namespace": "d", **noise,
                            "labels": {"kubernetes.io/service-name": f"s{i}"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": [f"10.244.{i}.{j + 2}"], "conditions": {"ready": j != 2},
                              "targetRef": {"kind": "Pod", "name": f"p{j}", "uid": "x" * 36},
                              "nodeName": "n1", "zone": "z", "hints": {"forZones": [{"name": "z"}]}}
                             for j in range(4)] + [{"addresses": ["not-an-ip"], "conditions": {"ready": True}}]}
              for i in range(4)]
    a, pa = desired_services(svcs, slices, ServiceIDs())
    b, pb = desired_services([trim_service(copy.deepcopy(s)) for s in svcs],
                             [trim_endpointslice(copy.deepcopy(s)) for s in slices], ServiceIDs())
    assert a == b and [str(x) for x in pa] == [str(x) for x in pb] and len(a) == 4 and pa
    t = trim_service(svcs[0])
    assert t["metadata"]["annotations"] == {"mesh-cni.dev/global": "true"} and "selector" not in t["spec"]
    assert len(pickle.dumps(trim_endpointslice(slices[0]))) * 2 < len(pickle.dumps(slices[0]))
