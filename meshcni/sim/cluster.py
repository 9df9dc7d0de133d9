# SPDX-License-Identifier: MIT OR Apache-2.0
"""One simulated cluster: topology, API server, controllers, kubelets — and its teardown.

State lives under ``<state_root>/<name>/``::

    config.json        what `sim up` was asked for (+ the cluster index, API ports)
    ledger.json        every namespace, cgroup, mount and process made (for teardown)
    kubeconfig         API server for the root namespace (tests, kubectl): 127.0.0.1
    kubeconfig-node    the same server as seen from node namespaces: 172.30.0.1
    daemon.pid, logs/  the process that runs it all, and its log
    nodes/<node>/cni/  bin, net.d, ipam, state, cache of each node's CNI
    pods/              one record per running pod (netns, cgroup) for `sim exec`

The API server listens twice on one store: on loopback in the root
namespace and on the underlay bridge address (a socket opened inside the
underlay namespace), so agents inside node namespaces reach it without any
route or forwarding in the root namespace.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

from . import topology
from .topology import Ledger, NodeSpec, SimError, short

log = logging.getLogger("meshcni.sim")
REPO_CRDS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "deploy", "crds")
DAEMONSET = os.path.join(os.path.dirname(REPO_CRDS), "agent", "daemonset.yaml")
DEPLOYMENT = os.path.join(os.path.dirname(REPO_CRDS), "controller", "deployment.yaml")
CONTROLLER_NS = "meshcni-system"
STARTUP_TAINT = "mesh-cni.dev/startup"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass
class ClusterConfig:
    name: str = "mesh"
    nodes: int = 2
    pod_cidr: str = ""        # empty: reserve() picks the first free default
    service_cidr: str = ""
    agent: bool = False
    state_root: str = topology.DEFAULT_STATE_ROOT
    index: int = 0
    api_port: int = 0
    node_api: str = ""
    extra: Dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Checks of this cluster alone; an empty CIDR is one :func:`reserve` picks."""
        if not self.name or len(self.name) > 20 or set(self.name) - _NAME_OK or self.name[0] == "-":
            raise SimError(f"--name {self.name!r}: 1-20 characters of a-z, 0-9 and '-'")
        if not 1 <= self.nodes <= 32:
            raise SimError(f"--nodes {self.nodes}: between 1 and 32")
        for flag, v in (("--pod-cidr", self.pod_cidr), ("--service-cidr", self.service_cidr)):
            if not v:
                continue
            try:
                net = ipaddress.ip_network(v)
            except ValueError:
                raise SimError(f"{flag} {v!r} is not a CIDR (host bits must be zero)") from None
            if net.version != 4:
                raise SimError(f"{flag} {v}: only IPv4 clusters are simulated for now")
            if net.overlaps(topology.UNDERLAY_NET):
                raise SimError(f"{flag} {v} overlaps the underlay {topology.UNDERLAY_NET}")
        if self.pod_cidr and self.service_cidr and \
                ipaddress.ip_network(self.pod_cidr).overlaps(ipaddress.ip_network(self.service_cidr)):
            raise SimError(f"--pod-cidr {self.pod_cidr} overlaps --service-cidr {self.service_cidr}")


def cluster_dir(state_root: str, name: str) -> str:
    return os.path.join(state_root, name)


def read_config(state_root: str, name: str) -> Optional[ClusterConfig]:
    try:
        with open(os.path.join(cluster_dir(state_root, name), "config.json")) as f:
            return ClusterConfig(**json.load(f))
    except FileNotFoundError:
        return None


