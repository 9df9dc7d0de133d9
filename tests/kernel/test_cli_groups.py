# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni bpf ...`` (the grouped spellings), ``identity list`` with labels, ``status --verbose``, on real pins.

Services go in through ServiceDatapath.apply and policy/ipcache through
PolicyDatapath, as the agent writes them; the CLI runs as a subprocess. The
old flat spellings must print exactly what the new ones print.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from meshcni.datapath.policy import EGRESS, INGRESS, PolicyEntry, PolicyProgram
from meshcni.datapath.services import Backend, Frontend, Service, ServiceDatapath

pytestmark = pytest.mark.kernel
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRDS = os.path.join(REPO, "deploy", "crds")

POD, PEER, CIDR_ID = 16777300, 16777400, 300
SERVICES = [
    Service("shop/web:http/TCP/v4", [Frontend("10.96.0.10", 80, "tcp")],
            [Backend("10.0.1.1", 8080), Backend("10.0.1.2", 8080)], svc_id=7, affinity_timeout=30),
    Service("shop/dns:dns/UDP/v6", [Frontend("fd00:96::a", 53, "udp")], [Backend("fd00::5", 5353)], svc_id=3),
    Service("shop/empty:http/TCP/v4", [Frontend("10.96.0.11", 443, "tcp")], [], svc_id=8),
]


