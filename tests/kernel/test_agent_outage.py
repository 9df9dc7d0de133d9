# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent when the API server goes away and comes back (real maps, real API protocol).

The agent runs in-process against a real APIServer (persisted to a data file,
so a restart keeps the objects but, like a new etcd cache window, not the
watch history: every old resourceVersion then answers 410). Its datapath is on
a private bpffs, its socket LB on a private cgroup2 child; routes off — it
touches nothing of the machine's.
"""
import os
import time

import pytest
from kubernetes import client, config

from meshcni.agent.agent import Agent, AgentConfig
from meshcni.apiserver import APIServer
from meshcni.bpf import MeshMaps
from testutil import eventually

pytestmark = pytest.mark.kernel
CRDS = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "crds")


def wait(pred, timeout=20.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.1)


def svc_state(pin_root):
    with MeshMaps(pin_root) as m:
        out = {}
        for name in ("svc", "backends", "revnat"):
            k, v = getattr(m, name).dump()
            out[name] = sorted((bytes(a.tobytes()), bytes(b.tobytes())) for a, b in zip(k, v))
        return out


def slice_body(ips):
    return {"metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


@pytest.fixture
def setup(tmp_path, pin_root, cgroup2_child):
    data = str(tmp_path / "api.json")
    srv = APIServer(data_file=data, history=5, crd_dir=CRDS).start()
    port = int(srv.url.rsplit(":", 1)[1])
    kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
    api = config.new_client_from_config(config_file=kc)
    core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    core.create_node({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24"}})
    core.patch_node_status("n1", {"status": {"addresses": [{"type": "InternalIP", "address": "172.30.9.10"}]}})
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "clusterIP": "10.96.50.1", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    disc.create_namespaced_endpoint_slice("default", slice_body(["10.244.0.5", "10.244.0.6"]))
    agent = Agent(AgentConfig(node_name="n1", kubeconfig=kc, bpf_root=pin_root, cgroup_root=cgroup2_child,
                              cni_bin_dir=str(tmp_path / "bin"), cni_conf_dir=str(tmp_path / "net.d"),
                              socket=str(tmp_path / "agent.sock"), state_dir=str(tmp_path / "state"),
                              ipam_dir=str(tmp_path / "ipam"), metrics_address="127.0.0.1:0", routes=False,
                              sync_timeout=20))
    state = {"srv": srv, "port": port, "data": data, "kc": kc}
    try:
        agent.start()
        yield agent, state, pin_root
    finally:
        agent.stop()
        if state["srv"] is not None:
            state["srv"].stop()
        from meshcni.datapath.socklb import SockLB
        with SockLB(pin_root) as lb:
            lb.detach(cgroup2_child)


def backends(agent):
    return sorted(b for s in agent.programmed_services() for b in s["backends"])


def test_api_outage_keeps_the_datapath_and_a_410_relist_flushes_nothing(setup):
    agent, st, pin_root = setup
    assert backends(agent) == ["10.244.0.5:8080", "10.244.0.6:8080"]
    assert os.path.exists(os.path.join(st["kc"]))
    before = svc_state(pin_root)
    # the API server goes away: nothing in the datapath changes, the agent stays up
    st["srv"].stop()
    st["srv"] = None
    time.sleep(3)
    assert svc_state(pin_root) == before
    assert agent.status()["ready"]
    # it comes back on the same address with the same objects; a burst of unrelated
    # writes pushes the informers' resourceVersions out of the 5-event history
    # window before they reconnect (they are in backoff): their watches get 410
    st["srv"] = APIServer(port=st["port"], data_file=st["data"], history=5, crd_dir=CRDS).start()
    api = config.new_client_from_config(config_file=st["kc"])
    for i in range(20):
        client.CoreV1Api(api).create_namespaced_config_map("default", {"metadata": {"name": f"noise-{i}"}})
    wait(lambda: sum(i.relists for i in agent.informers) >= 3, timeout=30, what="informers relisted after 410")
    time.sleep(0.5)
    assert svc_state(pin_root) == before  # the relist flushed nothing
    # and the agent converges on changes made after the outage
    client.DiscoveryV1Api(api).replace_namespaced_endpoint_slice(
        "web-1", "default", dict(slice_body(["10.244.0.6", "10.244.0.7"]),
                                 metadata=dict(slice_body([])["metadata"],
                                               resourceVersion=client.DiscoveryV1Api(api).read_namespaced_endpoint_slice(
                                                   "web-1", "default").metadata.resource_version)))
    wait(lambda: backends(agent) == ["10.244.0.6:8080", "10.244.0.7:8080"], what="new backends programmed")
    assert svc_state(pin_root) != before