def list_clusters(state_root: str) -> List[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(d for d in os.listdir(state_root) if os.path.exists(os.path.join(state_root, d, "config.json")))
    return []


# Defaults, in order: the first cluster of a state root gets Kind's 10.244.0.0/16 and
# 10.96.0.0/16, the next ones the following /16s, so meshed clusters never overlap.
POD_CIDRS = [f"10.{x}.0.0/16" for x in range(244, 256)] + [f"10.{x}.0.0/16" for x in range(128, 192)]
SERVICE_CIDRS = [f"10.{x}.0.0/16" for x in range(96, 128)]
LOCK_FILE = ".sim.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def daemon_pid(root: str, name: str) -> Optional[int]:
    try:
        with open(os.path.join(cluster_dir(root, name), "daemon.pid")) as f:
            pid = int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


@contextlib.contextmanager
def state_lock(state_root: str):
    """One `sim up` at a time picks an index and CIDRs in a state root."""
    import fcntl
    os.makedirs(state_root, exist_ok=True)
    with open(os.path.join(state_root, LOCK_FILE), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        yield


def _claims(state_root: str, name: str) -> List[tuple]:
    """(cluster, what, network) of every other cluster that holds its CIDRs: running, or
    reserved by a `sim up` whose daemon has not written its pid yet (a crashed one's do not count)."""
    out = []
    for c in list_clusters(state_root):
        if c == name:
            continue
        if os.path.exists(os.path.join(cluster_dir(state_root, c), "daemon.pid")) and not daemon_pid(state_root, c):
            continue
        cfg = read_config(state_root, c)
        if cfg is None:
            continue
        for what, v in (("pod CIDR", cfg.pod_cidr), ("service CIDR", cfg.service_cidr)):
            with contextlib.suppress(ValueError):
                out.append((c, what, ipaddress.ip_network(v)))
    return out


def reserve(cfg: "ClusterConfig") -> "ClusterConfig":
    """Pick the cluster's index and any CIDR not given, refuse a given one that overlaps another
    cluster of the state root, and write config.json, all under the state root's lock."""
    cfg.validate()
    with state_lock(cfg.state_root):
        claims = _claims(cfg.state_root, cfg.name)
        for flag, attr in (("--pod-cidr", "pod_cidr"), ("--service-cidr", "service_cidr")):
            v = getattr(cfg, attr)
            if not v:
                continue
            net = ipaddress.ip_network(v)
            for c, what, other in claims:
                if net.overlaps(other):
                    raise SimError(f"{flag} {v} overlaps the {what} {other} of cluster {c} in this state root "
                                   f"({cfg.state_root}); pick another range or take {c} down")
        taken = [other for _, _, other in claims]
        for flag, attr, candidates in (("--pod-cidr", "pod_cidr", POD_CIDRS),
                                       ("--service-cidr", "service_cidr", SERVICE_CIDRS)):
            if getattr(cfg, attr):
                taken.append(ipaddress.ip_network(getattr(cfg, attr)))
                continue
            free = next((ipaddress.ip_network(x) for x in candidates
                         if not any(ipaddress.ip_network(x).overlaps(t) for t in taken)), None)
            if free is None:
                raise SimError(f"no free default {flag[2:]} left in this state root; give {flag}")
            setattr(cfg, attr, str(free))
            taken.append(free)
        cfg.validate()
        cfg.index = cfg.index or pick_index(cfg.state_root, cfg.name)
        d = cluster_dir(cfg.state_root, cfg.name)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, ".config.json")
        with open(tmp, "w") as f:
            json.dump(asdict(cfg), f, indent=1)
        os.rename(tmp, os.path.join(d, "config.json"))
    return cfg


def pick_index(state_root: str, name: str) -> int:
    used = set()
    for c in list_clusters(state_root):
        cfg = read_config(state_root, c)
        if cfg and c != name:
            used.add(cfg.index)
    return next(i for i in range(1, 250) if i not in used)


def _tail(path: str, n: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(x.strip() for x in f.readlines()[-n:])
    except OSError:
        return "(no log)"


def controller_flags() -> set:
    """The option strings ``meshcni controller`` accepts (from its own parser)."""
    import argparse
    from ..controller.cli import add_parser
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_parser(sub)
    return {o for a in sub.choices["controller"]._actions for o in a.option_strings}


def agent_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("meshcni.agent") is not None


class Cluster:
    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg
        self.dir = cluster_dir(cfg.state_root, cfg.name)
        self.ledger = Ledger(os.path.join(self.dir, "ledger.json"))
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.node_kubeconfig = os.path.join(self.dir, "kubeconfig-node")
        self.pods_dir = os.path.join(self.dir, "pods")
        self.nodes: List[NodeSpec] = []
        self.apiserver = None
        self._underlay_httpd = None
        self.controllers = None
        self.kubelets = []
        self.cgroup_root = ""
        self.with_agent = False
        self.controller_node: Optional[NodeSpec] = None
        from .supervise import HEALTH_FILE, Supervisor
        self.supervisor = Supervisor(os.path.join(self.dir, HEALTH_FILE))

    # -- bring-up --

    def up(self, progress: Callable[[str], None] = print) -> None:
        cfg = self.cfg
        cfg.validate()
        if not (cfg.pod_cidr and cfg.service_cidr and cfg.index):
            reserve(cfg)  # `sim up` reserved them already; a direct caller has not
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        cfg.index = cfg.index or pick_index(cfg.state_root, cfg.name)
        self.nodes = topology.plan_nodes(cfg.name, cfg.index, cfg.nodes, cfg.pod_cidr, cfg.state_root)
        self.controller_node = topology.plan_controller(cfg.name, cfg.index, cfg.state_root)
        ul = topology.underlay_ns(cfg.state_root)
        self._save_config()
        topology.ensure_underlay(self.ledger, ul)
        progress(f"underlay {ul}: bridge {topology.BRIDGE} {topology.UNDERLAY_GW}/16")
        for n in self.nodes:
            topology.create_node(n, self.ledger)
            progress(f"node {n.name}: netns {n.netns}, IP {n.ip}, podCIDR {n.pod_cidr}")
        topology.route_nodes(self.nodes)
        progress("routes: each node's podCIDR via its node IP")
        mnt = topology.mount_cgroup2(os.path.join(self.dir, "cgroup2"), self.ledger)
        self.cgroup_root = os.path.join(mnt, f"meshcni-sim-{cfg.name}")
        os.makedirs(self.cgroup_root, exist_ok=True)
        self.ledger.add("cgroup", self.cgroup_root)
        for n in self.nodes:
            path = os.path.join(self.cgroup_root, n.name)
            os.makedirs(path, exist_ok=True)
            self.ledger.add("cgroup", path)
        progress(f"cgroups: {self.cgroup_root}/<node>/<pod> (private cgroup2 mount)")
        self._start_apiserver()
        progress(f"API server: {self.apiserver.url} (nodes reach it at {cfg.node_api})")
        api = self._api_client()
        self.with_agent = cfg.agent and agent_available()
        self._register_nodes(api)
        progress(f"Node objects: {', '.join(n.name for n in self.nodes)}")
        if not self.with_agent:
            self._install_cni()
            progress("CNI: meshcni-cni installed on every node (standalone, datapath off)")
        from .controllers import ControllerManager
        self.controllers = ControllerManager(api).start()
        progress("controllers: scheduler, EndpointSlice controller (the API server allocates ClusterIPs)")
        from .kubelet import Kubelet
        for n in self.nodes:
            self.kubelets.append(Kubelet(api, cfg.name, n.name, n.ip, n.netns, os.path.join(self.cgroup_root, n.name),
                                         self._cni_dir(n), self.pods_dir, self.ledger).start())
        progress(f"kubelets: {len(self.kubelets)}")
        self.supervisor.start()
        if self.with_agent:
            self._start_controller(api)
            progress(f"controller: meshcni controller in netns {self.controller_node.netns} "
                     f"({self.controller_node.ip} on the underlay), leader-elected (logs/controller.log)")
            self._start_agents()
            progress(f"agents: one per node (logs/agent-<node>.log); waiting for every component to serve")
            self.supervisor.wait_ready(90, progress)

    def _save_config(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, ".config.json")
        with open(tmp, "w") as f:
            json.dump(asdict(self.cfg), f, indent=1)
        os.rename(tmp, os.path.join(self.dir, "config.json"))

    def _cni_dir(self, n: NodeSpec) -> str:
        return os.path.join(self.dir, "nodes", n.name, "cni")

    def _start_apiserver(self) -> None:
        from ..apiserver import APIServer, write_kubeconfig
        crds = REPO_CRDS if os.path.isdir(REPO_CRDS) else None
        self.apiserver = APIServer("127.0.0.1", 0, crd_dir=crds, history=5000,
                                   service_cidr=self.cfg.service_cidr).start()
        self.cfg.api_port = int(self.apiserver.url.rsplit(":", 1)[1])
        self.start_node_api()
        self.cfg.node_api = f"http://{topology.UNDERLAY_GW}:{self._underlay_httpd.server_address[1]}"
        self._save_config()
        write_kubeconfig(self.kubeconfig, self.apiserver.url, f"sim-{self.cfg.name}")
        write_kubeconfig(self.node_kubeconfig, self.cfg.node_api, f"sim-{self.cfg.name}")

    def start_node_api(self, port: int = 0) -> None:
        """The same store, listening inside the underlay namespace (for nodes and controllers)."""
        from ..apiserver.http import Server
        from ..cni.link import entered
        with entered(f"/run/netns/{topology.underlay_ns(self.cfg.state_root)}"):
            self._underlay_httpd = Server((topology.UNDERLAY_GW, port), self.apiserver.store,
                                          self.apiserver.bookmark_interval)
        threading.Thread(target=self._underlay_httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         name="apiserver-underlay", daemon=True).start()

    def stop_node_api(self) -> None:
        """Close the underlay listener and every connection on it: for the nodes, the controller and
        other clusters' controllers the API server is gone; loopback clients keep working."""
        h, self._underlay_httpd = self._underlay_httpd, None
        if h is not None:
            h.stopping = True
            h.shutdown()
            h.server_close()
            h.close_connections()

    def set_node_api(self, up: bool) -> None:
        """``sim apiserver start|stop``: the node-facing API server goes away and comes back on the
        same address, so every kubeconfig (and Secret made by ``sim mesh``) stays valid."""
        if up and self._underlay_httpd is None:
            self.start_node_api(int(self.cfg.node_api.rsplit(":", 1)[1]))
        elif not up:
            self.stop_node_api()

    def _api_client(self):
        # one client for the kubelets and controllers, whose watches each hold a pooled connection
        from ..k8s.client import api_client
        return api_client(self.kubeconfig)

    def _register_nodes(self, api) -> None:
        from ..k8s.rest import send_json
        from .kubelet import now
        for n in self.nodes:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name,
                                                             "kubernetes.io/os": "linux",
                                                             "sim.mesh-cni.dev/cluster": self.cfg.name}},
                    "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}}
            if self.with_agent:  # kubelet --register-with-taints: no pods before the agent is ready
                body["spec"]["taints"] = [{"key": STARTUP_TAINT, "effect": "NoSchedule"}]
            send_json(api, "PATCH", f"/api/v1/nodes/{n.name}", body, "application/apply-patch+yaml",
                      [("fieldManager", "meshcni-sim"), ("force", "true")])
            t = now()
            send_json(api, "PATCH", f"/api/v1/nodes/{n.name}/status", {"status": {
                "addresses": [{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": t, "lastTransitionTime": t}],
                # every field: the kubernetes client's models refuse a partial nodeInfo
                "nodeInfo": {"kubeletVersion": "v1.32.0-meshcni-sim", "kubeProxyVersion": "",
                             "operatingSystem": "linux", "architecture": os.uname().machine,
                             "kernelVersion": os.uname().release, "osImage": "meshcni simulator",
                             "containerRuntimeVersion": "meshcni-sim://0", "bootID": n.netns,
                             "machineID": short(n.name, 32), "systemUUID": short(n.name + "/uuid", 32)}}},
                "application/merge-patch+json")

    def _install_cni(self) -> None:
        from ..cni.install import install
        for n in self.nodes:
            d = self._cni_dir(n)
            install(os.path.join(d, "bin"), os.path.join(d, "net.d"), subnets=[n.pod_cidr],
                    datapath="required" if self.with_agent else "off",
                    state_dir=os.path.join(d, "state"), data_dir=os.path.join(d, "ipam"),
                    log_file=os.path.join(self.dir, "logs", f"cni-{n.name}.log"))

    # -- agents --

    def host_dirs(self, n: NodeSpec) -> Dict[str, str]:
        """{host path of a real node: its directory on simulated node ``n``} for hostPath volumes."""
        node_dir = os.path.join(self.dir, "nodes", n.name)
        return {"/sys/fs/bpf": os.path.join(node_dir, "bpf"),
                "/sys/fs/cgroup": os.path.join(self.cgroup_root, n.name),
                "/opt/cni/bin": os.path.join(self._cni_dir(n), "bin"),
                "/etc/cni/net.d": os.path.join(self._cni_dir(n), "net.d"),
                "/var/run/meshcni": os.path.join(node_dir, "run"),
                "/var/lib/cni/meshcni": os.path.join(node_dir, "ipam"),
                "/var/run/netns": "/run/netns"}  # where the simulated runtime keeps pods' netns files

    def node_process(self, n: NodeSpec, pod_spec: dict, container: dict) -> tuple:
        """(argv, env) of a DaemonSet container with ``command: [meshcni]`` run on node ``n``."""
        from .podspec import process
        if container.get("command") != ["meshcni"]:
            raise SimError(f"container {container['name']}: command {container.get('command')} is not meshcni's")
        args, env = process(pod_spec, container, self.host_dirs(n),
                            {"spec.nodeName": n.name, "metadata.namespace": CONTROLLER_NS,
                             "metadata.name": f"meshcni-agent-{n.name}"},
                            os.path.join(self.dir, "nodes", n.name, "emptydir"))
        return [sys.executable, "-m", "meshcni.cli"] + args, env

    def agent_process(self, n: NodeSpec) -> tuple:
        """The DaemonSet's agent container (args, env, mounts) as a process on node ``n``."""
        import yaml
        with open(DAEMONSET) as f:
            pod = yaml.safe_load(f)["spec"]["template"]["spec"]
        argv, env = self.node_process(n, pod, pod["containers"][0])
        # the cluster's name, as the controller gets it: its pods' mesh-cni.dev/cluster in NetworkPolicy
        argv = [a for a in argv if not a.startswith("--cluster-name=")] + [f"--cluster-name={self.cfg.name}"]
        return argv + [f"--kubeconfig={self.node_kubeconfig}"], env

    def agent_argv(self, n: NodeSpec) -> List[str]:
        return self.agent_process(n)[0]

    def controller_process(self) -> tuple:
        """The controller Deployment's container (args, env, mounts); it runs in its own namespace on the
        underlay, as a pod, so it gets no host path."""
        import yaml
        from .podspec import process
        with open(DEPLOYMENT) as f:
            pod = yaml.safe_load(f)["spec"]["template"]["spec"]
        name = f"sim-{self.cfg.name}-controller"
        args, env = process(pod, pod["containers"][0], {}, {"metadata.namespace": CONTROLLER_NS,
                                                             "metadata.name": name},
                            os.path.join(self.dir, "controller"))
        # per cluster, as the Deployment's comment asks of whoever meshes: its name (a Cluster of
        # that name is itself) and its service CIDR (for the CIDR conflict check); only flags this
        # controller has, so the simulator also runs a controller that predates the mesh
        flags = controller_flags()
        for flag, value in (("--cluster-name", self.cfg.name), ("--service-cidr", self.cfg.service_cidr)):
            if flag in flags and value:
                args = [a for a in args if a != flag and not a.startswith(flag + "=")] + [f"{flag}={value}"]
        return [sys.executable, "-m", "meshcni.cli"] + args + [f"--kubeconfig={self.node_kubeconfig}",
                                                              f"--identity={name}"], env

    def controller_argv(self) -> List[str]:
        return self.controller_process()[0]

    def _start_controller(self, api) -> None:
        from ..k8s.rest import send_json
        from .supervise import Component
        send_json(api, "PATCH", f"/api/v1/namespaces/{CONTROLLER_NS}",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONTROLLER_NS}},
                  "application/apply-patch+yaml", [("fieldManager", "meshcni-sim")])
        # Its own network namespace, as the Deployment's pod has: two clusters' controllers in the
        # shared underlay namespace both bound the Deployment's fixed metrics port, and the second
        # crash-looped on "Address already in use".
        topology.create_node(self.controller_node, self.ledger, forward=False)
        argv, env = self.controller_process()
        self.supervisor.add(Component(
            "controller", argv, self.controller_node.netns,
            os.path.join(self.dir, "logs", "controller.log"), self.ledger, metrics_default="127.0.0.1:9963", env=env))

    def _start_agents(self) -> None:
        from .supervise import Component
        for n in self.nodes:
            argv, env = self.agent_process(n)
            self.supervisor.add(Component(
                f"agent/{n.name}", argv, n.netns, os.path.join(self.dir, "logs", f"agent-{n.name}.log"),
                self.ledger, metrics_default="127.0.0.1:9962", env=env,
                extra_ready=lambda name=n.name: None if self._cni_ready(name) else "CNI config not installed yet",
                before_spawn=lambda n=n: self._prepare_agent(n)))

    def _prepare_agent(self, n: NodeSpec) -> None:
        from ..bpf.pin import mount_bpffs
        node_dir = os.path.join(self.dir, "nodes", n.name)
        bpf = os.path.join(node_dir, "bpf")
        os.makedirs(bpf, exist_ok=True)
        if not os.path.ismount(bpf):
            mount_bpffs(bpf)
        self.ledger.add("mount", bpf)
        os.makedirs(os.path.join(node_dir, "run"), exist_ok=True)

    def _cni_ready(self, node: str) -> bool:
        d = os.path.join(self.dir, "nodes", node, "cni", "net.d")
        return os.path.isdir(d) and any(f.endswith(".conflist") for f in os.listdir(d))

    # -- teardown --

    def down(self) -> Dict[str, int]:
        """Stop everything and remove what the ledger lists (safe to call twice)."""
        for k in self.kubelets:
            with contextlib.suppress(Exception):
                k.stop(delete_pods=True)
        self.kubelets = []
        self.supervisor.stop()
        if self.controllers:
            self.controllers.stop()
        self.stop_node_api()
        if self.apiserver is not None:
            self.apiserver.stop()
            self.apiserver = None
        return destroy(self.cfg.state_root, self.cfg.name)


def destroy(state_root: str, name: str) -> Dict[str, int]:
    """Remove a cluster's leftovers from its ledger, then its state dir."""
    d = cluster_dir(state_root, name)
    if not os.path.isdir(d):
        return {}
    ledger = Ledger(os.path.join(d, "ledger.json"))
    done = topology.teardown(ledger, state_root, name)
    left = {k: v for k, v in ledger.read().items() if v}
    if left:
        raise SimError(f"cluster {name}: could not remove {json.dumps(left)}")
    for root, dirs, _ in os.walk(d):
        # never recurse into a mount (a cgroup2 mount shows the whole hierarchy)
        if any(os.path.ismount(os.path.join(root, x)) for x in dirs):
            raise SimError(f"cluster {name}: a mount is still under {d}; not removing it")
    shutil.rmtree(d, ignore_errors=True)
    return done
