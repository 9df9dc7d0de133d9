# SPDX-License-Identifier: MIT OR Apache-2.0
"""The node's uplink (NodePort from outside, pod masquerade): agent flags and the Reconciler.

``desired_uplink`` is pure: the own Node's addresses and pod CIDRs, every
Node's pod CIDRs, and the flags. ``Uplink.apply`` resolves the devices in
the agent's network namespace (the node's), writes the uplink config,
attaches bpf/nodeport.bpf.c to exactly those devices and runs the NAT GC;
it queues itself again every ``gc_interval`` seconds for the GC.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..controllers.services import Problem
from ..k8s.reconciler import REQUEUE_AFTER, Desired, Reconciler

log = logging.getLogger("meshcni.agent.uplink")


@dataclass(frozen=True)
class UplinkOptions:
    masquerade: bool = True
    non_masquerade_cidrs: Tuple[str, ...] = ()
    devices: Tuple[str, ...] = ()        # empty: the interface(s) holding the node's InternalIP
    service_cidrs: Tuple[str, ...] = ()
    gc_interval: float = 30.0


def add_flags(p: argparse.ArgumentParser) -> None:
    m = p.add_mutually_exclusive_group()
    m.add_argument("--masquerade", dest="masquerade", action="store_true", default=True,
                   help="SNAT pod traffic leaving the cluster to the node's address, in BPF on the uplink (default)")
    m.add_argument("--no-masquerade", dest="masquerade", action="store_false",
                   help="leave pod source addresses as they are (the network routes pod CIDRs)")
    p.add_argument("--non-masquerade-cidr", action="append", default=[], metavar="CIDR",
                   help="destinations pod traffic reaches with its own address (repeatable; pod CIDRs, "
                        "the service CIDRs and node addresses never masquerade)")
    p.add_argument("--service-cidr", dest="uplink_service_cidr", action="append", default=[], metavar="CIDR",
                   help="the cluster's ClusterIP ranges, never masqueraded (repeatable)")
    p.add_argument("--devices", default="", metavar="IFNAME,...",
                   help="the node's uplinks: NodePort/externalIP traffic from outside and masquerade "
                        "(default: the interface holding the node's InternalIP)")


def options(args) -> UplinkOptions:
    return UplinkOptions(masquerade=args.masquerade, non_masquerade_cidrs=tuple(args.non_masquerade_cidr),
                         devices=tuple(d for d in args.devices.split(",") if d),
                         service_cidrs=tuple(args.uplink_service_cidr))


@dataclass
class UplinkState:
    addrs: List[str]                 # the node's InternalIPs, then ExternalIPs
    local_pod_cidrs: List[str]
    pod_cidrs: List[str]
    opts: UplinkOptions
    problems: List[str] = field(default_factory=list)


def _cidrs(items, kind, name, fld, problems) -> List[str]:
    out = []
    for c in items or ():
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except (TypeError, ValueError):
            problems.append(Problem(kind, "", name, fld, f"{c!r} is not a CIDR"))
    return out


def desired_uplink(nodes: Sequence[dict], node_name: str, opts: UplinkOptions,
                   clusters: Sequence[dict] = ()) -> Desired:
    """The uplink's config. Pod CIDRs (never masqueraded) are this cluster's Nodes' and those of every
    meshed Cluster's ``status.nodes``: a pod reaching a remote cluster's pod keeps its own address, so
    the remote cluster's NetworkPolicy sees its identity, not this node's."""
    problems: List[Problem] = []
    own = None
    pods: List[str] = []
    for n in nodes:
        name = (n.get("metadata") or {}).get("name", "")
        spec = n.get("spec") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        got = _cidrs(cidrs, "Node", name, "spec.podCIDRs", problems)
        pods += got
        if name == node_name:
            own = (n, got)
    for c in clusters:
        cname = (c.get("metadata") or {}).get("name", "")
        st = c.get("status") if isinstance(c.get("status"), dict) else {}
        for i, rn in enumerate(st.get("nodes") or [] if isinstance(st.get("nodes"), list) else []):
            if isinstance(rn, dict) and isinstance(rn.get("podCIDRs"), list):
                pods += _cidrs(rn["podCIDRs"], "Cluster", cname, f"status.nodes[{i}].podCIDRs", problems)
    for fld, items in (("--non-masquerade-cidr", opts.non_masquerade_cidrs),
                       ("--service-cidr", opts.service_cidrs)):
        bad = []
        _cidrs(items, "Node", node_name, fld, bad)
        problems += bad
    if own is None:
        return Desired(None, problems)
    addrs = []
    for want in ("InternalIP", "ExternalIP"):
        for a in (own[0].get("status") or {}).get("addresses") or []:
            if a.get("type") == want:
                try:
                    addrs.append(str(ipaddress.ip_address(a.get("address"))))
                except ValueError:
                    problems.append(Problem("Node", "", node_name, "status.addresses",
                                            f"{a.get('address')!r} is not an address"))
    return Desired(UplinkState(addrs, own[1], sorted(set(pods)), opts), problems)


def resolve_devices(state: UplinkState):
    """(Device list, problems) in this network namespace: each device with the
    node address of each family it holds (a node address first)."""
    from pyroute2 import IPRoute

    from ..datapath.nodeport import Device
    problems = []
    with IPRoute() as ipr:
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        on: Dict[str, List[str]] = {}
        for a in ipr.get_addr():
            ip = a.get_attr("IFA_ADDRESS")
            if ip and a["scope"] == 0:  # global only: no link-local, no loopback
                on.setdefault(names.get(a["index"], ""), []).append(ip)
    wanted = list(state.opts.devices) or sorted(d for d, ips in on.items() if set(ips) & set(state.addrs))
    if not wanted:
        problems.append(f"no interface holds the node's address {', '.join(state.addrs) or '(none)'}: "
                        "no uplink (set --devices)")
    out = []
    for d in wanted:
        if d not in names.values():
            problems.append(f"--devices: no interface {d!r}")
            continue
        ips = on.get(d, [])
        pick = {}
        for ip in [x for x in state.addrs if x in ips] + ips:
            pick.setdefault(ipaddress.ip_address(ip).version, ip)
        out.append(Device(d, pick.get(4), pick.get(6), state.opts.masquerade))
    return out, problems


class Uplink(Reconciler):
    """Nodes -> the uplink program's config and attachments on this node, and its NAT GC."""
    name = "uplink"
    watches = ("nodes", "clusters")

    def __init__(self, datapath, node_name: str, opts: UplinkOptions):
        self.datapath = datapath
        self.node_name = node_name
        self.opts = opts
        self.devices: list = []

    @classmethod
    def for_agent(cls, bpf_root: str, maps, node_name: str, opts: Optional[UplinkOptions]) -> "Uplink":
        from ..datapath.nodeport import NodePortDatapath
        return cls(NodePortDatapath(bpf_root, maps), node_name, opts or UplinkOptions())

    def desired(self, caches) -> Desired:
        return desired_uplink(caches["nodes"].list(), self.node_name, self.opts, caches["clusters"].list())

    def apply(self, state: Optional[UplinkState]) -> dict:
        from ..datapath.nodeport import UplinkConfig
        if state is None:
            return {REQUEUE_AFTER: self.opts.gc_interval}
        devices, problems = resolve_devices(state)
        for p in problems:
            log.warning("uplink: %s", p)
        cfg = UplinkConfig(devices=devices, local_pod_cidrs=state.local_pod_cidrs, pod_cidrs=state.pod_cidrs,
                           service_cidrs=list(state.opts.service_cidrs),
                           non_masquerade_cidrs=list(state.opts.non_masquerade_cidrs))
        out = self.datapath.apply(cfg)
        self.devices = devices
        out["natExpired"] = self.datapath.gc()
        out[REQUEUE_AFTER] = self.opts.gc_interval
        return out
