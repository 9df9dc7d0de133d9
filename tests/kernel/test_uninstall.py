# SPDX-License-Identifier: MIT OR Apache-2.0
"""`meshcni uninstall` on a real node: everything meshcni put there goes, nothing else.

The node is a network namespace the test makes; the datapath is the real one
(sock_lb links on a child of a private cgroup2 mount, policy programs pinned
on a private bpffs and attached by tc to a veth), the agent's routes are real
routes of protocol 191, the CNI plugin and config are what the agent
installs. The command runs as the DaemonSet's uninstall init container runs
it (`meshcni uninstall` with the agent's paths) inside that namespace.
Then: no cgroup link, no tc filter of meshcni's, no pin, no route of 191, no
plugin, no config, no state; a foreign config, route and tc-free interface
survive; a second run finds nothing and changes nothing.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from meshcni.cni.install import install, shim_binary
from meshcni.datapath import SockLB
from meshcni.datapath.nodeport import NodePortDatapath
from meshcni.datapath.policy import PolicyProgram
from meshcni.datapath.socklb import query

pytestmark = pytest.mark.kernel


def sh(*cmd):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True).stdout


def _routes(ns):
    return json.loads(sh("ip", "-n", ns, "-j", "route", "show", "table", "main"))


@pytest.fixture
def node(netns, tmp_path, pin_root, cgroup2_child):
    ns = netns("mcun")
    # a pod-facing veth with meshcni's tc programs, as the CNI plugin leaves it
    sh("ip", "-n", ns, "link", "add", "mcpod0", "type", "veth", "peer", "name", "eth9")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "mcpod0")
    for dev in ("mcpod0", "eth9", "lo"):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    with PolicyProgram(pin_root) as prog:
        prog.pin_programs(pin_root)
        assert prog.attach("mcpod0", netns=ns) == {"mc_from_pod": "attached", "mc_to_pod": "attached"}
    # the node's uplink with the NodePort/masquerade programs, as the agent leaves it
    sh("ip", "-n", ns, "link", "add", "mcup0", "type", "veth", "peer", "name", "mcup1")
    sh("ip", "-n", ns, "link", "set", "mcup0", "up")
    with NodePortDatapath(pin_root, netns=ns) as up:
        assert up.attach("mcup0") == {"mc_uplink_in": "attached", "mc_uplink_out": "attached"}
    with SockLB(pin_root) as lb:
        assert set(lb.attach(cgroup2_child).values()) == {"attached"}
        attach_types = {p: lb.attach_type(p) for p in lb.programs}
    # the agent's route to another node's pod CIDR, and one that is not meshcni's
    sh("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", "192.0.2.2", "proto", "191")
    sh("ip", "-n", ns, "route", "add", "203.0.113.0/24", "via", "192.0.2.3", "proto", "static")
    dirs = {k: tmp_path / k for k in ("bin", "net.d", "run", "ipam")}
    for d in dirs.values():
        d.mkdir()
    (dirs["net.d"] / "10-other.conflist").write_text('{"cniVersion": "1.0.0", "name": "other", "plugins": []}\n')
    install(str(dirs["bin"]), str(dirs["net.d"]), subnets=["10.20.0.0/24"], shim=shim_binary() is not None,
            fallback=shim_binary() is None, datapath="required", bpf_root=pin_root,
            agent_socket=str(dirs["run"] / "agent.sock"), state_dir=str(dirs["run"]),
            data_dir=str(dirs["ipam"]))
    (dirs["run"] / "endpoints").mkdir()
    (dirs["run"] / "endpoints" / "c1_eth0.json").write_text("{}")
    (dirs["run"] / "service-ids.json").write_text("{}")
    (dirs["ipam"] / "meshcni").mkdir()
    (dirs["ipam"] / "meshcni" / "allocations.json").write_text("{}")
    return ns, dirs, pin_root, cgroup2_child, attach_types


def _uninstall(ns, dirs, pin_root, cmd=("uninstall", "-o", "json")):
    p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "meshcni.cli", *cmd,
                        f"--bpf-root={pin_root}", f"--cni-bin-dir={dirs['bin']}", f"--cni-conf-dir={dirs['net.d']}",
                        f"--socket={dirs['run'] / 'agent.sock'}", f"--state-dir={dirs['run']}",
                        f"--ipam-dir={dirs['ipam']}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if "json" in cmd or "--uninstall" in cmd else p.stdout


def test_uninstall_leaves_nothing_of_meshcni_and_is_idempotent(node):
    ns, dirs, pin_root, cgroup, attach_types = node
    assert all(query(cgroup, t) for t in attach_types.values())  # attached before

    done = _uninstall(ns, dirs, pin_root)
    assert done["cgroupLinks"] == len(attach_types)
    assert done["tcFilters"] == {"mcpod0": 2, "mcup0": 2}
    assert done["routes"] == 1
    assert done["pins"] > 0 and done["state"] == 2 and done["ipam"] == 1
    assert sorted(os.path.basename(p) for p in done["cni"]["removed"]) == ["05-meshcni.conflist", "meshcni-cni"]

    # the socket LB: no program left on the cgroup
    assert {p: query(cgroup, t) for p, t in attach_types.items()} == {p: [] for p in attach_types}
    # tc: nothing at meshcni's handle on the veth (the interface itself stays)
    from meshcni.datapath import nodeport, tcpins
    from meshcni.datapath.policy import in_netns
    with in_netns(ns):
        assert tcpins.attached(socket.if_nametoindex("mcpod0")) == {"mc_from_pod": None, "mc_to_pod": None}
        assert nodeport.attached_ifindex(socket.if_nametoindex("mcup0")) == {"mc_uplink_in": None,
                                                                            "mc_uplink_out": None}
    # routes: meshcni's gone, the foreign one kept
    protos = {(r["dst"], r.get("protocol")) for r in _routes(ns)}
    assert ("198.51.100.0/24", "191") not in protos and not any(d == "198.51.100.0/24" for d, _ in protos)
    assert ("203.0.113.0/24", "static") in protos
    # pins, CNI, state
    assert not os.path.exists(pin_root)
    assert os.listdir(dirs["bin"]) == [] and os.listdir(dirs["net.d"]) == ["10-other.conflist"]
    assert os.listdir(dirs["run"]) == [] and os.listdir(dirs["ipam"]) == []
    assert tcpins.present(pin_root) is False

    # the older spelling (`meshcni agent --uninstall`) does the same, and finds nothing either
    again = _uninstall(ns, dirs, pin_root, cmd=("agent", "--uninstall"))
    assert again == {"cgroupLinks": 0, "tcFilters": {}, "routes": 0, "pins": 0, "state": 0, "ipam": 0,
                     "cni": {"removed": [], "restored": []}}
    assert os.listdir(dirs["net.d"]) == ["10-other.conflist"]
    table = _uninstall(ns, dirs, pin_root, cmd=("uninstall",)).splitlines()
    assert table[0].split() == ["WHAT", "REMOVED", "DETAIL"] and len(table) == 8
    assert all(line.split()[-2:] == ["0", "-"] for line in table[1:]), table
