# SPDX-License-Identifier: MIT OR Apache-2.0
"""The ``meshcni`` command tree: groups, hidden aliases, help text, output formats, label sources.

No kernel: the parser is walked as built; commands that need the agent or an
API server get the real ones (``LocalAPI`` on a unix socket, ``APIServer``
on loopback). The kernel-tier twin (tests/kernel/test_cli_groups.py) runs
the map readers on real pins.
"""
import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from meshcni import layout
from meshcni.cli import build_parser, main
from meshcni.cli.output import Column, Table, emit
from meshcni.cli.parser import plain, walk

pytestmark = pytest.mark.pure
REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

VISIBLE = {"version", "status", "service", "endpoint", "identity", "bpf", "monitor", "agent", "controller",
           "apiserver", "sim", "cni", "demo", "uninstall"}
OLD = {"maps", "ipcache", "policy", "conntrack", "drops"}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _commands(p):
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return sub


# ---------------------------------------------------------------- the tree


def test_groups_are_the_cilium_dbg_ones(parser):
    top = _commands(parser)
    assert set(top.visible()) == VISIBLE and set(top.choices) == VISIBLE | OLD
    bpf = _commands(top.choices["bpf"])
    assert set(bpf.visible()) == {"lb", "ipcache", "policy", "ct", "maps", "drops"}
    paths = {" ".join(path) for path, _, hidden in walk(parser) if not hidden}
    for cmd in ("bpf lb list", "bpf ipcache list", "bpf ipcache lookup", "bpf policy list", "bpf ct list",
                "bpf maps list", "bpf maps create", "bpf maps dump", "bpf drops", "service list", "endpoint list",
                "identity list", "status", "monitor", "version", "agent", "controller", "apiserver", "sim up",
                "sim get", "cni install", "cni uninstall", "demo", "uninstall"):
        assert cmd in paths, cmd


def _parsed(parser, argv):
    ns = vars(parser.parse_args(argv))
    fn = ns.pop("fn")
    # which sub-command dest was filled depends on the path, not on what runs
    return getattr(fn, "__qualname__", fn), {k: v for k, v in ns.items() if not k.endswith("_cmd") and k != "cmd"}


@pytest.mark.parametrize("old,new", [
    ("policy list --root /r -o json", "bpf policy list --bpf-root /r -o json"),
    ("conntrack list --root /r --all", "bpf ct list --bpf-root /r --all"),
    ("bpf conntrack list --root /r", "bpf ct list --bpf-root /r"),
    ("ipcache lookup 10.0.0.1 --root /r", "bpf ipcache lookup 10.0.0.1 --bpf-root /r"),
    ("ipcache list --root /r -o json", "bpf ipcache list --bpf-root /r -o json"),
    ("maps dump mc_ct --root /r", "bpf maps dump mc_ct --bpf-root /r"),
    ("maps list --root /r", "bpf maps list --bpf-root /r"),
    ("maps create --root /r", "bpf maps create --bpf-root /r"),
    ("drops --follow --root /r", "bpf drops --follow --bpf-root /r"),
    ("monitor --root /r --agent-socket /s", "monitor --bpf-root /r --socket /s"),
    ("status --agent-socket /s", "status --socket /s"),
    ("service list --agent-socket /s", "service list --socket /s"),
    ("identity list --root /r --agent-socket /s", "identity list --bpf-root /r --socket /s"),
    ("-v status", "--log-level debug status"),
    ("cni install --bin-dir /b --conf-dir /c --agent-socket /s --data-dir /d --root /r --subnet 10.0.0.0/24",
     "cni install --cni-bin-dir /b --cni-conf-dir /c --socket /s --ipam-dir /d --bpf-root /r --subnet 10.0.0.0/24"),
    ("cni uninstall --bin-dir /b --conf-dir /c", "cni uninstall --cni-bin-dir /b --cni-conf-dir /c"),
    ("agent --node-name n --root /r --bin-dir /b --conf-dir /c --agent-socket /s --data-dir /d",
     "agent --node-name n --bpf-root /r --cni-bin-dir /b --cni-conf-dir /c --socket /s --ipam-dir /d"),
    ("apiserver --kubeconfig /k --service-cluster-ip-range 10.0.0.0/16",
     "apiserver --write-kubeconfig /k --service-cidr 10.0.0.0/16"),
])
def test_old_spellings_parse_as_the_new(parser, old, new):
    got_old, got_new = _parsed(parser, old.split()), _parsed(parser, new.split())
    assert got_old == got_new
    # and the value really arrived (not a default that happens to agree)
    assert any(v in ("/r", "/s", "/b", "/k", "debug") for v in got_new[1].values())


