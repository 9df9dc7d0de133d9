# SPDX-License-Identifier: MIT OR Apache-2.0
"""Fixtures for real-packet tests: echo servers and probes in test namespaces."""
import os
import subprocess
import sys

import pytest

TCPECHO = os.path.join(os.path.dirname(__file__), "helpers", "tcpecho.py")


@pytest.fixture
def sock_lb(pin_root, cgroup2_child):
    """The socket-LB programs attached to a private cgroup (``cgroup2_child``); detached afterwards."""
    from meshcni.datapath import SockLB
    s = SockLB(pin_root)
    s.attach(cgroup2_child)
    try:
        yield s
    finally:
        s.detach(cgroup2_child)
        s.close()


@pytest.fixture
def servers():
    """start(ns, ip, port): a TCP echo server inside netns ``ns``, killed afterwards."""
    procs = []

    def start(ns, ip, port):
        pr = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, TCPECHO, "serve", ip, str(port)],
                              stdout=subprocess.PIPE, text=True)
        procs.append(pr)
        assert pr.stdout.readline().strip() == "ready"

    yield start
    for pr in procs:
        pr.kill()
        pr.wait()


def connects(ns, ip, port, timeout=1.0):
    """Does a TCP echo from netns ``ns`` to ip:port come back?"""
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, TCPECHO, "connect", ip, str(port),
                           str(timeout)]).returncode == 0


@pytest.fixture
def reach():
    return connects
