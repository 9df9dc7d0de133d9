# SPDX-License-Identifier: MIT OR Apache-2.0
"""Netlink work of the plugin (pyroute2): the veth, addresses, routes, neighbours.

The pod side uses a link-local next hop (Calico's scheme, also what Cilium
does with its router IP): the pod's address is a /32 (/128), its default
route goes via 169.254.1.1 (fe80::1) on the veth, and a permanent neighbour
entry maps that next hop to the host-side veth's MAC. Nothing answers ARP for
the gateway and the host side carries no address, so no subnet is shared
between pods and every pod-to-pod packet goes through the host side — where
meshcni's tc programs sit. The host side gets a /32 route to the pod.

A netlink socket belongs to the namespace it was opened in, so one socket is
opened in the host namespace and one inside the pod's, and the thread's own
namespace is restored at once.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from .spec import CNIError, NETLINK_FAILURE, UNKNOWN_CONTAINER

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
_CLONE_NEWNET = 0x40000000
_NUD_PERMANENT = 0x80
_RT_SCOPE_LINK = 253
_IFA_F_NODAD = 0x02
_SO_NETNS_COOKIE = 71
HOST_PREFIX = "mc"


def host_ifname(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so a retried ADD finds what a crashed one made."""
    h = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_PREFIX + h[:13]  # 15 chars, IFNAMSIZ - 1


def gateway_for(address: str) -> str:
    return GATEWAY6 if ":" in address else GATEWAY4


def _setns(fd: int) -> None:
    from .._libbpf import lib  # the cffi extension: cheap, already needed for tc
    rc = lib.mc_setns(fd, _CLONE_NEWNET)
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))


@contextlib.contextmanager
def entered(netns_path: str) -> Iterator[None]:
    """Run the body with this thread in ``netns_path`` (restored after)."""
    try:
        new = os.open(netns_path, os.O_RDONLY)
    except OSError as e:
        raise CNIError(UNKNOWN_CONTAINER, f"netns {netns_path}: {e.strerror}") from None
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            _setns(new)
        except OSError as e:
            raise CNIError(UNKNOWN_CONTAINER, f"netns {netns_path}: setns: {e.strerror}") from None
        try:
            yield
        finally:
            try:
                _setns(old)
            except OSError:  # continuing in the wrong namespace would be far worse
                os.abort()
    finally:
        os.close(new)
        os.close(old)


def iproute():
    from pyroute2 import IPRoute  # heavy import, only when netlink is needed
    return IPRoute()


def pod_iproute(netns_path: str):
    with entered(netns_path):
        return iproute()


def _nl(what: str, e: Exception) -> CNIError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = os.strerror(code) if isinstance(code, int) and code > 0 else str(e)
    return CNIError(NETLINK_FAILURE, f"{what}: {msg}")


def _nl_errno(e: Exception) -> Optional[int]:
    return getattr(e, "code", None) or getattr(e, "errno", None)


def link_index(ipr, name: str) -> Optional[int]:
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def link_info(ipr, index: int) -> Dict[str, object]:
    msg = ipr.get_links(index)[0]
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    return {"name": msg.get_attr("IFLA_IFNAME"), "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"), "kind": kind, "up": bool(msg["flags"] & 1),
            "index": index}


def delete_link(ipr, name: str) -> bool:
    idx = link_index(ipr, name)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except Exception as e:  # gone meanwhile is fine (two DELs racing)
        if _nl_errno(e) != errno.ENODEV:
            raise _nl(f"delete {name}", e) from None
    return True


@dataclass
class Veth:
    host_name: str
    host_index: int
    host_mac: str
    pod_name: str
    pod_index: int
    pod_mac: str


def create_veth(host, pod, netns_path: str, host_name: str, pod_name: str, mtu: int) -> Veth:
    """A veth whose peer is born inside the pod namespace under its final name."""
    if link_index(pod, pod_name) is not None:
        raise CNIError(NETLINK_FAILURE, f"interface {pod_name} already exists in netns {netns_path}")
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        host.link("add", ifname=host_name, kind="veth", mtu=mtu,
                  peer={"ifname": pod_name, "net_ns_fd": fd, "mtu": mtu})
    except Exception as e:
        raise _nl(f"create veth {host_name} (peer {pod_name} in {netns_path})", e) from None
    finally:
        os.close(fd)
    hidx = link_index(host, host_name)
    pidx = link_index(pod, pod_name)
    if hidx is None or pidx is None:
        raise CNIError(NETLINK_FAILURE, f"veth {host_name}/{pod_name} vanished right after creation")
    try:
        pod.link("set", index=pidx, mtu=mtu)
        host.link("set", index=hidx, state="up")
    except Exception as e:
        raise _nl(f"set up veth {host_name}", e) from None
    return Veth(host_name, hidx, link_info(host, hidx)["mac"], pod_name, pidx, link_info(pod, pidx)["mac"])


