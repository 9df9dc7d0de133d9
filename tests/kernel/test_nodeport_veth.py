# SPDX-License-Identifier: MIT OR Apache-2.0
"""The uplink program with real packets: an external host, two nodes and their pods in test netns.

node1's eth0 carries bpf/nodeport.bpf.c; node2 is a plain router for its pod
(the remote backend). The pods answer with the address they saw, so each
test checks who the backend believes it talks to (helpers/uplinktopo.py).
"""
import contextlib
import os
import subprocess
import sys

import pytest

from meshcni.bpf import MeshMaps
from meshcni.datapath.nodeport import Device, NodePortDatapath, UplinkConfig

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
sys.path.insert(0, HELPERS)
from svcrows import write_frontend, write_ipcache  # noqa: E402
from uplinktopo import EXT, NODE1, NODE2, POD1, POD1_CIDR, PODS_CIDR, POD2, Topology  # noqa: E402

pytestmark = pytest.mark.kernel
PEER = os.path.join(HELPERS, "peerecho.py")


@pytest.fixture
def topo():
    with contextlib.ExitStack() as stack:
        yield Topology(stack)


@pytest.fixture
def servers():
    procs = []

    def start(ns, ip, port):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PEER, "serve", ip, str(port)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    yield start
    for p in procs:
        p.kill()
        p.wait()


def ask(ns, proto, ip, port, timeout=2.0):
    """(ip, port) the server saw, or None when nothing came back."""
    p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, PEER, "ask", proto, ip, str(port), str(timeout)],
                       capture_output=True, text=True, timeout=timeout + 10)
    if p.returncode:
        return None
    ip_, port_ = p.stdout.split()
    return ip_, int(port_)


@pytest.fixture
def uplink(topo, pin_root):
    maps = MeshMaps(pin_root)
    d = NodePortDatapath(pin_root, maps, netns=topo.node1)
    d.apply(UplinkConfig(devices=[Device("eth0", NODE1)], local_pod_cidrs=[POD1_CIDR], pod_cidrs=[PODS_CIDR],
                         service_cidrs=["10.96.0.0/12"]))
    write_ipcache(maps, {NODE1 + "/32": 1, NODE2 + "/32": 6})
    d.maps_ = maps
    try:
        yield d
    finally:
        d.remove()
        d.close()
        maps.close()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_nodeport_to_a_local_backend_keeps_the_client_address(topo, uplink, servers, proto):
    servers(topo.pod1, "0.0.0.0", 8080)
    write_frontend(uplink.maps_, NODE1, 30080, proto, 1, [(POD1, 8080)], flags=("nodeport",))
    assert ask(topo.ext, proto, NODE1, 30080)[0] == EXT


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_nodeport_to_a_remote_backend_is_snated_to_the_node(topo, uplink, servers, proto):
    servers(topo.pod2, "0.0.0.0", 8080)
    write_frontend(uplink.maps_, NODE1, 30081, proto, 2, [(POD2, 8080)], flags=("nodeport",))
    for _ in range(3):
        seen = ask(topo.ext, proto, NODE1, 30081)
        assert seen is not None and seen[0] == NODE1 and 61000 <= seen[1] <= 65535


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_etp_local_keeps_the_client_and_no_local_backend_drops(topo, uplink, servers, proto):
    servers(topo.pod1, "0.0.0.0", 8080)
    write_frontend(uplink.maps_, NODE1, 30082, proto, 3, [(POD1, 8080)],
                   flags=("nodeport", "etp_local", "two_scopes"))
    write_frontend(uplink.maps_, NODE1, 30083, proto, 4, [], flags=("nodeport", "etp_local", "two_scopes"))
    assert ask(topo.ext, proto, NODE1, 30082)[0] == EXT
    assert ask(topo.ext, proto, NODE1, 30083, timeout=0.5) is None


def test_external_ip_frontend(topo, uplink, servers):
    # an externalIP routed to node1 by the external host
    servers(topo.pod2, "0.0.0.0", 8080)
    subprocess.run(["ip", "-n", topo.ext, "route", "add", "198.51.100.50/32", "via", NODE1], check=True)
    subprocess.run(["ip", "-n", topo.node1, "addr", "add", "198.51.100.50/32", "dev", "lo"], check=True)
    write_frontend(uplink.maps_, "198.51.100.50", 80, "tcp", 5, [(POD2, 8080)], flags=("external",))
    assert ask(topo.ext, "tcp", "198.51.100.50", 80)[0] == NODE1


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_pod_traffic_to_the_outside_is_masqueraded(topo, uplink, servers, proto):
    servers(topo.ext, "0.0.0.0", 9000)
    seen = ask(topo.pod1, proto, EXT, 9000)
    assert seen is not None and seen[0] == NODE1


