# SPDX-License-Identifier: MIT OR Apache-2.0
"""A set of tc programs at one (handle, priority) on an interface: query, attach, detach.

The pod veth programs (tcpins, policy) and the uplink programs (nodeport)
sit at handles of their own; each is a :class:`TcHooks` over the same
netlink calls, so "what is attached", "attach or keep" and "detach" mean
the same everywhere.

Imports only the cffi extension: the CNI plugin uses it and must start fast.
"""
from __future__ import annotations

import errno
from typing import Dict, Optional, Sequence, Tuple

from .._libbpf import ffi, lib
from ..errors import BpfError

TC_INGRESS, TC_EGRESS = 1, 2

# a missing link, device or clsact qdisc: nothing of ours is there
_GONE = (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL)


class TcHooks:
    """``hooks``: (program name, TC_INGRESS / TC_EGRESS) pairs at ``handle``/``priority``."""

    def __init__(self, handle: int, priority: int, hooks: Sequence[Tuple[str, int]]):
        self.handle, self.priority, self.hooks = handle, priority, tuple(hooks)

    def attached(self, ifindex: int) -> Dict[str, Optional[int]]:
        """prog -> id attached at this handle on ifindex (None: nothing)."""
        out = {}
        pid = ffi.new("uint32_t *")
        for prog, where in self.hooks:
            rc = lib.mc_tc_query(ifindex, where, self.handle, self.priority, pid)
            out[prog] = pid[0] if rc == 0 else None
        return out

    def attach(self, ifindex: int, fds: Dict[str, int], ifname: str, keep_same: bool = True) -> Dict[str, str]:
        """Each program in ``fds`` (prog -> fd) on ifindex, replacing whatever sits
        at this handle; prog -> "attached" / "kept" / "updated". ``keep_same``:
        a program already attached under the same id is left alone ("kept")."""
        done = {}
        pid = ffi.new("uint32_t *")
        for prog, where in self.hooks:
            fd = fds[prog]
            rc = lib.mc_tc_query(ifindex, where, self.handle, self.priority, pid)
            if keep_same and rc == 0 and pid[0] == lib.mc_prog_id(fd):
                done[prog] = "kept"
                continue
            rc2 = lib.mc_tc_attach(ifindex, where, self.handle, self.priority, fd, 1 if rc == 0 else 0)
            if rc2 < 0:
                raise BpfError(-rc2, f"tc attach {prog} to {ifname}")
            done[prog] = "updated" if rc == 0 else "attached"
        return done

    def detach(self, ifindex: int, strict: bool = False) -> int:
        """Detach every program (the clsact qdisc stays); how many were there.
        ``strict``: an error other than "nothing there" raises."""
        n = 0
        for _, where in self.hooks:
            rc = lib.mc_tc_detach(ifindex, where, self.handle, self.priority)
            if rc == 0:
                n += 1
            elif strict and rc not in _GONE:
                raise BpfError(-rc, f"tc detach from ifindex {ifindex}")
        return n
