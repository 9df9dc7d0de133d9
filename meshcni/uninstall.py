# SPDX-License-Identifier: MIT OR Apache-2.0
"""Remove everything meshcni put on a node: ``meshcni agent --uninstall``.

Run in the node's network namespace (the agent's pod is hostNetwork) with the
agent's own paths. In order, so nothing new is wired while the rest goes:

1. the CNI plugin (shim, fallback) and meshcni's config or chain entry
   (:func:`meshcni.cni.install.uninstall`: a chained config gets its original back);
2. the socket LB: every cgroup link pinned under ``<bpf-root>/links`` is
   detached at once (not when the last fd closes), whichever cgroup it is on;
3. meshcni's tc filters (its handles and priority: pod veths and the
   uplink) on every interface of this network namespace; other filters and the clsact qdisc stay, since
   another tool may own them;
4. routes of protocol 191 (the agent's own, never anyone else's) in the main table;
5. every pin under ``--bpf-root`` (maps, programs, links);
6. the agent's state (endpoint records, service ids, socket) and the IPAM
   allocations: the contents of those directories, which may be mount points.

Idempotent: a second run finds nothing and reports zeros. Running pods keep
their interfaces and addresses (without policy or Service translation);
recreate them after installing a CNI again.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket as _socket
from typing import Dict

log = logging.getLogger("meshcni.uninstall")
RTPROT_MESHCNI = 191  # meshcni.datapath.routes.RTPROT_MESHCNI


def detach_cgroup_links(bpf_root: str) -> int:
    """Detach and unpin every socket-LB link under ``<bpf_root>/links``; how many."""
    from ._libbpf import lib
    links = os.path.join(bpf_root, "links")
    n = 0
    if not os.path.isdir(links):
        return 0
    for cg in sorted(os.listdir(links)):
        d = os.path.join(links, cg)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            pin = os.path.join(d, name)
            fd = lib.mc_obj_get(os.fsencode(pin))
            if fd >= 0:
                # detach now: another process may still hold an fd of this link
                rc = lib.mc_link_detach(fd)
                lib.mc_close(fd)
                if rc < 0 and -rc not in (errno.ENOENT, errno.ENOLINK):
                    raise OSError(-rc, f"detach cgroup link {pin}: {os.strerror(-rc)}")
            os.unlink(pin)
            n += 1
        os.rmdir(d)
    return n


def detach_tc() -> Dict[str, int]:
    """meshcni's tc filters on every interface here: {ifname: filters removed}."""
    from pyroute2 import IPRoute
    from .datapath import nodeport, tcpins
    out = {}
    with IPRoute() as ipr:
        links = [(l["index"], l.get_attr("IFLA_IFNAME")) for l in ipr.get_links()]
    for ifindex, name in links:
        if any(v is not None for v in tcpins.attached(ifindex).values()):
            out[name] = tcpins.detach(ifindex)
        # the uplink programs (NodePort, masquerade) have a handle of their own
        if any(v is not None for v in nodeport.attached_ifindex(ifindex).values()):
            out[name] = out.get(name, 0) + nodeport.detach_ifindex(ifindex)
    return out


def delete_routes() -> int:
    """Routes of protocol 191 in the main table (v4 and v6); how many."""
    from pyroute2 import IPRoute
    n = 0
    with IPRoute() as ipr:
        for fam in (_socket.AF_INET, _socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=254):
                if r["proto"] != RTPROT_MESHCNI:
                    continue
                dst = r.get_attr("RTA_DST")
                ipr.route("del", family=fam, dst=f"{dst}/{r['dst_len']}" if dst else None, table=254,
                          proto=RTPROT_MESHCNI)
                n += 1
    return n


def _empty_dir(path: str) -> int:
    """Remove what is inside ``path`` (it may be a mount point); how many entries."""
    if not os.path.isdir(path):
        return 0
    n = 0
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
        n += 1
    return n


def uninstall_node(*, bpf_root: str, cni_bin_dir: str, cni_conf_dir: str, state_dir: str, ipam_dir: str,
                   socket: str) -> Dict[str, object]:
    """Undo a meshcni agent on this node; returns what was removed (all zeros the second time)."""
    from .cni.install import uninstall as cni_uninstall
    done: Dict[str, object] = {}
    done["cni"] = cni_uninstall(cni_bin_dir, cni_conf_dir)
    done["cgroupLinks"] = detach_cgroup_links(bpf_root)
    done["tcFilters"] = detach_tc()
    done["routes"] = delete_routes()
    pins = 0
    if os.path.isdir(bpf_root):
        pins = sum(len(files) + len(dirs) for _, dirs, files in os.walk(bpf_root))
        shutil.rmtree(bpf_root)
    done["pins"] = pins
    if os.path.lexists(socket) and not os.path.isdir(socket):
        os.unlink(socket)
    done["state"] = _empty_dir(state_dir)
    done["ipam"] = _empty_dir(ipam_dir)
    log.info("uninstalled: %s", done)
    return done