def test_pod_to_pod_and_pod_to_node_are_not_masqueraded(topo, uplink, servers):
    servers(topo.pod2, "0.0.0.0", 8080)
    servers(topo.node2, "0.0.0.0", 8081)
    assert ask(topo.pod1, "tcp", POD2, 8080)[0] == POD1
    assert ask(topo.pod1, "tcp", NODE2, 8081)[0] == POD1


def test_masquerade_off_and_detach(topo, uplink, servers):
    servers(topo.ext, "0.0.0.0", 9000)
    uplink.apply(UplinkConfig(devices=[Device("eth0", NODE1, masquerade=False)], local_pod_cidrs=[POD1_CIDR],
                              pod_cidrs=[PODS_CIDR]))
    # no masquerade: the external host has no route back to the pod, nothing returns
    assert ask(topo.pod1, "udp", EXT, 9000, timeout=0.5) is None
    assert set(uplink.attached("eth0").values()) != {None}
    assert uplink.apply(UplinkConfig(devices=[])) == {"devices": 0, "cidrs": 0}
    assert set(uplink.attached("eth0").values()) == {None}


def test_agent_reconciler_finds_the_uplink_and_masquerades(topo, pin_root, servers):
    """The agent's Uplink reconciler: the device is the one holding the Node's InternalIP."""
    from meshcni.agent.uplink import Uplink, UplinkOptions, desired_uplink
    from meshcni.datapath.policy import in_netns

    servers(topo.ext, "0.0.0.0", 9000)
    nodes = [{"metadata": {"name": "n1"}, "spec": {"podCIDRs": [POD1_CIDR]},
              "status": {"addresses": [{"type": "InternalIP", "address": NODE1}]}},
             {"metadata": {"name": "n2"}, "spec": {"podCIDRs": ["10.1.2.0/24"]},
              "status": {"addresses": [{"type": "InternalIP", "address": NODE2}]}}]
    with MeshMaps(pin_root) as maps:
        r = Uplink.for_agent(pin_root, maps, "n1", UplinkOptions())
        r.datapath.netns = topo.node1
        try:
            with in_netns(topo.node1):
                out = r.apply(desired_uplink(nodes, "n1", UplinkOptions()).state)
            assert out["devices"] == 1 and out["natExpired"] == 0 and out["requeueAfter"] == 30.0
            assert [(d.ifname, d.addr4, d.masquerade) for d in r.devices] == [("eth0", NODE1, True)]
            assert ask(topo.pod1, "tcp", EXT, 9000)[0] == NODE1
            # applied again: nothing changes, the programs stay
            ids = r.datapath.attached("eth0")
            with in_netns(topo.node1):
                r.apply(desired_uplink(nodes, "n1", UplinkOptions()).state)
            assert r.datapath.attached("eth0") == ids
            with in_netns(topo.node1):
                r.apply(desired_uplink(nodes, "n1", UplinkOptions(masquerade=False)).state)
            assert ask(topo.pod1, "udp", EXT, 9000, timeout=0.5) is None
        finally:
            r.datapath.remove()
            r.datapath.close()


LINE_ECHO = r'''
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8); print("ready", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(line); f.flush()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
'''

LONG_CLIENT = r'''
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = c.makefile("rwb")
for line in sys.stdin:
    f.write(line.encode()); f.flush()
    print(f.readline().decode().strip(), flush=True)
'''