def test_defaults_of_an_alias_do_not_shadow_the_flag(parser, monkeypatch):
    monkeypatch.setenv("MESHCNI_BPF_ROOT", "/from/env")
    p = build_parser()
    assert p.parse_args(["bpf", "ct", "list"]).bpf_root == "/from/env"
    assert parser.parse_args(["agent", "--node-name", "n"]).cni_bin_dir == "/opt/cni/bin"


def test_uninstall_takes_the_agents_paths_with_the_agents_defaults(parser):
    paths = ("bpf_root", "cgroup_root", "cni_bin_dir", "cni_conf_dir", "socket", "state_dir", "ipam_dir")
    agent, un = vars(parser.parse_args(["agent"])), vars(parser.parse_args(["uninstall"]))
    assert {k: un[k] for k in paths} == {k: agent[k] for k in paths}
    argv = "--root /r --bin-dir /b --conf-dir /c --agent-socket /s --data-dir /d --state-dir /t".split()
    agent, un = vars(parser.parse_args(["agent"] + argv)), vars(parser.parse_args(["uninstall"] + argv))
    assert {k: un[k] for k in paths} == {k: agent[k] for k in paths} and un["bpf_root"] == "/r"
    assert parser.parse_args(["agent", "--uninstall"]).uninstall is True  # the older spelling stays


def test_uninstall_table_says_what_went():
    from meshcni.cli.uninstall import rows
    done = {"cni": {"removed": ["/b/meshcni-cni", "/c/05-meshcni.conflist"], "restored": ["/c/10-kindnet.conflist"]},
            "cgroupLinks": 4, "tcFilters": {"mcpod0": 2, "lxc1": 2}, "routes": 1, "pins": 30, "state": 2, "ipam": 0}
    got = {r["what"]: (r["removed"], r["detail"]) for r in rows(done)}
    assert got["CNI plugin and config"] == (3, "meshcni-cni, 05-meshcni.conflist, 10-kindnet.conflist (restored)")
    assert got["tc filters"] == (4, "lxc1: 2, mcpod0: 2")
    assert [r["removed"] for r in rows(done)] == [3, 4, 4, 1, 30, 2, 0]


def test_bpf_root_default_is_the_library_default():
    pin = pytest.importorskip("meshcni.bpf.pin")  # needs the extension
    from meshcni.cli.bpf import DEFAULT_BPF_ROOT
    assert DEFAULT_BPF_ROOT == pin.DEFAULT_ROOT


