# SPDX-License-Identifier: MIT OR Apache-2.0
"""External hosts: machines outside the cluster on the underlay (a client of NodePorts, LoadBalancer IPs).

    underlay bridge mcbr0 --veth--> host netns "mcsim-<hash>": eth0 172.30.254.<10+k>/16
                                                              [+ --ip ADDR/32, e.g. 203.0.113.7]

A host is a network namespace on the cluster's underlay bridge with an
address of the underlay (172.30.254.0/24, which no cluster's nodes use) and,
with ``--ip``, an extra address (a documentation range such as
203.0.113.0/24 is what tests use). With an extra address the host sends from
it (its route to the underlay says ``src``) and every node of the cluster
routes it back via the host's underlay address, as a router would: so a
backend behind ``externalTrafficPolicy: Local`` sees that address.

Hosts belong to one cluster: the namespace is in its ledger (``sim down``
removes it), the record in ``<cluster>/hosts.json``. Nothing is added to
the machine's root namespace.
"""
from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from typing import Dict, List, Optional

from . import topology
from .topology import SimError, run

HOST_NET = ipaddress.ip_network("172.30.254.0/24")
FIRST_HOST = 10
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def _path(state_root: str, cluster: str) -> str:
    return os.path.join(state_root, cluster, "hosts.json")


def read_hosts(state_root: str, cluster: str) -> Dict[str, dict]:
    try:
        with open(_path(state_root, cluster)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _write_hosts(state_root: str, cluster: str, hosts: Dict[str, dict]) -> None:
    d = os.path.dirname(_path(state_root, cluster))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".hosts.")
    with os.fdopen(fd, "w") as f:
        json.dump(hosts, f, indent=1, sort_keys=True)
    os.rename(tmp, _path(state_root, cluster))


def _used_ips(state_root: str) -> set:
    """Underlay and extra addresses of every host of every cluster of the state root (they share the bridge)."""
    from .cluster import list_clusters
    used = set()
    for c in list_clusters(state_root):
        for h in read_hosts(state_root, c).values():
            used.add(h["ip"])
            if h.get("extra"):
                used.add(h["extra"])
    return used


def _nodes(state_root: str, cluster: str):
    from .cluster import read_config
    cfg = read_config(state_root, cluster)
    if cfg is None:
        raise SimError(f"cluster {cluster} does not exist")
    return topology.plan_nodes(cluster, cfg.index, cfg.nodes, cfg.pod_cidr, state_root)


def add_host(state_root: str, cluster: str, name: str, extra: Optional[str] = None) -> dict:
    """Create host ``name`` on the cluster's underlay; its record ({name, netns, ip, extra})."""
    from .cluster import cluster_dir, daemon_pid, state_lock
    if not name or len(name) > 20 or set(name) - _NAME_OK or name[0] == "-":
        raise SimError(f"host {name!r}: 1-20 characters of a-z, 0-9 and '-'")
    if not daemon_pid(state_root, cluster):
        raise SimError(f"cluster {cluster} is not up")
    if extra is not None:
        try:
            a = ipaddress.ip_address(extra)
        except ValueError:
            raise SimError(f"--ip {extra!r} is not an IP address") from None
        if a.version != 4:
            raise SimError(f"--ip {extra}: the simulated underlay is IPv4 only")
        if a in topology.UNDERLAY_NET:
            raise SimError(f"--ip {extra}: inside the underlay {topology.UNDERLAY_NET}; every host has an underlay "
                           "address already, --ip is for an extra one (e.g. from 203.0.113.0/24)")
        extra = str(a)
    ledger = topology.Ledger(os.path.join(cluster_dir(state_root, cluster), "ledger.json"))
    with state_lock(state_root):
        hosts = read_hosts(state_root, cluster)
        if name in hosts:
            raise SimError(f"host {name} already exists in cluster {cluster}")
        used = _used_ips(state_root)
        if extra in used:
            raise SimError(f"--ip {extra}: another host has it")
        ip = next((str(HOST_NET.network_address + i) for i in range(FIRST_HOST, 255)
                   if str(HOST_NET.network_address + i) not in used), None)
        if ip is None:
            raise SimError(f"no free host address left in {HOST_NET}")
        salted = f"{os.path.abspath(state_root)}/{cluster}/host/{name}"
        spec = topology.NodeSpec(name=name, netns=f"mcsim-{topology.short(salted)}", ip=ip, pod_cidr="",
                                 underlay_if=f"mh{topology.short(salted, 11)}",
                                 underlay=topology.underlay_ns(state_root))
        rec = {"name": name, "netns": spec.netns, "ip": ip, "extra": extra, "underlayIf": spec.underlay_if}
        hosts[name] = rec
        _write_hosts(state_root, cluster, hosts)  # first: a failure below still leaves a record to delete by
        topology.create_node(spec, ledger, forward=False)
        if extra:
            run("ip", "-n", spec.netns, "addr", "add", f"{extra}/32", "dev", "eth0")
            # the host's connections leave from its extra address; the nodes route it back here
            run("ip", "-n", spec.netns, "route", "replace", str(topology.UNDERLAY_NET), "dev", "eth0", "src", extra)
            for n in _nodes(state_root, cluster):
                if topology.netns_exists(n.netns):
                    run("ip", "-n", n.netns, "route", "replace", f"{extra}/32", "via", ip)
    return rec


def del_host(state_root: str, cluster: str, name: str) -> bool:
    """Remove host ``name`` (its namespace, the nodes' route to its extra address); False if there was none."""
    from .cluster import cluster_dir, state_lock
    ledger = topology.Ledger(os.path.join(cluster_dir(state_root, cluster), "ledger.json"))
    with state_lock(state_root):
        hosts = read_hosts(state_root, cluster)
        rec = hosts.get(name)
        if rec is None:
            return False
        if rec.get("extra"):
            for n in _nodes(state_root, cluster):
                if topology.netns_exists(n.netns):
                    run("ip", "-n", n.netns, "route", "del", f"{rec['extra']}/32", check=False)
        topology.delete_netns(rec["netns"])
        if topology.netns_exists(rec["netns"]):
            raise SimError(f"host {name}: ip netns del {rec['netns']} failed")
        ledger.remove("netns", rec["netns"])
        del hosts[name]
        _write_hosts(state_root, cluster, hosts)
    return True


def list_hosts(state_root: str, cluster: str) -> List[dict]:
    return [dict(h, present=topology.netns_exists(h["netns"])) for _, h in sorted(read_hosts(state_root, cluster).items())]


def host_argv(state_root: str, cluster: str, name: str, cmd: List[str]) -> List[str]:
    rec = read_hosts(state_root, cluster).get(name)
    if rec is None:
        raise SimError(f"no host {name} in cluster {cluster} (meshcni sim host add {name})")
    return ["ip", "netns", "exec", rec["netns"]] + list(cmd)