def cli(*args, check=True):
    """The CLI as an operator runs it; no kubeconfig of this machine leaks in (HOME, KUBECONFIG)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(MESHCNI_BPF_ROOT="/nonexistent-default-root", HOME="/nonexistent-home",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    pr = subprocess.run([sys.executable, "-m", "meshcni.cli", *args], capture_output=True, text=True,
                        timeout=120, env=env)
    if check:
        assert pr.returncode == 0, pr.stderr
    return pr


@pytest.fixture
def run(capsys):
    """The CLI in this process (a subprocess costs a second of imports): stdout of ``main(args)``, which must be 0."""
    from meshcni.cli import main

    def go(*args):
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out
    return go


def table(text):
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines() if line.strip()]


@pytest.fixture
def pins(pin_root):
    svc = ServiceDatapath(pin_root)
    svc.apply(SERVICES)
    prog = PolicyProgram(pin_root)
    pol = prog.datapath()
    pol.set_ipcache({"10.0.0.1/32": POD, "fd00::1/128": POD, "10.0.1.1/32": PEER, "192.168.0.0/16": CIDR_ID,
                     "172.16.0.10/32": 1, "0.0.0.0/0": 2})
    pol.apply([PolicyEntry(POD, INGRESS, peer=PEER, proto=6, port=80, rule_id=7),
               PolicyEntry(POD, EGRESS, peer=CIDR_ID)], [(POD, INGRESS), (POD, EGRESS)])
    yield pin_root
    pol.close()
    prog.close()
    svc.close()


def test_bpf_lb_list(pins):
    got = json.loads(cli("bpf", "lb", "list", "--bpf-root", pins, "-o", "json").stdout)
    assert [(r["service_id"], r["frontend"], [(b["addr"], b["port"]) for b in r["backends"]], r["flags"])
            for r in got] == [
        (3, "[fd00:96::a]:53/UDP", [("fd00::5", 5353)], []),
        (7, "10.96.0.10:80/TCP", [("10.0.1.1", 8080), ("10.0.1.2", 8080)], ["affinity"]),
        (8, "10.96.0.11:443/TCP", [], []),
    ]
    assert got[1]["affinity_timeout_s"] == 30
    rows = table(cli("bpf", "lb", "list", "--bpf-root", pins).stdout)
    assert rows[0] == ["SERVICE ID", "FRONTEND", "BACKENDS"]
    assert ["7", "10.96.0.10:80/TCP", "10.0.1.1:8080, 10.0.1.2:8080"] in rows
    assert ["8", "10.96.0.11:443/TCP", "(none: refused)"] in rows
    wide = table(cli("bpf", "lb", "list", "--bpf-root", pins, "-o", "wide").stdout)
    assert wide[0] == ["SERVICE ID", "FRONTEND", "BACKENDS", "FLAGS", "AFFINITY", "BACKEND IDS"]
    assert wide[2][:5] == ["7", "10.96.0.10:80/TCP", "10.0.1.1:8080, 10.0.1.2:8080", "affinity", "30s"]
    assert yaml.safe_load(cli("bpf", "lb", "list", "--bpf-root", pins, "-o", "yaml").stdout) == got
    bare = cli("bpf", "lb", "list", "--bpf-root", pins, "--no-headers").stdout
    assert table(bare) == rows[1:]


@pytest.mark.parametrize("old,new", [
    (("policy", "list", "--root"), ("bpf", "policy", "list", "--bpf-root")),
    (("conntrack", "list", "--root"), ("bpf", "ct", "list", "--bpf-root")),
    (("conntrack", "list", "--all", "--root"), ("bpf", "conntrack", "list", "--all", "--bpf-root")),
    (("ipcache", "list", "--root"), ("bpf", "ipcache", "list", "--bpf-root")),
    (("ipcache", "lookup", "10.0.1.1", "--root"), ("bpf", "ipcache", "lookup", "10.0.1.1", "--bpf-root")),
    (("maps", "list", "--root"), ("bpf", "maps", "list", "--bpf-root")),
    (("maps", "dump", "mc_enforce", "--root"), ("bpf", "maps", "dump", "mc_enforce", "--bpf-root")),
    (("drops", "--root"), ("bpf", "drops", "--bpf-root")),
], ids=lambda a: " ".join(a[:-1]))
def test_old_and_new_spellings_print_the_same(pins, run, old, new):
    for extra in ((), ("-o", "json")) if old[0] not in ("maps",) or old[1] == "list" else ((),):
        if old[1] == "lookup" and extra:
            continue
        a, b = run(*old, pins, *extra), run(*new, pins, *extra)
        if old[0] == "maps" and old[1] == "list":  # entry counts of LRU maps may move between two reads
            a, b = re.sub(r"\d+ entries", "N entries", a), re.sub(r"\d+ entries", "N entries", b)
            a, b = re.sub(r'"entries": \d+', "N", a), re.sub(r'"entries": \d+', "N", b)
        assert a == b and a


def test_every_list_takes_every_format(pins, run):
    for cmd in (("bpf", "lb", "list"), ("bpf", "ipcache", "list"), ("bpf", "policy", "list"), ("bpf", "ct", "list"),
                ("bpf", "maps", "list"), ("bpf", "drops"), ("identity", "list", "--no-labels")):
        doc = json.loads(run(*cmd, "--bpf-root", pins, "-o", "json"))
        assert yaml.safe_load(run(*cmd, "--bpf-root", pins, "-o", "yaml")) == doc, cmd
        t, w = run(*cmd, "--bpf-root", pins), run(*cmd, "--bpf-root", pins, "-o", "wide")
        nh = run(*cmd, "--bpf-root", pins, "--no-headers")
        first = t.splitlines()[0]
        assert first.isupper() or first.startswith("NAME"), (cmd, first)
        assert w.splitlines()[0].startswith(first.split("   ")[0]), cmd
        if cmd[1] not in ("maps", "ct"):  # LRU entry counts and expiries move between reads
            assert table(nh) == [r for r in table(t) if not all(c.isupper() for c in r)], cmd


# ---------------------------------------------------------------- identity list with labels


@pytest.fixture
def api(tmp_path):
    from kubernetes import client, config

    from meshcni.apiserver import APIServer
    with APIServer(crd_dir=CRDS) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
        c = config.new_client_from_config(config_file=kc)
        client.CoreV1Api(c).create_namespace({"metadata": {"name": "shop"}})
        custom = client.CustomObjectsApi(c)
        custom.create_namespaced_custom_object("mesh-cni.dev", "v1alpha1", "shop", "identities", {
            "apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Identity", "metadata": {"name": "id-web"},
            "spec": {"id": POD, "namespaceLabels": {"kubernetes.io/metadata.name": "shop"},
                     "podLabels": {"app": "web", "tier": "fe"}}})
        custom.create_cluster_custom_object("mesh-cni.dev", "v1alpha1", "cidridentities", {
            "apiVersion": "mesh-cni.dev/v1alpha1", "kind": "CIDRIdentity", "metadata": {"name": "cidr-192-168-0-0-16"},
            "spec": {"id": CIDR_ID, "cidr": "192.168.0.0/16", "cidrPrefixes": ["192.168.0.0/16"]}})
        yield kc
        c.close()


def test_identity_list_names_identities_from_the_api_server(pins, api, tmp_path):
    nosock = str(tmp_path / "no-agent.sock")
    rows = table(cli("identity", "list", "--bpf-root", pins, "--socket", nosock, "--kubeconfig", api).stdout)
    assert rows[0] == ["IDENTITY", "NAME", "KIND", "PREFIXES", "EXAMPLE"]
    assert [str(POD), "ns=shop app=web,tier=fe", "pod", "2", "10.0.0.1/32 (+1)"] in rows
    assert [str(CIDR_ID), "cidr=192.168.0.0/16", "cidr", "1", "192.168.0.0/16"] in rows
    assert [str(PEER), "-", "pod", "1", "10.0.1.1/32"] in rows  # no Identity object for it
    assert ["1", "host", "reserved", "1", "172.16.0.10/32"] in rows
    doc = json.loads(cli("identity", "list", "--bpf-root", pins, "--socket", nosock, "--kubeconfig", api,
                         "-o", "json").stdout)
    by = {r["identity"]: r for r in doc}
    assert by[POD]["labels"]["podLabels"] == {"app": "web", "tier": "fe"} and by[POD]["labels_from"] == "apiserver"
    assert by[PEER]["labels"] is None and by[PEER]["labels_from"] is None
    wide = table(cli("identity", "list", "--bpf-root", pins, "--socket", nosock, "--kubeconfig", api,
                     "-o", "wide").stdout)
    # CLUSTER (-): the API server does not know the local cluster's name
    assert [str(POD), "ns=shop app=web,tier=fe", "pod", "2", "10.0.0.1/32 (+1)", "shop/id-web", "-",
            "apiserver"] in wide
    # neither source reachable: "-", and the command still succeeds
    rows = table(cli("identity", "list", "--bpf-root", pins, "--socket", nosock,
                     "--kubeconfig", str(tmp_path / "missing")).stdout)
    assert [str(POD), "-", "pod", "2", "10.0.0.1/32 (+1)"] in rows


# ---------------------------------------------------------------- status --verbose


def test_status_verbose_sees_the_datapath(pins, api, tmp_path, cgroup2_child):
    from meshcni.agent.localapi import LocalAPI
    from meshcni.datapath.socklb import SockLB
    sock = str(tmp_path / "agent.sock")
    prog = PolicyProgram(pins)
    lb = SockLB(pins)
    lb.attach(cgroup2_child)
    agent = LocalAPI(sock, status=lambda: {
        "node": "n1", "ready": True, "podCIDRs": ["10.0.0.0/24"], "endpoints": 0,
        "services": {"services": 3, "backends": 3, "seconds": 0.002, "at": 0}, "ipcache": 6,
        "policy": {"entries": 2, "enforced": 2, "failClosed": 0}, "informers": {}}).start()
    try:
        before = cli("status", "--verbose", "--socket", sock, "--bpf-root", pins, "--kubeconfig", api).stdout
        assert "tc programs: NOT PINNED" in before
        prog.pin_programs(pins)
        out = cli("status", "--verbose", "--socket", sock, "--bpf-root", pins, "--kubeconfig", api).stdout
        assert "node:        n1 (ready)" in out
        assert re.search(r"^socket LB:   cgroup \d+: 8 links$", out, re.M), out
        assert "tc programs: pinned (mc_from_pod, mc_to_pod)" in out
        assert re.search(r"^API server:  reachable at http://127\.0\.0\.1:\d+ ", out, re.M), out
        assert "reconcile:   services: 3 services, 3 backends" in out
        assert "reconcile:   policy: enforced 2, entries 2, failClosed 0" in out
        doc = json.loads(cli("status", "--verbose", "--socket", sock, "--bpf-root", pins, "--kubeconfig", api,
                             "-o", "json").stdout)
        assert doc["node"] == "n1" and doc["agent"]["reachable"] and doc["apiServer"]["reachable"]
        (cg,) = doc["datapath"]["socketLB"]
        assert cg["cgroupId"] == os.stat(cgroup2_child).st_ino and len(cg["programs"]) == 8
        assert doc["datapath"]["tcPrograms"] == {"mc_from_pod": True, "mc_to_pod": True}
    finally:
        agent.stop()
        lb.detach(cgroup2_child)
        lb.close()
        prog.close()
