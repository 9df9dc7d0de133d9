# SPDX-License-Identifier: MIT OR Apache-2.0
"""The simulated pods' server on loopback: its name on connect and per datagram, echo, and the client's
address on ``PEER`` (what the eTP Local e2e cells read)."""
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure


def _free(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_name_echo_and_peer_over_tcp_and_udp():
    tcp, udp = _free(socket.SOCK_STREAM), _free(socket.SOCK_DGRAM)
    p = subprocess.Popen([sys.executable, "-m", "meshcni.sim.podserver", "--name", "ns/pod", "--tcp", str(tcp),
                          "--udp", str(udp)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        with socket.create_connection(("127.0.0.1", tcp), timeout=5) as c:
            f = c.makefile("rb")
            assert f.readline() == b"ns/pod\n"
            c.sendall(b"hello\n")
            assert f.readline() == b"hello\n"
            c.sendall(b"PEER\n")
            assert f.readline() == b"peer 127.0.0.1\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"x", ("127.0.0.1", udp))
            assert u.recv(100) == b"ns/pod"
            u.sendto(b"PEER", ("127.0.0.1", udp))
            assert u.recv(100) == b"ns/pod 127.0.0.1"
    finally:
        p.kill()
        p.wait()
