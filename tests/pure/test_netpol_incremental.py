# SPDX-License-Identifier: MIT OR Apache-2.0
"""The incremental NetworkPolicy compiler equals the full one after every step of random event sequences.

A seeded generator (hypothesis is not installed here) drives pods (added, deleted, relabelled, ports
changed, finished, hostNetwork) and policies (added, changed, deleted, some malformed) over three
namespaces; after every event the incremental state, and a map model fed only the deltas, must equal
:func:`~meshcni.controllers.netpol.compile_policies` of the same caches.
"""
from __future__ import annotations

import itertools
import random

import pytest

from meshcni.controllers.identity import MANAGED_BY, MANAGER, desired_cidr_identities, identity_labels, identity_name
from meshcni.controllers.netpol import compile_policies
from meshcni.controllers.netpol_inc import IncrementalPolicy

pytestmark = pytest.mark.pure

NSS = ["a", "b", "c"]
NS_LABELS = {"a": {"team": "t1", "env": "prod"}, "b": {"team": "t2", "env": "prod"}, "c": {"team": "t1", "env": "dev"}}
APPS, TIERS = ["web", "api", "db", None], ["front", "back", None]
BLOCKS = [{"cidr": "10.0.0.0/8"}, {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}, {"cidr": "10.1.0.0/16"},
          {"cidr": "192.0.2.0/24"}]


def _labels(app, tier, v):
    out = {}
    if app:
        out["app"] = app
    if tier:
        out["tier"] = tier
    if v:
        out["v"] = "2"
    return out


def _namespaces():
    return [{"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n, **NS_LABELS[n]}}} for n in NSS]


def _identities(namespaces):
    nsl = {n["metadata"]["name"]: n["metadata"]["labels"] for n in namespaces}
    out = []
    for i, (ns, app, tier, v) in enumerate(itertools.product(NSS, APPS, TIERS, (False, True))):
        if i % 7 == 3:
            continue  # not created yet by the controller: such pods are in no group
        labels = identity_labels({"metadata": {"namespace": ns, "labels": _labels(app, tier, v)}}, nsl[ns])
        out.append({"metadata": {"name": identity_name(labels), "namespace": ns, "labels": {MANAGED_BY: MANAGER}},
                    "spec": {"id": 16777216 + i, **labels}})
    return out


SELECTORS = [{}, {"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "api", "tier": "back"}},
             {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]},
             {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
             {"matchExpressions": [{"key": "v", "operator": "Exists"}]},
             {"matchExpressions": [{"key": "v", "operator": "DoesNotExist"}]},
             {"matchExpressions": [{"key": "app", "operator": "Bogus"}]}]
NS_SELECTORS = [None, {}, {"matchLabels": {"team": "t1"}},
                {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}]
PORTS = [None, [{"port": 80}], [{"port": "http"}], [{"port": "dns", "protocol": "UDP"}],
         [{"port": 8000, "endPort": 8010}, {"port": "metrics"}], [{"port": 70000}]]


def _peer(rng):
    r = rng.random()
    if r < 0.2:
        return {"ipBlock": rng.choice(BLOCKS)}
    p = {}
    ns = rng.choice(NS_SELECTORS)
    if ns is not None:
        p["namespaceSelector"] = ns
    if ns is None or rng.random() < 0.6:
        p["podSelector"] = rng.choice(SELECTORS)
    return p


def _rules(rng, field):
    out = []
    for _ in range(rng.randint(0, 2)):
        rule = {}
        if rng.random() < 0.8:
            rule[field] = [_peer(rng) for _ in range(rng.randint(1, 2))]
        ports = rng.choice(PORTS)
        if ports is not None:
            rule["ports"] = ports
        out.append(rule)
    return out


def _policy(rng, ns, name):
    spec = {"podSelector": rng.choice(SELECTORS)}
    if rng.random() < 0.7:
        spec["ingress"] = _rules(rng, "from")
    if rng.random() < 0.6:
        spec["egress"] = _rules(rng, "to")
    r = rng.random()
    if r < 0.3:
        spec["policyTypes"] = ["Ingress", "Egress"]
    elif r < 0.4:
        spec["policyTypes"] = ["Egress"]
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def _pod(rng, ns, name, ip):
    ports = []
    for n, num, proto in (("http", rng.choice([80, 8080]), "TCP"), ("dns", 53, "UDP"), ("metrics", 9090, "TCP")):
        if rng.random() < 0.5:
            ports.append({"name": n, "containerPort": num, "protocol": proto})
    labels = _labels(rng.choice(APPS), rng.choice(TIERS), rng.random() < 0.3)
    if rng.random() < 0.5:
        labels["pod-template-hash"] = rng.choice(["h1", "h2"])
    spec = {"containers": [{"name": "c", "ports": ports}]}
    if rng.random() < 0.05:
        spec["hostNetwork"] = True
    phase = "Succeeded" if rng.random() < 0.08 else "Running"
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec,
            "status": {"phase": phase, "podIP": ip}}


def _key(o):
    return f"{o['metadata']['namespace']}/{o['metadata']['name']}"


def _tuples(c):
    return {(e.identity, e.direction, e.peer, e.proto, e.port) for e in c.entries}


def _by_pair(entries):
    out = {}
    for e in entries:
        out.setdefault((e.identity, e.direction), set()).add((e.peer, e.proto, e.port))
    return out


def _check(inc, model, pods, policies, namespaces, identities, cidrs, step):
    ref = compile_policies(list(policies.values()), list(pods.values()), namespaces, identities, cidrs)
    got = inc.compiled()
    assert _tuples(got) == _tuples(ref), step
    assert got.enforced == ref.enforced, step
    assert sorted(map(str, got.problems)) == sorted(map(str, ref.problems)), step
    assert got.stats["per_identity"] == ref.stats["per_identity"], step
    assert {p: s for p, s in model.items() if s} == _by_pair(ref.entries), step


def _apply(model, delta):
    for pair in delta.enforce_off:
        assert model.get(pair), f"enforcement lifted from {pair}, which had none"
    for pair, keys in delta.new.items():
        assert model.get(pair, set()) == {k[2:] for k in delta.old[pair]}, pair
        model[pair] = {k[2:] for k in keys}


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_full_after_every_event(seed):
    rng = random.Random(seed)
    namespaces = _namespaces()
    identities = _identities(namespaces)
    all_blocks = [{"metadata": {"name": "x", "namespace": "a"},
                   "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": b} for b in BLOCKS]}]}}]
    cidrs, _, _, _ = desired_cidr_identities(all_blocks, [])
    pods, policies = {}, {}
    n = itertools.count()
    for _ in range(25):
        p = _pod(rng, rng.choice(NSS), f"p{next(n)}", f"10.244.0.{len(pods) + 1}")
        pods[_key(p)] = p
    for _ in range(8):
        p = _policy(rng, rng.choice(NSS), f"np{next(n)}")
        policies[_key(p)] = p
    inc = IncrementalPolicy()
    inc.full(list(policies.values()), list(pods.values()), namespaces, identities, cidrs)
    model = _by_pair(inc.entries())
    _check(inc, model, pods, policies, namespaces, identities, cidrs, "full")
    for step in range(120):
        r = rng.random()
        if r < 0.2 or not pods:
            p = _pod(rng, rng.choice(NSS), f"p{next(n)}", f"10.244.1.{step}")
            pods[_key(p)] = p
            delta = inc.pods_changed([(_key(p), p)])
        elif r < 0.35:
            k = rng.choice(sorted(pods))
            del pods[k]
            delta = inc.pods_changed([(k, None)])
        elif r < 0.65:
            k = rng.choice(sorted(pods))
            old = pods[k]
            p = _pod(rng, old["metadata"]["namespace"], old["metadata"]["name"], old["status"]["podIP"])
            if rng.random() < 0.5:
                p["spec"] = old["spec"]  # a relabel alone
            pods[k] = p
            delta = inc.pods_changed([(k, p)])
        elif r < 0.75:
            p = _policy(rng, rng.choice(NSS), f"np{next(n)}")
            policies[_key(p)] = p
            delta = inc.policies_changed([(_key(p), p)])
        elif r < 0.85 and policies:
            k = rng.choice(sorted(policies))
            del policies[k]
            delta = inc.policies_changed([(k, None)])
        elif policies:
            k = rng.choice(sorted(policies))
            ns, name = k.split("/")
            p = _policy(rng, ns, name)
            policies[k] = p
            delta = inc.policies_changed([(k, p)])
        else:
            continue
        _apply(model, delta)
        _check(inc, model, pods, policies, namespaces, identities, cidrs, (seed, step))


