# SPDX-License-Identifier: MIT OR Apache-2.0
"""ServiceIndex (per-Service incremental desired state) against desired_services (the full rebuild).

Seeded random sequences of Service / EndpointSlice create, update and delete
events (ClusterIP, NodePort with clashing nodePorts, LoadBalancer with
externalTrafficPolicy Local, externalIPs two Services claim, iTP Local,
headless, broken addresses, slices changing Service or addressType, this
node changing) are fed to both; after every step the programmed rows, their
svc_ids and the problems must be equal, and every row that differs from the
previous step must be in the delta the applier gets.
"""
import copy
import random

import pytest

from meshcni.controllers.services import (FRONTEND_CONFLICT, NodeContext, Problem, ServiceIDs, desired_services,
                                          frontend_conflicts)
from meshcni.controllers.services_inc import ServiceIndex, object_key

pytestmark = pytest.mark.pure

NSS = ("a", "b")
NAMES = [f"s{i}" for i in range(8)]


class Store:
    """An informer's cache as the reconciler reads it: get(cache key), list() in insertion order."""

    def __init__(self):
        self.items = {}

    def get(self, k):
        return self.items.get(k)

    def list(self):
        return list(self.items.values())

    def put(self, o):
        k = object_key(o)
        old = self.items.get(k)
        self.items[k] = o
        return old

    def delete(self, k):
        return self.items.pop(k, None)


def rand_service(r: random.Random, ns: str, name: str, rv: int) -> dict:
    kind = r.choice(["ClusterIP"] * 4 + ["NodePort", "LoadBalancer", "headless", "bad"])
    ip = f"10.96.{NSS.index(ns)}.{NAMES.index(name) + 1}"
    spec = {"type": "ClusterIP" if kind in ("headless", "bad") else kind, "clusterIP": ip, "clusterIPs": [ip]}
    if kind == "headless":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
    if kind == "bad":
        spec["clusterIPs"] = ["10.96.999.1"]
    if r.random() < 0.2:
        ip6 = f"fd00::{NAMES.index(name) + 1:x}"
        spec["clusterIPs"] = spec["clusterIPs"] + [ip6]
    ports = []
    for pn in r.sample(["http", "dns", "x"], r.randint(1, 2)):
        p = {"name": pn, "port": {"http": 80, "dns": 53, "x": 9000}[pn], "protocol": "UDP" if pn == "dns" else "TCP"}
        if kind in ("NodePort", "LoadBalancer"):
            p["nodePort"] = r.choice([30000, 30001, 30002])  # clashes between Services on purpose
        ports.append(p)
    spec["ports"] = ports
    if r.random() < 0.3:
        spec["externalIPs"] = [r.choice(["192.0.2.1", "192.0.2.2"])]  # clashes on purpose
    if kind in ("NodePort", "LoadBalancer") and r.random() < 0.5:
        spec["externalTrafficPolicy"] = "Local"
    if kind == "ClusterIP" and r.random() < 0.2:
        spec["internalTrafficPolicy"] = "Local"
    if r.random() < 0.2:
        spec["sessionAffinity"] = "ClientIP"
    svc = {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(rv),
                        "creationTimestamp": f"2026-12-0{r.randint(1, 3)}T00:00:00Z"}, "spec": spec}
    if kind == "LoadBalancer":
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": r.choice(["198.51.100.1", "198.51.100.2"])}]}}
        if r.random() < 0.5:
            spec["loadBalancerSourceRanges"] = ["203.0.113.0/24"]
    return svc


def rand_slice(r: random.Random, ns: str, idx: int, rv: int) -> dict:
    fam = r.choice(["IPv4"] * 4 + ["IPv6", "FQDN", "bogus"])
    eps = []
    for j in range(r.randint(0, 4)):
        a = f"10.244.{idx}.{r.randint(1, 6)}" if fam != "IPv6" else f"fd10::{idx:x}:{r.randint(1, 6)}"
        if r.random() < 0.05:
            a = "not-an-ip"
        eps.append({"addresses": [a], "nodeName": r.choice(["me", "other"]),
                    "conditions": {"ready": r.random() < 0.8, "terminating": r.random() < 0.1}})
    ports = [{"name": pn, "port": r.choice([8080, 8081]), "protocol": "UDP" if pn == "dns" else "TCP"}
             for pn in r.sample(["http", "dns", "x"], r.randint(1, 3))]
    return {"metadata": {"namespace": ns, "name": f"sl{idx}", "resourceVersion": str(rv),
                         "labels": {"kubernetes.io/service-name": r.choice(NAMES)}},
            "addressType": fam, "endpoints": eps, "ports": ports}


