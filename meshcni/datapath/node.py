# SPDX-License-Identifier: MIT OR Apache-2.0
"""``NodeDatapath``: the node's datapath, brought up once, with one owner for every pinned map.

Bring-up, in order: every map pinned under ``bpf_root`` (reused across
restarts, migrated if its layout changed); the socket LB attached to the
node's cgroup v2 (links pinned, so it outlives the agent); the pod-facing tc
programs loaded and pinned under ``<bpf_root>/progs`` for the CNI plugin;
conntrack GC. The appliers — :attr:`services`, :attr:`policy`,
:attr:`ipcache`, :attr:`endpoints` — all write through the one
:class:`~meshcni.bpf.MeshMaps` opened here, so each map has exactly one
handle and one writer in the process.

:meth:`close` closes file descriptors only: maps, programs and links stay
pinned, and traffic keeps flowing while the agent restarts.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Tuple

from .._closing import Closing
from .._libbpf import lib
from ..bpf import MeshMaps
from ..errors import BpfError
from .endpoints import EndpointDatapath, IPCacheDatapath
from .policy import CTGC, PolicyProgram
from .pinwatch import PinFinding, PinWatch
from .services import ServiceDatapath
from .socklb import SockLB
from . import tcpins

log = logging.getLogger("meshcni.datapath.node")

# the maps whose fill level /metrics shows (mc_ prefix implied)
GAUGED_MAPS = ("svc", "backends", "revnat", "maglev", "affinity", "ipcache", "policy", "enforce", "ct")


class NodeDatapath(Closing):
    def __init__(self, bpf_root: str, cgroup_root: str, ct_gc_interval: float = 30.0):
        self.bpf_root = bpf_root
        self._usage: Dict[str, Tuple[int, int]] = {}
        self._usage_at = -1e9
        self.maps = MeshMaps(bpf_root)
        self.socklb = None
        self.tc = None
        self.ctgc = None
        self._link_fds: List[int] = []
        self.pinwatch = None
        try:
            self.services = ServiceDatapath(self.maps)
            self.socklb = SockLB(bpf_root)
            self.attached = self.socklb.attach(cgroup_root)
            # hold every link: a deleted link pin then no longer detaches the socket LB, and can be re-pinned
            links = {}
            link_dir = self.socklb._link_dir(cgroup_root)
            for name in sorted(os.listdir(link_dir)):
                path = os.path.join(link_dir, name)
                fd = lib.mc_obj_get(os.fsencode(path))
                if fd < 0:
                    raise BpfError(-fd, f"sock_lb: open link pin {path}")
                self._link_fds.append(fd)
                links[path] = fd
            self.tc = PolicyProgram(bpf_root)
            self.programs = self.tc.pin_programs(bpf_root)
            self.policy = self.tc.datapath(self.maps)
            self.ipcache = IPCacheDatapath(self.maps.ipcache)
            self.endpoints = EndpointDatapath(self.maps.endpoints)
            # expired conntrack entries are deleted by us, in batches (mc_ct is a hash, not LRU)
            self.ctgc = CTGC(self.maps.ct, interval=ct_gc_interval).start()
            owned = {m.path: m.fd for m in self.maps.maps.values()}
            owned.update({tcpins.prog_pin(bpf_root, p): self.tc.obj.prog_fd(p) for p in self.programs})
            owned.update(links)
            self.pinwatch = PinWatch(bpf_root, owned)
        except BaseException:
            self.close()
            raise

    def drop_counts(self) -> Dict[str, Tuple[int, int]]:
        """reason -> (packets, bytes) dropped by the tc programs since load (a per-CPU array: cheap)."""
        return self.policy.drop_counts()

    def usage(self, max_age: float = 10.0) -> Dict[str, Tuple[int, int]]:
        """``mc_<name>`` -> (entries, capacity), re-read at most every ``max_age`` seconds:
        dumping mc_ct (100k+ entries) on every scrape would cost more than the scrape is worth."""
        now = time.monotonic()
        if now - self._usage_at >= max_age:
            self._usage_at = now
            out = {}
            for name in GAUGED_MAPS:
                m = self.maps.map(f"mc_{name}")
                try:
                    out[f"mc_{name}"] = (len(m.dump()[0]), m.spec.max_entries)
                except OSError as e:
                    log.debug("map %s: %s", name, e)
            self._usage = out
        return self._usage

    def check_pins(self) -> List[PinFinding]:
        """Every pin this datapath owns (maps, tc programs, socket-LB links) still holding the object it
        holds: a deleted pin is pinned again from the held fd, a replaced one reported and left
        (see :mod:`meshcni.datapath.pinwatch`). Returns what was found (empty: all in place)."""
        return self.pinwatch.check()

    def close(self) -> None:
        if self.ctgc is not None:
            self.ctgc.stop()
        for fd in self._link_fds:
            lib.mc_close(fd)  # the pins keep the links
        self._link_fds = []
        for x in (self.tc, self.socklb, self.maps):
            if x is not None:
                x.close()  # fds only; pinned maps, programs and links stay
