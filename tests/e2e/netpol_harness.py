# SPDX-License-Identifier: MIT OR Apache-2.0
"""What the NetworkPolicy truth-table suites share (test_netpol_truth: one cluster with external
hosts; test_mesh_netpol: two meshed clusters): the pods they run, the probe workers, making labels
and policies what a scenario says, probing until the table matches, and printing what differs."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import time

from testutil import netpol_manifest as np  # noqa: F401  (the scenarios' spelling)

PROBE_TIMEOUT = 0.8
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# every pod's container ports; a and b also name "web" on different numbers (named-port resolution is per pod)
NAMED = tuple((f"serve-{p}-{pr.lower()}", pr, p) for p in (80, 81) for pr in ("TCP", "UDP"))
WEB = {"a": 80, "b": 81}


def pod_manifest(ns, name, node):
    containers = [{"name": "app", "image": "sim", "ports": [
        {"name": n, "containerPort": num, "protocol": pr} for n, pr, num in NAMED]}]
    if name in WEB:
        containers.append({"name": "sidecar", "image": "sim", "ports": [
            {"name": "web", "containerPort": WEB[name], "protocol": "TCP"}]})
    return {"metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": {"nodeName": node, "containers": containers}}


def ready_ip(core, ns, name):
    """The pod's IP once it runs and is Ready, else None (a poll predicate)."""
    o = core.read_namespaced_pod(name, ns)
    ready = any(c.type == "Ready" and c.status == "True" for c in o.status.conditions or [])
    return o.status.pod_ip if o.status.phase == "Running" and ready else None


class Prober:
    """One persistent probe worker; rounds are JSON lines both ways."""

    def __init__(self, key, argv):
        self.key = key
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO)
        first = self.proc.stdout.readline()
        if json.loads(first or "null") != "ready":
            raise AssertionError(f"prober {key} did not start: {self.proc.stderr.read()[-2000:]}")
        self.port = 20000

    def send(self, probes):
        # a fresh source port per probe: no probe meets the conntrack entry of an earlier one
        out = []
        for ip, port, proto, expect in probes:
            self.port = 20000 if self.port >= 32000 else self.port + 1
            out.append([ip, port, proto, self.port, expect])
        self.proc.stdin.write(json.dumps(out) + "\n")
        self.proc.stdin.flush()

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"prober {self.key} died: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def probe(probers, cells, answer):
    """One round: every (source, destination, port, protocol) cell probed from its source's worker
    (``probers[source.key]``, all workers in parallel); ``answer(destination)`` is the name the
    destination's server answers with. The results, in cell order."""
    by_src = {}
    for i, (s, d, port, pr) in enumerate(cells):
        by_src.setdefault(s.key, []).append((i, (d.ip, port, pr, answer(d))))
    for key, items in by_src.items():
        probers[key].send([x for _, x in items])
    got = [None] * len(cells)
    for key, items in by_src.items():
        for (i, _), r in zip(items, probers[key].recv()):
            got[i] = r
    return got


def check(probe_round, cells, expect, deadline):
    """Probe until every cell is what ``expect`` says; returns (seconds to converge, mismatches)."""
    t0 = time.monotonic()
    while True:
        got = probe_round(cells)
        bad = [(c, e, g) for c, e, g in zip(cells, expect, got) if (g == "ok") != e or g not in ("ok", "timeout")]
        if not bad or time.monotonic() - t0 > deadline:
            return time.monotonic() - t0, bad


def relabel(have, want, patch):
    """Labels made what ``want`` says (key -> labels) where ``have`` (key -> labels, updated) differs;
    ``patch(key, labels_patch)`` sends a merge patch that also removes the labels no longer wanted."""
    for key, lb in want.items():
        if have[key] != lb:
            body = {k: None for k in have[key] if k not in lb}
            body.update(lb)
            patch(key, {"metadata": {"labels": body}})
            have[key] = dict(lb)


def sync_policies(netv1, have, policies):
    """The NetworkPolicies made exactly ``policies`` (manifests), live: the gone deleted, the new
    created, the changed replaced. ``have``: (namespace, name) -> manifest as applied, updated."""
    want = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in policies}
    for key in [k for k in have if k not in want]:
        netv1.delete_namespaced_network_policy(key[1], key[0])
        del have[key]
    for key, pol in want.items():
        body = copy.deepcopy(pol)
        if key not in have:
            netv1.create_namespaced_network_policy(key[0], body)
        elif have[key] != pol:
            cur = netv1.read_namespaced_network_policy(key[1], key[0])
            body["metadata"]["resourceVersion"] = cur.metadata.resource_version
            netv1.replace_namespaced_network_policy(key[1], key[0], body)
        have[key] = copy.deepcopy(pol)


def table(bad):
    rows = [("SOURCE", "DESTINATION", "PORT", "EXPECTED", "GOT")]
    for (s, d, port, pr), e, g in sorted(bad, key=lambda b: (b[0][0].key, b[0][1].key, b[0][2], b[0][3])):
        rows.append((s.key, d.key, f"{port}/{pr}", "allow" if e else "deny", g))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows)


def ml(**labels):
    return {"matchLabels": labels}


def expr(*exprs):
    return {"matchExpressions": [dict(key=k, operator=op, **({"values": list(v)} if v else {}))
                                 for k, op, v in exprs]}
