# SPDX-License-Identifier: MIT OR Apache-2.0
"""Netlink work of the plugin: the veth, addresses, routes, neighbours.

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

Two backends behind the same functions: ``Netlink``, the compiled core's
rtnetlink client (csrc/mc_nl.c), serves ADD and DEL, which run once per pod
and would otherwise spend most of their time importing pyroute2; pyroute2
(``iproute()``) serves the rare CHECK and GC, which read far more state.
``MESHCNI_CNI_NETLINK=pyroute2`` puts ADD and DEL on pyroute2 too, to compare.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from typing import Dict, Iterator, List, Optional

try:  # the builtin digest: importing hashlib loads OpenSSL (~2 ms) for one hash
    from _sha256 import sha256 as _sha256
except ImportError:  # Python 3.12+ names it _sha2
    try:
        from _sha2 import sha256 as _sha256
    except ImportError:
        from hashlib import sha256 as _sha256

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
    h = _sha256(f"{container_id}/{ifname}".encode()).hexdigest()
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


class Netlink:
    """A rtnetlink socket of the compiled core, in the namespace it was opened in.

    Methods raise OSError with the kernel's errno, as pyroute2 raises
    NetlinkError, so callers handle both alike.
    """

    def __init__(self) -> None:
        from .._libbpf import ffi, lib
        self._ffi, self._lib = ffi, lib
        fd = lib.mc_nl_open()
        if fd < 0:
            raise OSError(-fd, f"netlink socket: {os.strerror(-fd)}")
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            self._lib.mc_nl_close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _check(rc: int, what: str) -> int:
        if rc < 0:
            raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
        return rc

    def link_index(self, name: str) -> Optional[int]:
        rc = self._lib.mc_nl_link_index(self.fd, name.encode())
        if rc in (-errno.ENODEV, -errno.EINVAL):  # EINVAL: a name no interface can have
            return None
        return self._check(rc, f"look up {name}")

    def link_info(self, index: int) -> Dict[str, object]:
        out = self._ffi.new("struct mc_nl_link *")
        self._check(self._lib.mc_nl_link_get(self.fd, index, out), f"get link {index}")
        kind = self._ffi.string(out.kind).decode()
        return {"name": self._ffi.string(out.name).decode(), "mac": ":".join(f"{b:02x}" for b in out.mac),
                "mtu": out.mtu, "kind": kind or None, "up": bool(out.flags & 1), "index": out.index}

    def veth_create(self, name: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        self._check(self._lib.mc_nl_veth_create(self.fd, name.encode(), peer.encode(), peer_netns_fd, mtu),
                    f"create veth {name}")

    def link_set(self, index: int, up: Optional[bool] = None, mtu: int = 0) -> None:
        self._check(self._lib.mc_nl_link_set(self.fd, index, -1 if up is None else int(up), mtu),
                    f"set link {index}")

    def link_del(self, index: int) -> None:
        self._check(self._lib.mc_nl_link_del(self.fd, index), f"delete link {index}")

    def addr_add(self, index: int, ip, prefixlen: int, flags: int = 0) -> None:
        self._check(self._lib.mc_nl_addr_add(self.fd, index, _family(ip), ip.packed, prefixlen, flags),
                    f"add address {ip}/{prefixlen}")

    def route_add(self, dst, dst_len: int, gw=None, oif: int = 0, scope: int = 0, replace: bool = False) -> None:
        """dst (and gw) are ipaddress objects; dst None is the default route of gw's family."""
        fam = _family(dst if dst is not None else gw)
        self._check(self._lib.mc_nl_route_add(self.fd, fam, dst.packed if dst is not None else self._ffi.NULL,
                                              dst_len, gw.packed if gw is not None else self._ffi.NULL,
                                              oif, scope, int(replace)),
                    f"add route {dst or 'default'}/{dst_len}")

    def neigh_add(self, index: int, ip, mac: str, state: int) -> None:
        self._check(self._lib.mc_nl_neigh_add(self.fd, index, _family(ip), ip.packed, _mac_bytes(mac), state),
                    f"add neighbour {ip}")


def _family(ip) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _use_pyroute2() -> bool:
    return os.environ.get("MESHCNI_CNI_NETLINK") == "pyroute2"


def open_host():
    """The host-namespace handle ADD and DEL work through (see the module docstring)."""
    return iproute() if _use_pyroute2() else Netlink()


def open_pod(netns_path: str):
    with entered(netns_path):
        return open_host()


def _nl(what: str, e: Exception) -> CNIError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = os.strerror(code) if isinstance(code, int) and code > 0 else str(e)
    return CNIError(NETLINK_FAILURE, f"{what}: {msg}")


def _nl_errno(e: Exception) -> Optional[int]:
    return getattr(e, "code", None) or getattr(e, "errno", None)


def link_index(ipr, name: str) -> Optional[int]:
    if isinstance(ipr, Netlink):
        return ipr.link_index(name)
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def link_info(ipr, index: int) -> Dict[str, object]:
    if isinstance(ipr, Netlink):
        return ipr.link_info(index)
    msg = ipr.get_links(index)[0]
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    return {"name": msg.get_attr("IFLA_IFNAME"), "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"), "kind": kind, "up": bool(msg["flags"] & 1),
            "index": index}


