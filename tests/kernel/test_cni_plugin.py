# SPDX-License-Identifier: MIT OR Apache-2.0
"""The meshcni-cni executable driven exactly as a runtime drives it.

A test-made "node" namespace plays the host (the plugins run inside it via
nsenter, the way kubelet's runtime runs them in the node's namespace); every
pod is a namespace of its own. The plugin is the launcher `meshcni cni
install` writes, found through CNI_PATH next to Debian's reference plugins.
"""
import concurrent.futures as cf
import ipaddress
import json
import os
import subprocess
import uuid

import pytest

from meshcni.cni.install import install
from meshcni.cni.runtime import Attachment, PluginError, Runtime
from meshcni.datapath import tcpins

pytestmark = pytest.mark.kernel

REF_PLUGINS = "/usr/lib/cni"
NODE_IP = "10.250.0.1"


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Node:
    def __init__(self, netns_factory, tmp_path):
        self.name = netns_factory("mcnode")
        self.path = f"/run/netns/{self.name}"
        self.tmp = tmp_path
        self.bin = str(tmp_path / "bin")
        install(self.bin, str(tmp_path / "net.d"), subnets=["10.20.0.0/24"])
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        # the node's own address (this kernel has no dummy module: lo holds it)
        sh("ip", "-n", self.name, "addr", "add", NODE_IP + "/32", "dev", "lo")
        self._netns = netns_factory

    def plugin_conf(self, **kw):
        c = {"type": "meshcni-cni", "datapath": "off", "stateDir": str(self.tmp / "state"),
             "logFile": str(self.tmp / "cni.log"),
             "ipam": {"type": "meshcni", "subnet": "10.20.0.0/24", "dataDir": str(self.tmp / "ipam")}}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def runtime(self, plugins, version="1.1.0", name="podnet"):
        return Runtime({"cniVersion": version, "name": name, "plugins": plugins}, [self.bin, REF_PLUGINS],
                       cache_dir=str(self.tmp / "cache"), node_netns=self.path)

    def pod(self, name="p"):
        ns = self._netns("mcpod")
        return Attachment(uuid.uuid4().hex[:12], f"/run/netns/{ns}", "eth0",
                          {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": name}), ns

    def links(self):
        return [x["ifname"] for x in json.loads(sh("ip", "-n", self.name, "-j", "link", "show"))]

    def allocations(self, net="podnet"):
        p = self.tmp / "ipam" / net / "allocations.json"
        return json.loads(p.read_text())["allocations"] if p.exists() else {}


@pytest.fixture
def node(netns, tmp_path):
    return Node(netns, tmp_path)


def ip_of(result):
    return result["ips"][0]["address"].split("/")[0]


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_standalone_add_check_del(node, version):
    rt = node.runtime([node.plugin_conf()], version)
    att, ns = node.pod()
    res = rt.add(att)
    assert res["cniVersion"] == version
    assert ("version" in res["ips"][0]) == (version == "0.4.0")
    assert ("mtu" in res["interfaces"][1]) == (version == "1.1.0")
    assert res["interfaces"][1] == {**res["interfaces"][1], "name": "eth0", "sandbox": att.netns}
    ip = ip_of(res)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.20.0.0/24")
    pod_addrs = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "eth0"))[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in pod_addrs if a["family"] == "inet"} == {(ip, 32)}
    assert "default via 169.254.1.1 dev eth0" in sh("ip", "-n", ns, "route")
    host_if = res["interfaces"][0]["name"]
    assert f"{ip} dev {host_if}" in sh("ip", "-n", node.name, "route")
    rec = json.loads((node.tmp / "state" / "endpoints" / f"{att.container_id}_eth0.json").read_text())
    assert rec["podName"] == "p" and rec["podNamespace"] == "default" and rec["ips"] == [f"{ip}/32"]
    assert rec["netnsCookie"] > 0
    rt.check(att)
    rt.delete(att)
    assert host_if not in node.links() and node.allocations() == {}
    assert not (node.tmp / "state" / "endpoints" / f"{att.container_id}_eth0.json").exists()
    rt.delete(att)  # a second DEL succeeds
    assert "ADD" in (node.tmp / "cni.log").read_text()


