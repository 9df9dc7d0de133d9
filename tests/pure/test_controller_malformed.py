# SPDX-License-Identifier: MIT OR Apache-2.0
"""Malformed objects through the API server to the real controller (issue 15, hostile input).

The in-process API server validates what kube-apiserver validates (built-in
types, CRD schemas); whatever it accepts reaches the controller's informers.
Each accepted malformed object must be reported with an Event naming it and
the field, no reconcile may fail, and the valid objects next to them are
still served (an Identity for the valid pod, a CIDRIdentity for the valid
ipBlock). What the API server refuses is counted, not assumed.
"""
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni.apiserver import APIServer
from meshcni.controller import Controller, ControllerConfig
from meshcni.controllers import identity as idm
from meshcni.k8s import api_client
from testutil import eventually

pytestmark = pytest.mark.pure

G, V = idm.GROUP, idm.VERSION
NS = "bad"


def policy(name, peer, direction="ingress"):
    rule = {"from" if direction == "ingress" else "to": [peer]}
    return ("networkpolicies", {"metadata": {"name": name, "namespace": NS},
                                "spec": {"podSelector": {}, "policyTypes": [direction.capitalize()],
                                         direction: [rule]}})


def ident(kind, name, spec, ns=NS):
    plural = "identities" if kind == "Identity" else "cidridentities"
    meta = {"name": name, **({"namespace": ns} if kind == "Identity" else {})}
    return (plural, {"apiVersion": f"{G}/{V}", "kind": kind, "metadata": meta, "spec": spec})


def cluster(name, spec):
    return ("clusters", {"apiVersion": f"{G}/{V}", "kind": "Cluster", "metadata": {"name": name}, "spec": spec})


def secret(name, config: str):
    import base64
    return ("secrets", {"metadata": {"name": name, "namespace": "meshcni-system"}, "type": "Opaque",
                        "data": {k: base64.b64encode(v.encode()).decode() for k, v in config.items()}})


KC = ("clusters: [{name: r, cluster: {server: 'http://127.0.0.1:1'}}]\n"
      "users: [{name: u, user: {token: %s}}]\n"
      "contexts: [{name: r, context: {cluster: r, user: u}}]\ncurrent-context: r\n")
MANAGED = {idm.MANAGED_BY: idm.MANAGER}

# (object, field the report must name). Schema-invalid objects (a /33 ipBlock, an except outside
# its cidr, an Identity id below its range, a Cluster without spec.secret, ...) are refused by the
# API server, as by kube-apiserver: those are in tests/pure/test_malformed_objects.py, straight to
# the desired functions. These pass the schema and are wrong all the same.
BAD = [
    (ident("Identity", "hand-made", {"id": 16777300, "namespaceLabels": {}, "podLabels": {"a": "b"}}),
     "metadata.labels"),
    (ident("Identity", "dup-older", {"id": 16777400, "namespaceLabels": {}, "podLabels": {"d": "1"}}), None),
    (ident("Identity", "dup-younger", {"id": 16777400, "namespaceLabels": {}, "podLabels": {"d": "2"}}), "spec.id"),
    (ident("CIDRIdentity", "hand-cidr", {"id": 5000, "cidr": "198.51.100.0/24",
                                                  "cidrPrefixes": ["198.51.100.0/24"]}), "metadata.labels"),
    (cluster("cl-no-secret", {"secret": {"name": "nowhere"}}), "status.conditions[SecretResolved]"),
    (secret("wrongkey-kc", {"kubeconfig": KC % "t"}), None),
    (cluster("cl-wrong-key", {"secret": {"name": "wrongkey-kc"}}), "status.conditions[SecretResolved]"),
    (secret("notyaml-kc", {"config": "{{{ : ]"}), None),
    (cluster("cl-not-yaml", {"secret": {"name": "notyaml-kc"}}), "status.conditions[SecretResolved]"),
    (secret("newline-kc", {"config": KC % '"abc\\n"'}), None),  # YAML "\n": a newline
    (cluster("cl-token-newline", {"secret": {"name": "newline-kc"}}), "status.conditions[SecretResolved]"),
    (cluster("local", {"secret": {"name": "newline-kc"}}), "metadata.name"),
    (("meshendpoints", {"apiVersion": f"{G}/{V}", "kind": "MeshEndpoint",
                        "metadata": {"name": "hand-mep", "namespace": NS}, "spec": {}}), "metadata.labels"),
]


