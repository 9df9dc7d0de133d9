# SPDX-License-Identifier: MIT OR Apache-2.0
"""datapath.tc.TcHooks on a real veth: the one tc loop the pod and uplink programs share.

The programs are policy.bpf.o's (any tc program does) so that the uplink
handle is exercised whatever nodeport.bpf.o loads on this kernel: two handles
on one device stay apart, attach keeps a program of the same id and replaces
another, detach counts what went, and a failed attach names the device.
"""
import errno
import socket
import subprocess

import pytest

from meshcni._libbpf import lib
from meshcni.datapath import tcpins
from meshcni.datapath.nodeport import UPLINK_TC
from meshcni.datapath.policy import PolicyProgram, in_netns
from meshcni.errors import BpfError

pytestmark = pytest.mark.kernel


@pytest.fixture
def veth(netns):
    ns = netns("mctc")
    subprocess.run(["ip", "-n", ns, "link", "add", "mctc0", "type", "veth", "peer", "name", "mctc1"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "mctc0", "up"], check=True)
    return ns


def _as_uplink(prog):
    """The policy programs' fds under the uplink's program names."""
    return {up: prog.obj.prog_fd(pod) for (up, _), (pod, _) in zip(UPLINK_TC.hooks, tcpins.HOOKS)}


def test_two_handles_on_one_device_attach_keep_update_detach(veth, pin_root):
    with PolicyProgram(pin_root) as a, PolicyProgram(pin_root) as b, in_netns(veth):
        ifindex = socket.if_nametoindex("mctc0")
        assert UPLINK_TC.attached(ifindex) == {"mc_uplink_in": None, "mc_uplink_out": None}

        assert UPLINK_TC.attach(ifindex, _as_uplink(a), "mctc0") == {"mc_uplink_in": "attached",
                                                                     "mc_uplink_out": "attached"}
        assert UPLINK_TC.attach(ifindex, _as_uplink(a), "mctc0") == {"mc_uplink_in": "kept",
                                                                     "mc_uplink_out": "kept"}
        ids_a = {up: lib.mc_prog_id(fd) for up, fd in _as_uplink(a).items()}
        ids_b = {up: lib.mc_prog_id(fd) for up, fd in _as_uplink(b).items()}
        assert UPLINK_TC.attached(ifindex) == ids_a != ids_b
        assert UPLINK_TC.attach(ifindex, _as_uplink(b), "mctc0") == {"mc_uplink_in": "updated",
                                                                     "mc_uplink_out": "updated"}
        got = UPLINK_TC.attached(ifindex)
        assert got == ids_b

        # the pod handle on the same device is another slot: the uplink's stays
        assert a.attach("mctc0") == {"mc_from_pod": "attached", "mc_to_pod": "attached"}
        assert UPLINK_TC.attached(ifindex) == got
        assert set(tcpins.attached(ifindex)) == {"mc_from_pod", "mc_to_pod"}
        assert None not in tcpins.attached(ifindex).values()

        assert UPLINK_TC.detach(ifindex) == 2
        assert UPLINK_TC.detach(ifindex) == 0   # nothing there is no error
        assert None not in tcpins.attached(ifindex).values()
        assert tcpins.detach(ifindex) == 2
        assert tcpins.attached(ifindex) == {"mc_from_pod": None, "mc_to_pod": None}


def test_pinned_attach_replaces_and_converges(veth, pin_root):
    with PolicyProgram(pin_root) as prog, in_netns(veth):
        prog.pin_programs(pin_root)
        ifindex = socket.if_nametoindex("mctc0")
        ids = tcpins.attach(pin_root, ifindex)
        assert tcpins.attached(ifindex) == ids
        # a retried ADD replaces the same program again and converges to the same ids
        assert tcpins.attach(pin_root, ifindex) == ids == tcpins.attached(ifindex)
        assert tcpins.detach(ifindex) == 2
        assert tcpins.detach(ifindex) == 0   # strict, but nothing there is no error


def test_attach_names_the_device_on_failure(veth, pin_root):
    with PolicyProgram(pin_root) as prog, in_netns(veth):
        with pytest.raises(BpfError) as e:
            UPLINK_TC.attach(2 ** 31 - 1, _as_uplink(prog), "nosuchdev")
        assert "nosuchdev" in str(e.value)
        assert e.value.errno in (errno.ENODEV, errno.EINVAL, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP)
