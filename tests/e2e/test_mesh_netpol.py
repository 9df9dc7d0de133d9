# SPDX-License-Identifier: MIT OR Apache-2.0
"""NetworkPolicy across meshed clusters: truth tables on real packets spanning two simulated clusters.

east and west (one node each, agents and controllers, one state root so their nodes share the
underlay) are meshed by `sim mesh`; each has namespaces x and y (labels ``ns=<name>``) with pods
a and b (labels ``pod=<name>``) serving TCP and UDP on 80 and 81. For each scenario the harness
makes both clusters' NetworkPolicies and labels (remote pods' and namespaces' included) what the
scenario says, live, then probes every pod pair of both clusters on both ports and protocols (256
cells) from persistent workers inside the pods, until the table matches what the independent
reference evaluator (``netpol_reference.allowed_mesh``, the cluster rule) says or a deadline
passes, and prints the cells that differ.

Everything in between is real: each controller mirrors the other cluster's Pods and Namespaces
into RemoteIdentities, each agent puts their addresses in its ipcache and compiles the cluster
rule; the last test removes the mesh and checks that nothing of the other cluster is left in an
agent's ipcache and that its pods are admitted nowhere.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

import pytest
from kubernetes import client, config

from meshcni.sim import topology
from meshcni.sim.cluster import read_config
from meshcni.sim.kubelet import in_pod_argv, read_pod_record

import netpol_reference as ref
from netpol_harness import (HERE, NAMED, PROBE_TIMEOUT, REPO, Prober, check, expr, ml, np, pod_manifest, probe,
                            ready_ip, relabel, sync_policies, table)
from testutil import eventually, sim

pytestmark = pytest.mark.e2e

CLUSTERS = ("east", "west")
NAMESPACES = ("x", "y")
PODS = ("a", "b")
PORTS = (80, 81)
PROTOS = ("TCP", "UDP")
CL = "mesh-cni.dev/cluster"
G, V = "mesh-cni.dev", "v1alpha1"
DEADLINE = 30.0


def wait(pred, timeout=60.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.2)


class MeshNet:
    def __init__(self, root):
        self.root = root
        self.core, self.netv1, self.custom, self.nodes = {}, {}, {}, {}
        self.ips, self.probers = {}, {}
        self.policies = {c: {} for c in CLUSTERS}
        self.pod_labels = {}      # (cluster, ns, pod) -> labels
        self.ns_labels = {}       # (cluster, ns) -> labels
        self.meshed = True

    def up(self):
        for c in CLUSTERS:
            sim(self.root, "up", "--name", c, "--nodes", "1")
            cfg = client.Configuration()
            config.load_kube_config(config_file=os.path.join(self.root, c, "kubeconfig"), client_configuration=cfg)
            api = client.ApiClient(cfg)
            self.core[c], self.netv1[c] = client.CoreV1Api(api), client.NetworkingV1Api(api)
            self.custom[c] = client.CustomObjectsApi(api)
            rc = read_config(str(self.root), c)
            self.nodes[c] = topology.plan_nodes(c, rc.index, rc.nodes, rc.pod_cidr, str(self.root))
            for ns in NAMESPACES:
                self.core[c].create_namespace({"metadata": {"name": ns, "labels": {"ns": ns}}})
                self.ns_labels[(c, ns)] = {"ns": ns}
                for p in PODS:
                    self.core[c].create_namespaced_pod(ns, pod_manifest(ns, p, self.nodes[c][0].name))
                    self.pod_labels[(c, ns, p)] = {"pod": p}
        for (c, ns, p) in self.pod_labels:
            self.ips[(c, ns, p)] = wait(lambda c=c, ns=ns, p=p: ready_ip(self.core[c], ns, p),
                                        what=f"pod {c}/{ns}/{p} running")
        sim(self.root, "mesh", *CLUSTERS)
        for here, other in ((CLUSTERS[0], CLUSTERS[1]), (CLUSTERS[1], CLUSTERS[0])):
            wait(lambda: len(self.remote_ips(here, other)) == 4, what=f"{other}'s pods' identities in {here}")
        worker = [sys.executable, os.path.join(HERE, "netpol_prober.py"), str(PROBE_TIMEOUT)]
        for (c, ns, p) in self.pod_labels:
            rec = read_pod_record(os.path.join(str(self.root), c, "pods"), ns, p)
            assert rec, f"no kubelet record for {c}/{ns}/{p}"
            self.probers[f"{c}:{ns}/{p}"] = Prober(f"{c}:{ns}/{p}", in_pod_argv(rec, worker))

    def remote_ips(self, here, other):
        out = set()
        for o in self.custom[here].list_cluster_custom_object(G, V, "remoteidentities")["items"]:
            if o["spec"]["cluster"] == other:
                out |= {ip for p in o["spec"]["pods"] for ip in p["ips"]}
        return out

    def down(self):
        for p in self.probers.values():
            p.close()
        sim(self.root, "down", "--all", check=False)

    # -- the state a scenario asks for, applied live --

    def set_state(self, policies=None, pod_labels=None, ns_labels=None):
        """``policies``: cluster -> [manifests]; labels keyed "cluster:ns[/pod]"; unnamed ones go back to
        their defaults."""
        want_ns = {k: {"ns": k[1]} for k in self.ns_labels}
        for k, lb in (ns_labels or {}).items():
            c, ns = k.split(":")
            want_ns[(c, ns)] = lb
        relabel(self.ns_labels, want_ns, lambda k, body: self.core[k[0]].patch_namespace(k[1], body))
        want_pods = {k: {"pod": k[2]} for k in self.pod_labels}
        for k, lb in (pod_labels or {}).items():
            c, rest = k.split(":")
            ns, p = rest.split("/")
            want_pods[(c, ns, p)] = lb
        relabel(self.pod_labels, want_pods, lambda k, body: self.core[k[0]].patch_namespaced_pod(k[2], k[1], body))
        for c in CLUSTERS:
            sync_policies(self.netv1[c], self.policies[c], (policies or {}).get(c, []))

    # -- what the reference says --

    def worlds(self):
        out = {}
        for c in CLUSTERS:
            others = {o: {ns: dict(self.ns_labels[(o, ns)]) for ns in NAMESPACES}
                      for o in CLUSTERS if o != c and self.meshed}
            out[c] = ref.World(namespaces={ns: dict(self.ns_labels[(c, ns)]) for ns in NAMESPACES},
                               policies=[copy.deepcopy(p) for p in self.policies[c].values()],
                               cluster=c, remote_namespaces=others)
        return out

    def pods(self):
        return [ref.Pod(ns, p, tuple(sorted(lb.items())), self.ips[(c, ns, p)], self.nodes[c][0].name,
                        NAMED, cluster=c) for (c, ns, p), lb in self.pod_labels.items()]

    def cells(self):
        ps = self.pods()
        return [(s, d, port, pr) for s in ps for d in ps for port in PORTS for pr in PROTOS]

    def expected(self, cells):
        worlds = self.worlds()
        # pods of two clusters reach each other only while meshed: the routes to the other
        # cluster's pod CIDRs come from the Cluster objects, as the identities do
        return [(s.cluster == d.cluster or self.meshed) and ref.allowed_mesh(worlds, s, d, port, pr)
                for s, d, port, pr in cells]

    # -- probing --

    def probe(self, cells):
        # the pod server answers with namespace/name (the same name in both clusters: addressed by IP)
        return probe(self.probers, cells, lambda d: f"{d.namespace}/{d.name}")

    def check(self, cells, expect, deadline=DEADLINE):
        return check(self.probe, cells, expect, deadline)


# ------------------------------------------------------------------ scenarios

def cl(name, **labels):
    return {"matchLabels": {CL: name, **labels}}


ALL_NS = {"namespaceSelector": {}}

# (name, {cluster: policies}, pod label overrides, namespace label overrides), applied in order
SCENARIOS = [
    ("meshed, no policies: every pod of both clusters connects", {}, None, None),
    ("label only (all namespaces, any pod) admits local pods only, never west's",
     {"east": [np("x", "p", ml(pod="a"), ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {}}]}])]},
     None, None),
    ("same-namespace podSelector {} admits east/x only",
     {"east": [np("x", "p", ml(pod="a"), ingress=[{"from": [{"podSelector": {}}]}])]}, None, None),
    ("select by cluster: west's pods of the same namespace (x), not east's",
     {"east": [np("x", "p", ml(pod="a"), ingress=[{"from": [{"podSelector": cl("west")}]}])]}, None, None),
    ("cluster + pod label + namespaceSelector on west's own labels: only west/y/b",
     {"east": [np("x", "p", ml(pod="a"), ingress=[{"from": [{"podSelector": cl("west", pod="b"),
                                                           "namespaceSelector": ml(ns="y")}]}])]}, None, None),
    ("Exists: every pod of every cluster, on TCP 80 only",
     {"east": [np("x", "p", ingress=[{"from": [{"podSelector": expr((CL, "Exists", ())), **ALL_NS}],
                                      "ports": [{"port": 80}]}])]}, None, None),
    ("NotIn [east]: remote pods only, any namespace",
     {"east": [np("y", "p", ingress=[{"from": [{"podSelector": expr((CL, "NotIn", ("east",))), **ALL_NS}]}])]},
     None, None),
    ("the local cluster by name: east only",
     {"east": [np("y", "p", ingress=[{"from": [{"podSelector": cl("east"), **ALL_NS}]}])]}, None, None),
    ("ipBlock over every pod CIDR admits no pod of either cluster",
     {"east": [np("x", "p", ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}])]}, None, None),
    ("egress from east/x to west's pods on UDP 81 only",
     {"east": [np("x", "eg", egress=[{"to": [{"podSelector": cl("west"), **ALL_NS}],
                                      "ports": [{"port": 81, "protocol": "UDP"}]}], types=["Egress"])]}, None, None),
    ("policies on both sides: west/y/b admits only east's pods, east/x/a only west's",
     {"west": [np("y", "w", ml(pod="b"), ingress=[{"from": [{"podSelector": cl("east"), **ALL_NS}]}])],
      "east": [np("x", "e", ml(pod="a"), ingress=[{"from": [{"podSelector": cl("west"), **ALL_NS}]}])]},
     None, None),
    ("allow from west's role=db: nobody has it yet",
     {"east": [np("x", "db", ingress=[{"from": [{"podSelector": cl("west", role="db"), **ALL_NS}]}])]},
     None, None),
    ("a remote pod relabelled live: west/y/a becomes role=db",
     {"east": [np("x", "db", ingress=[{"from": [{"podSelector": cl("west", role="db"), **ALL_NS}]}])]},
     {"west:y/a": {"pod": "a", "role": "db"}}, None),
    ("relabelled back out of the selection",
     {"east": [np("x", "db", ingress=[{"from": [{"podSelector": cl("west", role="db"), **ALL_NS}]}])]},
     {"west:y/a": {"pod": "a", "role": "web"}}, None),
    ("a remote namespace relabelled live: west's y gets team=blue",
     {"east": [np("x", "team", ingress=[{"from": [{"podSelector": cl("west"),
                                                  "namespaceSelector": ml(team="blue")}]}])]},
     None, {"west:y": {"ns": "y", "team": "blue"}}),
    ("a remote pod claiming east's cluster label is still west's",
     {"east": [np("x", "liar", ingress=[{"from": [{"podSelector": cl("east"), **ALL_NS}]}])]},
     {"west:x/b": {"pod": "b", CL: "east"}}, None),
    ("back to no policies", {}, None, None),
]


@pytest.fixture(scope="module")
def mnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshnetpol")
    n = MeshNet(root)
    try:
        n.up()
        yield n
    finally:
        n.down()
        assert topology.underlay_ns(str(root)) not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                                     text=True).stdout


def run_scenarios(net, scenarios):
    failures, timings = [], []
    for name, policies, pod_labels, ns_labels in scenarios:
        t0 = time.monotonic()
        net.set_state(policies, pod_labels, ns_labels)
        cells = net.cells()
        expect = net.expected(cells)
        took, bad = net.check(cells, expect)
        timings.append((name, round(time.monotonic() - t0, 2), sum(expect), len(expect)))
        if bad:
            failures.append(f"scenario {name!r}: {len(bad)} of {len(cells)} cells differ\n{table(bad)}")
    print("\n".join(f"{t:6.2f}s  {a:4d}/{n} allowed  {s}" for s, t, a, n in timings))
    return failures, timings


def test_truth_tables_across_clusters(mnet, record_property):
    failures, timings = run_scenarios(mnet, SCENARIOS)
    record_property("scenario_seconds", json.dumps(timings))
    assert not failures, "\n\n".join(failures)


def ipcache_lookup(net, cluster, ip):
    node = net.nodes[cluster][0].name
    p = subprocess.run([sys.executable, "-m", "meshcni.cli", "bpf", "ipcache", "lookup", ip, "--bpf-root",
                        os.path.join(str(net.root), cluster, "nodes", node, "bpf", "meshcni")],
                       capture_output=True, text=True, cwd=REPO)
    return p.stdout.strip()


def agent_get(net, cluster, path):
    import http.client
    import socket as so
    node = net.nodes[cluster][0].name

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = so.socket(so.AF_UNIX, so.SOCK_STREAM)
            self.sock.connect(os.path.join(str(net.root), cluster, "nodes", node, "run", "agent.sock"))
    c = Conn("agent", timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    assert r.status == 200, (path, r.status)
    return json.loads(r.read())


def test_remote_pods_are_named_by_cluster_in_the_agent(mnet):
    """The agent's pod-name view (what `meshcni monitor` prints) names remote pods with their cluster,
    and the ipcache holds each remote pod under its RemoteIdentity's id."""
    mnet.set_state({})
    ip = mnet.ips[("west", "y", "b")]
    names = wait(lambda: (v := agent_get(mnet, "east", "/v1/ips")).get(ip) and v, what="west's pods in /v1/ips")
    assert names[ip] == "west:y/b" and names[mnet.ips[("east", "x", "a")]] == "x/a"
    rid = next(o["spec"]["id"] for o in mnet.custom["east"].list_cluster_custom_object(G, V, "remoteidentities")
               ["items"] if ip in {i for p in o["spec"]["pods"] for i in p["ips"]})
    assert ipcache_lookup(mnet, "east", ip) == f"{ip}: identity {rid}"
    # the other cluster's node is remote-node (6), as the local cluster's other nodes are
    wip = mnet.nodes["west"][0].ip
    assert ipcache_lookup(mnet, "east", wip) == f"{wip}: identity 6"


