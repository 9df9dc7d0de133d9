# SPDX-License-Identifier: MIT OR Apache-2.0
"""The compiled core's rtnetlink client (csrc/mc_nl.c), driven directly.

Everything happens in namespaces the test makes: a "host" and a "pod"
namespace per test, entered with ``link.entered``; the root namespace is
never touched. What the C calls did is read back with ``ip -j``.
"""
import contextlib
import errno
import ipaddress
import json
import os
import subprocess
import sys
import uuid

import pytest

from meshcni._libbpf import ffi, lib
from meshcni.cni import link
from meshcni.cni.install import install
from meshcni.cni.runtime import Attachment, Runtime

pytestmark = pytest.mark.kernel

AF_INET, AF_INET6 = 2, 10
REF_PLUGINS = "/usr/lib/cni"


def ipj(ns, *args):
    return json.loads(subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True,
                                     text=True).stdout or "[]")


def nl_in(ns):
    """A netlink socket opened inside ``ns`` (it keeps acting there afterwards)."""
    with link.entered(f"/run/netns/{ns}"):
        fd = lib.mc_nl_open()
    assert fd >= 0, os.strerror(-fd)
    return fd


@pytest.fixture
def pair(netns):
    """(host ns, pod ns, host socket, pod socket)."""
    host, pod = netns("mcnlhost"), netns("mcnlpod")
    h, p = nl_in(host), nl_in(pod)
    yield host, pod, h, p
    lib.mc_nl_close(h)
    lib.mc_nl_close(p)


def make_veth(pair, name="mcv0", peer="eth0", mtu=1400):
    host, pod, h, p = pair
    fd = os.open(f"/run/netns/{pod}", os.O_RDONLY)
    try:
        return lib.mc_nl_veth_create(h, name.encode(), peer.encode(), fd, mtu)
    finally:
        os.close(fd)


def get(nl, index):
    out = ffi.new("struct mc_nl_link *")
    assert lib.mc_nl_link_get(nl, index, out) == 0
    return out


def test_veth_with_its_peer_in_another_netns(pair):
    host, pod, h, p = pair
    assert make_veth(pair) == 0
    hidx = lib.mc_nl_link_index(h, b"mcv0")
    pidx = lib.mc_nl_link_index(p, b"eth0")
    assert hidx > 0 and pidx > 0
    assert lib.mc_nl_link_index(h, b"eth0") == -errno.ENODEV  # the peer is not in the host ns
    assert lib.mc_nl_link_index(p, b"mcv0") == -errno.ENODEV
    hl, pl = get(h, hidx), get(p, pidx)
    assert ffi.string(hl.kind) == b"veth" and ffi.string(pl.kind) == b"veth"
    assert ffi.string(hl.name) == b"mcv0" and ffi.string(pl.name) == b"eth0"
    assert hl.mtu == 1400 and pl.mtu == 1400
    shown = {x["ifname"]: x for x in ipj(pod, "link", "show")}
    assert shown["eth0"]["address"] == ":".join(f"{b:02x}" for b in pl.mac)
    assert shown["eth0"]["mtu"] == 1400
    assert ipj(host, "link", "show", "mcv0")[0]["address"] == ":".join(f"{b:02x}" for b in hl.mac)
    assert not hl.flags & 1
    assert lib.mc_nl_link_set(h, hidx, 1, 0) == 0
    assert get(h, hidx).flags & 1
    assert lib.mc_nl_link_set(h, hidx, -1, 1300) == 0
    assert get(h, hidx).mtu == 1300 and get(h, hidx).flags & 1
    assert lib.mc_nl_link_set(h, hidx, 0, 0) == 0
    assert not get(h, hidx).flags & 1


