# SPDX-License-Identifier: MIT OR Apache-2.0
"""NetworkPolicy -> identity policy entries (meshcni.controllers.netpol.compile_policies), on plain dicts."""
import pytest

from meshcni.controllers.identity import (MANAGED_BY, MANAGER, cidr_identity_body, identity_labels,
                                          identity_name)
from meshcni.controllers.netpol import compile_policies
from meshcni.controllers.model import EGRESS, INGRESS
from testutil import netpol_manifest

pytestmark = pytest.mark.pure

IN, EG = INGRESS, EGRESS
HOST = 1
TCP, UDP, SCTP = 6, 17, 132
NS_LABELS = {"prod": {"env": "prod", "team": "a"}, "dev": {"env": "dev", "team": "b"}, "ops": {"team": "a"}}


# ---------------------------------------------------------------- plain-dict cluster

def pod(name, ns, labels, ports=(), phase="Running", host_network=False, init_ports=()):
    """``ports``: (name, number[, protocol]) container ports."""
    def cps(ps):
        return [{"name": p[0], "containerPort": p[1], "protocol": p[2] if len(p) > 2 else "TCP"} for p in ps]
    spec = {"containers": [{"name": "c", "ports": cps(ports)}]}
    if init_ports:
        spec["initContainers"] = [{"name": "init", "ports": cps(init_ports)}]
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)}, "spec": spec,
            "status": {"phase": phase, "podIP": "10.244.0.1"}}


class World:
    """Pods + namespaces + the managed Identities the controller would have made (ids from 16777216)."""

    def __init__(self, pods, ns_labels=NS_LABELS, skip_identity=()):
        self.pods = list(pods)
        self.namespaces = [{"metadata": {"name": n, "labels": dict(l)}} for n, l in ns_labels.items()]
        self.identities, self.id = [], {}
        by_name = {}
        for p in self.pods:
            if p["metadata"]["name"] in skip_identity:
                continue
            ns = p["metadata"]["namespace"]
            labels = identity_labels(p, ns_labels.get(ns))
            key = (ns, identity_name(labels))
            if key not in by_name:
                by_name[key] = 16777216 + len(by_name)
                self.identities.append({"metadata": {"name": key[1], "namespace": ns,
                                                     "labels": {MANAGED_BY: MANAGER}},
                                        "spec": {"id": by_name[key], **labels}})
            self.id[p["metadata"]["name"]] = by_name[key]
        self.cidrs = []

    def cidr(self, cidr, ident, excepts=(), managed=True):
        body = cidr_identity_body(cidr, list(excepts), [cidr], ident)
        if not managed:
            body["metadata"]["labels"] = {}
        self.cidrs.append(body)
        return ident

    def compile(self, *policies):
        return compile_policies(list(policies), self.pods, self.namespaces, self.identities, self.cidrs)


def netpol(name, ns="prod", selector=None, ingress=None, egress=None, types=None):
    return netpol_manifest(ns, name, selector, ingress, egress, types)


def keys(out):
    return {(e.identity, e.direction, e.peer, e.proto, e.port) for e in out.entries}


def non_host(out):
    return {k for k in keys(out) if k[2] != HOST}


def peers(out, ident, d=IN):
    return {k[2] for k in keys(out) if k[0] == ident and k[1] == d and k[2] != HOST}


def fields(out):
    return [(p.kind, p.namespace, p.name, p.field) for p in out.problems]


@pytest.fixture
def w():
    return World([
        pod("web", "prod", {"app": "web", "tier": "front"}, ports=[("http", 8080)]),
        pod("api", "prod", {"app": "api", "tier": "back"}, ports=[("http", 9090), ("grpc", 9000)]),
        pod("db", "prod", {"app": "db", "tier": "back"}, ports=[("pg", 5432)]),
        pod("plain", "prod", {"role": "x"}),
        pod("dev-web", "dev", {"app": "web", "tier": "front"}, ports=[("http", 80)]),
        pod("dev-api", "dev", {"app": "api", "tier": "back"}),
        pod("ops-mon", "ops", {"app": "mon"}),
    ])


# ---------------------------------------------------------------- isolation and policyTypes

def test_no_policies_isolate_nothing(w):
    out = w.compile()
    assert out.entries == [] and out.enforced == set() and out.problems == []


