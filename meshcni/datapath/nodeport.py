# SPDX-License-Identifier: MIT OR Apache-2.0
"""The node's uplink programs (bpf/nodeport.bpf.c): attach, configure, NAT GC.

``UplinkConfig`` is the desired state of one node: its uplink devices (with
the node addresses traffic is translated to) and what each address range is
to the uplink (this node's pod CIDRs, the cluster's pod CIDRs, the service
CIDRs, the non-masquerade CIDRs). ``nat_cidr_rows`` turns the ranges into
LPM rows whose flags are the union over every containing range, since an
LPM lookup only returns the longest match. ``NodePortDatapath.apply``
reconciles mc_nat_devs and mc_nat_cidrs to it and attaches the programs to
exactly the configured devices (detaching from devices no longer listed).
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .. import layout
from .._closing import Closing
from ..bpf import BpfObject, MeshMaps, object_path
from ..bpf.pin import ensure_root
from ..errors import BpfError
from .policy import CTGC, _ifindex, addr16, ct_gc, in_netns
from .tc import TC_EGRESS, TC_INGRESS, TcHooks

# a handle of its own: the uplink is no pod veth, but a node whose uplink is
# also enslaved elsewhere must never have one program replace the other
TC_HANDLE, TC_PRIORITY = 0x4D4E, 1  # "MN"
HOOKS = (("mc_uplink_in", TC_INGRESS), ("mc_uplink_out", TC_EGRESS))
UPLINK_TC = TcHooks(TC_HANDLE, TC_PRIORITY, HOOKS)


def _c(name: str) -> int:
    return layout.constants()[name]


@dataclass(frozen=True)
class Device:
    ifname: str
    addr4: Optional[str] = None   # the node's IPv4 address on this uplink
    addr6: Optional[str] = None
    masquerade: bool = True


@dataclass
class UplinkConfig:
    devices: Sequence[Device] = ()
    local_pod_cidrs: Sequence[str] = ()
    pod_cidrs: Sequence[str] = ()
    service_cidrs: Sequence[str] = ()
    non_masquerade_cidrs: Sequence[str] = ()
    problems: List[str] = field(default_factory=list)


def _net(c: str, what: str) -> ipaddress._BaseNetwork:
    try:
        return ipaddress.ip_network(c, strict=False)
    except ValueError:
        raise ValueError(f"{what}: {c!r} is not a CIDR") from None


def nat_cidr_rows(cfg: UplinkConfig) -> Dict[Tuple[int, bytes], int]:
    """(prefixlen in the 16-byte form, addr16) -> flags, each flag the union
    of the flags of every range containing the prefix."""
    tagged: Dict[ipaddress._BaseNetwork, int] = {}
    for cidrs, flag, what in ((cfg.local_pod_cidrs, "MC_NAT_CIDR_LOCAL_POD", "local pod CIDR"),
                              (cfg.pod_cidrs, "MC_NAT_CIDR_POD", "pod CIDR"),
                              (cfg.local_pod_cidrs, "MC_NAT_CIDR_POD", "local pod CIDR"),
                              (cfg.service_cidrs, "MC_NAT_CIDR_SERVICE", "service CIDR"),
                              (cfg.non_masquerade_cidrs, "MC_NAT_CIDR_NO_MASQ", "non-masquerade CIDR")):
        for c in cidrs:
            n = _net(c, what)
            tagged[n] = tagged.get(n, 0) | _c(flag)
    out = {}
    for n, f in tagged.items():
        for m, g in tagged.items():
            if m.version == n.version and m != n and n.subnet_of(m):
                f |= g
        plen = n.prefixlen + (96 if n.version == 4 else 0)
        out[(plen, addr16(str(n.network_address)))] = f
    return out


class NodePortDatapath(Closing):
    """nodeport.bpf.o loaded against the pins; its uplink maps and tc attachments.

    ``netns``: the network namespace holding the devices (the simulator's
    node namespace); None is the caller's own.
    """

    def __init__(self, pin_root: str, maps: Optional[MeshMaps] = None, netns: Optional[str] = None,
                 path: Optional[str] = None):
        self.obj = BpfObject(path or object_path("nodeport"), ensure_root(pin_root)).load()
        self.netns = netns
        self._own = maps is None
        self.maps = maps or MeshMaps(pin_root)
        self.nat = self.maps.map("mc_nat")
        self.attached_to: Dict[str, int] = {}   # ifname -> ifindex, what apply attached
        self._lock = threading.Lock()

    # ---- tc ----
    def attached(self, ifname: str) -> Dict[str, Optional[int]]:
        with in_netns(self.netns):
            return UPLINK_TC.attached(_ifindex(ifname))

    def attach(self, ifname: str) -> Dict[str, str]:
        """Both programs on ``ifname``; prog -> "attached" / "kept" / "updated"."""
        with in_netns(self.netns):
            return UPLINK_TC.attach(_ifindex(ifname), {p: self.obj.prog_fd(p) for p, _ in HOOKS}, ifname)

    def detach(self, ifname: str) -> int:
        return detach(ifname, self.netns)

    # ---- config ----
    def write_config(self, cfg: UplinkConfig) -> Dict[str, int]:
        """mc_nat_devs and mc_nat_cidrs reconciled to ``cfg`` (devices by ifindex)."""
        devs = self.maps.map("mc_nat_devs")
        cidrs = self.maps.map("mc_nat_cidrs")
        dk = np.zeros(len(cfg.devices), devs.key_dtype)
        dv = np.zeros(len(cfg.devices), devs.value_dtype)
        with in_netns(self.netns):
            for i, d in enumerate(cfg.devices):
                dk[i]["ifindex"] = _ifindex(d.ifname)
                for fld, a in (("addr4", d.addr4), ("addr6", d.addr6)):
                    if a:
                        if (ipaddress.ip_address(a).version == 4) != (fld == "addr4"):
                            raise ValueError(f"device {d.ifname}: {fld} {a!r} is of the other family")
                        dv[i][fld] = np.frombuffer(addr16(a), np.uint8)
                dv[i]["flags"] = _c("MC_NAT_DEV_F_MASQ") if d.masquerade else 0
        rows = nat_cidr_rows(cfg)
        ck = np.zeros(len(rows), cidrs.key_dtype)
        cv = np.zeros(len(rows), cidrs.value_dtype)
        for i, ((plen, a), f) in enumerate(sorted(rows.items())):
            ck[i]["prefixlen"] = plen
            ck[i]["addr"] = np.frombuffer(a, np.uint8)
            cv[i]["flags"] = f
        # ranges before devices: a device never runs with half its ranges
        cidrs.reconcile(ck, cv)
        devs.reconcile(dk, dv)
        return {"devices": len(dk), "cidrs": len(ck)}

    def apply(self, cfg: UplinkConfig) -> Dict[str, int]:
        """Config written, programs on exactly ``cfg.devices``. Idempotent."""
        with self._lock:
            out = self.write_config(cfg)
            want = {d.ifname for d in cfg.devices}
            for ifname in want:
                self.attach(ifname)
            for ifname in sorted(set(self.attached_to) - want):
                try:
                    self.detach(ifname)
                except BpfError:
                    pass  # the device is gone, and its attachments with it
            with in_netns(self.netns):
                self.attached_to = {n: _ifindex(n) for n in want}
            return out

    def gc(self, now_ns: Optional[int] = None) -> int:
        """Delete expired NAT entries (live ones are never touched)."""
        return nat_gc(self.nat, now_ns)

    def remove(self) -> int:
        """Detach from every device this object attached to; returns programs removed."""
        with self._lock:
            n = 0
            for ifname in list(self.attached_to):
                try:
                    n += self.detach(ifname)
                except BpfError:
                    pass
            self.attached_to = {}
            return n

    def close(self) -> None:
        if self._own:
            self.maps.close()
        self.obj.close()


def detach(ifname: str, netns: Optional[str] = None) -> int:
    """The uplink programs off ``ifname`` (the clsact qdisc stays); how many went."""
    with in_netns(netns):
        return detach_ifindex(_ifindex(ifname))


def detach_ifindex(ifindex: int) -> int:
    return UPLINK_TC.detach(ifindex)


def attached_ifindex(ifindex: int) -> Dict[str, Optional[int]]:
    """prog -> id attached at the uplink's tc handle on ifindex (None: nothing)."""
    return UPLINK_TC.attached(ifindex)


def nat_gc(nat, now_ns: Optional[int] = None, batch: int = 4096) -> int:
    """Delete the mc_nat entries past ``expires_ns`` (CLOCK_MONOTONIC); an
    entry refreshed between the dump and the delete is kept."""
    return ct_gc(nat, now_ns, batch)


class NatGC(CTGC):
    """:func:`nat_gc` every ``interval`` seconds in a thread (mc_nat has the
    conntrack entry's ``expires_ns``, so the conntrack sweeper serves)."""

    thread_name = "meshcni-nat-gc"
    retry_on = (BpfError,)  # the next round retries; the LRU map evicts meanwhile

    def __init__(self, nat, interval: float = 30.0):
        super().__init__(nat, interval)

    @property
    def nat(self):
        return self.ct