def test_errors_come_back_as_errno(pair):
    host, pod, h, p = pair
    assert make_veth(pair) == 0
    assert make_veth(pair) == -errno.EEXIST
    assert make_veth(pair, name="mcv1") == -errno.EEXIST  # the peer's name is taken in the pod
    assert lib.mc_nl_link_index(h, b"nosuch") == -errno.ENODEV
    out = ffi.new("struct mc_nl_link *")
    assert lib.mc_nl_link_get(h, 999999, out) == -errno.ENODEV
    assert lib.mc_nl_link_set(h, 999999, 1, 0) == -errno.ENODEV
    assert lib.mc_nl_link_del(h, 999999) == -errno.ENODEV
    assert lib.mc_nl_link_index(h, b"x" * 16) == -errno.EINVAL
    assert make_veth(pair, name="x" * 16) == -errno.EINVAL
    assert lib.mc_nl_veth_create(h, b"mcv2", b"eth9", -1, 0) == 0  # both ends at home
    assert lib.mc_nl_link_index(h, b"eth9") > 0
    pidx = lib.mc_nl_link_index(p, b"eth0")
    a = ipaddress.ip_address("10.9.0.2").packed
    assert lib.mc_nl_addr_add(p, pidx, AF_INET, a, 32, 0) == 0
    assert lib.mc_nl_addr_add(p, pidx, AF_INET, a, 32, 0) == -errno.EEXIST
    assert lib.mc_nl_addr_add(p, pidx, AF_INET, a, 33, 0) == -errno.EINVAL
    assert lib.mc_nl_addr_add(p, pidx, 99, a, 32, 0) == -errno.EAFNOSUPPORT
    # a gateway with no route to it
    gw = ipaddress.ip_address("192.0.2.1").packed
    assert lib.mc_nl_route_add(p, AF_INET, ffi.NULL, 0, gw, pidx, 0, 0) == -errno.ENETUNREACH


def test_addresses_routes_and_neighbours_as_the_plugin_sets_them(pair):
    host, pod, h, p = pair
    assert make_veth(pair) == 0
    hidx, pidx = lib.mc_nl_link_index(h, b"mcv0"), lib.mc_nl_link_index(p, b"eth0")
    hmac = bytes(get(h, hidx).mac)
    assert lib.mc_nl_link_set(h, hidx, 1, 0) == 0
    assert lib.mc_nl_link_set(p, pidx, 1, 0) == 0
    ip4, gw4 = ipaddress.ip_address("10.9.0.2"), ipaddress.ip_address(link.GATEWAY4)
    ip6, gw6 = ipaddress.ip_address("fd09::2"), ipaddress.ip_address(link.GATEWAY6)
    assert lib.mc_nl_addr_add(p, pidx, AF_INET, ip4.packed, 32, 0) == 0
    assert lib.mc_nl_route_add(p, AF_INET, gw4.packed, 32, ffi.NULL, pidx, 253, 0) == 0
    assert lib.mc_nl_neigh_add(p, pidx, AF_INET, gw4.packed, hmac, 0x80) == 0
    assert lib.mc_nl_route_add(p, AF_INET, ffi.NULL, 0, gw4.packed, pidx, 0, 0) == 0
    assert lib.mc_nl_route_add(p, AF_INET, ffi.NULL, 0, gw4.packed, pidx, 0, 0) == -errno.EEXIST
    assert lib.mc_nl_addr_add(p, pidx, AF_INET6, ip6.packed, 128, 0x02) == 0
    assert lib.mc_nl_neigh_add(p, pidx, AF_INET6, gw6.packed, hmac, 0x80) == 0
    assert lib.mc_nl_neigh_add(p, pidx, AF_INET6, gw6.packed, hmac, 0x80) == -errno.EEXIST
    assert lib.mc_nl_route_add(p, AF_INET6, ffi.NULL, 0, gw6.packed, pidx, 0, 0) == 0
    # the host side: replace, so a retried ADD converges
    for _ in range(2):
        assert lib.mc_nl_route_add(h, AF_INET, ip4.packed, 32, ffi.NULL, hidx, 253, 1) == 0
        assert lib.mc_nl_route_add(h, AF_INET6, ip6.packed, 128, ffi.NULL, hidx, 253, 1) == 0

    addrs = ipj(pod, "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in addrs if a["scope"] == "global"} == {("10.9.0.2", 32),
                                                                                       ("fd09::2", 128)}
    assert [a for a in addrs if a["local"] == "fd09::2"][0].get("nodad") is True
    mac = ":".join(f"{b:02x}" for b in hmac)
    neigh = {(n["dst"], n["lladdr"], tuple(n["state"])) for n in ipj(pod, "neigh", "show", "dev", "eth0")}
    assert neigh == {(link.GATEWAY4, mac, ("PERMANENT",)), (link.GATEWAY6, mac, ("PERMANENT",))}
    r4 = ipj(pod, "-4", "route", "show", "dev", "eth0")
    assert {"dst": "169.254.1.1", "scope": "link"}.items() <= [r for r in r4 if r["dst"] != "default"][0].items()
    assert [r["gateway"] for r in r4 if r["dst"] == "default"] == [link.GATEWAY4]
    r6 = ipj(pod, "-6", "route", "show", "dev", "eth0")
    assert [r["gateway"] for r in r6 if r["dst"] == "default"] == [link.GATEWAY6]
    hr = {r["dst"]: r for r in ipj(host, "route", "show", "dev", "mcv0")}
    assert hr["10.9.0.2"]["scope"] == "link"
    assert [r["dst"] for r in ipj(host, "-6", "route", "show", "dev", "mcv0")].count("fd09::2") == 1