def test_deny_all_ingress_enforces_with_only_the_host_allow(w):
    out = w.compile(netpol("deny", selector={}, types=["Ingress"]))
    prod = {w.id[n] for n in ("web", "api", "db", "plain")}
    assert out.enforced == {(i, IN) for i in prod}  # dev/ops untouched, no egress
    assert keys(out) == {(i, IN, HOST, None, None) for i in prod}
    assert out.problems == []


def test_egress_only_policy_types_ignore_ingress_rules(w):
    out = w.compile(netpol("eg", selector={"matchLabels": {"app": "web"}}, types=["Egress"],
                           ingress=[{}], egress=[{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]))
    web = w.id["web"]
    assert out.enforced == {(web, EG)}
    assert keys(out) == {(web, EG, HOST, None, None), (web, EG, w.id["db"], None, None)}


def test_default_policy_types_empty_egress_isolates_only_ingress(w):
    for spec_types in (None, []):
        out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}}, egress=[], types=spec_types))
        assert out.enforced == {(w.id["web"], IN)}
        assert keys(out) == {(w.id["web"], IN, HOST, None, None)}


def test_default_policy_types_with_egress_rules_isolate_both(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}},
                           egress=[{"to": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                                    "ports": [{"port": 9090}]}]))
    web = w.id["web"]
    assert out.enforced == {(web, IN), (web, EG)}
    assert non_host(out) == {(web, EG, w.id["api"], TCP, 9090)}


def test_allow_all_rule_keeps_a_single_entry_per_identity(w):
    out = w.compile(netpol("all", selector={"matchLabels": {"tier": "back"}}, ingress=[{}]),
                    netpol("narrow", selector={"matchLabels": {"app": "api"}},
                           ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                     "ports": [{"port": 80}]}]))
    back = {w.id["api"], w.id["db"]}
    # the allow-everything entry subsumes the narrow rule and the host allow
    assert keys(out) == {(i, IN, None, None, None) for i in back}
    assert out.enforced == {(i, IN) for i in back}


# ---------------------------------------------------------------- selectors

def test_pod_selector_peer_is_the_policy_namespace_only(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "api"}},
                           ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]))
    assert peers(out, w.id["api"]) == {w.id["web"]}  # not dev-web


def test_pod_and_namespace_selector_in_one_peer_is_and(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "db"}},
                           ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}},
                                               "podSelector": {"matchLabels": {"app": "api"}}}]}]))
    assert peers(out, w.id["db"]) == {w.id["dev-api"]}


def test_pod_or_namespace_selector_as_two_peers_is_or(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "db"}},
                           ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}},
                                              {"podSelector": {"matchLabels": {"app": "api"}}}]}]))
    assert peers(out, w.id["db"]) == {w.id["dev-api"], w.id["dev-web"], w.id["api"]}


def test_empty_namespace_selector_matches_every_namespace_and_metadata_name_always_works(w):
    # ops has no kubernetes.io/metadata.name label in the input: it still matches by name
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "db"}},
                           ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}},
                                              {"namespaceSelector": {"matchLabels":
                                                                     {"kubernetes.io/metadata.name": "ops"}}}]}]))
    assert peers(out, w.id["db"]) == {w.id["web"], w.id["dev-web"], w.id["ops-mon"]}


def test_match_expressions_and_their_and_with_match_labels(w):
    cases = [
        ({"key": "app", "operator": "In", "values": ["web", "db"]}, {"web", "db"}),
        ({"key": "app", "operator": "NotIn", "values": ["web", "db"]}, {"api", "plain"}),  # absent key: NotIn holds
        ({"key": "tier", "operator": "Exists"}, {"web", "api", "db"}),
        ({"key": "tier", "operator": "DoesNotExist"}, {"plain"}),
    ]
    for expr, expect in cases:
        out = w.compile(netpol("p", selector={"matchLabels": {"app": "api"}},
                               ingress=[{"from": [{"podSelector": {"matchExpressions": [expr]}}]}]))
        assert peers(out, w.id["api"]) == {w.id[n] for n in expect}, expr
        assert out.problems == []
    sel = {"matchLabels": {"tier": "back"}, "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}
    out = w.compile(netpol("p", selector=sel, types=["Ingress"]))
    assert out.enforced == {(w.id["api"], IN)}


# ---------------------------------------------------------------- ipBlock

def test_ipblock_peer_is_its_cidr_identity(w):
    plain = w.cidr("203.0.113.0/24", 300)
    holed = w.cidr("10.0.0.0/8", 301, excepts=["10.1.0.0/16"])
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}},
                           ingress=[{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}},
                                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                              {"ipBlock": {"cidr": "198.51.100.0/24"}}],  # not created yet
                                     "ports": [{"port": 443}]}]))
    assert non_host(out) == {(w.id["web"], IN, plain, TCP, 443), (w.id["web"], IN, holed, TCP, 443)}
    assert out.problems == []  # the missing CIDRIdentity is transient, not bad input