def test_a_burst_of_pod_events_at_once():
    rng = random.Random(99)
    namespaces = _namespaces()
    identities = _identities(namespaces)
    pods = {}
    for i in range(40):
        p = _pod(rng, rng.choice(NSS), f"p{i}", f"10.244.0.{i}")
        pods[_key(p)] = p
    policies = {}
    for i in range(10):
        p = _policy(rng, rng.choice(NSS), f"np{i}")
        policies[_key(p)] = p
    inc = IncrementalPolicy()
    inc.full(list(policies.values()), list(pods.values()), namespaces, identities, [])
    model = _by_pair(inc.entries())
    changes = []
    for k in sorted(pods)[:15]:
        old = pods[k]
        pods[k] = _pod(rng, old["metadata"]["namespace"], old["metadata"]["name"], old["status"]["podIP"])
        changes.append((k, pods[k]))
    changes.append((sorted(pods)[20], None))
    del pods[sorted(pods)[20]]
    delta = inc.pods_changed(changes)
    _apply(model, delta)
    _check(inc, model, pods, policies, namespaces, identities, [], "burst")


@pytest.mark.extension  # meshcni.datapath.policy (the reference) loads meshcni._libbpf
def test_the_row_bound_counts_port_blocks_like_the_datapath():
    from meshcni.controllers.netpol_inc import _blocks
    from meshcni.datapath.policy import port_blocks
    rng = random.Random(5)
    ranges = [(1, 65535), (0, 65535), (8000, 8100), (5670, 5680), (1024, 1024)] + \
        [tuple(sorted((rng.randint(1, 65535), rng.randint(1, 65535)))) for _ in range(300)]
    for lo, hi in ranges:
        assert _blocks((lo, hi)) == len(port_blocks(lo, hi)), (lo, hi)