def full(services, slices, ids, node):
    svcs, problems = desired_services(services.list(), slices.list(), ids, node=node)
    conflicts = frontend_conflicts(svcs)
    dropped = {b for _, b in conflicts}
    for a, b in conflicts:
        ns, _, name = b.split(":", 1)[0].partition("/")
        problems.append(Problem("Service", ns, name, "spec", f"a frontend of {b} is already used by {a}: {b} not "
                                "served", reason=FRONTEND_CONFLICT))
    return {s.name: s for s in svcs if s.name not in dropped}, problems


def _sorted(problems):
    return sorted(map(repr, problems))


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_full_after_every_step(seed):
    r = random.Random(seed)
    services, slices = Store(), Store()
    ids_full, ids_inc = ServiceIDs(), ServiceIDs()
    idx = ServiceIndex(ids_inc)
    node = NodeContext("me", ("172.18.0.2",))
    prev = {}
    rv = 0
    for step in range(150):
        rv += 1
        op = r.random()
        ns = r.choice(NSS)
        if op < 0.25:
            o = rand_service(r, ns, r.choice(NAMES), rv)
            idx.observe("services", services.put(o), o)
        elif op < 0.32:
            o = services.delete(f"{ns}/{r.choice(NAMES)}")
            if o is not None:
                idx.observe("services", o, None)
        elif op < 0.85:
            o = rand_slice(r, ns, r.randint(0, 11), rv)
            idx.observe("endpointslices", slices.put(o), o)
        elif op < 0.97:
            o = slices.delete(f"{ns}/sl{r.randint(0, 11)}")
            if o is not None:
                idx.observe("endpointslices", o, None)
        else:
            node = NodeContext("me", (r.choice(["172.18.0.2", "172.18.0.3"]),))
            idx.observe("nodes", None, None)
        want, want_problems = full(services, slices, ids_full, node)
        delta, problems = idx.desired(services, slices, None, node, resync=(step % 40 == 39))
        assert delta.rows == want, f"seed {seed} step {step}"
        assert _sorted(problems) == _sorted(want_problems), f"seed {seed} step {step}"
        moved = {n for n in set(prev) | set(want) if prev.get(n) != want.get(n)}
        assert delta.full or moved <= delta.changed, f"seed {seed} step {step}: {moved - delta.changed} not in delta"
        assert delta.drift == 0
        if delta.full:
            assert [s.name for s in delta.order()] == [n for n in want]
        prev = copy.deepcopy(want)


def test_slice_change_touches_one_service():
    services, slices = Store(), Store()
    idx = ServiceIndex(ServiceIDs())
    node = NodeContext("me")
    for i in range(50):
        s = {"metadata": {"namespace": "a", "name": f"s{i}"},
             "spec": {"clusterIP": f"10.96.0.{i + 1}", "ports": [{"name": "http", "port": 80}]}}
        sl = {"metadata": {"namespace": "a", "name": f"s{i}-x", "labels": {"kubernetes.io/service-name": f"s{i}"}},
              "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
              "endpoints": [{"addresses": [f"10.244.{i}.1"]}]}
        for store, cache, o in ((services, "services", s), (slices, "endpointslices", sl)):
            idx.observe(cache, store.put(o), o)
    delta, _ = idx.desired(services, slices, None, node)
    assert delta.full and len(delta.rows) == 50
    sl = copy.deepcopy(slices.get("a/s7-x"))
    sl["endpoints"].append({"addresses": ["10.244.7.2"]})
    idx.observe("endpointslices", slices.put(sl), sl)
    delta, _ = idx.desired(services, slices, None, node)
    assert not delta.full and delta.changed == {"a/s7:http/TCP/v4"}
    assert [b.ip for b in delta.rows["a/s7:http/TCP/v4"].backends] == ["10.244.7.1", "10.244.7.2"]
    # nothing happened: nothing to do
    delta, _ = idx.desired(services, slices, None, node)
    assert not delta.full and not delta.changed


def test_ids_update_matches_assign():
    r = random.Random(7)
    a, b = ServiceIDs(), ServiceIDs()
    keys = set()
    for _ in range(200):
        new = set(keys)
        for _ in range(r.randint(0, 4)):
            k = f"k{r.randint(0, 60)}"
            (new.discard if k in new and r.random() < 0.5 else new.add)(k)
        full_ids = a.assign(new)
        inc = dict(b.update(new - keys, keys - new))
        assert inc == full_ids
        keys = new