def test_ipblock_without_cidr_identity_allows_nothing_but_still_isolates(w):
    w.cidr("203.0.113.0/24", 300, managed=False)  # hand-made: never trusted
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}},
                           egress=[{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]))
    web = w.id["web"]
    assert out.enforced == {(web, IN), (web, EG)}
    assert keys(out) == {(web, IN, HOST, None, None), (web, EG, HOST, None, None)}


def test_overlapping_ipblocks_admit_the_shared_atom(w):
    wide, narrow = w.cidr("192.0.2.0/24", 300), w.cidr("192.0.2.0/28", 301)
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}},
                           egress=[{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]))
    got = peers(out, w.id["web"], EG)
    assert wide in got and narrow not in got and len(got) == 2  # the /28 atom {300, 301} too
    (atom,) = got - {wide}
    assert atom >= 15728640


# ---------------------------------------------------------------- ports

def test_named_port_ingress_resolves_per_receiving_pod(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"tier": "back"}},
                           ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                     "ports": [{"port": "http"}, {"port": "pg"}]}]))
    web = w.id["web"]
    assert non_host(out) == {(w.id["api"], IN, web, TCP, 9090), (w.id["db"], IN, web, TCP, 5432)}


def test_named_port_egress_resolves_on_the_destination(w):
    w.cidr("203.0.113.0/24", 300)
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}}, egress=[
        {"to": [{"podSelector": {"matchLabels": {"tier": "back"}}}], "ports": [{"port": "http"}]},
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": "http"}]},  # no pod: nothing
    ]))
    assert non_host(out) == {(w.id["web"], EG, w.id["api"], TCP, 9090)}  # db has no "http"


def test_named_port_egress_to_anyone_resolves_on_every_pod(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "db"}}, egress=[{"ports": [{"port": "http"}]}],
                           types=["Egress"]))
    db = w.id["db"]
    assert non_host(out) == {(db, EG, w.id["web"], TCP, 8080), (db, EG, w.id["api"], TCP, 9090),
                             (db, EG, w.id["dev-web"], TCP, 80)}


def test_named_port_protocol_init_containers_and_one_identity_many_numbers():
    w = World([pod("a1", "prod", {"app": "a", "pod-template-hash": "1"}, ports=[("dns", 53, "UDP"), ("m", 9100)]),
               pod("a2", "prod", {"app": "a", "pod-template-hash": "2"}, ports=[("dns", 5353, "UDP")],
                   init_ports=[("m", 9200)]),
               pod("c", "prod", {"app": "c"})])
    assert w.id["a1"] == w.id["a2"]
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "a"}},
                           ingress=[{"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns"}, {"port": "m"}]}]))
    a = w.id["a1"]
    # TCP "dns" names nothing; the identity gets every number its pods give a name
    assert non_host(out) == {(a, IN, None, UDP, 53), (a, IN, None, UDP, 5353),
                             (a, IN, None, TCP, 9100), (a, IN, None, TCP, 9200)}


@pytest.mark.extension
def test_end_port_protocols_and_port_ranges(w):
    from meshcni.datapath.policy import build_policy, port_blocks

    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}}, ingress=[{"ports": [
        {"port": 8000, "endPort": 8080}, {"port": 9000, "endPort": 9000}, {"protocol": "UDP"},
        {"protocol": "SCTP", "port": 3868}]}]))
    web = w.id["web"]
    assert non_host(out) == {(web, IN, None, TCP, (8000, 8080)), (web, IN, None, TCP, 9000),
                             (web, IN, None, UDP, None), (web, IN, None, SCTP, 3868)}
    pk, _, ek, _ = build_policy(out.entries, out.enforced)
    assert len(pk) == len(port_blocks(8000, 8080)) + 4 and len(ek) == 1