def delete_link(ipr, name: str) -> bool:
    try:
        idx = link_index(ipr, name)
    except OSError as e:
        raise _nl(f"look up {name}", e) from None
    if idx is None:
        return False
    try:
        if isinstance(ipr, Netlink):
            ipr.link_del(idx)
        else:
            ipr.link("del", index=idx)
    except Exception as e:  # gone meanwhile is fine (two DELs racing)
        if _nl_errno(e) != errno.ENODEV:
            raise _nl(f"delete {name}", e) from None
    return True


class Veth:
    """Both ends of a pod's veth (a plain class: @dataclass costs ~0.5 ms per plugin run)."""

    __slots__ = ("host_name", "host_index", "host_mac", "pod_name", "pod_index", "pod_mac")

    def __init__(self, host_name: str, host_index: int, host_mac: str, pod_name: str, pod_index: int,
                 pod_mac: str) -> None:
        self.host_name, self.host_index, self.host_mac = host_name, host_index, host_mac
        self.pod_name, self.pod_index, self.pod_mac = pod_name, pod_index, pod_mac

    def __repr__(self) -> str:
        return f"Veth({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Veth) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


def create_veth(host, pod, netns_path: str, host_name: str, pod_name: str, mtu: int) -> Veth:
    """A veth whose peer is born inside the pod namespace under its final name."""
    c = isinstance(host, Netlink)
    try:
        exists = link_index(pod, pod_name) is not None
    except OSError as e:
        raise _nl(f"look up {pod_name} in {netns_path}", e) from None
    if exists:
        raise CNIError(NETLINK_FAILURE, f"interface {pod_name} already exists in netns {netns_path}")
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        if c:
            host.veth_create(host_name, pod_name, fd, mtu)
        else:
            host.link("add", ifname=host_name, kind="veth", mtu=mtu,
                      peer={"ifname": pod_name, "net_ns_fd": fd, "mtu": mtu})
    except Exception as e:
        raise _nl(f"create veth {host_name} (peer {pod_name} in {netns_path})", e) from None
    finally:
        os.close(fd)
    try:
        hidx = link_index(host, host_name)
        pidx = link_index(pod, pod_name)
        if hidx is None or pidx is None:
            raise CNIError(NETLINK_FAILURE, f"veth {host_name}/{pod_name} vanished right after creation")
        if c:
            # the peer got its mtu in the same request; only the host side waits to be up
            host.link_set(hidx, up=True)
        else:
            pod.link("set", index=pidx, mtu=mtu)
            host.link("set", index=hidx, state="up")
        return Veth(host_name, hidx, link_info(host, hidx)["mac"], pod_name, pidx, link_info(pod, pidx)["mac"])
    except CNIError:
        raise
    except Exception as e:
        raise _nl(f"set up veth {host_name}", e) from None


def configure_pod(pod, veth: Veth, addresses: List[str], netns_path: Optional[str] = None) -> None:
    """Addresses (/32, /128), the link-local next hop and the default routes.

    The accept_dad sysctl is per namespace: with ``netns_path`` it is written
    inside the pod's, where the interface is (without, the thread's own).
    """
    try:
        lo = link_index(pod, "lo")
        c = isinstance(pod, Netlink)
        if lo is not None and c:
            pod.link_set(lo, up=True)
        elif lo is not None:
            pod.link("set", index=lo, state="up")
        idx = veth.pod_index
        if any(":" in a for a in addresses):
            if netns_path is not None:
                with entered(netns_path):
                    _sysctl(f"net/ipv6/conf/{veth.pod_name}/accept_dad", "0", missing_ok=True)
            else:
                _sysctl(f"net/ipv6/conf/{veth.pod_name}/accept_dad", "0", missing_ok=True)
        if c:
            _configure_pod_c(pod, veth, addresses)
            return
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


def _configure_pod_c(pod: "Netlink", veth: Veth, addresses: List[str]) -> None:
    # the same requests in the same order as the pyroute2 branch
    idx = veth.pod_index
    pod.link_set(idx, up=True)
    for a in addresses:
        ip = ipaddress.ip_interface(a).ip
        if ip.version == 4:
            gw = ipaddress.IPv4Address(GATEWAY4)
            pod.addr_add(idx, ip, 32)
            pod.route_add(gw, 32, oif=idx, scope=_RT_SCOPE_LINK)
            pod.neigh_add(idx, gw, veth.host_mac, _NUD_PERMANENT)
            pod.route_add(None, 0, gw=gw, oif=idx)
        else:
            gw = ipaddress.IPv6Address(GATEWAY6)
            pod.addr_add(idx, ip, 128, _IFA_F_NODAD)
            pod.neigh_add(idx, gw, veth.host_mac, _NUD_PERMANENT)
            pod.route_add(None, 0, gw=gw, oif=idx)


def configure_host(host, veth: Veth, addresses: List[str]) -> None:
    """The host's route to the pod, and forwarding (as the ptp plugin enables it)."""
    try:
        for a in addresses:
            ip = ipaddress.ip_interface(a).ip
            plen = 32 if ip.version == 4 else 128
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if isinstance(host, Netlink):
                host.route_add(ip, plen, oif=veth.host_index, scope=_RT_SCOPE_LINK, replace=True)
            else:
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
