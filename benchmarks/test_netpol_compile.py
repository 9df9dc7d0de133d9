# SPDX-License-Identifier: MIT OR Apache-2.0
"""NetworkPolicy compilation (control plane, pure): ``compile_policies`` vs a naive per-pod evaluator.

    python -m pytest benchmarks/test_netpol_compile.py --benchmark-only -q -s
    python -m pytest benchmarks/test_netpol_compile.py -q -k naive_matches   # the equivalence check alone

No root, no kernel: everything here is pure Python on plain dicts of the shape
an informer hands out (round-tripped through JSON, as a list body is).

Data (generated here, deterministic): ``N_NS`` (100) namespaces with
``team``/``env`` labels (ns-000 is ``role=monitoring``, ns-001 ``role=dns``,
ns-002 ``role=ingress``) and ``PODS_PER_NS`` (100) pods each, so 10,000 pods:
10 apps (web, api, cart, auth, search, db, cache, queue, worker, mon) x 10
replicas with ``app``/``tier``/``version`` labels (replicas 7-9 are a ``v2``
canary with their own identity and, for ``http``, another port number) and a
``pod-template-hash``; one replica per namespace is a finished Job pod
(Succeeded), one is hostNetwork, and a few label sets have no Identity yet.
Named container ports: ``http``, ``grpc``, ``metrics``, ``db``, ``redis``,
``amqp``, ``dns`` (UDP). Identities are what the controller would have
created (one per namespace + label set, about 2,000); CIDRIdentities come
from :func:`~meshcni.controllers.identity.desired_cidr_identities` of the
policies themselves (overlapping ipBlocks included, so atoms exist).

``POLS_PER_NS`` (10) policies per namespace, so 1,000: default deny (both
directions), DNS egress to ns-001 (UDP+TCP 53), web ingress from the
ingress namespace and from ``0.0.0.0/0 except 10/8`` on named ``http``,
back-end ingress from web (named http+grpc), data-tier ingress with
``matchExpressions`` In (named ``db`` + 6379), metrics scraping from the
monitoring namespace (named ``metrics``), back-end egress to the data tier
and a per-team /16 (443), cross-namespace ingress from the same team's front
ends with ``endPort`` (8000-8100), egress to external ipBlocks (443,
8443-8450) and the queue (5670-5680) with a ``NotIn`` selector, and worker
egress to the queues of every namespace of the same ``env`` (named ``amqp``).

Benchmarks (``benchmark.group``):

netpol-compile-full
    ``compile_policies`` at full size. ``extra_info``: entries (total, per
    policy mean/max, max per identity), enforced pairs, mc_policy rows. Next
    to it, one round of the naive evaluator (below) on the same data, whose
    output is asserted equal (about 1-2 minutes; ``MESHCNI_BENCH_NETPOL_NAIVE_FULL=0``
    skips it).
netpol-build-full
    ``build_policy`` of that output (endPort ranges expand to prefixes).
netpol-compile-small
    the side-by-side: ``compile_policies`` and the naive evaluator written
    below (for each policy x selected pod x rule x peer, scan every pod) on
    ``SMALL_NS`` (10) namespaces of the same shape (1,000 pods, 100
    policies). Both produce the same set of (identity, dir, peer, proto,
    port) tuples (and the same enforced pairs); ``test_naive_matches_compiler``
    asserts that without timing anything, so it also runs without
    ``--benchmark-only``. The naive evaluator's time grows with pods x pods
    per rule (about 3.5x per doubling of the namespaces).

Sizes: ``MESHCNI_BENCH_NETPOL_NS``, ``MESHCNI_BENCH_NETPOL_SMALL_NS``.
"""
from __future__ import annotations

import gc
import json
import os
import random
from typing import Dict, List

import pytest

from meshcni import layout
from meshcni.controllers.identity import (MANAGED_BY, MANAGER, NS_NAME_LABEL, _norm_block, cidr_identity_name,
                                          desired_cidr_identities, identity_labels, identity_name)
from meshcni.controllers.ipcache import cidr_atoms
from meshcni.controllers.netpol import compile_policies
from meshcni.datapath.policy import EGRESS, INGRESS, build_policy

pytestmark = pytest.mark.pure

N_NS = int(os.environ.get("MESHCNI_BENCH_NETPOL_NS", "100"))
SMALL_NS = int(os.environ.get("MESHCNI_BENCH_NETPOL_SMALL_NS", "10"))
NAIVE_FULL = os.environ.get("MESHCNI_BENCH_NETPOL_NAIVE_FULL", "1") != "0"
PODS_PER_NS = 100
POLS_PER_NS = 10
ROUNDS = 3
HOST = 1
_C = layout.constants()

