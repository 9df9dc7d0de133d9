# SPDX-License-Identifier: MIT OR Apache-2.0
"""bpf/policy.bpf.c attached to a real veth, real packets.

Two test-made network namespaces: "host" holds the host side of the veth
(where the programs attach, as on a node), "pod" the other end. Nothing
touches the root namespace.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshcni.datapath.policy import EGRESS, INGRESS, DropEvents, PolicyEntry, PolicyProgram

pytestmark = pytest.mark.kernel

POD, HOST_ID = 1000, 1
HOST_IP, POD_IP = "10.99.0.1", "10.99.0.2"
HOST6, POD6 = "fd99::1", "fd99::2"

def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def veth(netns):
    h, p = netns("mch"), netns("mcp")
    sh("ip", "-n", h, "link", "add", "vh", "type", "veth", "peer", "name", "vp", "netns", p)
    sh("ip", "-n", h, "addr", "add", HOST_IP + "/24", "dev", "vh")
    sh("ip", "-n", p, "addr", "add", POD_IP + "/24", "dev", "vp")
    sh("ip", "-n", h, "addr", "add", HOST6 + "/64", "dev", "vh", "nodad")
    sh("ip", "-n", p, "addr", "add", POD6 + "/64", "dev", "vp", "nodad")
    for ns, dev in ((h, "vh"), (p, "vp"), (h, "lo"), (p, "lo")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    out = subprocess.run(["ip", "-n", h, "-j", "link", "show", "vh"], check=True, capture_output=True,
                         text=True).stdout
    return h, p, json.loads(out)[0]["ifindex"]


def test_attach_enforce_and_detach_on_a_real_veth(pin_root, veth, servers, reach):
    h, p, ifindex = veth
    servers(h, HOST_IP, 8080)
    servers(p, POD_IP, 9090)
    servers(h, HOST6, 8080)
    servers(p, POD6, 9090)
    with PolicyProgram(pin_root) as prog:
        assert prog.attached("vh", netns=h) == {"mc_from_pod": None, "mc_to_pod": None}
        assert prog.attach("vh", netns=h) == {"mc_from_pod": "attached", "mc_to_pod": "attached"}
        assert prog.attach("vh", netns=h) == {"mc_from_pod": "kept", "mc_to_pod": "kept"}
        ids = prog.attached("vh", netns=h)
        assert all(ids.values())
        d = prog.datapath()
        d.set_endpoint(ifindex, POD, POD_IP)
        d.set_ipcache({POD_IP + "/32": POD, HOST_IP + "/32": HOST_ID, POD6 + "/128": POD,
                       HOST6 + "/128": HOST_ID})
        try:
            # no policy: both ways work
            assert reach(p, HOST_IP, 8080)
            assert reach(h, POD_IP, 9090)
            assert reach(p, HOST6, 8080) and reach(h, POD6, 9090)
            # both directions default-deny
            d.apply([], [(POD, INGRESS), (POD, EGRESS)])
            d.ct.clear()
            with DropEvents(d.obj.map("mc_events")) as ev:
                ev.poll(0)
                assert not reach(p, HOST_IP, 8080, 0.5)
                assert not reach(h, POD_IP, 9090, 0.5)
                got = ev.poll(200)
            reasons = {(e.direction, e.reason, e.src_identity, e.dst_identity) for e in got}
            assert (EGRESS, "policy", POD, HOST_ID) in reasons
            assert (INGRESS, "policy", HOST_ID, POD) in reasons
            assert d.drop_counts()["policy"][0] >= 2
            # pod -> host:8080 allowed: the replies come back through conntrack,
            # while host -> pod stays closed
            d.apply([PolicyEntry(POD, EGRESS, peer=HOST_ID, proto=6, port=8080)],
                    [(POD, INGRESS), (POD, EGRESS)])
            assert reach(p, HOST_IP, 8080)
            assert not reach(h, POD_IP, 9090, 0.5)
            assert reach(p, HOST6, 8080)  # (neighbour discovery always passes)
            assert not reach(h, POD6, 9090, 0.5)
            assert len(d.ct) >= 2
        finally:
            d.close()
        # an upgrade (another load of the object) replaces in place
        with PolicyProgram(pin_root) as prog2:
            assert prog2.attach("vh", netns=h) == {"mc_from_pod": "updated", "mc_to_pod": "updated"}
            assert prog.attached("vh", netns=h) != ids
            assert reach(p, HOST_IP, 8080)  # state (pinned maps) carried over
        assert prog.detach("vh", netns=h) == 2
        assert prog.attached("vh", netns=h) == {"mc_from_pod": None, "mc_to_pod": None}
        assert prog.detach("vh", netns=h) == 0
        assert reach(h, POD_IP, 9090)  # nothing enforces any more


UDPFRAG = str(Path(__file__).parent / "helpers" / "udpfrag.py")


class _UdpServer:
    """udpfrag.py serve in a namespace; .got(timeout) = the datagram lengths it received."""

    def __init__(self, ns, ip, port, reply_len):
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, UDPFRAG, "serve", ip, str(port),
                                   str(reply_len)], stdout=subprocess.PIPE)
        assert self.p.stdout.readline().strip() == b"ready"
        os.set_blocking(self.p.stdout.fileno(), False)

    def got(self, wait=0.3):
        time.sleep(wait)
        try:
            out = os.read(self.p.stdout.fileno(), 65536)
        except BlockingIOError:
            out = b""
        return [int(x) for x in out.split()]

    def stop(self):
        self.p.kill()
        self.p.wait()


def _send(ns, ip, port, n, timeout=0.5):
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, UDPFRAG, "send", ip, str(port), str(n),
                          str(timeout)], check=True, capture_output=True, text=True).stdout.strip()
    return None if out == "none" else int(out)


def test_fragmented_udp_passes_where_policy_admits_it(pin_root, veth):
    """Real fragmented UDP (4,000-byte datagrams over a 1,500-byte link, both families):
    admitted datagrams arrive whole in both directions, large answers to a tracked query come
    back (the DNS case), datagrams to a port the policy does not admit do not arrive."""
    h, p, ifindex = veth
    servers = [_UdpServer(h, HOST_IP, 5353, 3000), _UdpServer(h, HOST_IP, 5354, 0),
               _UdpServer(p, POD_IP, 5353, 0), _UdpServer(h, HOST6, 5353, 3000)]
    try:
        with PolicyProgram(pin_root) as prog:
            prog.attach("vh", netns=h)
            d = prog.datapath()
            d.set_endpoint(ifindex, POD, POD_IP)
            d.set_ipcache({POD_IP + "/32": POD, HOST_IP + "/32": HOST_ID, POD6 + "/128": POD,
                           HOST6 + "/128": HOST_ID})
            try:
                d.apply([PolicyEntry(POD, EGRESS, peer=HOST_ID, proto=17, port=5353),
                         PolicyEntry(POD, INGRESS, peer=HOST_ID, proto=17, port=5353)],
                        [(POD, INGRESS), (POD, EGRESS)])
                # pod -> host, a 4,000-byte query, and a 3,000-byte answer back to the pod's
                # ephemeral port (admitted by conntrack, every fragment of it)
                assert _send(p, HOST_IP, 5353, 4000) == 3000
                assert servers[0].got() == [4000]
                assert _send(p, HOST6, 5353, 4000) == 3000
                assert servers[3].got() == [4000]
                # host -> pod on the admitted port
                assert _send(h, POD_IP, 5353, 4000, 0.1) is None  # (no answer configured)
                assert servers[2].got() == [4000]
                # a port the policy does not admit: neither small nor fragmented datagrams arrive
                _send(p, HOST_IP, 5354, 4000, 0.1)
                _send(p, HOST_IP, 5354, 100, 0.1)
                assert servers[1].got() == []
                counts = d.drop_counts()
                assert counts["policy"][0] >= 2 + 2  # the first fragment and at least one later one
                assert "fragment" not in counts      # every later fragment found its first
                # the datagrams really were fragmented: 4 admitted + 1 denied first fragments recorded
                assert len(d.obj.map("mc_frag").dump()[0]) >= 5
            finally:
                d.close()
            prog.detach("vh", netns=h)
    finally:
        for s in servers:
            s.stop()


def test_ipv6_fragments_behind_a_destination_options_header(pin_root, veth):
    """Real IPv6 fragments whose fragment header is followed by destination options: the later
    fragment names dest-opts (60), not UDP, as its next header. It used to be looked up as
    protocol 60 and dropped, so the admitted datagram never arrived; it now meets its first
    fragment's verdict, and the receiving kernel reassembles it (checksum and all)."""
    h, p, ifindex = veth
    servers = [_UdpServer(h, HOST6, 5353, 0), _UdpServer(h, HOST6, 5354, 0)]
    try:
        with PolicyProgram(pin_root) as prog:
            prog.attach("vh", netns=h)
            d = prog.datapath()
            d.set_endpoint(ifindex, POD, POD_IP)
            d.set_ipcache({POD_IP + "/32": POD, HOST_IP + "/32": HOST_ID, POD6 + "/128": POD,
                           HOST6 + "/128": HOST_ID})
            try:
                d.apply([PolicyEntry(POD, EGRESS, peer=HOST_ID, proto=17, port=5353)], [(POD, EGRESS)])
                for port in (5353, 5354):
                    out = subprocess.run(["ip", "netns", "exec", p, sys.executable, UDPFRAG, "send6-dstopts",
                                          POD6, HOST6, str(port), "2000"],
                                         check=True, capture_output=True, text=True).stdout
                    assert out.strip() == "sent"
                assert servers[0].got() == [2000]
                assert servers[1].got() == []
                counts = d.drop_counts()
                assert counts["policy"][0] == 2 and "fragment" not in counts  # both of 5354's, none of 5353's
            finally:
                d.close()
            prog.detach("vh", netns=h)
    finally:
        for s in servers:
            s.stop()
