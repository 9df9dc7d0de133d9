# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's IPCache reconciler, driven by random pod changes through the API server (new pods,
deletions, relabels, address reuse between pods, a pod on a node's address), leaves mc_ipcache equal to
:func:`~meshcni.controllers.ipcache.desired_ipcache` of the final caches, mostly through deltas; a
periodic resync then finds no drift, and a planted row is removed and counted.

Real informers on the in-process API server, the real Runner, MeshMaps on a private bpffs.
"""
from pathlib import Path
import random

import pytest
from kubernetes import client

from meshcni.agent.agent import Metrics, event_reason
from meshcni.agent.reconcilers import IPCache
from meshcni.apiserver import APIServer
from meshcni.bpf import MeshMaps
from meshcni.controllers.identity import identity_body, identity_labels
from meshcni.controllers.ipcache import desired_ipcache
from meshcni.datapath.endpoints import EndpointDatapath, IPCacheDatapath
from meshcni.k8s import EventRecorder, Informer, Runner, api_client
from testutil import eventually

pytestmark = pytest.mark.kernel

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
NS = "x"
APPS = ["a", "b", "c"]
IPS = [f"10.9.0.{i}" for i in range(1, 30)]
NODE = {"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.9.0.7"}]}}


def _pod(name, app):
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


def _set_ip(core, name, ip):
    core.patch_namespaced_pod_status(name, NS, {"status": {"phase": "Running", "podIP": ip,
                                                           "podIPs": [{"ip": ip}]}})


def test_random_pod_events_leave_the_ipcache_equal_to_the_full_compute(tmp_path, pin_root):
    rng = random.Random(7)
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}})
        core.create_node(NODE)
        for i, app in enumerate(APPS):
            labels = identity_labels(_pod("p", app), {"kubernetes.io/metadata.name": NS})
            custom.create_namespaced_custom_object("mesh-cni.dev", "v1alpha1", NS, "identities",
                                                   identity_body(NS, labels, 16777301 + i))
        pods = {}
        for i in range(5):
            core.create_namespaced_pod(NS, _pod(f"p{i}", rng.choice(APPS)))
            _set_ip(core, f"p{i}", IPS[10 + i])
            pods[f"p{i}"] = True
        lists = {"pods": core.list_pod_for_all_namespaces, "namespaces": core.list_namespace,
                 "nodes": core.list_node}
        caches = {n: Informer(f, name=n) for n, f in lists.items()}
        for n in ("identities", "cidridentities", "remoteidentities", "clusters"):
            caches[n] = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", n, name=n)
        metrics = Metrics()

        def want():
            return desired_ipcache(*(caches[n].list() for n in ("pods", "namespaces", "identities",
                                                                  "cidridentities", "nodes")), "n1")[0]

        with MeshMaps(pin_root) as maps:
            rec = IPCache(IPCacheDatapath(maps.ipcache), EndpointDatapath(maps.endpoints), "n1", lambda: [], metrics)
            events = EventRecorder(core, "meshcni-agent", "n1", host="n1", reason=event_reason)
            runner = Runner("agent", caches, [rec], events, metrics.reconcile)
            try:
                runner.start()
                assert maps.ipcache.prefixes() == want()
                n = 10
                for step in range(30):
                    r = rng.random()
                    if r < 0.3:
                        name = f"p{n}"
                        n += 1
                        core.create_namespaced_pod(NS, _pod(name, rng.choice(APPS)))
                        _set_ip(core, name, rng.choice(IPS))  # sometimes another pod's, or the node's
                        pods[name] = True
                    elif r < 0.5 and pods:
                        name = rng.choice(sorted(pods))
                        del pods[name]
                        core.delete_namespaced_pod(name, NS)
                    elif pods:
                        name = rng.choice(sorted(pods))
                        core.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"app": rng.choice(APPS)}}})
                eventually(lambda: maps.ipcache.prefixes() == want(), 20, "mc_ipcache to equal the full compute",
                           interval=0.1)
                assert rec.runs["incremental"] > 0, rec.runs
                drift = metrics.incremental_drift.labels("mc_ipcache")
                full_runs = rec.runs["full"]
                rec.resync = 0.0
                runner.kick("ipcache")
                eventually(lambda: rec.runs["full"] > full_runs, 10, "the resync", interval=0.05)
                assert maps.ipcache.prefixes() == want()
                assert drift._value.get() == 0
                # a row nobody wants is removed by the next resync, and counted
                maps.ipcache.reconcile_prefixes({**want(), "192.0.2.1/32": 16777301})
                full_runs = rec.runs["full"]
                runner.kick("ipcache")
                eventually(lambda: rec.runs["full"] > full_runs, 10, "the second resync", interval=0.05)
                assert maps.ipcache.prefixes() == want()
                assert drift._value.get() == 1
            finally:
                runner.stop()