def test_unknown_command_lists_only_visible_names(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "'bpf'" in err and "'conntrack'" not in err and "'maps'" not in err


# ---------------------------------------------------------------- help text


def _helps(parser):
    for path, p, hidden in walk(parser):
        yield " ".join(("meshcni",) + path), p.format_help(), hidden


def test_every_help_is_plain_text(parser):
    n = 0
    for name, text, hidden in _helps(parser):
        n += 1
        assert "==SUPPRESS==" not in text, name
        assert "`" not in text, f"{name}: reST markup in --help"
        assert ":func:" not in text and ":class:" not in text, name
        assert hidden or "_daemon" not in text, name  # sim's internal command is listed nowhere
    assert n > 40


def test_top_help_lists_no_alias(parser):
    text = parser.format_help()
    listed = set(re.findall(r"^    (\w+)\s", text, re.M))
    assert listed == VISIBLE
    assert text.splitlines()[0].endswith(" COMMAND ...")  # not a {list} that would name the aliases


def test_each_inspect_command_says_what_it_reads_and_needs(parser):
    leaves = {"bpf lb list", "bpf ipcache list", "bpf ipcache lookup", "bpf policy list", "bpf ct list",
              "bpf maps list", "bpf maps dump", "bpf drops", "monitor", "status", "service list",
              "endpoint list", "identity list"}
    seen = set()
    for path, p, hidden in walk(parser):
        name = " ".join(path)
        if name not in leaves or hidden:
            continue
        seen.add(name)
        d = p.description or ""
        reads_pins, reads_agent = "--bpf-root" in d, "--socket" in d
        assert reads_pins or reads_agent, f"{name}: says neither --bpf-root nor --socket"
        assert "root" in d.replace("--bpf-root", ""), f"{name}: does not say whether it needs root"
    assert seen == leaves
    for proc in ("agent", "controller", "apiserver", "sim", "cni", "demo", "version", "bpf"):
        d = _commands(parser).choices[proc].description or ""
        assert "root" in d.replace("--bpf-root", "").replace("--cgroup-root", ""), f"{proc}: needs root or not?"


def test_help_runs_as_a_process():
    pr = subprocess.run([sys.executable, "-m", "meshcni.cli", "bpf", "lb", "list", "--help"], capture_output=True,
                        text=True, timeout=60, env=ENV)
    assert pr.returncode == 0, pr.stderr
    assert "--bpf-root" in pr.stdout and "--no-headers" in pr.stdout and "yaml" in pr.stdout
    assert "--root" in pr.stdout  # the alias is named once, in --bpf-root's help


def test_plain():
    assert plain("``meshcni sim``: see :func:`x.y` and `z`") == "meshcni sim: see x.y and z"


# ---------------------------------------------------------------- output


def _out(fmt, doc, *tables, no_headers=False):
    buf = io.StringIO()
    emit(SimpleNamespace(output=fmt, no_headers=no_headers), doc, *tables, out=buf)
    return buf.getvalue()


ROWS = [{"id": 1, "name": "a", "extra": None}, {"id": 22, "name": "bbbb", "extra": "x"}]
COLS = [Column("ID", "id"), Column("NAME", "name"), Column("EXTRA", "extra", wide=True)]


def test_output_formats():
    assert _out("table", ROWS, Table(COLS, ROWS)) == "ID   NAME\n1    a\n22   bbbb\n"
    assert _out("wide", ROWS, Table(COLS, ROWS)) == "ID   NAME   EXTRA\n1    a      -\n22   bbbb   x\n"
    assert _out("table", ROWS, Table(COLS, ROWS), no_headers=True) == "1    a\n22   bbbb\n"
    assert json.loads(_out("json", ROWS, Table(COLS, ROWS))) == ROWS
    assert yaml.safe_load(_out("yaml", ROWS, Table(COLS, ROWS))) == ROWS
    # two tables: a blank line between; an empty table keeps its header (or prints nothing)
    assert _out("table", {}, Table(COLS, ROWS[:1]), Table(COLS, [])) == "ID   NAME\n1    a\n\nID   NAME\n"
    assert _out("table", {}, Table(COLS, []), no_headers=True) == ""


def test_json_and_yaml_of_a_real_command_are_one_document(tmp_path, capsys):
    # version needs no kernel and no agent
    for fmt in ("json", "yaml"):
        assert main(["version", "-o", fmt]) == 0
        doc = (json.loads if fmt == "json" else yaml.safe_load)(capsys.readouterr().out)
        assert set(doc) == {"meshcni", "libbpf", "kernel"}


# ---------------------------------------------------------------- decoders (numpy rows, no kernel)


@pytest.mark.extension
def test_decode_lb():
    from meshcni.bpf import decode
    from meshcni.datapath.policy import addr16

    C = layout.constants()
    sk, sv = np.zeros(6, layout.dtype_of("mc_svc_key")), np.zeros(6, layout.dtype_of("mc_svc_value"))
    bk, bv = np.zeros(3, layout.dtype_of("mc_backend_key")), np.zeros(3, layout.dtype_of("mc_backend"))
    for i, (bid, ip, port) in enumerate([(10, "10.0.1.1", 8080), (11, "10.0.1.2", 8080), (12, "fd00::5", 53)]):
        bk[i]["backend_id"], bv[i]["addr"], bv[i]["port"], bv[i]["proto"] = bid, np.frombuffer(addr16(ip), np.uint8), \
            port, 6
    rows = [  # (frontend, port, proto, slot, backend_id, count, flags, svc_id, affinity)
        ("10.96.0.10", 80, 6, 0, 0, 3, C["MC_SVC_F_AFFINITY"], 7, 30),
        ("10.96.0.10", 80, 6, 2, 11, 0, 0, 7, 0),   # slot order, not row order
        ("10.96.0.10", 80, 6, 1, 10, 0, 0, 7, 0),
        ("10.96.0.10", 80, 6, 3, 99, 0, 0, 7, 0),   # a backend id mc_backends does not have
        ("fd00::a", 53, 17, 0, 0, 0, C["MC_SVC_F_MAGLEV"], 3, 0),  # no backends: refused
        ("10.96.0.11", 443, 6, 0, 0, 1, 0, 8, 0),   # count 1 but slot 1 missing
    ]
    for i, (fe, port, proto, slot, bid, count, flags, svc, aff) in enumerate(rows):
        sk[i]["addr"], sk[i]["port"], sk[i]["proto"], sk[i]["slot"] = np.frombuffer(addr16(fe), np.uint8), port, \
            proto, slot
        sv[i]["backend_id"], sv[i]["count"], sv[i]["flags"], sv[i]["svc_id"], sv[i]["affinity_timeout"] = \
            bid, count, flags, svc, aff
    got = decode.decode_lb(sk, sv, bk, bv)
    assert [(r["service_id"], r["frontend"], r["flags"]) for r in got] == [
        (3, "[fd00::a]:53/UDP", ["maglev"]), (7, "10.96.0.10:80/TCP", ["affinity"]), (8, "10.96.0.11:443/TCP", [])]
    assert [(b["slot"], b["backend_id"], b["addr"], b["port"]) for b in got[1]["backends"]] == [
        (1, 10, "10.0.1.1", 8080), (2, 11, "10.0.1.2", 8080), (3, 99, None, None)]
    assert got[1]["affinity_timeout_s"] == 30 and got[0]["backends"] == []
    assert got[2]["backends"] == [{"slot": 1, "backend_id": None, "addr": None, "port": None}]


@pytest.mark.extension
def test_identity_labels_and_text():
    from meshcni.bpf import decode

    idents = [{"metadata": {"name": "id-1", "namespace": "shop"},
               "spec": {"id": 16777300, "namespaceLabels": {"kubernetes.io/metadata.name": "shop"},
                        "podLabels": {"tier": "db", "app": "web"}}},
              {"metadata": {"name": "bad"}, "spec": {"id": "16777301"}}]  # not an integer id: no join possible
    cidrs = [{"metadata": {"name": "cidr-10-0-0-0-8"}, "spec": {"id": 300, "cidr": "10.0.0.0/8",
                                                                "except": ["10.1.0.0/16"]}}]
    got = decode.identity_labels(idents, cidrs)
    assert set(got) == {16777300, 300}
    assert decode.labels_text(got[16777300]) == "ns=shop app=web,tier=db"
    assert decode.labels_text(got[300]) == "cidr=10.0.0.0/8 except=10.1.0.0/16"
    assert decode.labels_text(None) is None


# ---------------------------------------------------------------- where identity labels come from


IDENTITY = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Identity",
            "metadata": {"name": "id-web", "namespace": "shop"},
            "spec": {"id": 16777300, "namespaceLabels": {"kubernetes.io/metadata.name": "shop"},
                     "podLabels": {"app": "web"}}}
