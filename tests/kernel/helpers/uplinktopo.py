# SPDX-License-Identifier: MIT OR Apache-2.0
"""Two nodes, their pods and an external host on one underlay, all in test namespaces.

    underlay ns: bridge br0
    ext   eth0 192.0.2.100/24                      (an external client; no pod routes)
    node1 eth0 192.0.2.10/24, forwarding; veth to pod1 (10.1.1.5/24, gw 10.1.1.1)
          route 10.1.2.0/24 via node2
    node2 eth0 192.0.2.11/24, forwarding; veth to pod2 (10.1.2.7/24, gw 10.1.2.1)
          route 10.1.1.0/24 via node1

Nothing touches the root namespace; every namespace goes with the ExitStack.
"""
import contextlib
import subprocess

from meshcni.sandbox import netns as make_netns

NODE1, NODE2, EXT = "192.0.2.10", "192.0.2.11", "192.0.2.100"
POD1, POD2 = "10.1.1.5", "10.1.2.7"
POD1_CIDR, POD2_CIDR = "10.1.1.0/24", "10.1.2.0/24"
PODS_CIDR = "10.1.0.0/16"
# dual stack (Topology(v6=True)): the same shape in 2001:db8:a::/64 and fd00:1::/48
NODE1_6, NODE2_6, EXT6 = "2001:db8:a::10", "2001:db8:a::11", "2001:db8:a::100"
POD1_6, POD2_6 = "fd00:1:1::5", "fd00:1:2::7"
POD1_CIDR6, POD2_CIDR6, PODS_CIDR6 = "fd00:1:1::/64", "fd00:1:2::/64", "fd00:1::/48"


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def ipn(ns, *args):
    sh("ip", "-n", ns, *args)


def sysctl(ns, key, val):
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={val}")


class Topology:
    def __init__(self, stack: contextlib.ExitStack, v6: bool = False):
        def ns(prefix):
            return stack.enter_context(make_netns(prefix))

        self.ul, self.ext = ns("mcul"), ns("mcext")
        self.node1, self.node2 = ns("mcn1"), ns("mcn2")
        self.pod1, self.pod2 = ns("mcp1"), ns("mcp2")
        ipn(self.ul, "link", "add", "br0", "type", "bridge")
        ipn(self.ul, "link", "set", "br0", "up")
        for i, (host, addr) in enumerate(((self.ext, EXT), (self.node1, NODE1), (self.node2, NODE2))):
            self._plug(host, f"ul{i}", addr)
        for node, pod, gw, addr in ((self.node1, self.pod1, "10.1.1.1", POD1),
                                    (self.node2, self.pod2, "10.1.2.1", POD2)):
            sysctl(node, "net.ipv4.ip_forward", 1)
            ipn(node, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
            ipn(node, "addr", "add", gw + "/24", "dev", "vpod")
            ipn(node, "link", "set", "vpod", "up")
            ipn(pod, "addr", "add", addr + "/24", "dev", "eth0")
            ipn(pod, "link", "set", "eth0", "up")
            ipn(pod, "route", "add", "default", "via", gw)
        ipn(self.node1, "route", "add", POD2_CIDR, "via", NODE2)
        ipn(self.node2, "route", "add", POD1_CIDR, "via", NODE1)
        if v6:
            self._v6()

    def _v6(self):
        for host, addr in ((self.ext, EXT6), (self.node1, NODE1_6), (self.node2, NODE2_6)):
            ipn(host, "addr", "add", addr + "/64", "dev", "eth0", "nodad")
        for node, pod, gw, addr in ((self.node1, self.pod1, "fd00:1:1::1", POD1_6),
                                    (self.node2, self.pod2, "fd00:1:2::1", POD2_6)):
            sysctl(node, "net.ipv6.conf.all.forwarding", 1)
            ipn(node, "addr", "add", gw + "/64", "dev", "vpod", "nodad")
            ipn(pod, "addr", "add", addr + "/64", "dev", "eth0", "nodad")
            ipn(pod, "route", "add", "default", "via", gw)
        ipn(self.node1, "route", "add", POD2_CIDR6, "via", NODE2_6)
        ipn(self.node2, "route", "add", POD1_CIDR6, "via", NODE1_6)

    def _plug(self, host, port, addr):
        ipn(self.ul, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
        ipn(self.ul, "link", "set", port, "master", "br0")
        ipn(self.ul, "link", "set", port, "up")
        ipn(host, "addr", "add", addr + "/24", "dev", "eth0")
        ipn(host, "link", "set", "eth0", "up")