# ---------------------------------------------------------------- unions

def test_rules_and_policies_are_a_deduplicated_union(w):
    from_web = {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 9090}]}
    a = netpol("a", selector={"matchLabels": {"app": "api"}}, ingress=[from_web, from_web])
    b = netpol("b", selector={"matchLabels": {"tier": "back"}},
               ingress=[from_web, {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}])
    out = w.compile(a, b)
    api, db, web = w.id["api"], w.id["db"], w.id["web"]
    assert non_host(out) == {(api, IN, web, TCP, 9090), (db, IN, web, TCP, 9090),
                             (api, IN, db, None, None), (db, IN, db, None, None)}
    assert len(out.entries) == len(keys(out)) == 6  # no duplicates; one host allow per identity
    assert out.stats["per_policy"] == {"prod/a": 1, "prod/b": 4}
    # order of the policies changes nothing
    assert w.compile(b, a).entries == out.entries


def test_excluded_pods_are_neither_selected_nor_peers():
    w = World([pod("srv", "prod", {"app": "srv"}),
               pod("hn", "prod", {"app": "cli"}, host_network=True),
               pod("done", "prod", {"app": "cli", "v": "1"}, phase="Succeeded"),
               pod("new", "prod", {"app": "cli", "v": "2"}),
               pod("ok", "prod", {"app": "cli", "v": "3"})], skip_identity=("new",))
    out = w.compile(netpol("p", selector={}, ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]))
    assert out.enforced == {(w.id["srv"], IN), (w.id["ok"], IN)}
    assert peers(out, w.id["srv"]) == {w.id["ok"]}


# ---------------------------------------------------------------- bad input

GOOD = netpol("good", selector={"matchLabels": {"app": "db"}},
              ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}])


@pytest.mark.parametrize("rule,field", [
    ({"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["web"]}]}}]},
     "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator"),
    ({"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}]},
     "spec.ingress[0].from[0].podSelector.matchExpressions[0].values"),
    ({"ports": [{"port": 0}]}, "spec.ingress[0].ports[0].port"),
    ({"ports": [{"port": 70000}]}, "spec.ingress[0].ports[0].port"),
    ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ingress[0].ports[0].protocol"),
    ({"ports": [{"port": 8080, "endPort": 80}]}, "spec.ingress[0].ports[0].endPort"),
    ({"ports": [{"port": "http", "endPort": 90}]}, "spec.ingress[0].ports[0].endPort"),
    ({"ports": [{"port": "Not_A_Name"}]}, "spec.ingress[0].ports[0].port"),
    ({"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}, "spec.ingress[0].from[0].ipBlock"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}, "spec.ingress[0].from[0].ipBlock"),
])
def test_bad_part_is_reported_narrows_to_nothing_and_others_still_compile(w, rule, field):
    bad = netpol("bad", selector={"matchLabels": {"app": "web"}}, ingress=[rule])
    good_only = w.compile(GOOD)
    out = w.compile(bad, GOOD)
    assert fields(out) == [("NetworkPolicy", "prod", "bad", field)]
    assert out.problems[0].message
    web = w.id["web"]
    # the broken (only) peer or port allows nothing, never "all"; the policy still isolates web
    assert (web, IN) in out.enforced and keys(out) - keys(good_only) == {(web, IN, HOST, None, None)}
    assert out.stats["per_policy"]["prod/bad"] == 0


def test_bad_part_only_narrows_its_rule(w):
    bad = netpol("bad", selector={"matchLabels": {"app": "web"}}, ingress=[
        {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}},
                  {"podSelector": {"matchLabels": {"app": "api"}}}],
         "ports": [{"port": 70000}, {"port": 443}]}])
    out = w.compile(bad)
    assert sorted(p.field for p in out.problems) == ["spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
                                                    "spec.ingress[0].ports[0].port"]
    assert non_host(out) == {(w.id["web"], IN, w.id["api"], TCP, 443)}


def test_every_bad_field_is_named(w):
    rules = [{"ports": [{"port": 80, "protocol": "tcp"}]},  # protocols are case-sensitive
             {"ports": [{"port": 80, "endPort": 70000}]},
             {"ports": [{"port": True}]},
             {"ports": [{"port": "8080"}]},  # a number in a string is a (bad) name, as in the API
             {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]},
             {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
             {"from": [{}]},
             {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}]},
             {"from": [{"namespaceSelector": {"matchLabels": {"env": ["prod"]}}}]}]
    out = w.compile(netpol("bad", selector={"matchLabels": {"app": "web"}}, ingress=rules), GOOD)
    assert sorted(fields(out)) == sorted(("NetworkPolicy", "prod", "bad", f) for f in [
        "spec.ingress[0].ports[0].protocol", "spec.ingress[1].ports[0].endPort", "spec.ingress[2].ports[0].port",
        "spec.ingress[3].ports[0].port", "spec.ingress[4].from[0].ipBlock", "spec.ingress[5].from[0]",
        "spec.ingress[6].from[0]", "spec.ingress[7].from[0].podSelector.matchExpressions[0].values",
        "spec.ingress[8].from[0].namespaceSelector.matchLabels.env"])
    assert peers(out, w.id["web"]) == set() and (w.id["web"], IN) in out.enforced
    assert non_host(out) == {(w.id["db"], IN, w.id["api"], TCP, 5432)}


