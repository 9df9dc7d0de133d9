# SPDX-License-Identifier: MIT OR Apache-2.0
"""The CNI plugin on a full or read-only disk: a clear CNI error, nothing half-made, and the
retry succeeds once the disk has room again (issue 15's fault table: "IPAM state file on a full
disk / unwritable").

A small tmpfs mounted for the test (and unmounted afterwards) plays the full disk; the node and
the pods are test-made namespaces, as in test_cni_plugin.py.
"""
import os
import subprocess

import pytest

from meshcni.cni.runtime import PluginError
from test_cni_plugin import Node, sh

pytestmark = pytest.mark.kernel

IO_FAILURE = 5


@pytest.fixture
def node(netns, tmp_path):
    return Node(netns, tmp_path)


@pytest.fixture
def small_fs(tmp_path):
    """mount(opts) -> a fresh tmpfs directory; every mount is unmounted afterwards."""
    mounts = []

    def mount(opts="size=64k"):
        d = tmp_path / f"fs{len(mounts)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "meshcni-test", str(d)], check=True)
        mounts.append(d)
        return d
    yield mount
    for d in reversed(mounts):
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d):
    """Fill the filesystem at d to the last byte; returns the filler's path."""
    p = d / "filler"
    with open(p, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return p


def files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.name != "filler")


def pod_links(ns):
    return [x for x in sh("ip", "-n", ns, "-o", "link", "show").split("\n") if x and ": lo:" not in x]


def test_full_ipam_disk_fails_clearly_and_makes_nothing(node, small_fs):
    full = small_fs()
    ipam_dir = full / "ipam"
    conf = node.plugin_conf(ipam={"type": "meshcni", "subnet": "10.20.0.0/24", "dataDir": str(ipam_dir)})
    rt = node.runtime([conf])
    att, ns = node.pod()
    before = node.links()
    filler = fill(full)
    with pytest.raises(PluginError) as ei:
        rt.add(att)
    e = ei.value
    assert e.code == IO_FAILURE
    assert "No space left on device" in e.msg and str(ipam_dir) in e.msg, e.msg
    assert node.links() == before and pod_links(ns) == []
    assert not (node.tmp / "state" / "endpoints").exists() or \
        list((node.tmp / "state" / "endpoints").iterdir()) == []
    # no temporary file or half-written state left on the full disk
    assert [f for f in files(full) if "allocations" in f] == []
    # room again: the runtime's retry succeeds with the same container
    filler.unlink()
    res = rt.add(att)
    assert res["ips"][0]["address"].startswith("10.20.0.")
    rt.delete(att)
    assert node.links() == before


def test_read_only_ipam_dir_fails_clearly(node, small_fs):
    ro = small_fs("size=64k,ro")
    conf = node.plugin_conf(ipam={"type": "meshcni", "subnet": "10.20.0.0/24", "dataDir": str(ro / "ipam")})
    rt = node.runtime([conf])
    att, ns = node.pod()
    before = node.links()
    with pytest.raises(PluginError) as ei:
        rt.add(att)
    assert ei.value.code == IO_FAILURE
    assert "Read-only file system" in ei.value.msg and str(ro / "ipam") in ei.value.msg, ei.value.msg
    assert node.links() == before and pod_links(ns) == []


def test_full_state_disk_rolls_back_link_and_address(node, small_fs):
    """The endpoint record is written after the veth: a full disk there rolls everything back,
    the veth and the address included."""
    full = small_fs()
    state = full / "state"
    conf = node.plugin_conf(stateDir=str(state))
    rt = node.runtime([conf])
    att, ns = node.pod()
    before = node.links()
    state.mkdir()
    filler = fill(full)
    with pytest.raises(PluginError) as ei:
        rt.add(att)
    assert ei.value.code == IO_FAILURE
    assert "endpoint record" in ei.value.msg and "No space left on device" in ei.value.msg, ei.value.msg
    assert node.links() == before and pod_links(ns) == []
    assert node.allocations() == {}           # the address went back to the pool
    assert files(full) == ["state", "state/endpoints"]  # no half-written record
    filler.unlink()
    rt.add(att)
    rt.delete(att)
    assert node.links() == before and node.allocations() == {}


def test_full_log_disk_does_not_fail_the_pod(node, small_fs):
    """The plugin's log is for people: a full disk under it must not fail a pod's network."""
    full = small_fs()
    rt = node.runtime([node.plugin_conf(logFile=str(full / "cni.log"))])
    att, ns = node.pod()
    fill(full)
    res = rt.add(att)
    assert res["ips"]
    rt.check(att)
    rt.delete(att)