def test_two_pods_reach_each_other_and_the_node(node, servers, reach):
    rt = node.runtime([node.plugin_conf()])
    (a, ns_a), (b, ns_b) = node.pod("a"), node.pod("b")
    ip_a, ip_b = ip_of(rt.add(a)), ip_of(rt.add(b))
    servers(ns_b, ip_b, 8080)
    servers(node.name, NODE_IP, 8081)
    servers(ns_a, ip_a, 8082)
    assert reach(ns_a, ip_b, 8080)
    assert reach(ns_a, NODE_IP, 8081) and reach(ns_b, NODE_IP, 8081)
    assert reach(node.name, ip_a, 8082)
    rt.delete(b)
    assert not reach(ns_a, ip_b, 8080, 0.5)


def test_check_reports_what_is_wrong(node):
    rt = node.runtime([node.plugin_conf()])
    att, ns = node.pod()
    res = rt.add(att)
    sh("ip", "-n", ns, "route", "del", "default")
    sh("ip", "-n", node.name, "route", "del", ip_of(res))
    with pytest.raises(PluginError) as e:
        rt.check(att)
    assert e.value.code == 101
    assert "default route via 169.254.1.1 is missing" in e.value.msg
    assert f"host route to {ip_of(res)}/32" in e.value.msg
    unknown = Attachment("nosuchcontainer", att.netns, "eth0")
    rt.add(att)  # re-ADD of the same attachment converges, same address
    assert ip_of(rt.cached(att)) == ip_of(res)
    rt.check(att)
    with pytest.raises(PluginError) as e:
        rt.exec_plugin(rt.conf["plugins"][0], "CHECK", unknown, prev=res)
    assert e.value.code == 3


def test_dual_stack(node, servers, reach):
    conf = node.plugin_conf(ipam={"type": "meshcni", "dataDir": str(node.tmp / "ipam"),
                                  "ranges": [[{"subnet": "10.20.0.0/24"}], [{"subnet": "fd20::/120"}]]})
    sh("ip", "-n", node.name, "addr", "add", "fd50::1/128", "dev", "lo", "nodad")
    rt = node.runtime([conf])
    (a, ns_a), (b, ns_b) = node.pod("a"), node.pod("b")
    ra, rb = rt.add(a), rt.add(b)
    v6a = [i["address"].split("/")[0] for i in ra["ips"] if ":" in i["address"]][0]
    v6b = [i["address"].split("/")[0] for i in rb["ips"] if ":" in i["address"]][0]
    assert [r["gw"] for r in ra["routes"]] == ["169.254.1.1", "fe80::1"]
    servers(ns_b, v6b, 8080)
    servers(node.name, "fd50::1", 8081)
    assert reach(ns_a, v6b, 8080, 3.0)
    assert reach(ns_a, "fd50::1", 8081, 3.0)
    rt.check(a)
    assert v6a != v6b


def test_hundred_concurrent_adds_get_distinct_addresses(node):
    rt = node.runtime([node.plugin_conf()])
    pods = [node.pod(f"p{i}")[0] for i in range(100)]
    with cf.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(rt.add, pods))
    ips = [ip_of(r) for r in results]
    assert len(set(ips)) == 100
    assert len(node.allocations()) == 100
    assert sum(1 for n in node.links() if n.startswith("mc")) == 100
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(rt.delete, pods))
    assert node.allocations() == {} and not [n for n in node.links() if n.startswith("mc")]


def test_del_is_idempotent_without_netns_or_container(node, netns):
    rt = node.runtime([node.plugin_conf()])
    att, ns = node.pod()
    res = rt.add(att)
    subprocess.run(["ip", "netns", "del", ns], check=True)  # the runtime lost the sandbox
    rt.delete(att)
    rt.delete(att)
    assert res["interfaces"][0]["name"] not in node.links() and node.allocations() == {}
    rt.delete(Attachment("never-added", "/run/netns/none", "eth0"))