@pytest.mark.parametrize("pol,field", [
    (netpol("bad", selector={"matchExpressions": [{"key": "app", "operator": "Like"}]}, types=["Ingress"]),
     "spec.podSelector.matchExpressions[0].operator"),
    (netpol("bad", selector={"matchLabels": {"app": 3}}), "spec.podSelector.matchLabels.app"),
    ({"metadata": {"name": "bad", "namespace": "prod"}, "spec": "nope"}, "spec"),
    ({"metadata": {"name": "bad"}, "spec": {"podSelector": {}}}, "metadata.namespace"),
])
def test_unusable_policy_is_skipped_whole(w, pol, field):
    out = w.compile(pol, GOOD)
    assert [p.field for p in out.problems] == [field] and out.problems[0].name == "bad"
    assert out.enforced == {(w.id["db"], IN)}
    assert non_host(out) == {(w.id["db"], IN, w.id["api"], TCP, 5432)}
    assert "prod/bad" not in out.stats["per_policy"] and out.stats["policies"] == 1


def test_bad_policy_type_is_reported_and_the_valid_one_kept(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}}, types=["Egress", "Sideways"]))
    assert fields(out) == [("NetworkPolicy", "prod", "p", "spec.policyTypes[1]")]
    assert out.enforced == {(w.id["web"], EG)}


def test_policy_types_with_no_valid_entry_fail_closed(w):
    out = w.compile(netpol("p", selector={"matchLabels": {"app": "web"}}, types=["ingress"]))
    assert fields(out) == [("NetworkPolicy", "prod", "p", "spec.policyTypes[0]")]
    assert (w.id["web"], IN) in out.enforced


# ---------------------------------------------------------------- stats and output

@pytest.mark.extension
def test_stats_and_output_shape(w):
    from meshcni.datapath.policy import build_policy

    w.cidr("203.0.113.0/24", 300)
    pols = [netpol("a", selector={"matchLabels": {"tier": "back"}},
                   ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                      {"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 80}]}]),
            netpol("b", ns="dev", selector={}, egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}],
                   types=["Egress"]),
            netpol("c", selector={"matchLabels": {"app": "web"}}, ingress=[{"ports": [{"port": 0}]}])]
    out = w.compile(*pols)
    s = out.stats
    assert s["per_policy"] == {"prod/a": 4, "dev/b": 2, "prod/c": 0}
    assert s["entries"] == len(out.entries) == 11 and s["enforced"] == len(out.enforced) == 5
    assert s["policies"] == 3 and s["problems"] == len(out.problems) == 1
    # api/db: host, web:80, 203.0.113.0/24:80; dev pods: host, UDP 53; web: host only (its port was bad)
    assert s["per_identity"] == {w.id["api"]: 3, w.id["db"]: 3, w.id["dev-web"]: 2, w.id["dev-api"]: 2,
                                 w.id["web"]: 1}
    assert sum(s["per_identity"].values()) == s["entries"]
    assert all(e.rule_id == 0 for e in out.entries)
    # deterministic order: identity, direction, peer (any first), proto, port
    ks = [(e.identity, e.direction, e.peer or -1, e.proto or -1) for e in out.entries]
    assert ks == sorted(ks)
    pk, pv, ek, ev = build_policy(out.entries, out.enforced)
    assert len(pk) == 11 and len(ek) == 5
