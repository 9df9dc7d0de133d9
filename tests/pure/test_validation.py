# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni.apiserver.validation: kube-apiserver's rules for the objects
meshcni reads, field paths and reasons as kube reports them."""

import copy
import re

import pytest

from meshcni.apiserver import validation as v
from meshcni.apiserver.validation import FieldError

pytestmark = pytest.mark.pure

INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"

GVK = {
    "Pod": ("", "v1", "Pod"),
    "Service": ("", "v1", "Service"),
    "EndpointSlice": ("discovery.k8s.io", "v1", "EndpointSlice"),
    "Node": ("", "v1", "Node"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "NetworkPolicy"),
    "Lease": ("coordination.k8s.io", "v1", "Lease"),
    "ConfigMap": ("", "v1", "ConfigMap"),
    "Secret": ("", "v1", "Secret"),
    "Namespace": ("", "v1", "Namespace"),
}

GOOD = {
    "Pod": {
        "metadata": {"name": "web-0", "namespace": "app", "labels": {"app": "web"},
                     "annotations": {"Example.com/Owner": "team"}},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "web", "image": "nginx",
             "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5",
                   "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}], "hostIP": "172.18.0.2"},
    },
    "Service": {
        "metadata": {"name": "web", "namespace": "app"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                           {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}],
                 "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}},
    },
    "EndpointSlice": {
        "metadata": {"name": "web-abc12", "namespace": "app",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "nodeName": "node-1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    },
    "Node": {
        "metadata": {"name": "node-1"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"],
                 "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                                 {"type": "Hostname", "address": "node-1"}]},
    },
    "NetworkPolicy": {
        "metadata": {"name": "allow-web", "namespace": "app"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [
                    {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}},
                    {"namespaceSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}},
                ],
                "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}, {"port": "http"}],
            }],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}],
        },
    },
    "Lease": {
        "metadata": {"name": "meshcni-controller", "namespace": "kube-system"},
        "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                 "renewTime": "2026-01-02T03:04:05.000000Z"},
    },
    "ConfigMap": {"metadata": {"name": "cfg", "namespace": "kube-system"},
                  "data": {"config.yaml": "x", "KEY_NAME": "y"}},
    "Secret": {"metadata": {"name": "mesh-remote-cluster2-kubeconfig", "namespace": "mesh-cni"},
               "type": "Opaque", "data": {"config": "aGVsbG8="}},
    "Namespace": {"metadata": {"name": "app", "labels": {"kubernetes.io/metadata.name": "app"}}},
}

DELETE = object()


def _apply(obj, changes):
    """changes: {"a.b[0].c": value}; value DELETE removes; a path ending in
    `[+]` appends."""
    obj = copy.deepcopy(obj)
    for dotted, value in changes.items():
        parts = re.findall(r"\[\+\]|[^.\[\]]+", dotted)
        cur = obj
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
        last = parts[-1]
        if last == "[+]":
            cur.append(copy.deepcopy(value))
        elif value is DELETE:
            del cur[int(last) if isinstance(cur, list) else last]
        elif isinstance(cur, list):
            cur[int(last)] = copy.deepcopy(value)
        else:
            cur[last] = copy.deepcopy(value)
    return obj


def _check(kind, obj, old=None):
    return [(e.field, e.reason) for e in v.validate(*GVK[kind], obj, old)]


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_objects_pass(kind):
    assert v.validate(*GVK[kind], GOOD[kind]) == []


IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"

CASES = [
    # ---- Pod
    ("Pod", {"status": {"podIP": "garbage"}}, [("status.podIP", INVALID)]),
    ("Pod", {"status.podIPs[1].ip": "fd00::zz"}, [("status.podIPs[1].ip", INVALID)]),
    ("Pod", {"status.podIPs[1].ip": "10.244.1.6"}, [("status.podIPs", INVALID)]),
    ("Pod", {"status.podIPs[0].ip": "10.244.1.6"}, [("status.podIPs[0].ip", INVALID)]),
    ("Pod", {"status.podIPs[+]": {"ip": "fd00::6"}}, [("status.podIPs", TOO_MANY), ("status.podIPs", INVALID)]),
    ("Pod", {"status.hostIP": "node-1"}, [("status.hostIP", INVALID)]),
    ("Pod", {"status.phase": "Sleeping"}, [("status.phase", NOT_SUPPORTED)]),
    ("Pod", {"spec.containers": []}, [("spec.containers", REQUIRED)]),
    ("Pod", {"spec.containers": DELETE}, [("spec.containers", REQUIRED)]),
    ("Pod", {"spec.containers[0].name": "Web"}, [("spec.containers[0].name", INVALID)]),
    ("Pod", {"spec.containers[0].name": DELETE}, [("spec.containers[0].name", REQUIRED)]),
    ("Pod", {"spec.containers[0].image": DELETE}, [("spec.containers[0].image", REQUIRED)]),
    ("Pod", {"spec.containers[+]": {"name": "web", "image": "x"}}, [("spec.containers[1].name", DUPLICATE)]),
    ("Pod", {"spec.initContainers": [{"name": "web", "image": "x"}]}, [("spec.containers[0].name", DUPLICATE)]),
    ("Pod", {"spec.containers[0].ports[0].containerPort": 0}, [("spec.containers[0].ports[0].containerPort", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].containerPort": 70000},
     [("spec.containers[0].ports[0].containerPort", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].containerPort": DELETE},
     [("spec.containers[0].ports[0].containerPort", REQUIRED)]),
    ("Pod", {"spec.containers[0].ports[0].containerPort": "8080"},
     [("spec.containers[0].ports[0].containerPort", "FieldValueTypeInvalid")]),
    ("Pod", {"spec.containers[0].ports[0].protocol": "ICMP"}, [("spec.containers[0].ports[0].protocol", NOT_SUPPORTED)]),
    ("Pod", {"spec.containers[0].ports[0].hostPort": 70000}, [("spec.containers[0].ports[0].hostPort", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].hostIP": "::g"}, [("spec.containers[0].ports[0].hostIP", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].name": "Http"}, [("spec.containers[0].ports[0].name", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].name": "a-very-long-name"}, [("spec.containers[0].ports[0].name", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].name": "8080"}, [("spec.containers[0].ports[0].name", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].name": "a--b"}, [("spec.containers[0].ports[0].name", INVALID)]),
    ("Pod", {"spec.containers[0].ports[0].name": "-ab"}, [("spec.containers[0].ports[0].name", INVALID)]),
    ("Pod", {"spec.containers[+]": {"name": "side", "image": "x", "ports": [{"name": "http", "containerPort": 9}]}},
     [("spec.containers[1].ports[0].name", DUPLICATE)]),
    ("Pod", {"spec.nodeName": "Node_1"}, [("spec.nodeName", INVALID)]),
    ("Pod", {"spec.restartPolicy": "Sometimes"}, [("spec.restartPolicy", NOT_SUPPORTED)]),
    ("Pod", {"metadata.name": "Web-0"}, [("metadata.name", INVALID)]),
    ("Pod", {"metadata.name": "a" * 254}, [("metadata.name", INVALID)]),
    ("Pod", {"metadata.name": DELETE}, [("metadata.name", REQUIRED)]),
    ("Pod", {"metadata.namespace": DELETE}, [("metadata.namespace", REQUIRED)]),
    ("Pod", {"metadata.namespace": "App"}, [("metadata.namespace", INVALID)]),
    ("Pod", {"metadata.labels": {"-bad": "x"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"app": "x" * 64}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"app": "a b"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"Bad_Prefix/app": "x"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"a/b/c": "x"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"example.com/": "x"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.labels": {"x" * 64: "x"}}, [("metadata.labels", INVALID)]),
    ("Pod", {"metadata.annotations": {"bad key": "x"}}, [("metadata.annotations", INVALID)]),
    ("Pod", {"metadata.annotations": {"big": "x" * (256 * 1024)}}, [("metadata.annotations", TOO_LONG)]),
    # ---- Service
    ("Service", {"spec.clusterIP": "10.96.0.999", "spec.clusterIPs": ["10.96.0.999"]}, [("spec.clusterIP", INVALID)]),
    ("Service", {"spec.clusterIP": "10.96.0.999", "spec.clusterIPs": DELETE}, [("spec.clusterIP", INVALID)]),
    ("Service", {"spec.clusterIPs": ["10.96.0.11"]}, [("spec.clusterIPs[0]", INVALID)]),
    ("Service", {"spec.clusterIPs[+]": "10.96.0.11"}, [("spec.clusterIPs", INVALID)]),
    ("Service", {"spec.clusterIPs[+]": "nope"}, [("spec.clusterIPs[1]", INVALID)]),
    ("Service", {"spec.clusterIPs": ["10.96.0.10", "fd00::a", "fd00::b"]},
     [("spec.clusterIPs", TOO_MANY), ("spec.clusterIPs", INVALID)]),
    ("Service", {"spec.clusterIP": "None", "spec.clusterIPs": ["None", "fd00::a"]}, [("spec.clusterIPs[0]", INVALID)]),
    ("Service", {"spec.ports[0].port": 0}, [("spec.ports[0].port", INVALID)]),
    ("Service", {"spec.ports[0].port": 70000}, [("spec.ports[0].port", INVALID)]),
    ("Service", {"spec.ports[0].port": DELETE}, [("spec.ports[0].port", REQUIRED)]),
    ("Service", {"spec.ports[0].protocol": "ICMP"}, [("spec.ports[0].protocol", NOT_SUPPORTED)]),
    ("Service", {"spec.ports[0].targetPort": 70000}, [("spec.ports[0].targetPort", INVALID)]),
    ("Service", {"spec.ports[0].targetPort": "Http"}, [("spec.ports[0].targetPort", INVALID)]),
    ("Service", {"spec.ports[1].name": DELETE}, [("spec.ports[1].name", REQUIRED)]),
    ("Service", {"spec.ports[1].name": "http"}, [("spec.ports[1].name", DUPLICATE)]),
    ("Service", {"spec.ports[1].name": "DNS"}, [("spec.ports[1].name", INVALID)]),
    ("Service", {"spec.ports[1].port": 80, "spec.ports[1].protocol": "TCP"}, [("spec.ports[1]", DUPLICATE)]),
    ("Service", {"spec.ports": DELETE}, [("spec.ports", REQUIRED)]),
    ("Service", {"spec.type": "Internal"}, [("spec.type", NOT_SUPPORTED)]),
    ("Service", {"spec.ports[0].nodePort": 30080}, [("spec.ports[0].nodePort", FORBIDDEN)]),
    ("Service", {"spec.type": "NodePort", "spec.ports[0].nodePort": 70000}, [("spec.ports[0].nodePort", INVALID)]),
    ("Service", {"spec.ipFamilies": ["IPv5"]}, [("spec.ipFamilies[0]", NOT_SUPPORTED)]),
    ("Service", {"spec.ipFamilies": ["IPv6"]}, [("spec.ipFamilies[0]", INVALID)]),
    ("Service", {"spec.ipFamilies": ["IPv4", "IPv4"]}, [("spec.ipFamilies[1]", DUPLICATE)]),
    ("Service", {"spec.ipFamilyPolicy": "AnyStack"}, [("spec.ipFamilyPolicy", NOT_SUPPORTED)]),
    ("Service", {"spec.sessionAffinity": "Sticky", "spec.sessionAffinityConfig": DELETE},
     [("spec.sessionAffinity", NOT_SUPPORTED)]),
    ("Service", {"spec.sessionAffinity": "None"}, [("spec.sessionAffinityConfig", INVALID)]),
    ("Service", {"spec.sessionAffinityConfig.clientIP.timeoutSeconds": 0},
     [("spec.sessionAffinityConfig.clientIP.timeoutSeconds", INVALID)]),
    ("Service", {"spec.sessionAffinityConfig.clientIP.timeoutSeconds": 86401},
     [("spec.sessionAffinityConfig.clientIP.timeoutSeconds", INVALID)]),
    ("Service", {"spec.selector": {"app": "-web"}}, [("spec.selector", INVALID)]),
    ("Service", {"spec.ports[0].appProtocol": "h2 c"}, [("spec.ports[0].appProtocol", INVALID)]),
    ("EndpointSlice", {"ports[0].appProtocol": "-http"}, [("ports[0].appProtocol", INVALID)]),
    ("Service", {"spec.externalIPs": ["203.0.113.300"]}, [("spec.externalIPs[0]", INVALID)]),
    ("Service", {"spec.externalTrafficPolicy": "Nearest"}, [("spec.externalTrafficPolicy", NOT_SUPPORTED)]),
    ("Service", {"spec.type": "ExternalName", "spec.clusterIP": DELETE, "spec.clusterIPs": DELETE},
     [("spec.externalName", REQUIRED)]),
    ("Service", {"spec.type": "ExternalName", "spec.externalName": "db.example.com"}, [("spec.clusterIPs", FORBIDDEN)]),
    ("Service", {"spec.type": "ExternalName", "spec.clusterIP": DELETE, "spec.clusterIPs": DELETE,
                 "spec.externalName": "db_1.example.com"}, [("spec.externalName", INVALID)]),
    ("Service", {"metadata.name": "1web"}, [("metadata.name", INVALID)]),     # DNS-1035: letter first
    ("Service", {"metadata.name": "web.app"}, [("metadata.name", INVALID)]),
    # ---- EndpointSlice
    ("EndpointSlice", {"endpoints[0].addresses[0]": "not-an-ip"}, [("endpoints[0].addresses[0]", INVALID)]),
    ("EndpointSlice", {"endpoints[0].addresses[0]": "fd00::5"}, [("endpoints[0].addresses[0]", INVALID)]),
    ("EndpointSlice", {"endpoints[0].addresses": []}, [("endpoints[0].addresses", REQUIRED)]),
    ("EndpointSlice", {"endpoints[0].addresses": [f"10.244.1.{i}" for i in range(101)]},
     [("endpoints[0].addresses", TOO_MANY)]),
    ("EndpointSlice", {"addressType": DELETE}, [("addressType", REQUIRED)]),
    ("EndpointSlice", {"addressType": "IPv5"}, [("addressType", NOT_SUPPORTED)]),
    ("EndpointSlice", {"addressType": "FQDN", "endpoints[0].addresses[0]": "Not Valid"},
     [("endpoints[0].addresses[0]", INVALID)]),
    ("EndpointSlice", {"ports[0].port": 70000}, [("ports[0].port", INVALID)]),
    ("EndpointSlice", {"ports[0].port": -1}, [("ports[0].port", INVALID)]),
    ("EndpointSlice", {"ports[0].protocol": "ICMP"}, [("ports[0].protocol", NOT_SUPPORTED)]),
    ("EndpointSlice", {"ports[0].name": "HTTP"}, [("ports[0].name", INVALID)]),
    ("EndpointSlice", {"ports[+]": {"name": "http", "port": 9}}, [("ports[1].name", DUPLICATE)]),
    ("EndpointSlice", {"endpoints[0].nodeName": "Node_1"}, [("endpoints[0].nodeName", INVALID)]),
    ("EndpointSlice", {"endpoints[0].conditions.ready": "yes"},
     [("endpoints[0].conditions.ready", "FieldValueTypeInvalid")]),
    # ---- Node
    ("Node", {"spec.podCIDR": "10.244.1.0/33", "spec.podCIDRs[0]": "10.244.1.0/33"}, [("spec.podCIDR", INVALID)]),
    ("Node", {"spec.podCIDRs[1]": "10.244.2.0/24"}, [("spec.podCIDRs", INVALID)]),
    ("Node", {"spec.podCIDRs[1]": "fd00:1::/129"}, [("spec.podCIDRs[1]", INVALID)]),
    ("Node", {"spec.podCIDRs[0]": "10.244.9.0/24"}, [("spec.podCIDRs[0]", INVALID)]),
    ("Node", {"spec.podCIDRs[+]": "fd01::/64"}, [("spec.podCIDRs", TOO_MANY), ("spec.podCIDRs", INVALID)]),
    ("Node", {"status.addresses[0].type": "PrivateIP"}, [("status.addresses[0].type", NOT_SUPPORTED)]),
    ("Node", {"status.addresses[0].address": "not-an-ip"}, [("status.addresses[0].address", INVALID)]),
    ("Node", {"status.addresses[0].address": DELETE}, [("status.addresses[0].address", REQUIRED)]),
    ("Node", {"spec.taints[0].effect": "Never"}, [("spec.taints[0].effect", NOT_SUPPORTED)]),
    ("Node", {"spec.taints[0].effect": DELETE}, [("spec.taints[0].effect", REQUIRED)]),
    ("Node", {"spec.taints[0].key": "bad key"}, [("spec.taints[0].key", INVALID)]),
    ("Node", {"spec.taints[+]": {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}},
     [("spec.taints[1]", DUPLICATE)]),
    ("Node", {"metadata.namespace": "default"}, [("metadata.namespace", FORBIDDEN)]),
    # ---- NetworkPolicy
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.except": ["192.168.0.0/16"]},
     [("spec.ingress[0].from[2].ipBlock.except[0]", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.except": ["10.0.0.0/8"]},
     [("spec.ingress[0].from[2].ipBlock.except[0]", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.except": ["10.96.0.0/12", "fd00::/8"]},
     [("spec.ingress[0].from[2].ipBlock.except[1]", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.except": ["10.96.0.0"]},
     [("spec.ingress[0].from[2].ipBlock.except[0]", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.cidr": "10.0.0.0/40"},
     [("spec.ingress[0].from[2].ipBlock.cidr", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.cidr": DELETE},
     [("spec.ingress[0].from[2].ipBlock.cidr", REQUIRED)]),
    ("NetworkPolicy", {"spec.ingress[0].from[2].podSelector": {}}, [("spec.ingress[0].from[2]", FORBIDDEN)]),
    ("NetworkPolicy", {"spec.egress[0].to[0]": {}}, [("spec.egress[0].to[0]", REQUIRED)]),
    ("NetworkPolicy", {"spec.podSelector": DELETE}, [("spec.podSelector", REQUIRED)]),
    ("NetworkPolicy", {"spec.podSelector.matchLabels": {"app": "-web"}}, [("spec.podSelector.matchLabels", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0].operator": "Like"},
     [("spec.ingress[0].from[0].podSelector.matchExpressions[0].operator", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0].values": []},
     [("spec.ingress[0].from[0].podSelector.matchExpressions[0].values", REQUIRED)]),
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0].operator": "Exists"},
     [("spec.ingress[0].from[0].podSelector.matchExpressions[0].values", FORBIDDEN)]),
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0].key": DELETE},
     [("spec.ingress[0].from[0].podSelector.matchExpressions[0].key", REQUIRED)]),
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0].values": ["a b"]},
     [("spec.ingress[0].from[0].podSelector.matchExpressions[0].values[0]", INVALID)]),
    ("NetworkPolicy", {"spec.policyTypes[+]": "Sideways"},
     [("spec.policyTypes", INVALID), ("spec.policyTypes[2]", NOT_SUPPORTED)]),
    ("NetworkPolicy", {"spec.policyTypes[1]": "Sideways"}, [("spec.policyTypes[1]", NOT_SUPPORTED)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[0].port": 0, "spec.ingress[0].ports[0].endPort": DELETE},
     [("spec.ingress[0].ports[0].port", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[1].port": 70000}, [("spec.ingress[0].ports[1].port", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[1].port": "Http"}, [("spec.ingress[0].ports[1].port", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[0].endPort": 79}, [("spec.ingress[0].ports[0].endPort", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[0].endPort": 70000}, [("spec.ingress[0].ports[0].endPort", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[1].endPort": 90}, [("spec.ingress[0].ports[1].endPort", INVALID)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[0].port": DELETE}, [("spec.ingress[0].ports[0].port", REQUIRED)]),
    ("NetworkPolicy", {"spec.ingress[0].ports[0].protocol": "ICMP"},
     [("spec.ingress[0].ports[0].protocol", NOT_SUPPORTED)]),
    # ---- Lease, ConfigMap, Secret, Namespace
    ("Lease", {"spec.leaseDurationSeconds": 0}, [("spec.leaseDurationSeconds", INVALID)]),
    ("Lease", {"spec.leaseTransitions": -1}, [("spec.leaseTransitions", INVALID)]),
    ("Lease", {"spec.renewTime": "yesterday"}, [("spec.renewTime", INVALID)]),
    ("Lease", {"spec.holderIdentity": 5}, [("spec.holderIdentity", "FieldValueTypeInvalid")]),
    ("ConfigMap", {"data.bad key": "x"}, [("data[bad key]", INVALID)]),
    ("ConfigMap", {"data": {"..": "x"}}, [("data[..]", INVALID)]),
    ("ConfigMap", {"data": {"k" * 254: "x"}}, [(f"data[{'k' * 254}]", INVALID)]),
    ("ConfigMap", {"binaryData": {"KEY_NAME": "eA=="}}, [("binaryData[KEY_NAME]", INVALID)]),
    ("ConfigMap", {"data": {"big": "x" * (1024 * 1024 + 1)}}, [("", TOO_LONG)]),
    ("Secret", {"data": {"a/b": "eA=="}}, [("data[a/b]", INVALID)]),
    ("Secret", {"data.config": "not base64!"}, [("data[config]", INVALID)]),
    ("Namespace", {"metadata.name": "App"}, [("metadata.name", INVALID)]),
    ("Namespace", {"metadata.name": "a.b"}, [("metadata.name", INVALID)]),
    ("Namespace", {"metadata.namespace": "x"}, [("metadata.namespace", FORBIDDEN)]),
]


@pytest.mark.parametrize("kind,changes,expected", CASES,
                         ids=[f"{k}-{i}-{next(iter(c))}"[:60] for i, (k, c, _) in enumerate(CASES)])
def test_bad_inputs(kind, changes, expected):
    obj = _apply(GOOD[kind], changes)
    assert _check(kind, obj) == expected, [e.kube_message() for e in v.validate(*GVK[kind], obj)]


VALID_VARIANTS = [
    ("Service", {"spec.clusterIP": "None", "spec.clusterIPs": ["None"], "spec.ports": DELETE}),
    ("Service", {"spec.clusterIP": "", "spec.clusterIPs": DELETE}),
    ("Service", {"spec.clusterIP": ""}),
    ("Service", {"spec.ports[0].appProtocol": "kubernetes.io/h2c"}),
    ("Service", {"spec.clusterIP": "10.96.0.10", "spec.clusterIPs[+]": "fd00::a",
                 "spec.ipFamilies[+]": "IPv6", "spec.ipFamilyPolicy": "RequireDualStack"}),
    ("Service", {"spec.type": "ExternalName", "spec.clusterIP": DELETE, "spec.clusterIPs": DELETE,
                 "spec.ipFamilies": DELETE, "spec.externalName": "DB.Example.com."}),
    ("Service", {"spec.type": "NodePort", "spec.ports[0].nodePort": 30080}),
    ("Service", {"spec.ports": [{"port": 80}], "spec.sessionAffinity": DELETE, "spec.sessionAffinityConfig": DELETE}),
    ("Pod", {"status": {}}),
    ("Pod", {"metadata.name": DELETE, "metadata.generateName": "web-"}),
    ("EndpointSlice", {"ports[0].port": 0}),
    ("EndpointSlice", {"ports": [{}]}),
    ("EndpointSlice", {"addressType": "IPv6", "endpoints[0].addresses[0]": "fd00::5"}),
    ("EndpointSlice", {"addressType": "FQDN", "endpoints[0].addresses[0]": "db.example.com"}),
    ("EndpointSlice", {"endpoints": []}),
    ("NetworkPolicy", {"spec.podSelector": {}}),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}),
    ("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.cidr": "10.1.2.3/8"}),   # host bits, like kube
    ("NetworkPolicy", {"spec.ingress[0].from[0].podSelector.matchExpressions[0]": {"key": "x", "operator": "Exists"}}),
    ("Node", {"spec": {}}),
    ("ConfigMap", {"data": {"-._aZ9": "", ".hidden": "x"}}),
]


@pytest.mark.parametrize("kind,changes", VALID_VARIANTS,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(VALID_VARIANTS)])
def test_valid_variants(kind, changes):
    obj = _apply(GOOD[kind], changes)
    assert v.validate(*GVK[kind], obj) == []


# ---- updates ---------------------------------------------------------------

def test_service_cluster_ip_is_immutable():
    old = GOOD["Service"]
    moved = _apply(old, {"spec.clusterIP": "10.96.0.11", "spec.clusterIPs": ["10.96.0.11"]})
    errs = v.validate(*GVK["Service"], moved, old)
    assert [(e.field, e.reason, e.message) for e in errs] == [("spec.clusterIP", INVALID, "field is immutable")]
    # Allocation (from unset) and the ExternalName switch are not mutations.
    unset = _apply(old, {"spec.clusterIP": "", "spec.clusterIPs": DELETE})
    assert v.validate(*GVK["Service"], old, unset) == []
    ext = _apply(old, {"spec.type": "ExternalName", "spec.clusterIP": DELETE, "spec.clusterIPs": DELETE,
                       "spec.ipFamilies": DELETE, "spec.externalName": "db.example.com"})
    assert v.validate(*GVK["Service"], ext, old) == []
    assert v.validate(*GVK["Service"], moved, ext) == []
    assert v.validate(*GVK["Service"], old, old) == []


def test_metadata_name_is_immutable():
    old = GOOD["Pod"]
    new = _apply(old, {"metadata.name": "web-1"})
    assert _check("Pod", new, old) == [("metadata.name", INVALID)]


def test_pod_node_name_is_immutable():
    old = GOOD["Pod"]
    assert _check("Pod", _apply(old, {"spec.nodeName": "node-2"}), old) == [("spec.nodeName", INVALID)]


def test_node_pod_cidr_set_once():
    old = _apply(GOOD["Node"], {"spec": {}})
    assert v.validate(*GVK["Node"], GOOD["Node"], old) == []
    moved = _apply(GOOD["Node"], {"spec.podCIDR": "10.244.9.0/24", "spec.podCIDRs": ["10.244.9.0/24"]})
    assert _check("Node", moved, GOOD["Node"]) == [("spec.podCIDR", FORBIDDEN)]


# ---- messages --------------------------------------------------------------

def _first(kind, changes):
    (err,) = v.validate(*GVK[kind], _apply(GOOD[kind], changes))
    return err


def test_kube_messages_per_reason():
    assert _first("Service", {"spec.clusterIP": "10.96.0.999", "spec.clusterIPs": ["10.96.0.999"]}).kube_message() \
        == f'spec.clusterIP: Invalid value: "10.96.0.999": {IP}'
    assert _first("Service", {"spec.ports[0].port": 0}).kube_message() \
        == "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    assert _first("Service", {"spec.ports[0].protocol": "ICMP"}).kube_message() \
        == 'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'
    assert _first("Pod", {"spec.containers": []}).kube_message() == "spec.containers: Required value"
    assert _first("Service", {"spec.ports[1].name": "http"}).kube_message() \
        == 'spec.ports[1].name: Duplicate value: "http"'
    assert _first("Service", {"spec.ports[0].nodePort": 30080}).kube_message() \
        == "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    assert _first("Pod", {"metadata.annotations": {"big": "x" * (256 * 1024)}}).kube_message() \
        == "metadata.annotations: Too long: must have at most 262144 bytes"
    assert _first("EndpointSlice", {"endpoints[0].addresses": ["10.0.0.1"] * 101}).kube_message() \
        == "endpoints[0].addresses: Too many: 101: must have at most 100 items"
    assert _first("Pod", {"metadata.name": DELETE}).kube_message() \
        == "metadata.name: Required value: name or generateName is required"
    assert _first("NetworkPolicy", {"spec.ingress[0].from[2].ipBlock.except": ["192.168.0.0/16"]}).kube_message() \
        == 'spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`'
    assert _first("Pod", {"metadata.labels": {"app": "-web"}}).kube_message().startswith(
        'metadata.labels: Invalid value: "-web": a valid label must be an empty string or consist of')


def test_field_error_is_frozen_and_comparable():
    e = FieldError("spec.x", 1, INVALID, "m")
    assert e == FieldError("spec.x", 1, INVALID, "m")
    with pytest.raises(AttributeError):
        e.field = "y"  # type: ignore[misc]
    assert FieldError("", None, INVALID, "").kube_message() == "Invalid value: null"


# ---- scale and robustness --------------------------------------------------

def test_ten_thousand_labels_are_valid():
    labels = {f"example.com/key-{i}": f"value-{i}" for i in range(10_000)}
    assert v.validate_labels(labels, "metadata.labels") == []
    pod = _apply(GOOD["Pod"], {"metadata.labels": labels})
    assert v.validate(*GVK["Pod"], pod) == []
    labels["bad key"] = "x"
    assert [(e.field, e.value) for e in v.validate_labels(labels)] == [("metadata.labels", "bad key")]


def test_unknown_kinds_have_no_rules():
    assert v.validate("apps", "v1", "Deployment", {"spec": "anything"}) == []
    assert v.validate("", "v1", "PodTemplate", {}) == []


def _subpaths(obj, prefix=""):
    if isinstance(obj, dict):
        for k, item in obj.items():
            p = f"{prefix}.{k}" if prefix else k
            yield p
            yield from _subpaths(item, p)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            p = f"{prefix}[{i}]"
            yield p
            yield from _subpaths(item, p)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_wrong_types_never_raise(kind):
    # Decoded JSON from a client can hold anything anywhere; the answer must
    # be a 422, not a server error.
    for path in _subpaths(GOOD[kind]):
        for odd in (None, 7, "x", [], {}, [1], True):
            obj = _apply(GOOD[kind], {path: odd})
            errs = v.validate(*GVK[kind], obj, GOOD[kind])
            assert all(isinstance(e, FieldError) for e in errs)
            for e in errs:
                e.kube_message()
    assert v.validate(*GVK[kind], "not an object") != []


# ---- helpers ---------------------------------------------------------------

@pytest.mark.parametrize("fn,good,bad", [
    (v.is_dns1123_label, ["a", "a-1", "1a", "a" * 63], ["", "A", "a_b", "-a", "a-", "a.b", "a" * 64, None]),
    (v.is_dns1123_subdomain, ["a.b", "example.com", "1.2.3", "a" * 253],
     ["", "a..b", ".a", "a.", "A.b", "a" * 254, 5]),
    (v.is_dns1035_label, ["a", "a-1"], ["1a", "", "a.b"]),
    (v.is_qualified_name, ["app", "example.com/app", "A_b.c", "kubernetes.io/metadata.name"],
     ["", "/a", "a/", "a/b/c", "-a", "a" * 64, "Example.com/a"]),
    (v.is_valid_label_value, ["", "a", "A-b_c.9", "x" * 63], ["-a", "a-", "a b", "x" * 64]),
    (v.is_iana_svc_name, ["http", "h2", "grpc-web", "a" * 15], ["", "80", "HTTP", "a--b", "-a", "a-", "a" * 16]),
    (v.is_ip, ["10.0.0.1", "::1", "2001:db8::ffff", "fd00::5"],
     ["10.96.0.999", "10.0.0.1/32", "", "010.0.0.1", "fe80::1%eth0", None, 167772161]),
    (v.is_cidr, ["10.0.0.0/8", "10.1.2.3/8", "2001:db8::/32", "0.0.0.0/0"],
     ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "", "::/129", None]),
    (v.is_config_key, ["a", ".a", "A_b-c.d", "k" * 253], ["", ".", "..", "..a", "a/b", "a b", "k" * 254]),
])
def test_predicates(fn, good, bad):
    assert [g for g in good if not fn(g)] == []
    assert [b for b in bad if fn(b)] == []


def test_label_selector_helper():
    path = "spec.selector"
    assert v.validate_label_selector({}, path) == []
    assert v.validate_label_selector(None, path) == []
    errs = v.validate_label_selector({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, path)
    assert [(e.field, e.reason) for e in errs] == [("spec.selector.matchExpressions[0].values", REQUIRED)]
    errs = v.validate_label_selector({"matchExpressions": "a in (b)"}, path)
    assert [(e.field, e.reason) for e in errs] == [("spec.selector.matchExpressions", "FieldValueTypeInvalid")]


def test_mesh_identity_labels_and_immutable_id():
    ident = {"metadata": {"name": "web-identity", "namespace": "app"},
             "spec": {"id": 2599738693, "podLabels": {"app": "web"},
                      "namespaceLabels": {"kubernetes.io/metadata.name": "app"}}}
    assert v.validate("mesh-cni.dev", "v1alpha1", "Identity", ident) == []
    bad = _apply(ident, {"spec.podLabels": {"bad key": "web"}})
    assert [(e.field, e.reason) for e in v.validate("mesh-cni.dev", "v1alpha1", "Identity", bad)] == [
        ("spec.podLabels", INVALID)]
    moved = _apply(ident, {"spec.id": 2599738694})
    assert [(e.field, e.reason) for e in v.validate("mesh-cni.dev", "v1alpha1", "Identity", moved, ident)] == [
        ("spec.id", INVALID)]


def test_trailing_newline_is_not_a_valid_name():
    # Python's `$` matches before a final newline; names must not.
    assert not v.is_dns1123_label("web\n")
    assert not v.is_dns1123_subdomain("example.com\n")
    assert not v.is_qualified_name("app\n")
    assert not v.is_valid_label_value("web\n")
    assert not v.is_iana_svc_name("http\n")


def test_generate_name_is_checked_as_a_prefix():
    from meshcni.apiserver.validation import validate
    ev = {"metadata": {"generateName": "web-0.", "namespace": "default"}, "involvedObject": {"kind": "Pod"}}
    assert not [e for e in validate("", "v1", "Event", ev) if "generateName" in e.field]
    bad = {"metadata": {"generateName": "Web_", "namespace": "default"}}
    assert [e for e in validate("", "v1", "ConfigMap", bad) if "generateName" in e.field]