def test_accepted_malformed_objects_are_reported_and_nothing_else_breaks(tmp_path):
    with APIServer(crd_dir="deploy/crds", bookmark_interval=0.2) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kc"))
        api = api_client(kc)
        core, net, custom = client.CoreV1Api(api), client.NetworkingV1Api(api), client.CustomObjectsApi(api)
        for ns in (NS, "meshcni-system"):
            core.create_namespace({"metadata": {"name": ns}})
        ctl = Controller(ControllerConfig(kubeconfig=kc, leader_elect=False, metrics_address="127.0.0.1:0",
                                          cluster_name="local", gc_grace=1.0)).start()
        ctl.mesh.cfg.remote_backoff = (0.05, 0.3)
        try:
            accepted, refused = [], []
            for (plural, body), fld in BAD:
                try:
                    if plural == "networkpolicies":
                        net.create_namespaced_network_policy(NS, body)
                    elif plural == "secrets":
                        core.create_namespaced_secret("meshcni-system", body)
                    elif plural in ("identities", "meshendpoints"):
                        if body["metadata"]["name"].startswith("dup-"):
                            body["metadata"]["labels"] = dict(MANAGED)
                        custom.create_namespaced_custom_object(G, V, NS, plural, body)
                    else:
                        custom.create_cluster_custom_object(G, V, plural, body)
                    if fld:
                        accepted.append((body["metadata"]["name"], fld))
                except ApiException as e:
                    assert 400 <= e.status < 500, e
                    refused.append(body["metadata"]["name"])
            # the valid neighbours
            core.create_namespaced_pod(NS, {"metadata": {"name": "good", "labels": {"app": "good"}},
                                            "spec": {"containers": [{"name": "c", "image": "x"}]}})
            net.create_namespaced_network_policy(NS, {"metadata": {"name": "np-good"}, "spec": {
                "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}})

            def reported():
                evs = core.list_event_for_all_namespaces().items
                return all(any(e.involved_object.name == name and fld in (e.message or "") for e in evs)
                           for name, fld in accepted)
            try:
                eventually(reported, 15, "an Event naming each accepted malformed object and its field", interval=0.1)
            except AssertionError:
                evs = [(e.involved_object.name, e.message) for e in core.list_event_for_all_namespaces().items]
                raise AssertionError(f"missing: {[a for a in accepted if not any(n == a[0] and a[1] in m for n, m in evs)]}"
                                     f"; events: {evs}") from None
            eventually(lambda: [i for i in custom.list_namespaced_custom_object(G, V, NS, "identities")["items"]
                                if i["spec"].get("podLabels") == {"app": "good"} and idm.is_managed(i)], 10,
                       "the valid pod's Identity", interval=0.1)
            eventually(lambda: [c for c in custom.list_cluster_custom_object(G, V, "cidridentities")["items"]
                                if c["spec"].get("cidr") == "192.0.2.0/24" and idm.is_managed(c)], 10,
                       "the valid ipBlock's CIDRIdentity", interval=0.1)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=5).read().decode()
            errors = [ln for ln in metrics.splitlines() if ln.startswith("meshcni_reconcile_total{")
                      and 'outcome="error"' in ln and not ln.endswith(" 0.0")]
            assert not errors, errors
            assert ctl.ready.is_set()
            # the hand-made ones are left alone, never deleted or adopted
            names = {o["metadata"]["name"] for o in custom.list_cluster_custom_object(G, V, "cidridentities")["items"]}
            assert "hand-cidr" in names
            assert "hand-made" in {o["metadata"]["name"] for o in
                                   custom.list_namespaced_custom_object(G, V, NS, "identities")["items"]}
            print(f"{len(accepted)} accepted and reported, {len(refused)} refused by the API server: {refused}")
            assert len(accepted) >= 9 and not refused
        finally:
            ctl.stop()
