# SPDX-License-Identifier: MIT OR Apache-2.0
"""The simulator's machines: an underlay bridge and one namespace per node.

    underlay netns "mcsim-ul-<hash of state root>": bridge mcbr0 172.30.0.1/16  (Kind's docker network)
      |- veth -> node netns "mcsim-<cluster>-<node>": eth0 172.30.<k>.<10+i>/16
                 routes: every other node's podCIDR via that node's IP (kindnet-style)

Everything lives in namespaces created here; nothing touches the root
namespace's links, routes or firewall. Every object is written to the
cluster's :class:`Ledger` right after it is made, so a teardown after a
crash (or a failed ``sim up``) removes exactly what exists.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, List

UNDERLAY_PREFIX = "mcsim-ul-"
BRIDGE = "mcbr0"
UNDERLAY_NET = ipaddress.ip_network("172.30.0.0/16")
UNDERLAY_GW = "172.30.0.1"
DEFAULT_STATE_ROOT = "/var/run/meshcni-sim"


class SimError(Exception):
    pass


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SimError(f"{' '.join(cmd)}: {p.stderr.strip() or f'exit {p.returncode}'}")
    return p


def underlay_ns(state_root: str) -> str:
    """One underlay per state root: a test's clusters never share a user's bridge."""
    return UNDERLAY_PREFIX + short(os.path.abspath(state_root))


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def short(name: str, n: int = 8) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:n]


class Ledger:
    """What a cluster made, on disk (JSON, replaced atomically), under a lock."""

    KINDS = ("netns", "cgroup", "mount", "pid", "underlay")

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            st = self.read()
            yield st
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".ledger.")
            with os.fdopen(fd, "w") as f:
                json.dump(st, f, indent=1, sort_keys=True)
            os.rename(tmp, self.path)

    def read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {k: [] for k in self.KINDS}

    def add(self, kind: str, value) -> None:
        with self._locked() as st:
            lst = st.setdefault(kind, [])
            if value not in lst:
                lst.append(value)

    def remove(self, kind: str, value) -> None:
        with self._locked() as st:
            lst = st.setdefault(kind, [])
            if value in lst:
                lst.remove(value)

    def set(self, key: str, value) -> None:
        with self._locked() as st:
            st[key] = value


@dataclass
class NodeSpec:
    name: str
    netns: str
    ip: str
    pod_cidr: str
    underlay_if: str
    underlay: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


def plan_nodes(cluster: str, index: int, count: int, pod_cidr: str, state_root: str) -> List[NodeSpec]:
    """Node names, IPs and podCIDRs (a /24 each out of the cluster's pod CIDR)."""
    net = ipaddress.ip_network(pod_cidr)
    if net.version != 4 or net.prefixlen > 22:
        raise SimError(f"--pod-cidr {pod_cidr}: need an IPv4 network of /22 or larger (a /24 per node)")
    subnets = net.subnets(new_prefix=24)
    if count > 240:
        raise SimError(f"--nodes {count}: at most 240 nodes per cluster")
    if not 1 <= index <= 250:
        raise SimError(f"cluster index {index} out of range")
    nodes = []
    for i in range(count):
        name = f"{cluster}-node{i + 1}"
        sub = next(subnets, None)
        if sub is None:
            raise SimError(f"--pod-cidr {pod_cidr} has room for only {i} nodes")
        salted = f"{os.path.abspath(state_root)}/{name}"
        nodes.append(NodeSpec(name=name, netns=f"mcsim-{short(salted)}", ip=f"172.30.{index}.{10 + i}",
                              pod_cidr=str(sub), underlay_if=f"mu{short(salted, 11)}",
                              underlay=underlay_ns(state_root)))
    return nodes


def plan_controller(cluster: str, index: int, state_root: str) -> NodeSpec:
    """The controller's pod network: its own namespace on the bridge at 172.30.<k>.2.

    A pod has its own network namespace, so the Deployment's fixed ports are never shared
    with another cluster's controller on the same underlay.
    """
    salted = f"{os.path.abspath(state_root)}/{cluster}/controller"
    return NodeSpec(name=f"{cluster}-controller", netns=f"mcsim-{short(salted)}", ip=f"172.30.{index}.2",
                    pod_cidr="", underlay_if=f"mu{short(salted, 11)}", underlay=underlay_ns(state_root))


def ensure_underlay(ledger: Ledger, ul: str) -> None:
    """The shared bridge namespace (idempotent; the clusters of one state root share it)."""
    if not netns_exists(ul):
        run("ip", "netns", "add", ul)
        run("ip", "-n", ul, "link", "set", "lo", "up")
        run("ip", "-n", ul, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "-n", ul, "addr", "add", f"{UNDERLAY_GW}/16", "dev", BRIDGE)
        run("ip", "-n", ul, "link", "set", BRIDGE, "up")
    ledger.add("underlay", ul)


def create_node(node: NodeSpec, ledger: Ledger, forward: bool = True) -> None:
    if netns_exists(node.netns):
        run("ip", "netns", "del", node.netns)
    run("ip", "netns", "add", node.netns)
    ledger.add("netns", node.netns)
    ns = node.netns
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", node.underlay, "link", "del", node.underlay_if, check=False)
    run("ip", "-n", node.underlay, "link", "add", node.underlay_if, "type", "veth", "peer", "name", "eth0",
        "netns", ns)
    run("ip", "-n", node.underlay, "link", "set", node.underlay_if, "master", BRIDGE, "up")
    run("ip", "-n", ns, "addr", "add", f"{node.ip}/16", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    if forward:  # a node forwards between its pods and the underlay
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def route_nodes(nodes: List[NodeSpec]) -> None:
    """kindnet's routes: each other node's podCIDR via its node IP."""
    for n in nodes:
        for other in nodes:
            if other is not n:
                run("ip", "-n", n.netns, "route", "replace", other.pod_cidr, "via", other.ip)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run("ip", "netns", "del", name, check=False)


def underlay_users(state_root: str) -> List[str]:
    """Clusters whose ledger still holds the underlay.

    Anything in the state root that is not a directory (a YAML file saved
    there) or has no ledger is not a cluster. A ledger that exists but cannot
    be read is a :class:`SimError`: it may belong to a cluster still using the
    bridge, so the caller must not delete the underlay on a guess.
    """
    out = []
    try:
        entries = sorted(os.listdir(state_root))
    except FileNotFoundError:
        return out
    ul = underlay_ns(state_root)
    for c in entries:
        d = os.path.join(state_root, c)
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        path = os.path.join(d, "ledger.json")
        try:
            led = Ledger(path).read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError) as e:
            raise SimError(f"{path}: cannot read this ledger ({e}); is {c} a cluster still using the "
                           f"underlay {ul}?") from None
        if isinstance(led, dict) and ul in (led.get("underlay") or []):
            out.append(c)
    return out


def mount_cgroup2(path: str, ledger: Ledger) -> str:
    """A private cgroup2 mount (the machine's /sys/fs/cgroup may be v1)."""
    os.makedirs(path, exist_ok=True)
    if not os.path.ismount(path):
        run("mount", "-t", "cgroup2", "none", path)
    ledger.add("mount", path)
    return path


def rm_cgroup(path: str) -> bool:
    """Remove a cgroup directory tree (children first); False if a process is still inside."""
    if not os.path.isdir(path):
        return True
    ok = True
    for entry in sorted(os.listdir(path)):
        sub = os.path.join(path, entry)
        if os.path.isdir(sub):
            ok = rm_cgroup(sub) and ok
    try:
        os.rmdir(path)
    except OSError:
        ok = False
    return ok


def kill_cgroup(path: str) -> None:
    """cgroup.kill (5.14+) ends every process of the subtree at once."""
    with contextlib.suppress(OSError):
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")


def teardown(ledger: Ledger, state_root: str, cluster: str) -> Dict[str, int]:
    """Remove everything the ledger lists (idempotent, also after a crash).

    Every step runs even when an earlier one failed, and each object leaves
    the ledger only once it is gone; a failure is raised at the end as one
    :class:`SimError` naming every object left, so a teardown never stops
    half-way in silence (and a second run retries exactly what is left).
    """
    import signal
    import time
    st = ledger.read()
    done = {"pids": 0, "netns": 0, "cgroups": 0, "mounts": 0}
    errors: List[str] = []
    for pid in st.get("pid", []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)
            done["pids"] += 1
        ledger.remove("pid", pid)
    for cg in sorted(st.get("cgroup", []), key=len, reverse=True):
        kill_cgroup(cg)
    time.sleep(0.05 if st.get("cgroup") else 0)
    for cg in sorted(st.get("cgroup", []), key=len, reverse=True):
        for _ in range(50):
            if rm_cgroup(cg):
                break
            time.sleep(0.05)
        if not os.path.exists(cg):
            done["cgroups"] += 1
            ledger.remove("cgroup", cg)
        else:
            errors.append(f"cgroup {cg}: still has processes or children")
    for ns in st.get("netns", []):
        delete_netns(ns)
        if netns_exists(ns):
            errors.append(f"netns {ns}: ip netns del failed")
            continue
        done["netns"] += 1
        ledger.remove("netns", ns)
    for m in st.get("mount", []):
        if os.path.ismount(m):
            run("umount", m, check=False)
            if os.path.ismount(m):
                run("umount", "-l", m, check=False)
        if os.path.ismount(m):
            errors.append(f"mount {m}: still mounted")
            continue
        with contextlib.suppress(OSError):
            os.rmdir(m)
        done["mounts"] += 1
        ledger.remove("mount", m)
    for ul in st.get("underlay", []):
        try:
            others = [c for c in underlay_users(state_root) if c != cluster]
        except SimError as e:
            errors.append(f"underlay {ul}: kept, {e}")
            continue
        if not others:
            delete_netns(ul)
            if netns_exists(ul):
                errors.append(f"underlay {ul}: ip netns del failed")
                continue
        ledger.remove("underlay", ul)
    if errors:
        raise SimError(f"cluster {cluster}: teardown incomplete: " + "; ".join(errors))
    return done