@pytest.mark.parametrize("point", ["ipam", "veth"])
def test_add_crashing_half_way_then_retried_leaks_nothing(node, point):
    rt = node.runtime([node.plugin_conf()])
    att, ns = node.pod()
    with pytest.raises(PluginError) as e:
        rt.add(att, env_override={"MESHCNI_CNI_CRASH_AT": point})
    assert "exit 99" in e.value.msg
    assert len(node.allocations()) == 1  # the crash kept its address...
    res = rt.add(att)                    # ...and the retry gets exactly that one back
    assert [a["ips"] for a in node.allocations().values()] == [[f"{ip_of(res)}/24"]]
    assert sum(1 for n in node.links() if n.startswith("mc")) == 1
    assert [x["ifname"] for x in json.loads(sh("ip", "-n", ns, "-j", "link", "show"))] == ["lo", "eth0"]
    rt.check(att)


def test_failed_add_rolls_back(node):
    rt = node.runtime([node.plugin_conf()])
    att, ns = node.pod()
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "other")  # the name is taken
    with pytest.raises(PluginError) as e:
        rt.add(att)
    assert e.value.code == 102 and "eth0 already exists" in e.value.msg
    assert node.allocations() == {} and not [n for n in node.links() if n.startswith("mc")]


def test_exhaustion_is_code_100_and_status_says_so(node):
    conf = node.plugin_conf(ipam={"type": "meshcni", "subnet": "10.20.0.0/30", "gateway": "10.20.0.1", "dataDir": str(node.tmp / "ipam")})
    rt = node.runtime([conf])
    a, _ = node.pod()
    rt.status()
    rt.add(a)
    b, _ = node.pod()
    with pytest.raises(PluginError) as e:
        rt.add(b)
    assert e.value.code == 100 and "no free address in 10.20.0.0/30" in e.value.msg
    with pytest.raises(PluginError) as e:
        rt.status()
    assert e.value.code == 50


def test_gc_releases_everything_not_listed(node):
    rt = node.runtime([node.plugin_conf()])
    pods = [node.pod()[0] for _ in range(3)]
    results = [rt.add(p) for p in pods]
    # a veth named like ours with no bookkeeping at all (a runtime that crashed)
    sh("ip", "-n", node.name, "link", "add", "mc0123456789abc", "type", "veth", "peer", "name", "strayp")
    rt.gc([(pods[1].container_id, "eth0")])
    assert list(node.allocations()) == [f"{pods[1].container_id}/eth0"]
    links = node.links()
    assert results[1]["interfaces"][0]["name"] in links
    assert not {results[0]["interfaces"][0]["name"], results[2]["interfaces"][0]["name"], "mc0123456789abc"} & set(links)
    records = os.listdir(node.tmp / "state" / "endpoints")
    assert records == [f"{pods[1].container_id}_eth0.json"]
    rt.check(pods[1])


def test_status_and_add_without_the_datapath_or_agent(node, tmp_path):
    rt = node.runtime([node.plugin_conf(datapath="required", bpfRoot=str(tmp_path / "nobpf"))])
    with pytest.raises(PluginError) as e:
        rt.status()
    assert e.value.code == 50 and "datapath is not loaded" in e.value.msg
    att, _ = node.pod()
    with pytest.raises(PluginError) as e:
        rt.add(att)
    assert e.value.code == 11 and "start the meshcni agent" in e.value.msg
    assert node.allocations() == {}
    rt2 = node.runtime([node.plugin_conf(agentSocket=str(tmp_path / "agent.sock"))])
    with pytest.raises(PluginError) as e:
        rt2.status()
    assert e.value.code == 50 and "agent.sock is not reachable" in e.value.msg
    with pytest.raises(PluginError) as e:
        rt2.add(att)
    assert e.value.code == 11


def test_status_51_when_endpoints_exist_but_the_datapath_went_away(node, tmp_path):
    rt = node.runtime([node.plugin_conf()])
    rt.add(node.pod()[0])
    rt_req = node.runtime([node.plugin_conf(datapath="required", bpfRoot=str(tmp_path / "nobpf"))])
    with pytest.raises(PluginError) as e:
        rt_req.status()
    assert e.value.code == 51 and "1 existing endpoints" in e.value.msg