def test_monitor_names_the_remote_pod_and_cluster_of_a_drop(mnet):
    mnet.set_state({"east": [np("x", "deny", ml(pod="a"), types=["Ingress"])]})
    pods = {p.key: p for p in mnet.pods()}
    src, dst = pods["west:y/b"], pods["east:x/a"]
    cells = [(src, dst, 81, "TCP")]
    took, bad = mnet.check(cells, [False])
    assert not bad, table(bad)
    node = mnet.nodes["east"][0].name
    base = os.path.join(str(mnet.root), "east", "nodes", node)
    mon = subprocess.Popen([sys.executable, "-m", "meshcni.cli", "monitor", "-o", "json", "--timeout", "5",
                            "--bpf-root", os.path.join(base, "bpf", "meshcni"),
                            "--socket", os.path.join(base, "run", "agent.sock")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        time.sleep(1.0)
        mnet.probe(cells)
        out, err = mon.communicate(timeout=30)
    finally:
        mon.kill()
    assert mon.returncode == 0, err
    evs = [json.loads(x) for x in out.splitlines() if x.strip()]
    mine = [e for e in evs if (e["src_pod"], e["dst_pod"], e["dport"]) == ("west:y/b", "x/a", 81)]
    assert mine, evs
    assert mine[0]["src_cluster"] == "west" and mine[0]["src_identity"] >= 2 ** 31
    mnet.set_state({})


def test_cluster_removed_admits_nothing_of_it(mnet):
    """Last: the mesh goes away. Each cluster's RemoteIdentities of the other go, its agents' ipcache
    forgets the other's pods, and a policy that admitted them admits nothing of that cluster."""
    pol = {"east": [np("x", "p", ingress=[{"from": [{"podSelector": expr((CL, "Exists", ())), **ALL_NS}]}])]}
    failures, _ = run_scenarios(mnet, [("before: Exists admits both clusters", pol, None, None)])
    assert not failures, "\n\n".join(failures)
    sim(mnet.root, "unmesh", *CLUSTERS)
    mnet.meshed = False
    for here, other in (("east", "west"), ("west", "east")):
        wait(lambda: not mnet.remote_ips(here, other), what=f"{other}'s identities gone from {here}")
        for key, ip in mnet.ips.items():
            if key[0] == other:
                wait(lambda: "no prefix covers it" in ipcache_lookup(mnet, here, ip),
                     what=f"{other}'s pod {ip} gone from {here}'s ipcache")
    failures, _ = run_scenarios(mnet, [("after: only east's own pods", pol, None, None)])
    assert not failures, "\n\n".join(failures)
