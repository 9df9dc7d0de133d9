# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's Services reconciler on real informers and real maps, incrementally.

The project's API server (in-process, loopback) holds Services and
EndpointSlices; the reconciler runs under a Runner on a private bpffs.
Seeded random EndpointSlice updates, Service creates and deletes go through
the real client; after each burst the reconciler's rows must equal
desired_services over what the API lists (svc_ids aside: the reference
numbers its own), slice-only bursts must take the delta path, and the maps
must hold exactly what a full apply of those rows writes to fresh maps.
A resync then repairs (and counts) an entry deleted behind its back.
"""
import logging
import os
import random
import sys
from pathlib import Path

import pytest
from kubernetes import client

from meshcni.agent.agent import Metrics, event_reason, make_informers
from meshcni.agent.reconcilers import Services
from meshcni.apiserver import APIServer
from meshcni.bpf import MeshMaps
from meshcni.controllers.services import ServiceIDs, desired_services, frontend_conflicts
from meshcni.datapath.services import ServiceDatapath
from meshcni.k8s import api_client
from meshcni.k8s.events import EventRecorder
from meshcni.k8s.reconciler import Runner
from testutil import eventually

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_service_delta import decode  # noqa: E402

pytestmark = pytest.mark.kernel
CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
NS = "inc"


def _svc(i):
    return {"metadata": {"name": f"s{i}", "namespace": NS},
            "spec": {"clusterIP": f"10.96.9.{i + 1}", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def _slice(i, r):
    eps = [{"addresses": [f"10.244.{i}.{j}"], "conditions": {"ready": r.random() < 0.85}, "nodeName": "n1"}
           for j in sorted(r.sample(range(1, 30), r.randint(0, 5)))]
    return {"metadata": {"name": f"s{i}-x", "namespace": NS, "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}


def _rows(svcs):
    return sorted((s.name, tuple(s.frontends), tuple(s.backends)) for s in svcs)


def test_agent_services_incremental_against_full(tmp_path, bpffs):
    r = random.Random(5)
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        live = set(range(10))
        for i in live:
            core.create_namespaced_service(NS, _svc(i))
            disc.create_namespaced_endpoint_slice(NS, _slice(i, r))
        metrics = Metrics()
        with MeshMaps(os.path.join(bpffs, "agent")) as maps:
            rec = Services(ServiceDatapath(maps), ServiceIDs(), metrics, logging.getLogger("test"), "n1")
            caches = {i.name: i for i in make_informers(api) if i.name in rec.watches}
            events = EventRecorder(core, "meshcni-agent", "n1", host="n1", reason=event_reason)
            runner = Runner("agent", caches, [rec], events, metrics.reconcile, base_delay=0.05, max_delay=0.2)
            runner.start()
            try:
                assert runner.last["services"]["path"] == "full"

                def settled():
                    want, _ = desired_services([_api_svc(s) for s in core.list_namespaced_service(NS).items],
                                               [_api_slice(s) for s in disc.list_namespaced_endpoint_slice(NS).items],
                                               ServiceIDs())
                    return _rows(rec.programmed) == _rows(want)

                for burst in range(12):
                    slice_only = burst % 3 != 2
                    for _ in range(r.randint(1, 4)):
                        i = r.choice(sorted(live))
                        if slice_only or r.random() < 0.5:
                            body = _slice(i, r)
                            disc.replace_namespaced_endpoint_slice(f"s{i}-x", NS, body)
                        elif len(live) > 3:
                            core.delete_namespaced_service(f"s{i}", NS)
                            disc.delete_namespaced_endpoint_slice(f"s{i}-x", NS)
                            live.discard(i)
                            j = max(live | {9}) + 1 + r.randint(0, 3)
                            core.create_namespaced_service(NS, _svc(j))
                            disc.create_namespaced_endpoint_slice(NS, _slice(j, r))
                            live.add(j)
                    eventually(settled, 10, f"burst {burst}: the reconciler's rows equal the full desired state")
                    if slice_only:
                        assert runner.last["services"]["path"] == "delta"
                    # the maps hold exactly what a full apply of those rows writes to fresh maps
                    with MeshMaps(os.path.join(bpffs, f"ref{burst}")) as ref:
                        ServiceDatapath(ref).apply(rec.programmed)
                        assert decode(maps) == decode(ref), f"burst {burst}"
                        assert not frontend_conflicts(rec.programmed)
                # drift: a backend slot deleted behind the agent's back, then a resync
                k, _ = maps.svc.dump()
                maps.svc.delete(k[k["slot"] > 0][:1])
                rec._next_resync = 0
                runner.kick("services")
                eventually(lambda: runner.last["services"].get("path") == "resync", 10, "a resync")
                assert runner.last["services"]["repaired"] == 1
                assert metrics.registry.get_sample_value("meshcni_service_resync_repaired_total") == 1
                with MeshMaps(os.path.join(bpffs, "ref-final")) as ref:
                    ServiceDatapath(ref).apply(rec.programmed)
                    assert decode(maps) == decode(ref)
            finally:
                runner.stop()


def _api_slice(s) -> dict:
    """An EndpointSlice from the typed client as the informer's dict (the fields desired_services reads)."""
    return {"metadata": {"name": s.metadata.name, "namespace": s.metadata.namespace, "labels": s.metadata.labels},
            "addressType": s.address_type,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in s.ports or []],
            "endpoints": [{"addresses": e.addresses, "nodeName": e.node_name,
                           "conditions": {"ready": e.conditions.ready if e.conditions else None}}
                          for e in s.endpoints or []]}


def _api_svc(s) -> dict:
    return {"metadata": {"name": s.metadata.name, "namespace": s.metadata.namespace},
            "spec": {"clusterIP": s.spec.cluster_ip, "clusterIPs": s.spec.cluster_ips,
                     "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in s.spec.ports]}}
