# SPDX-License-Identifier: MIT OR Apache-2.0
"""The CNI plugin as the Helm chart installs it on a real node (`--no-cni-fallback`).

On a node the agent's Python exists only inside its image, so the installer
puts nothing on the host that needs it: the static shim alone, no
`meshcni-cni-py` launcher (one left by an earlier install is removed). Every
call below runs the installed shim in a private mount namespace where this
checkout (its .venv and the meshcni package) and the system's Python library
are hidden under empty tmpfs mounts, so a node without any of them is what is
tested. With the agent up, ADD/CHECK/DEL run in the agent; with it down the
shim answers alone: ADD and CHECK "try again later" (11), DEL and GC succeed
(best effort, a pod stays deletable), STATUS 50, VERSION as always.
"""
import json
import os
import subprocess
import sys
import sysconfig

import pytest

from meshcni.cni.install import FALLBACK_NAME, InstallError, install, shim_binary

from test_cni_plugin import Node, ip_of, sh
from test_cni_shim import Agent

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(shim_binary() is None, reason="shim not built (run scripts/setup-machine.sh)")]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PATHS = {ROOT, sys.prefix, os.path.realpath(sys.prefix), sysconfig.get_paths()["stdlib"]}
# the outermost of each nest: a tmpfs over ROOT already hides ROOT/.venv
HIDDEN = sorted(p for p in _PATHS if not any(q != p and p.startswith(q + os.sep) for q in _PATHS))


@pytest.fixture
def host_node(netns, tmp_path):
    node = Node(netns, tmp_path)  # starts with the Python launcher, as an older install left it
    assert os.path.exists(os.path.join(node.bin, "meshcni-cni"))
    done = install(node.bin, str(tmp_path / "net.d"), subnets=["10.20.0.0/24"], shim=True, fallback=False,
                   datapath="off", agent_socket=str(tmp_path / "agent.sock"))
    assert done["plugin"] == {"path": os.path.join(node.bin, "meshcni-cni"), "changed": True, "shim": True}
    return node


def _conf(node, tmp_path, sock):
    return json.dumps({"cniVersion": "1.1.0", "name": "podnet",
                       **node.plugin_conf(agentSocket=str(tmp_path / sock))}).encode()


def _run(node, env, stdin):
    """The installed shim, as a runtime runs it, on a node without this checkout or a Python library."""
    exe = os.path.join(node.bin, "meshcni-cni")
    hide = " && ".join(f"mount -t tmpfs -o size=1m,mode=0755 meshcni-hidden '{d}'" for d in HIDDEN)
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": node.bin, "CNI_IFNAME": "eth0", **env}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec",
                           f'{hide} && exec ip netns exec {node.name} "{exe}"'],
                          input=stdin, env=full, capture_output=True, timeout=60)


def test_nothing_on_the_host_needs_python(host_node):
    names = sorted(os.listdir(host_node.bin))
    assert names == ["meshcni-cni"], names  # the launcher of the earlier install is gone
    with open(os.path.join(host_node.bin, "meshcni-cni"), "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data == open(shim_binary(), "rb").read()
    assert os.fsencode(sys.prefix) not in data and b"python" not in data.lower()
    # the shim without a fallback cannot run the Python plugin, so this pairing is refused
    with pytest.raises(InstallError, match="needs --cni-shim"):
        install(host_node.bin, str(host_node.tmp / "net.d"), subnets=["10.20.0.0/24"], shim=False, fallback=False)
    assert not os.path.exists(os.path.join(host_node.bin, FALLBACK_NAME))


def test_with_the_agent_calls_run_there(host_node, tmp_path):
    agent = Agent(host_node, str(tmp_path / "agent.sock"))
    try:
        att, ns = host_node.pod("p")
        env = {"CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns, "CNI_ARGS": "K8S_POD_NAME=p"}
        conf = _conf(host_node, tmp_path, "agent.sock")
        p = _run(host_node, {**env, "CNI_COMMAND": "ADD"}, conf)
        assert p.returncode == 0, (p.stdout, p.stderr)
        ip = ip_of(json.loads(p.stdout))
        assert f"{ip}/32" in sh("ip", "-n", ns, "addr", "show", "eth0")
        p = _run(host_node, {**env, "CNI_COMMAND": "DEL"}, conf)
        assert p.returncode == 0, p.stderr
        assert [c for c, _, _ in agent.calls] == ["ADD", "DEL"] and host_node.allocations() == {}
    finally:
        agent.stop()


def test_without_the_agent_the_shim_answers_alone(host_node, tmp_path):
    att, ns = host_node.pod("p")
    env = {"CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns}
    conf = _conf(host_node, tmp_path, "nobody.sock")

    def err(p):
        assert p.returncode == 1, (p.stdout, p.stderr)
        return json.loads(p.stdout)

    add = err(_run(host_node, {**env, "CNI_COMMAND": "ADD"}, conf))
    assert add["code"] == 11 and "try again once the meshcni agent runs" in add["msg"]
    assert "nobody.sock" in add["msg"]  # says which socket it could not reach
    assert err(_run(host_node, {**env, "CNI_COMMAND": "CHECK"}, conf))["code"] == 11
    assert err(_run(host_node, {"CNI_COMMAND": "STATUS"}, conf))["code"] == 50
    for cmd in ("DEL", "DEL", "GC"):  # best effort, idempotent
        p = _run(host_node, {**env, "CNI_COMMAND": cmd}, conf)
        assert p.returncode == 0 and p.stdout == b"", (cmd, p.stdout, p.stderr)
        assert b"done without the agent" in p.stderr
    p = _run(host_node, {"CNI_COMMAND": "VERSION"}, conf)
    assert p.returncode == 0 and "1.1.0" in json.loads(p.stdout)["supportedVersions"]
    # nothing was made for the pod, so nothing leaked
    assert "eth0" not in sh("ip", "-n", ns, "link") and host_node.allocations() == {}
    assert not (tmp_path / "cni.log").exists() or "ADD" not in (tmp_path / "cni.log").read_text()