CIDR_IDENTITY = {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "CIDRIdentity",
                 "metadata": {"name": "cidr-192-168-0-0-16"},
                 "spec": {"id": 300, "cidr": "192.168.0.0/16", "cidrPrefixes": ["192.168.0.0/16"]}}


@pytest.fixture
def api(tmp_path):
    from kubernetes import client, config

    from meshcni.apiserver import APIServer
    with APIServer(crd_dir=str(CRDS)) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
        c = config.new_client_from_config(config_file=kc)
        custom = client.CustomObjectsApi(c)
        client.CoreV1Api(c).create_namespace({"metadata": {"name": "shop"}})
        custom.create_namespaced_custom_object("mesh-cni.dev", "v1alpha1", "shop", "identities", IDENTITY)
        custom.create_cluster_custom_object("mesh-cni.dev", "v1alpha1", "cidridentities", CIDR_IDENTITY)
        yield kc
        c.close()


@pytest.mark.extension  # identity_labels_from decodes through meshcni.bpf, which loads meshcni._libbpf
def test_identity_labels_from_the_api_server_then_the_agent(api, tmp_path):
    from meshcni.agent.localapi import LocalAPI, identities_view
    from meshcni.cli.node import identity_labels_from
    sock = str(tmp_path / "agent.sock")
    args = SimpleNamespace(socket=sock, kubeconfig=api)
    labels, source = identity_labels_from(args)  # no agent: the API server answers
    assert source == "apiserver" and labels[16777300]["podLabels"] == {"app": "web"}
    assert labels[300]["cidr"] == "192.168.0.0/16"

    # an agent without /v1/identities (today's agent): still the API server
    old = LocalAPI(sock, status=lambda: {}).start()
    try:
        assert identity_labels_from(args)[1] == "apiserver"
    finally:
        old.stop()
    # an agent that serves it wins, and is asked first (its view, here different from the API's)
    agent = LocalAPI(sock, status=lambda: {},
                     views={"/v1/identities": lambda: identities_view([IDENTITY], [])}).start()
    try:
        labels, source = identity_labels_from(args)
        assert source == "agent" and set(labels) == {16777300}
        assert labels[16777300]["namespace"] == "shop"
    finally:
        agent.stop()


