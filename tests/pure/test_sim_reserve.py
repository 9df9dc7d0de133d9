# SPDX-License-Identifier: MIT OR Apache-2.0
"""`sim up`'s choice of index and CIDRs in a state root, and the supervisor's pure helpers."""
import json
import os

import pytest

from meshcni.sim.cluster import ClusterConfig, read_config, reserve
from meshcni.sim.supervise import last_log_line, listen_address
from meshcni.sim.topology import SimError

pytestmark = pytest.mark.pure


def up(root, name, **kw):
    return reserve(ClusterConfig(name=name, state_root=str(root), **kw))


def test_defaults_never_overlap_and_follow_kind(tmp_path):
    (tmp_path / "notes.yaml").write_text("kind: Pod\n")  # not a cluster
    a, b, c = up(tmp_path, "a"), up(tmp_path, "b"), up(tmp_path, "c")
    assert [(x.index, x.pod_cidr, x.service_cidr) for x in (a, b, c)] == [
        (1, "10.244.0.0/16", "10.96.0.0/16"), (2, "10.245.0.0/16", "10.97.0.0/16"), (3, "10.246.0.0/16", "10.98.0.0/16")]
    assert read_config(str(tmp_path), "b").pod_cidr == "10.245.0.0/16"  # written under the lock


def test_defaults_skip_explicit_ranges_of_others(tmp_path):
    up(tmp_path, "a", pod_cidr="10.244.0.0/15", service_cidr="10.96.0.0/24")
    b = up(tmp_path, "b")
    # 10.245.0.0/16 lies in a's /15; 10.96.0.0/16 holds a's service range
    assert (b.pod_cidr, b.service_cidr) == ("10.246.0.0/16", "10.97.0.0/16")


def test_an_explicit_overlap_names_the_other_cluster(tmp_path):
    up(tmp_path, "a")
    with pytest.raises(SimError, match=r"--pod-cidr 10.244.7.0/24 overlaps the pod CIDR 10.244.0.0/16 of cluster a"):
        up(tmp_path, "b", pod_cidr="10.244.7.0/24")
    with pytest.raises(SimError, match=r"--service-cidr 10.0.0.0/8 overlaps the pod CIDR 10.244.0.0/16 of cluster a"):
        up(tmp_path, "b", service_cidr="10.0.0.0/8")
    assert not (tmp_path / "b").exists()


def test_a_crashed_clusters_ranges_are_free_again(tmp_path):
    up(tmp_path, "a")
    # its daemon wrote a pid and died: stale state, not a running cluster
    (tmp_path / "a" / "daemon.pid").write_text(str(2 ** 22 + 12345))
    b = up(tmp_path, "b", pod_cidr="10.244.0.0/16")
    assert b.pod_cidr == "10.244.0.0/16"


def test_reserving_again_does_not_clash_with_itself(tmp_path):
    up(tmp_path, "a")
    again = up(tmp_path, "a")
    assert (again.pod_cidr, again.service_cidr) == ("10.244.0.0/16", "10.96.0.0/16")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["index"] == 1


def test_last_log_line_is_the_error_not_the_goodbye(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("t INFO start\nt ERROR x: start failed: [Errno 98] Address already in use\nTraceback (most recent "
                   "call last):\n  File \"y\", line 1\nOSError: [Errno 98] Address already in use\nt INFO x: stopped\n")
    assert last_log_line(str(log)) == "OSError: [Errno 98] Address already in use"
    log.write_text("t INFO one\nt INFO two\n\n")
    assert last_log_line(str(log)) == "t INFO two"
    assert last_log_line(str(tmp_path / "none.log")) == "(no log)"


def test_listen_address_probes_wildcards_on_loopback():
    assert listen_address(["controller", "--metrics-address=0.0.0.0:9963"], "127.0.0.1:1") == ("127.0.0.1", 9963)
    assert listen_address(["--metrics-address", "[::]:9"], "127.0.0.1:1") == ("::1", 9)
    assert listen_address([], "127.0.0.1:9962") == ("127.0.0.1", 9962)


def test_the_controller_gets_its_cluster_name_and_service_cidr_when_it_has_the_flags(tmp_path):
    from meshcni.sim.cluster import Cluster, controller_flags
    cfg = up(tmp_path, "east")
    argv = Cluster(cfg).controller_argv()
    flags = controller_flags()
    assert ("--cluster-name=east" in argv) == ("--cluster-name" in flags)
    assert ("--service-cidr=10.96.0.0/16" in argv) == ("--service-cidr" in flags)
    assert sum(a.startswith("--cluster-name") for a in argv) <= 1  # replaces the Deployment's default
    # the Deployment's own wildcard metrics address: the controller has its own netns, nothing to dodge
    assert any(a.startswith("--metrics-address=0.0.0.0:") for a in argv)