def test_a_translated_connection_survives_an_agent_restart(topo, pin_root):
    """The NAT state is pinned: a new program object (an agent restart, an upgrade) swapped in
    under a live SNATed connection keeps translating its packets both ways."""
    srv = subprocess.Popen(["ip", "netns", "exec", topo.pod2, sys.executable, "-c", LINE_ECHO, "8080"],
                           stdout=subprocess.PIPE, text=True)
    cli = None
    maps = MeshMaps(pin_root)
    cfg = UplinkConfig(devices=[Device("eth0", NODE1)], local_pod_cidrs=[POD1_CIDR], pod_cidrs=[PODS_CIDR])
    first = NodePortDatapath(pin_root, maps, netns=topo.node1)
    second = None
    try:
        assert srv.stdout.readline().strip() == "ready"
        first.apply(cfg)
        write_frontend(maps, NODE1, 30085, "tcp", 9, [(POD2, 8080)], flags=("nodeport",))
        cli = subprocess.Popen(["ip", "netns", "exec", topo.ext, sys.executable, "-c", LONG_CLIENT, NODE1, "30085"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cli.stdin.write("before\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "before"
        before = first.attached("eth0")
        first.close()  # the agent goes; its programs stay attached
        second = NodePortDatapath(pin_root, maps, netns=topo.node1)
        assert set(second.attach("eth0").values()) == {"updated"}
        assert second.attached("eth0") != before
        cli.stdin.write("after\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "after"
    finally:
        for p in (cli, srv):
            if p:
                p.kill()
                p.wait()
        if second:
            second.detach("eth0")
            second.close()
        else:
            first.remove()
            first.close()
        maps.close()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_nodeport_local_remote_and_masquerade(pin_root, servers, proto):
    from uplinktopo import EXT6, NODE1_6, POD1_6, POD1_CIDR6, POD2_6, PODS_CIDR6
    with contextlib.ExitStack() as stack:
        topo = Topology(stack, v6=True)
        maps = stack.enter_context(MeshMaps(pin_root))
        d = stack.enter_context(NodePortDatapath(pin_root, maps, netns=topo.node1))
        d.apply(UplinkConfig(devices=[Device("eth0", NODE1, NODE1_6)], local_pod_cidrs=[POD1_CIDR, POD1_CIDR6],
                             pod_cidrs=[PODS_CIDR, PODS_CIDR6]))
        stack.callback(d.remove)
        servers(topo.pod1, "::", 8080)
        servers(topo.pod2, "::", 8080)
        servers(topo.ext, "::", 9000)
        write_frontend(maps, NODE1_6, 30080, proto, 1, [(POD1_6, 8080)], flags=("nodeport",))
        write_frontend(maps, NODE1_6, 30081, proto, 2, [(POD2_6, 8080)], flags=("nodeport",))
        assert ask(topo.ext, proto, NODE1_6, 30080)[0] == EXT6
        seen = ask(topo.ext, proto, NODE1_6, 30081)
        assert seen is not None and seen[0] == NODE1_6 and 61000 <= seen[1] <= 65535
        assert ask(topo.pod1, proto, EXT6, 9000)[0] == NODE1_6


UDPFRAG = os.path.join(HELPERS, "udpfrag.py")


@pytest.mark.parametrize("path", ["masquerade", "nodeport-remote"])
def test_fragmented_datagrams_are_translated_both_ways(topo, uplink, path):
    """4000-byte UDP datagrams each way (three fragments at MTU 1500): every fragment of a
    translated flow is rewritten, so both ends reassemble."""
    if path == "masquerade":
        srv_ns, client_ns, ip, port = topo.ext, topo.pod1, EXT, 9000
    else:
        write_frontend(uplink.maps_, NODE1, 30086, "udp", 10, [(POD2, 9000)], flags=("nodeport",))
        srv_ns, client_ns, ip, port = topo.pod2, topo.ext, NODE1, 30086
    srv = subprocess.Popen(["ip", "netns", "exec", srv_ns, sys.executable, UDPFRAG, "serve", "0.0.0.0", "9000",
                            "4000"], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        out = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, UDPFRAG, "send", ip, str(port),
                              "4000", "2"], capture_output=True, text=True, timeout=30).stdout.strip()
        assert out == "4000"
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_outside_host_reaching_a_pod_directly_gets_the_pods_address_back(topo, uplink, servers, pin_root, proto):
    """Pod IPs are routed: a host outside reaches pod1 directly while masquerade is on; the pod's
    replies keep its address (the pod veth's policy program tracks the inbound flow, as the agent
    and CNI plugin attach it on every pod)."""
    import socket as _socket

    from meshcni.datapath.policy import PolicyProgram, in_netns
    subprocess.run(["ip", "-n", topo.ext, "route", "add", POD1_CIDR, "via", NODE1], check=True)
    servers(topo.pod1, "0.0.0.0", 8080)
    with PolicyProgram(pin_root) as prog:
        d = prog.datapath(uplink.maps_)
        with in_netns(topo.node1):
            d.set_endpoint(_socket.if_nametoindex("vpod"), 1000, POD1)
        prog.attach("vpod", netns=topo.node1)
        try:
            assert ask(topo.ext, proto, POD1, 8080)[0] == EXT
            # and the pod's own flows to that host are still masqueraded
            servers(topo.ext, "0.0.0.0", 9000)
            assert ask(topo.pod1, proto, EXT, 9000)[0] == NODE1
        finally:
            prog.detach("vpod", netns=topo.node1)
