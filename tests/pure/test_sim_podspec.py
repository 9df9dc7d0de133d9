# SPDX-License-Identifier: MIT OR Apache-2.0
"""The simulator runs what the chart renders: deploy/'s DaemonSet and Deployment containers (args,
env, volume mounts) become processes with every path on the simulated node's directories, and a
hostPath or env source the simulator cannot give fails loudly, naming the container and field."""
import copy
import os

import pytest
import yaml

from meshcni.sim.cluster import DAEMONSET, DEPLOYMENT, Cluster, ClusterConfig, reserve
from meshcni.sim.podspec import process
from meshcni.sim.topology import SimError, plan_nodes

pytestmark = pytest.mark.pure


def pod(path):
    with open(path) as f:
        return yaml.safe_load(f)["spec"]["template"]["spec"]


@pytest.fixture
def cl(tmp_path):
    cfg = reserve(ClusterConfig(name="ps", state_root=str(tmp_path)))
    c = Cluster(cfg)
    c.nodes = plan_nodes(cfg.name, cfg.index, 1, cfg.pod_cidr, cfg.state_root)
    c.cgroup_root = str(tmp_path / "cgroup2" / "meshcni-sim-ps")
    return c


def test_the_agent_gets_the_daemonsets_args_and_env_on_the_nodes_paths(cl):
    (n,) = cl.nodes
    argv, env = cl.agent_process(n)
    node = os.path.join(cl.dir, "nodes", n.name)
    flags = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    assert flags["--node-name"] == n.name and env["NODE_NAME"] == n.name  # $(NODE_NAME) from the fieldRef
    assert flags["--bpf-root"] == os.path.join(node, "bpf", "meshcni")
    assert flags["--cgroup-root"] == os.path.join(cl.cgroup_root, n.name)
    assert flags["--cni-bin-dir"] == os.path.join(node, "cni", "bin")
    assert flags["--cni-conf-dir"] == os.path.join(node, "cni", "net.d")
    assert flags["--socket"] == os.path.join(node, "run", "agent.sock")
    assert flags["--ipam-dir"] == os.path.join(node, "ipam")
    # nothing of a real node's paths is left for the process to touch
    assert not [a for a in argv if any(p in a for p in ("=/sys/", "=/host/", "=/var/", "=/opt/", "=/etc/"))], argv


def test_the_controller_gets_the_deployments_env(cl):
    argv, env = cl.controller_process()
    assert env == {"POD_NAMESPACE": "meshcni-system", "POD_NAME": "sim-ps-controller"}
    assert "--lease-namespace=meshcni-system" in argv
    assert os.path.isdir(os.path.join(cl.dir, "controller", "tmp"))  # its emptyDir


def test_a_hostpath_the_simulator_cannot_map_fails_loudly(cl):
    (n,) = cl.nodes
    spec = copy.deepcopy(pod(DAEMONSET))
    (v,) = [v for v in spec["volumes"] if v["name"] == "cni-bin"]
    v["hostPath"]["path"] = "/var/lib/rancher/k3s/data/current/bin"  # k3s's, which no simulated node has
    with pytest.raises(SimError, match=r"container agent: volumeMount cni-bin \(/host/opt/cni/bin\): hostPath "
                                       r"/var/lib/rancher/k3s/data/current/bin has no directory"):
        cl.node_process(n, spec, spec["containers"][0])


@pytest.mark.parametrize("change,match", [
    (lambda c, s: c["volumeMounts"].append({"name": "gone", "mountPath": "/x"}), "volumeMount gone .*no volume"),
    (lambda c, s: s["volumes"].append({"name": "cfg", "configMap": {"name": "x"}})
     or c["volumeMounts"].append({"name": "cfg", "mountPath": "/cfg"}), r"volume type \['configMap'\]"),
    (lambda c, s: c["env"].append({"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}),
     "env IP: fieldRef status.hostIP is not simulated"),
    (lambda c, s: c["env"].append({"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
     r"env T: valueFrom \['secretKeyRef'\]"),
])
def test_what_the_simulator_cannot_give_a_container_is_an_error(change, match):
    spec = copy.deepcopy(pod(DEPLOYMENT))
    c = spec["containers"][0]
    change(c, spec)
    with pytest.raises(SimError, match=match):
        process(spec, c, {}, {"metadata.namespace": "ns", "metadata.name": "p"}, "/nonexistent-scratch")


def test_args_expand_env_and_keep_unknown_vars_as_kubelet_does(tmp_path):
    spec = {"volumes": [{"name": "d", "hostPath": {"path": "/var/lib/x"}}]}
    c = {"name": "c", "volumeMounts": [{"name": "d", "mountPath": "/data"}],
         "env": [{"name": "A", "value": "/data/sub"}, {"name": "B", "value": "b"}],
         "args": ["--a=$(A)", "--b=$(B)", "--u=$(UNSET)", "--p=/data/f", "--q=/elsewhere", "plain", "/data/g"]}
    args, env = process(spec, c, {"/var/lib": str(tmp_path)}, {}, str(tmp_path / "s"))
    assert env == {"A": f"{tmp_path}/x/sub", "B": "b"}
    assert args == [f"--a={tmp_path}/x/sub", "--b=b", "--u=$(UNSET)", f"--p={tmp_path}/x/f", "--q=/elsewhere", "plain",
                    f"{tmp_path}/x/g"]


def test_a_path_is_mapped_once_even_when_the_node_dir_is_under_a_mount_path(tmp_path):
    # the controller's emptyDir at /tmp lives under /tmp/pytest-...: mapping twice would nest it
    spec = {"volumes": [{"name": "tmp", "emptyDir": {}}]}
    c = {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}], "env": [{"name": "T", "value": "/tmp/t"}],
         "args": ["--t=$(T)"]}
    args, env = process(spec, c, {}, {}, str(tmp_path))
    assert args == [f"--t={tmp_path}/tmp/t"] and env == {"T": f"{tmp_path}/tmp/t"}
