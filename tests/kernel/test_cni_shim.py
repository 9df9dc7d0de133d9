# SPDX-License-Identifier: MIT OR Apache-2.0
"""The compiled CNI shim: CNI calls handed to the agent's local API, run there.

The agent's LocalAPI serves from the test's node namespace
(``start(netns=...)``), so it creates pod veths there, exactly as an agent
with hostNetwork does on a node. The shim is the binary
``meshcni cni install --shim`` puts in the CNI bin dir, driven by the same
Runtime as the Python plugin's tests.
"""
import json
import os
import subprocess

import pytest

from meshcni.agent.localapi import LocalAPI
from meshcni.cni.install import install, shim_binary

from test_cni_plugin import Node, ip_of, sh

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(shim_binary() is None, reason="shim not built (run scripts/setup-machine.sh)")]


class Agent:
    """The real LocalAPI, serving from inside the node namespace."""

    def __init__(self, node, path):
        self.api = LocalAPI(path, status=lambda: {"node": node.name})
        self.calls = []
        run = self.api.run_cni

        def counted(req):
            out = run(req)
            self.calls.append((req["env"].get("CNI_COMMAND"), out[0], out[1]))
            return out
        self.api.run_cni = counted
        self.api.start(netns=node.path)

    def stop(self):
        self.api.stop()


@pytest.fixture
def shim_node(netns, tmp_path):
    node = Node(netns, tmp_path)
    done = install(node.bin, str(tmp_path / "net.d"), subnets=["10.20.0.0/24"], shim=True)
    assert done["plugin"]["shim"] is True
    return node


@pytest.fixture
def agent(shim_node, tmp_path):
    a = Agent(shim_node, str(tmp_path / "agent.sock"))
    yield a
    a.stop()


def test_add_check_del_run_in_the_agent(shim_node, agent, tmp_path):
    rt = shim_node.runtime([shim_node.plugin_conf(agentSocket=str(tmp_path / "agent.sock"))])
    att, ns = shim_node.pod("p")
    res = rt.add(att)
    ip = ip_of(res)
    assert res["interfaces"][1]["name"] == "eth0" and res["interfaces"][1]["sandbox"] == att.netns
    pod_addrs = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "eth0"))[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in pod_addrs if a["family"] == "inet"} == {(ip, 32)}
    host_if = res["interfaces"][0]["name"]
    assert host_if in shim_node.links()  # made in the node namespace, not the root one
    assert f"{att.container_id}/eth0" in agent.api.endpoints  # registered in-process
    rt.check(att)
    rt.delete(att)
    assert host_if not in shim_node.links() and shim_node.allocations() == {}
    assert [(c, s, rc) for c, s, rc in agent.calls] == [("ADD", 200, 0), ("CHECK", 200, 0), ("DEL", 200, 0)]
    assert f"{att.container_id}/eth0" not in agent.api.endpoints


def test_without_the_agent_the_python_plugin_answers(shim_node, tmp_path):
    """No socket: the shim execs the Python plugin (meshcni-cni-py), whose answer
    to an unreachable agent is CNI's "try again later" (11); kubelet retries.
    Nothing is left half-made."""
    from meshcni.cni.runtime import PluginError
    rt = shim_node.runtime([shim_node.plugin_conf(agentSocket=str(tmp_path / "nobody.sock"))])
    att, ns = shim_node.pod("p")
    with pytest.raises(PluginError) as ei:
        rt.add(att)
    assert ei.value.code == 11 and "nobody.sock is not reachable" in str(ei.value)
    assert "ADD" in (tmp_path / "cni.log").read_text()  # the Python plugin's own log line
    assert shim_node.allocations() == {} and "eth0" not in sh("ip", "-n", ns, "link")


def _shim(env, stdin: bytes, node):
    exe = os.path.join(node.bin, "meshcni-cni")
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": node.bin, **env}
    return subprocess.run(["ip", "netns", "exec", node.name, exe], input=stdin, env=full,
                          capture_output=True, timeout=60)


def test_version_is_answered_by_the_shim(shim_node):
    p = _shim({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.1.0"}', shim_node)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "1.1.0" in out["supportedVersions"] and "0.4.0" in out["supportedVersions"]


def test_bad_config_is_a_cni_error(shim_node, agent, tmp_path):
    bad = b'{"cniVersion": "1.1.0", "name": "x", "type": "meshcni-cni", "agentSocket": "%s", "ipam": 5}' % \
        str(tmp_path / "agent.sock").encode()
    att, ns = shim_node.pod("p")
    p = _shim({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns,
               "CNI_IFNAME": "eth0"}, bad, shim_node)
    assert p.returncode != 0
    err = json.loads(p.stdout)
    assert isinstance(err["code"], int) and err["code"] > 0 and err["msg"]
    assert "eth0" not in sh("ip", "-n", ns, "link")
