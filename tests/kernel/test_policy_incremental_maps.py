# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent's Policy reconciler, driven by a random sequence of pod and NetworkPolicy changes through
the API server, writes only deltas (no dump) and leaves mc_policy / mc_enforce byte for byte equal to
the full compile of the final caches; a periodic resync then finds no drift.

Real informers on the in-process API server, the real Runner, the real policy object on a private bpffs.
"""
from pathlib import Path
import random

import pytest
from kubernetes import client

from meshcni.agent.agent import Metrics, event_reason
from meshcni.agent.reconcilers import MESH_WATCHES, POLICY_WATCHES, Policy
from meshcni.apiserver import APIServer
from meshcni.bpf import rows
from meshcni.controllers.identity import identity_body, identity_labels
from meshcni.controllers.netpol import compile_policies
from meshcni.datapath.policy import INGRESS, PolicyEntry, PolicyProgram, apply_policy_delta, build_policy
from meshcni.k8s import EventRecorder, Informer, Runner, api_client
from testutil import eventually

pytestmark = pytest.mark.kernel

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
NS = "x"
APPS = ["a", "b", "c", "d"]


def _pod(name, app, port):
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "ports": [{"name": "http", "containerPort": port}]}]}}


def _policy(rng, name):
    sel = lambda: {"matchLabels": {"app": rng.choice(APPS)}} if rng.random() < 0.8 else {}  # noqa: E731
    ports = rng.choice([[{"port": 80}], [{"port": "http"}], [{"port": 8000, "endPort": 8003}], None])
    rule = {"from": [{"podSelector": sel()}]}
    if ports:
        rule["ports"] = ports
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"podSelector": sel(), "policyTypes": ["Ingress"], "ingress": [rule]}}


def _maps(dp):
    out = []
    for m in (dp.policy, dp.enforce):
        k, v = m.dump()
        out.append(sorted((a.tobytes(), b.tobytes()) for a, b in zip(rows(k), rows(v))))
    return out


def _want(caches):
    c = compile_policies(*(caches[n].list() for n in POLICY_WATCHES))
    pk, pv, ek, ev = build_policy(c.entries, c.enforced)
    return [sorted((a.tobytes(), b.tobytes()) for a, b in zip(rows(pk), rows(pv))),
            sorted((a.tobytes(), b.tobytes()) for a, b in zip(rows(ek), rows(ev)))]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_events_leave_the_maps_equal_to_the_full_compile(tmp_path, pin_root, seed):
    rng = random.Random(seed)
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core, custom, net = client.CoreV1Api(api), client.CustomObjectsApi(api), client.NetworkingV1Api(api)
        core.create_namespace({"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}})
        for i, app in enumerate(APPS):
            labels = identity_labels(_pod("p", app, 80), {"kubernetes.io/metadata.name": NS})
            custom.create_namespaced_custom_object("mesh-cni.dev", "v1alpha1", NS, "identities",
                                                   identity_body(NS, labels, 16777301 + i))
        pods = {}
        for i in range(6):
            pods[f"p{i}"] = rng.choice(APPS)
            core.create_namespaced_pod(NS, _pod(f"p{i}", pods[f"p{i}"], 80))
        pols = set()
        for i in range(4):
            net.create_namespaced_network_policy(NS, _policy(rng, f"np{i}"))
            pols.add(f"np{i}")
        lists = {"networkpolicies": net.list_network_policy_for_all_namespaces,
                 "pods": core.list_pod_for_all_namespaces, "namespaces": core.list_namespace}
        caches = {n: Informer(f, name=n) for n, f in lists.items()}
        for n in ("identities", "cidridentities", "remoteidentities", "clusters"):
            caches[n] = Informer(custom.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", n, name=n)
        metrics = Metrics()
        with PolicyProgram(pin_root) as prog:
            dp = prog.datapath()
            rec = Policy(dp, metrics)
            events = EventRecorder(core, "meshcni-agent", "node1", host="node1", reason=event_reason)
            runner = Runner("agent", caches, [rec], events, metrics.reconcile)
            try:
                runner.start()
                assert _maps(dp) == _want(caches)
                n = 10
                for step in range(30):
                    r = rng.random()
                    if r < 0.25:
                        name = f"p{n}"
                        n += 1
                        pods[name] = rng.choice(APPS)
                        core.create_namespaced_pod(NS, _pod(name, pods[name], rng.choice([80, 8080])))
                    elif r < 0.4 and pods:
                        name = rng.choice(sorted(pods))
                        del pods[name]
                        core.delete_namespaced_pod(name, NS)
                    elif r < 0.7 and pods:
                        name = rng.choice(sorted(pods))
                        pods[name] = rng.choice(APPS)
                        core.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"app": pods[name]}}})
                    elif r < 0.85:
                        name = f"np{n}"
                        n += 1
                        pols.add(name)
                        net.create_namespaced_network_policy(NS, _policy(rng, name))
                    elif pols:
                        name = rng.choice(sorted(pols))
                        pols.discard(name)
                        net.delete_namespaced_network_policy(name, NS)
                eventually(lambda: _maps(dp) == _want(caches), 20, "the maps to equal the full compile",
                           interval=0.1)
                assert rec.runs["incremental"] > 0, rec.runs
                # the resync timer is one pending run, however many runs asked for one
                assert sum(1 for _, _, k in runner.queue._delayed if k == "policy") == 1
                full_runs = rec.runs["full"]
                # a periodic resync recomputes everything and diffs the dumped maps: nothing drifted
                rec.resync = 0.0
                runner.kick("policy")
                eventually(lambda: rec.runs["full"] > full_runs, 10, "the resync", interval=0.05)
                assert _maps(dp) == _want(caches)
                assert metrics.incremental_drift.labels("mc_policy")._value.get() == 0
                # a row nobody wants (drift: another writer, a lost write) is removed and counted
                pk, pv, _, _ = build_policy([PolicyEntry(16777399, INGRESS, peer=7)], ())
                dp.policy.update(pk, pv)
                full_runs = rec.runs["full"]
                runner.kick("policy")
                eventually(lambda: rec.runs["full"] > full_runs, 10, "the second resync", interval=0.05)
                assert _maps(dp) == _want(caches)
                assert metrics.incremental_drift.labels("mc_policy")._value.get() == 1
            finally:
                runner.stop()
                dp.close()


def test_deltas_with_overlapping_port_ranges_equal_a_full_build(pin_root):
    """Entries whose rows coincide (a port inside another entry's range, ranges sharing a block): a row
    stays while any entry still needs it, whatever order entries come and go in."""
    rng = random.Random(3)
    ports = [None, 8000, 8001, 8002, 8010, (8000, 8003), (8000, 8001), (8002, 8003), (8002, 8010), 9000]
    universe = [(16777301 + i, INGRESS, peer, 6 if port is not None or rng.random() < 0.5 else None, port)
                for i in range(2) for peer in (7, 8) for port in ports]
    with PolicyProgram(pin_root) as prog:
        dp = prog.datapath()
        try:
            cur = {}
            for step in range(60):
                new = {}
                for k in rng.sample(universe, rng.randint(0, len(universe) // 2)):
                    new.setdefault((k[0], k[1]), set()).add(k)
                pairs = set(cur) | set(new)
                apply_policy_delta(dp, {p: (frozenset(cur.get(p, ())), frozenset(new.get(p, ()))) for p in pairs},
                                   set(cur) - set(new), set(new) - set(cur))
                cur = new
                want = [PolicyEntry(*k) for ks in cur.values() for k in ks]
                pk, pv, ek, ev = build_policy(want, set(cur))
                k, v = dp.policy.dump()
                assert sorted(r.tobytes() for r in rows(k)) == sorted(r.tobytes() for r in rows(pk)), step
                k, v = dp.enforce.dump()
                assert sorted(r.tobytes() for r in rows(k)) == sorted(r.tobytes() for r in rows(ek)), step
        finally:
            dp.close()