def test_io_error_code_5(node, tmp_path):
    (tmp_path / "blocker").write_text("")
    conf = node.plugin_conf(ipam={"type": "meshcni", "subnet": "10.20.0.0/24", "dataDir": str(tmp_path / "blocker")})
    with pytest.raises(PluginError) as e:
        node.runtime([conf]).add(node.pod()[0])
    assert e.value.code == 5


def test_add_with_a_missing_netns_is_unknown_container(node):
    with pytest.raises(PluginError) as e:
        node.runtime([node.plugin_conf()]).add(Attachment("c1", "/run/netns/does-not-exist", "eth0"))
    assert e.value.code == 3 and node.allocations() == {}


def test_delegated_ipam_host_local(node):
    conf = node.plugin_conf(ipam={"type": "host-local", "subnet": "10.21.0.0/24",
                                  "dataDir": str(node.tmp / "hl")})
    rt = node.runtime([conf], "1.0.0")
    att, _ = node.pod()
    res = rt.add(att)
    assert ip_of(res).startswith("10.21.0.")
    assert os.path.exists(node.tmp / "hl" / "podnet" / ip_of(res))
    rt.check(att)
    rt.delete(att)
    assert not os.path.exists(node.tmp / "hl" / "podnet" / ip_of(res))


def ptp_plugins(node, subnet="10.30.0.0/24"):
    return [{"type": "ptp", "ipMasq": False, "mtu": 1400,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(node.tmp / "hl")}}]


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])  # Debian's plugins (1.1.1) stop at 1.0.0
def test_chained_after_ptp_and_host_local(node, pin_root, version, servers, reach):
    from meshcni.datapath.policy import PolicyProgram
    with PolicyProgram(pin_root) as prog:
        pinned = prog.pin_programs(pin_root)
        plugins = ptp_plugins(node) + [{"type": "meshcni-cni", "datapath": "required", "bpfRoot": pin_root,
                                        "stateDir": str(node.tmp / "state")}]
        rt = node.runtime(plugins, version, name="kindnet")
        (a, ns_a), (b, ns_b) = node.pod("a"), node.pod("b")
        ra, rb = rt.add(a), rt.add(b)
        # meshcni passed ptp's result on, in the list's version
        assert ra["cniVersion"] == version and ip_of(ra).startswith("10.30.0.")
        host_if = [i["name"] for i in ra["interfaces"] if not i.get("sandbox")][0]
        rec = json.loads((node.tmp / "state" / "endpoints" / f"{a.container_id}_eth0.json").read_text())
        assert rec["mode"] == "chained" and rec["hostIfname"] == host_if and rec["programs"] == pinned
        ifindex = rec["hostIfindex"]
        from meshcni.cni.link import entered
        with entered(node.path):
            assert tcpins.attached(ifindex) == pinned
        rt.check(a)
        # the programs are in the path (no policy yet: not enforced) and traffic flows
        servers(ns_b, ip_of(rb), 8080)
        assert reach(ns_a, ip_of(rb), 8080)
        with entered(node.path):
            tcpins.detach(ifindex)
        with pytest.raises(PluginError) as e:
            rt.check(a)
        assert e.value.code == 101 and "mc_from_pod is not attached" in e.value.msg
        rt.delete(a)
        rt.delete(a)
        assert host_if not in node.links()
        assert not (node.tmp / "state" / "endpoints" / f"{a.container_id}_eth0.json").exists()


def test_standalone_attaches_pinned_programs(node, pin_root):
    from meshcni.datapath.policy import PolicyProgram
    from meshcni.cni.link import entered
    with PolicyProgram(pin_root) as prog:
        pinned = prog.pin_programs(pin_root)
        rt = node.runtime([node.plugin_conf(datapath="auto", bpfRoot=pin_root)])
        att, _ = node.pod()
        res = rt.add(att)
        rec = json.loads((node.tmp / "state" / "endpoints" / f"{att.container_id}_eth0.json").read_text())
        with entered(node.path):
            assert tcpins.attached(rec["hostIfindex"]) == pinned
        rt.check(att)
        rt.delete(att)
        assert res["interfaces"][0]["name"] not in node.links()