def test_identity_labels_from_nowhere(tmp_path, monkeypatch):
    from meshcni.cli.node import identity_labels_from
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert identity_labels_from(SimpleNamespace(socket=str(tmp_path / "none.sock"), kubeconfig=None)) == ({}, None)


def test_agent_client_public_reads(tmp_path):
    from meshcni.agent.localapi import LocalAPI
    from meshcni.cni.endpoints import AgentClient
    sock = str(tmp_path / "a.sock")
    api = LocalAPI(sock, status=lambda: {"node": "n1", "ready": True},
                   views={"/v1/services": lambda: [{"name": "s"}], "/v1/ips": lambda: {"10.0.0.1": "ns/p"}}).start()
    try:
        c = AgentClient(sock)
        assert c.status() == {"node": "n1", "ready": True}
        assert c.services() == [{"name": "s"}] and c.pod_ips() == {"10.0.0.1": "ns/p"}
        assert c.endpoints() == [] and c.identities() is None
    finally:
        api.stop()


@pytest.mark.extension  # status --verbose reports libbpf's version and the pinned tc programs
def test_status_verbose_without_an_agent(tmp_path, api, capsys):
    rc = main(["status", "--verbose", "--socket", str(tmp_path / "none.sock"), "--bpf-root", str(tmp_path / "bpf"),
               "--kubeconfig", api, "-o", "json"])
    assert rc == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["agent"]["reachable"] is False and "not reachable" in doc["agent"]["error"]
    assert doc["apiServer"]["reachable"] is True and doc["apiServer"]["version"]
    assert doc["datapath"]["socketLB"] == [] and doc["datapath"]["tcPrograms"] == \
        {"mc_from_pod": False, "mc_to_pod": False}
    assert set(doc["versions"]) == {"meshcni", "libbpf", "kernel"}
    rc = main(["status", "--verbose", "--socket", str(tmp_path / "none.sock"), "--bpf-root", str(tmp_path / "bpf"),
               "--kubeconfig", str(tmp_path / "missing")])
    out = capsys.readouterr().out
    assert rc == 1 and "agent:       NOT REACHABLE" in out and "API server:  NOT REACHABLE" in out
    assert "socket LB:   NOT ATTACHED" in out and "tc programs: NOT PINNED" in out


# ---------------------------------------------------------------- sim get -o json


def test_sim_get_json_is_a_list_object(api, tmp_path, capsys):
    from kubernetes import client, config
    c = config.new_client_from_config(config_file=api)
    client.CoreV1Api(c).create_namespaced_config_map("default", {"metadata": {"name": "cm1"}, "data": {"a": "b"}})
    c.close()
    # a state root holding what `sim up` leaves: the kubeconfig and the pid of a live daemon (this process)
    d = tmp_path / "sim" / "t"
    d.mkdir(parents=True)
    (d / "kubeconfig").write_text(Path(api).read_text())
    (d / "daemon.pid").write_text(str(os.getpid()))
    assert main(["sim", "--state-root", str(tmp_path / "sim"), "get", "configmaps", "--name", "t", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    assert [o["metadata"]["name"] for o in doc["items"]] == ["cm1"]