RESULTS: dict = {}

APPS = ["web", "api", "cart", "auth", "search", "db", "cache", "queue", "worker", "mon"]
TIER = {"web": "front", "api": "back", "cart": "back", "auth": "back", "search": "back", "db": "data",
        "cache": "data", "queue": "async", "worker": "async", "mon": "ops"}
ENVS = ["prod", "staging", "dev"]


# ---------------------------------------------------------------- data

def _via_json(objs):
    return json.loads(json.dumps({"items": objs}))["items"]


def ns_name(i: int) -> str:
    return f"ns-{i:03d}"


def namespace(i: int) -> dict:
    labels = {NS_NAME_LABEL: ns_name(i), "team": f"team-{i % 10}", "env": ENVS[i % 3]}
    if i < 3:
        labels["role"] = ("monitoring", "dns", "ingress")[i]
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(i), "labels": labels}}


def _ports(app: str, a: int, canary: bool, ns_i: int):
    out = [("metrics", 9090 if app != "db" else 9187, "TCP")]
    if TIER[app] in ("front", "back"):
        out.append(("http", (8000 + a) + (100 if canary else 0), "TCP"))
    if TIER[app] == "back":
        out.append(("grpc", 9000, "TCP"))
    if app == "db":
        out.append(("db", 5432, "TCP"))
    if app == "cache":
        out.append(("redis", 6379, "TCP"))
        if ns_i == 1:
            out += [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    if app == "queue":
        out.append(("amqp", 5672, "TCP"))
    return out


def pod(ns_i: int, k: int) -> dict:
    a, r = k % len(APPS), k // len(APPS)
    app, canary = APPS[a], r >= 7
    ns = ns_name(ns_i)
    labels = {"app": app, "tier": TIER[app], "version": "v2" if canary else "v1",
              "pod-template-hash": f"{'b' if canary else 'a'}{a:02d}{ns_i:03d}"}
    spec = {"nodeName": f"node-{(ns_i * 7 + k) % 50:03d}",
            "containers": [{"name": app, "image": f"registry.example/{app}:1.0",
                            "ports": [{"name": n, "containerPort": p, "protocol": pr}
                                      for n, p, pr in _ports(app, a, canary, ns_i)]}]}
    phase = "Running"
    if a == 0 and r == 9:
        labels = {"job-name": f"migrate-{ns_i}"}
        phase = "Succeeded"
    if a == 9 and r == 9:
        labels = {"app": "node-exporter"}
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{app}-{r}-{ns_i}", "namespace": ns, "labels": labels},
            "spec": spec, "status": {"phase": phase, "podIP": f"10.244.{ns_i}.{k + 1}"}}


