# SPDX-License-Identifier: MIT OR Apache-2.0
"""Issue 15, fault "bpffs pin of a meshcni map deleted under a running agent": noticed, repaired, reported.

A real agent runs in-process against the in-process API server, with its
datapath on a private bpffs and its socket LB on a private cgroup2 child
(routes off). Pins are deleted and replaced under it; the agent's pin check
(every 0.3 s here) must put deleted ones back with the same object ids, and
report a replaced one without touching it.
"""
import os
import time

import pytest
from kubernetes import client, config

from meshcni import layout
from meshcni.agent.agent import Agent, AgentConfig
from meshcni.apiserver import APIServer
from meshcni.bpf import BpfMap
from meshcni.datapath.pinwatch import pinned_identity
from testutil import eventually

pytestmark = pytest.mark.kernel
CRDS = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "crds")
INTERVAL = 0.3


def until(pred, timeout=10.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.05)


@pytest.fixture
def agent(tmp_path, pin_root, cgroup2_child):
    srv = APIServer(crd_dir=CRDS).start()
    kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
    core = client.CoreV1Api(config.new_client_from_config(config_file=kc))
    core.create_node({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24"}})
    a = Agent(AgentConfig(node_name="n1", kubeconfig=kc, bpf_root=pin_root, cgroup_root=cgroup2_child,
                          cni_bin_dir=str(tmp_path / "bin"), cni_conf_dir=str(tmp_path / "net.d"),
                          socket=str(tmp_path / "agent.sock"), state_dir=str(tmp_path / "state"),
                          ipam_dir=str(tmp_path / "ipam"), metrics_address="127.0.0.1:0", routes=False,
                          sync_timeout=20, pin_check_interval=INTERVAL))
    try:
        a.start()
        yield a, core, pin_root
    finally:
        a.stop()
        srv.stop()
        from meshcni.datapath.socklb import SockLB
        with SockLB(pin_root) as lb:
            lb.detach(cgroup2_child)


def repairs(agent, pin, outcome):
    return agent.metrics.registry.get_sample_value("meshcni_pin_repairs_total", {"pin": pin, "outcome": outcome}) or 0


def node_events(core, reason):
    return [e for e in core.list_namespaced_event("default").items
            if e.reason == reason and e.involved_object.kind == "Node" and e.involved_object.name == "n1"]


def test_deleted_pins_come_back_with_the_same_objects_and_are_reported(agent):
    a, core, root = agent
    link_dir = os.path.join(root, "links")
    link = os.path.join(link_dir, os.listdir(link_dir)[0], sorted(os.listdir(os.path.join(
        link_dir, os.listdir(link_dir)[0])))[0])
    pins = [os.path.join(root, "mc_svc"), os.path.join(root, "mc_policy"),
            os.path.join(root, "progs", "mc_from_pod"), link]
    before = {p: pinned_identity(p)[0] for p in pins}
    assert [k for k, _ in before.values()] == ["map", "map", "prog", "link"]
    t0 = time.monotonic()
    for p in pins:
        os.unlink(p)
    until(lambda: all(os.path.exists(p) for p in pins), timeout=5 * INTERVAL + 2, what="pins repaired")
    took = time.monotonic() - t0
    assert {p: pinned_identity(p)[0] for p in pins} == before  # the same objects, not new ones
    assert took < 2 * INTERVAL + 1.0, took
    # counted after the check returned (the pins are back a moment earlier)
    until(lambda: all(repairs(a, os.path.relpath(p, root), "repaired") == 1 for p in pins), what="repairs counted")
    evs = until(lambda: len(node_events(core, "PinRepaired")) == 4 and node_events(core, "PinRepaired"),
                what="PinRepaired Events")
    assert all(e.type == "Warning" for e in evs)
    assert any("mc_from_pod" in e.message and "pinned again" in e.message for e in evs)

    # a whole directory gone (the CNI plugin's program pins): recreated
    progs = os.path.join(root, "progs")
    for n in os.listdir(progs):
        os.unlink(os.path.join(progs, n))
    os.rmdir(progs)
    until(lambda: sorted(os.listdir(progs)) == ["mc_from_pod", "mc_to_pod"] if os.path.isdir(progs) else False,
          what="progs/ recreated")
    assert pinned_identity(os.path.join(progs, "mc_from_pod"))[0] == before[pins[2]]


def test_a_replaced_pin_is_reported_once_and_left_alone(agent):
    a, core, root = agent
    path = os.path.join(root, "mc_backends")
    held = pinned_identity(path)[0]
    other = BpfMap.create(layout.map_specs()["mc_backends"].with_(max_entries=8))
    try:
        # rename over the pin: atomic, so the check never sees it missing
        other.pin(path + "_other")
        os.rename(path + "_other", path)
        theirs = pinned_identity(path)[0]
        assert theirs != held
        until(lambda: repairs(a, "mc_backends", "replaced") == 1, what="replacement counted")
        time.sleep(4 * INTERVAL)  # several more checks
        assert repairs(a, "mc_backends", "replaced") == 1  # once while it lasts
        assert pinned_identity(path)[0] == theirs  # never clobbered
        assert a.datapath.maps.backends.info().id == held[1]  # the agent keeps writing its own map
        evs = until(lambda: node_events(core, "PinReplaced"), what="PinReplaced Event")
        assert len(evs) == 1 and f"map id {theirs[1]}" in evs[0].message and f"map id {held[1]}" in evs[0].message
        assert repairs(a, "mc_backends", "repaired") == 0
    finally:
        other.close()