def test_link_del_takes_the_peer_with_it(pair):
    host, pod, h, p = pair
    assert make_veth(pair) == 0
    hidx = lib.mc_nl_link_index(h, b"mcv0")
    assert lib.mc_nl_link_del(h, hidx) == 0
    assert lib.mc_nl_link_index(h, b"mcv0") == -errno.ENODEV
    assert lib.mc_nl_link_index(p, b"eth0") == -errno.ENODEV
    assert lib.mc_nl_link_del(h, hidx) == -errno.ENODEV
    assert "eth0" not in [x["ifname"] for x in ipj(pod, "link", "show")]


def test_a_socket_acts_in_the_namespace_it_was_opened_in(pair):
    host, pod, h, p = pair
    # the thread is in yet another namespace while both sockets are used
    with link.entered(f"/run/netns/{host}"):
        assert make_veth(pair) == 0
        pidx = lib.mc_nl_link_index(p, b"eth0")
        assert pidx > 0 and lib.mc_nl_link_set(p, pidx, 1, 0) == 0
    assert "eth0" in [x["ifname"] for x in ipj(pod, "link", "show")]
    lo = lib.mc_nl_link_index(p, b"lo")
    assert lo > 0 and lib.mc_nl_link_set(p, lo, 1, 0) == 0
    assert "UP" in ipj(pod, "link", "show", "lo")[0]["flags"]


def test_python_wrapper_raises_oserror_with_errno(pair):
    host, pod, h, p = pair
    with link.entered(f"/run/netns/{host}"):
        nl = link.Netlink()
    with nl:
        assert nl.link_index("nosuch") is None
        with pytest.raises(OSError) as e:
            nl.link_del(999999)
        assert e.value.errno == errno.ENODEV
        assert make_veth(pair) == 0
        info = nl.link_info(nl.link_index("mcv0"))
        assert info["kind"] == "veth" and info["mtu"] == 1400 and info["name"] == "mcv0"
        assert link.delete_link(nl, "mcv0") and not link.delete_link(nl, "mcv0")


# ---- the plugin's ADD and DEL never import pyroute2 (nor numpy) ---------------

PROBE = """#!{python} -s
import os, sys
from meshcni.cni.plugin import main
rc = main()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pyroute2", "numpy"))
with open(os.environ["MESHCNI_TEST_MODULES_OUT"], "a") as f:
    f.write(os.environ["CNI_COMMAND"] + " " + ",".join(heavy) + "\\n")
sys.exit(rc)
"""


@pytest.fixture
def node(netns, tmp_path):
    name = netns("mcnlnode")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    bin_dir = tmp_path / "bin"
    install(str(bin_dir), str(tmp_path / "net.d"), subnets=["10.21.0.0/24"])
    probe = bin_dir / "meshcni-probe"
    probe.write_text(PROBE.format(python=sys.executable))
    probe.chmod(0o755)
    return name, tmp_path


def _runtime(node, plugins, out, version="1.1.0"):
    name, tmp = node
    return Runtime({"cniVersion": version, "name": "podnet", "plugins": plugins},
                   [str(tmp / "bin"), REF_PLUGINS], cache_dir=str(tmp / "cache"),
                   node_netns=f"/run/netns/{name}", extra_env={"MESHCNI_TEST_MODULES_OUT": str(out)})


def _mesh(tmp, **kw):
    c = {"type": "meshcni-probe", "datapath": "off", "stateDir": str(tmp / "state"),
         "ipam": {"type": "meshcni", "dataDir": str(tmp / "ipam"),
                  "ranges": [[{"subnet": "10.21.0.0/24"}], [{"subnet": "fd21::/120"}]]}}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