def policies_of(ns_i: int, n_ns: int) -> List[dict]:
    ns, team, env = ns_name(ns_i), f"team-{ns_i % 10}", ENVS[ns_i % 3]

    def pol(name, sel, ingress=None, egress=None, types=None):
        spec = {"podSelector": sel}
        if ingress is not None:
            spec["ingress"] = ingress
        if egress is not None:
            spec["egress"] = egress
        if types:
            spec["policyTypes"] = types
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": ns}, "spec": spec}

    ml = lambda **kw: {"matchLabels": kw}  # noqa: E731
    return [
        pol("default-deny", {}, types=["Ingress", "Egress"]),
        pol("allow-dns", {}, egress=[{"to": [{"namespaceSelector": ml(role="dns"), "podSelector": ml(app="cache")}],
                                      "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}], types=["Egress"]),
        pol("web-ingress", ml(app="web"), ingress=[
            {"from": [{"namespaceSelector": ml(role="ingress"), "podSelector": ml(app="web")},
                      {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
             "ports": [{"port": "http"}]}]),
        pol("back-from-web", ml(tier="back"), ingress=[
            {"from": [{"podSelector": ml(app="web")}], "ports": [{"port": "http"}, {"port": "grpc"}]}]),
        pol("data-ingress", ml(tier="data"), ingress=[
            {"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                             "values": ["back", "async"]}]}}],
             "ports": [{"port": "db"}, {"port": 6379}]}]),
        pol("allow-metrics", {}, ingress=[
            {"from": [{"namespaceSelector": ml(role="monitoring"), "podSelector": ml(app="mon")}],
             "ports": [{"port": "metrics"}]}]),
        pol("back-egress", {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back", "async"]}]},
            egress=[{"to": [{"podSelector": ml(tier="data")}], "ports": [{"port": "db"}, {"port": "redis"}]},
                    {"to": [{"ipBlock": {"cidr": f"10.{ns_i % 10}.0.0/16"}}], "ports": [{"port": 443}]}]),
        pol("team-api", ml(app="api"), ingress=[
            {"from": [{"namespaceSelector": ml(team=team), "podSelector": ml(tier="front")}],
             "ports": [{"port": 8000, "endPort": 8100}]}]),
        pol("external", {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db", "cache"]}]},
            egress=[{"to": [{"ipBlock": {"cidr": f"192.168.{ns_i % 20}.0/24"}},
                            {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.100.0/24"]}}],
                     "ports": [{"port": 443}]},
                    {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 8443, "endPort": 8450}]},
                    {"to": [{"podSelector": ml(app="queue")}], "ports": [{"port": 5670, "endPort": 5680}]}]),
        pol("worker-queues", ml(app="worker"), types=["Egress"], egress=[
            {"to": [{"namespaceSelector": ml(env=env), "podSelector": ml(app="queue")}],
             "ports": [{"port": "amqp"}]}]),
    ][:POLS_PER_NS]


def _identities(pods, namespaces, missing_every: int = 97):
    ns_labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in namespaces}
    seen: Dict[tuple, int] = {}
    out = []
    for p in pods:
        if p["spec"].get("hostNetwork") or p["status"]["phase"] != "Running":
            continue
        ns = p["metadata"]["namespace"]
        labels = identity_labels(p, ns_labels[ns])
        key = (ns, identity_name(labels))
        if key in seen:
            continue
        seen[key] = 16777216 + len(seen)
        if len(seen) % missing_every == 0:
            continue  # the controller has not created this one yet
        out.append({"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Identity",
                    "metadata": {"name": key[1], "namespace": ns, "labels": {MANAGED_BY: MANAGER}},
                    "spec": {"id": seen[key], **labels}})
    return out


def cluster(n_ns: int) -> dict:
    namespaces = [namespace(i) for i in range(n_ns)]
    pods = [pod(i, k) for i in range(n_ns) for k in range(PODS_PER_NS)]
    policies = [p for i in range(n_ns) for p in policies_of(i, n_ns)]
    identities = _identities(pods, namespaces)
    create, _, _, probs = desired_cidr_identities(policies, [])
    assert not probs
    return {"policies": _via_json(policies), "pods": _via_json(pods), "namespaces": _via_json(namespaces),
            "identities": _via_json(identities), "cidrs": _via_json(create)}


def _args(d):
    return d["policies"], d["pods"], d["namespaces"], d["identities"], d["cidrs"]


# ---------------------------------------------------------------- the naive baseline

_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _sel_match(sel, labels) -> bool:
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def _named(pod, name, proto):
    for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", []):
        for cp in c.get("ports") or []:
            if cp.get("name") == name and _PROTO[cp.get("protocol") or "TCP"] == proto:
                yield cp["containerPort"]


def naive(policies, pods, namespaces, identities, cidr_identities):
    """The API semantics written the obvious way, per selected pod: (set of tuples, enforced).

    No grouping, no caching: every selected pod of every policy scans every
    pod for every podSelector/namespaceSelector peer. Valid input only.
    """
    ns_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces}
    ids = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]["id"] for o in identities
           if o["metadata"].get("labels", {}).get(MANAGED_BY) == MANAGER}
    live = []  # (pod, namespace, labels, identity)
    for p in pods:
        if p["status"].get("phase") in ("Succeeded", "Failed") or p["spec"].get("hostNetwork"):
            continue
        ns = p["metadata"]["namespace"]
        ident = ids.get((ns, identity_name(identity_labels(p, ns_labels.get(ns)))))
        if ident is not None:
            live.append((p, ns, p["metadata"].get("labels") or {}, ident))
    cidr_ids = {c["metadata"]["name"]: c["spec"]["id"] for c in cidr_identities}
    atoms = cidr_atoms(cidr_identities)
    out, enforced = set(), set()
    for pol in policies:
        ns, spec = pol["metadata"]["namespace"], pol["spec"]
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
        for me, me_ns, me_labels, me_id in live:
            if me_ns != ns or not _sel_match(spec.get("podSelector"), me_labels):
                continue
            for t in types:
                d = INGRESS if t == "Ingress" else EGRESS
                enforced.add((me_id, d))
                for rule in spec.get("ingress" if t == "Ingress" else "egress") or []:
                    remotes = []  # (identity or None, the remote pod or None)
                    plist = rule.get("from" if t == "Ingress" else "to")
                    if not plist:
                        remotes.append((None, None))
                    for peer in plist or []:
                        if "ipBlock" in peer:
                            cidr, excepts, _ = _norm_block(peer["ipBlock"])
                            c = cidr_ids.get(cidr_identity_name(cidr, excepts))
                            if c is not None:
                                remotes += [(i, None) for i in atoms.ids_for(c)]
                            continue
                        for q, q_ns, q_labels, q_id in live:
                            if "namespaceSelector" in peer:
                                if not _sel_match(peer["namespaceSelector"], {**ns_labels[q_ns], NS_NAME_LABEL: q_ns}):
                                    continue
                            elif q_ns != ns:
                                continue
                            if _sel_match(peer.get("podSelector"), q_labels):
                                remotes.append((q_id, q))
                    for remote_id, remote_pod in remotes:
                        for port in rule.get("ports") or [None]:  # none listed: every protocol and port
                            if port is None:
                                out.add((me_id, d, remote_id, None, None))
                                continue
                            proto, num = _PROTO[port.get("protocol") or "TCP"], port.get("port")
                            if num is None:
                                out.add((me_id, d, remote_id, proto, None))
                            elif isinstance(num, int):
                                end = port.get("endPort")
                                out.add((me_id, d, remote_id, proto, (num, end) if end and end != num else num))
                            elif d == INGRESS:  # named: the receiver is this pod
                                for n in _named(me, num, proto):
                                    out.add((me_id, d, remote_id, proto, n))
                            elif remote_pod is not None:  # egress: the receiver is the remote pod
                                for n in _named(remote_pod, num, proto):
                                    out.add((me_id, d, remote_id, proto, n))
                            elif remote_id is None:  # egress to anyone: every pod may receive it
                                for q, _, _, q_id in live:
                                    for n in _named(q, num, proto):
                                        out.add((me_id, d, q_id, proto, n))
    out |= {(i, d, HOST, None, None) for i, d in enforced}
    allow_all = {(i, d) for i, d, peer, proto, _ in out if peer is None and proto is None}
    out = {k for k in out if (k[0], k[1]) not in allow_all or (k[2] is None and k[3] is None)}
    return out, enforced


def _tuples(compiled):
    return {(e.identity, e.direction, e.peer, e.proto, e.port) for e in compiled.entries}


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def full():
    return cluster(N_NS)


@pytest.fixture(scope="module")
def small():
    return cluster(SMALL_NS)


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if RESULTS:
        _print_summary()


# ---------------------------------------------------------------- benchmarks

def test_compile_full(benchmark, full):
    out = []
    benchmark.group = "netpol-compile-full"
    benchmark.pedantic(lambda: out.append(compile_policies(*_args(full))), setup=gc.collect,
                       rounds=ROUNDS, iterations=1)
    c = out[-1]
    assert c.problems == [] and c.stats["policies"] == len(full["policies"])
    s = c.stats
    per_pol = list(s["per_policy"].values())
    rows = len(build_policy(c.entries, ())[0])
    med = benchmark.stats.stats.median
    info = dict(policies=len(full["policies"]), pods=len(full["pods"]), namespaces=N_NS,
                identities=len(full["identities"]), cidr_identities=len(full["cidrs"]),
                entries=s["entries"], enforced=s["enforced"], entries_per_policy_mean=sum(per_pol) / len(per_pol),
                entries_per_policy_max=max(per_pol), entries_max_per_identity=max(s["per_identity"].values()),
                identities_with_entries=len(s["per_identity"]), policy_map_rows=rows,
                policy_map_capacity=_C["MC_POLICY_MAX"], fits=rows <= _C["MC_POLICY_MAX"],
                policies_per_s=len(full["policies"]) / med, method="compile_policies")
    benchmark.extra_info.update(info)
    RESULTS["full"] = dict(info, median=med, compiled=c)


def test_build_full(benchmark, full):
    c = RESULTS["full"]["compiled"] if "full" in RESULTS else compile_policies(*_args(full))
    out = []
    benchmark.group = "netpol-build-full"
    benchmark.pedantic(lambda: out.append(build_policy(c.entries, c.enforced)), setup=gc.collect,
                       rounds=ROUNDS, iterations=1)
    pk, _, ek, _ = out[-1]
    assert len(ek) == len(c.enforced) and len(pk) >= len({(e.identity, e.direction, e.peer, e.proto, e.port)
                                                         for e in c.entries if not isinstance(e.port, tuple)})
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(entries=len(c.entries), policy_rows=len(pk), enforce_rows=len(ek),
                                entries_per_s=len(c.entries) / med, method="build_policy")
    RESULTS["build"] = dict(median=med, rows=len(pk), enforce=len(ek), entries=len(c.entries))


@pytest.mark.skipif(not NAIVE_FULL, reason="MESHCNI_BENCH_NETPOL_NAIVE_FULL=0")
def test_naive_full(benchmark, full):
    out = []
    benchmark.group = "netpol-compile-full"
    benchmark.pedantic(lambda: out.append(naive(*_args(full))), setup=gc.collect, rounds=1, iterations=1)
    want, enforced = out[-1]
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(policies=len(full["policies"]), pods=len(full["pods"]), namespaces=N_NS,
                                entries=len(want), enforced=len(enforced), method="naive-per-pod",
                                policies_per_s=len(full["policies"]) / med)
    if "full" in RESULTS:  # the same answer at full size too (free: both are computed anyway)
        c = RESULTS["full"]["compiled"]
        assert _tuples(c) == want and c.enforced == enforced
        benchmark.extra_info["compiler_speedup"] = med / RESULTS["full"]["median"]
    RESULTS["naive-full"] = dict(median=med, entries=len(want))


def test_naive_matches_compiler(small):
    c = compile_policies(*_args(small))
    want, enforced = naive(*_args(small))
    assert c.problems == [] and c.enforced == enforced
    got = _tuples(c)
    assert got == want, (sorted(got - want)[:5], sorted(want - got)[:5])
    assert len(got) == len(c.entries) > 1000


@pytest.mark.parametrize("method", ["compile_policies", "naive-per-pod"])
def test_compile_small(benchmark, small, method):
    fn = compile_policies if method == "compile_policies" else naive
    out = []
    benchmark.group = "netpol-compile-small"
    benchmark.pedantic(lambda: out.append(fn(*_args(small))), setup=gc.collect,
                       rounds=ROUNDS if method == "compile_policies" else 1, iterations=1)
    n = len(out[-1].entries) if method == "compile_policies" else len(out[-1][0])
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(policies=len(small["policies"]), pods=len(small["pods"]), namespaces=SMALL_NS,
                                entries=n, method=method, policies_per_s=len(small["policies"]) / med)
    RESULTS[f"small-{method}"] = dict(median=med, entries=n)
    if method == "naive-per-pod" and "small-compile_policies" in RESULTS:
        benchmark.extra_info["compiler_speedup"] = med / RESULTS["small-compile_policies"]["median"]


# ---------------------------------------------------------------- summary

def _print_summary():
    r = RESULTS
    lines = [""]
    if "full" in r:
        f = r["full"]
        lines += [f"NetworkPolicy compile: {f['policies']} policies, {f['pods']} pods, {f['namespaces']} namespaces, "
                  f"{f['identities']} identities, {f['cidr_identities']} CIDR identities",
                  f"  compile_policies median {f['median']:.3f} s ({f['policies_per_s']:,.0f} policies/s)",
                  f"  entries {f['entries']:,} (per policy mean {f['entries_per_policy_mean']:.1f}, "
                  f"max {f['entries_per_policy_max']}; max per identity {f['entries_max_per_identity']}); "
                  f"enforced {f['enforced']:,}",
                  f"  mc_policy rows {f['policy_map_rows']:,} of {f['policy_map_capacity']:,} "
                  f"({'fits' if f['fits'] else 'DOES NOT FIT'})"]
    if "build" in r:
        b = r["build"]
        lines.append(f"  build_policy median {b['median']:.3f} s -> {b['rows']:,} policy rows, "
                     f"{b['enforce']:,} enforce rows")
    if "naive-full" in r and "full" in r:
        n = r["naive-full"]
        lines.append(f"  naive per-pod evaluator at full size: {n['median']:.1f} s "
                     f"({n['median'] / r['full']['median']:.0f}x slower; same {n['entries']:,} tuples)")
    c, n = r.get("small-compile_policies"), r.get("small-naive-per-pod")
    if c and n:
        lines.append(f"Side by side at {SMALL_NS} namespaces ({SMALL_NS * PODS_PER_NS} pods, "
                     f"{SMALL_NS * POLS_PER_NS} policies, {c['entries']:,} entries): compile_policies "
                     f"{c['median']:.4f} s, naive per-pod {n['median']:.3f} s ({n['median'] / c['median']:.0f}x)")
    print("\n".join(lines))