def configure_pod(pod, veth: Veth, addresses: List[str]) -> None:
    """Addresses (/32, /128), the link-local next hop and the default routes."""
    try:
        lo = link_index(pod, "lo")
        if lo is not None:
            pod.link("set", index=lo, state="up")
        idx = veth.pod_index
        if any(":" in a for a in addresses):
            _sysctl(f"net/ipv6/conf/{veth.pod_name}/accept_dad", "0", missing_ok=True)
        pod.link("set", index=idx, state="up")
        for a in addresses:
            ip = ipaddress.ip_interface(a).ip
            if ip.version == 4:
                pod.addr("add", index=idx, address=str(ip), prefixlen=32)
                pod.route("add", dst=f"{GATEWAY4}/32", oif=idx, scope=_RT_SCOPE_LINK)
                pod.neigh("add", dst=GATEWAY4, lladdr=veth.host_mac, ifindex=idx, state=_NUD_PERMANENT)
                pod.route("add", dst="0.0.0.0/0", gateway=GATEWAY4, oif=idx)
            else:
                pod.addr("add", index=idx, address=str(ip), prefixlen=128, flags=_IFA_F_NODAD)
                pod.neigh("add", dst=GATEWAY6, lladdr=veth.host_mac, ifindex=idx, state=_NUD_PERMANENT,
                          family=socket.AF_INET6)
                pod.route("add", dst="::/0", gateway=GATEWAY6, oif=idx, family=socket.AF_INET6)
    except CNIError:
        raise
    except Exception as e:
        raise _nl(f"configure {veth.pod_name} in the pod", e) from None


def configure_host(host, veth: Veth, addresses: List[str]) -> None:
    """The host's route to the pod, and forwarding (as the ptp plugin enables it)."""
    try:
        for a in addresses:
            ip = ipaddress.ip_interface(a).ip
            plen = 32 if ip.version == 4 else 128
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            host.route("replace", dst=f"{ip}/{plen}", oif=veth.host_index, scope=_RT_SCOPE_LINK, family=fam)
    except Exception as e:
        raise _nl(f"route to the pod via {veth.host_name}", e) from None
    if any(":" not in a for a in addresses):
        _sysctl("net/ipv4/ip_forward", "1")
    if any(":" in a for a in addresses):
        _sysctl("net/ipv6/conf/all/forwarding", "1")


def _sysctl(key: str, value: str, missing_ok: bool = False) -> None:
    path = "/proc/sys/" + key
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise CNIError(NETLINK_FAILURE, f"sysctl {key}: not present") from None
    except OSError as e:
        raise CNIError(NETLINK_FAILURE, f"sysctl {key}={value}: {e.strerror}") from None


def netns_cookie(netns_path: str) -> int:
    """The kernel's cookie of the namespace (what BPF's bpf_get_netns_cookie returns)."""
    with entered(netns_path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return 0
    finally:
        s.close()


# ---- CHECK ----------------------------------------------------------------

def pod_state(pod, ifname: str) -> Optional[Dict[str, object]]:
    """What the pod's interface has: addresses, default routes, the gateway neighbour."""
    idx = link_index(pod, ifname)
    if idx is None:
        return None
    info = link_info(pod, idx)
    addrs = [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in pod.get_addr(index=idx)]
    routes = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in pod.get_routes(family=fam, oif=idx):
            dst = r.get_attr("RTA_DST")
            routes.append({"dst": f"{dst or ('::' if fam == socket.AF_INET6 else '0.0.0.0')}/{r['dst_len']}",
                           "gw": r.get_attr("RTA_GATEWAY")})
    neigh = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR") for fam in (socket.AF_INET, socket.AF_INET6)
             for n in pod.get_neighbours(ifindex=idx, family=fam)}
    info.update(addresses=addrs, routes=routes, neighbours=neigh)
    return info


def host_routes(host, index: int) -> List[str]:
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in host.get_routes(family=fam, oif=index):
            if r.get_attr("RTA_DST"):
                out.append(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
    return out