@pytest.mark.parametrize("datapath", ["off", "required"])
def test_add_and_del_import_neither_pyroute2_nor_numpy(node, netns, tmp_path, pin_root, datapath):
    out = tmp_path / "modules.txt"
    conf = _mesh(node[1], datapath=datapath)
    with contextlib.ExitStack() as st:
        if datapath == "required":  # the tc attach goes through the compiled core as well
            from meshcni.datapath.policy import PolicyProgram
            st.enter_context(PolicyProgram(pin_root)).pin_programs(pin_root)
            conf["bpfRoot"] = pin_root
        rt = _runtime(node, [conf], out)
        pod = netns("mcnlpod")
        att = Attachment(uuid.uuid4().hex[:12], f"/run/netns/{pod}", "eth0", {"K8S_POD_NAME": "p"})
        res = rt.add(att)
        assert [r["gw"] for r in res["routes"]] == [link.GATEWAY4, link.GATEWAY6]
        rt.check(att)  # CHECK may use pyroute2; it still sees what the C path made
        rt.delete(att)
    lines = out.read_text().splitlines()
    assert lines[0] == "ADD " and lines[-1] == "DEL ", lines
    assert "pyroute2" in lines[1]  # the probe does see pyroute2 when it is imported


def test_chained_add_and_del_import_neither(node, netns, tmp_path):
    if not os.access(os.path.join(REF_PLUGINS, "ptp"), os.X_OK):
        pytest.skip("Debian's containernetworking-plugins (ptp) not installed")
    out = tmp_path / "modules.txt"
    ptp = {"type": "ptp", "ipMasq": False,
           "ipam": {"type": "host-local", "subnet": "10.22.0.0/24", "dataDir": str(node[1] / "hl")}}
    rt = _runtime(node, [ptp, _mesh(node[1], ipam=None)], out, version="1.0.0")
    pod = netns("mcnlpod")
    att = Attachment(uuid.uuid4().hex[:12], f"/run/netns/{pod}", "eth0", {"K8S_POD_NAME": "p"})
    rt.add(att)
    rt.delete(att)
    assert out.read_text().splitlines() == ["ADD ", "DEL "]


def _pod_state(ns, own):
    addrs = sorted((a["local"] in own, a["prefixlen"]) for a in ipj(ns, "addr", "show", "dev", "eth0")[0]["addr_info"]
                   if a["scope"] == "global")
    routes = sorted((str(r["dst"] in own or r["dst"]), r.get("gateway", ""), r.get("scope", ""),
                     r.get("protocol", ""))
                    for fam in ("-4", "-6") for r in ipj(ns, fam, "route", "show", "dev", "eth0")
                    if not r["dst"].startswith("fe80::/64"))
    neigh = sorted((n["dst"], tuple(n["state"])) for n in ipj(ns, "neigh", "show", "dev", "eth0"))
    up = "UP" in ipj(ns, "link", "show", "dev", "eth0")[0]["flags"]
    lo_up = "UP" in ipj(ns, "link", "show", "dev", "lo")[0]["flags"]
    return addrs, routes, neigh, up, lo_up


def test_both_backends_leave_the_same_state(node, netns, tmp_path):
    """The C path against the pyroute2 path (MESHCNI_CNI_NETLINK=pyroute2), dual stack."""
    name, tmp = node
    rt = _runtime(node, [_mesh(tmp)], tmp_path / "modules.txt")
    states = []
    for env in ({}, {"MESHCNI_CNI_NETLINK": "pyroute2"}):
        pod = netns("mcnlpod")
        att = Attachment("same-container", f"/run/netns/{pod}", "eth0", {})
        res = rt.add(att, env_override=env)
        host_if = res["interfaces"][0]["name"]
        own = {i["address"].split("/")[0] for i in res["ips"]}
        host_routes = sorted((r["dst"] in own, r.get("scope", ""), r.get("protocol", ""))
                             for fam in ("-4", "-6") for r in ipj(name, fam, "route", "show", "dev", host_if)
                             if not r["dst"].startswith("fe80::/64"))
        states.append((_pod_state(pod, own), host_routes, [r["gw"] for r in res["routes"]]))
        rt.delete(att)
        assert host_if not in [x["ifname"] for x in ipj(name, "link", "show")]
    assert states[0] == states[1]
