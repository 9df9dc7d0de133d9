# SPDX-License-Identifier: MIT OR Apache-2.0
"""The socket load balancer (bpf/sock_lb.bpf.c) on a cgroup v2 directory.

Attachments are BPF links pinned at ``<pin_root>/links/<cgroup id>/<program>``:
a link outlives the agent (the pin holds it), and the pin is how a second
``attach`` knows the program is already there, so attaching twice is a no-op
(or an atomic ``BPF_LINK_UPDATE`` when the program changed, e.g. after an
upgrade). ``detach`` removes the links and their pins. The cgroup id is the
cgroup directory's inode number, which is what the kernel reports for a
cgroup link.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from .._libbpf import ffi, lib
from ..bpf import BpfObject, object_path
from ..bpf.pin import ensure_root
from ..errors import BpfError
from .._closing import Closing

_BPF_LINK_TYPE_CGROUP = 3


def cgroup_id(path: str) -> int:
    return os.stat(path).st_ino


def link_info(fd: int) -> dict:
    out = ffi.new("struct mc_link_info *")
    rc = lib.mc_link_info(fd, out)
    if rc < 0:
        raise BpfError(-rc, f"link fd {fd}: get info")
    return {"type": out.type, "id": out.id, "prog_id": out.prog_id,
            "attach_type": out.attach_type, "cgroup_id": out.cgroup_id}


def query(cgroup_path: str, attach_type: int) -> List[int]:
    """Program ids attached to the cgroup for ``attach_type`` (BPF_PROG_QUERY)."""
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = ffi.new("uint32_t[]", 64)
        cnt = ffi.new("uint32_t *", 64)
        rc = lib.mc_prog_query(fd, attach_type, ids, cnt)
        if rc < 0:
            raise BpfError(-rc, f"cgroup {cgroup_path}: query attach type {attach_type}")
        return [ids[i] for i in range(cnt[0])]
    finally:
        os.close(fd)


class SockLB(Closing):
    """Load ``sock_lb.bpf.o`` against the pins under ``pin_root``; attach/detach it."""

    def __init__(self, pin_root: str, path: Optional[str] = None):
        self.pin_root = ensure_root(pin_root)
        self.obj = BpfObject(path or object_path("sock_lb"), self.pin_root).load()

    @property
    def programs(self) -> Dict[str, str]:
        return self.obj.programs()

    def attach_type(self, prog: str) -> int:
        t = lib.mc_obj_prog_attach_type(self.obj._obj, prog.encode())
        if t < 0:
            raise BpfError(-t, f"sock_lb: program {prog}")
        return t

    def _link_dir(self, cgroup_path: str) -> str:
        return os.path.join(self.pin_root, "links", str(cgroup_id(cgroup_path)))

    def attach(self, cgroup_path: str) -> Dict[str, str]:
        """Attach every hook to ``cgroup_path``; returns prog -> what was done
        ("attached", "kept", "updated")."""
        if not os.path.isdir(cgroup_path):
            raise FileNotFoundError(f"cgroup {cgroup_path}: not a directory")
        d = self._link_dir(cgroup_path)
        os.makedirs(os.path.join(self.pin_root, "links"), exist_ok=True)
        os.makedirs(d, exist_ok=True)
        cg_id = cgroup_id(cgroup_path)
        done = {}
        cg_fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for prog in sorted(self.programs):
                prog_fd = self.obj.prog_fd(prog)
                want_type = self.attach_type(prog)
                pin = os.path.join(d, prog)
                if os.path.exists(pin):
                    lfd = lib.mc_obj_get(os.fsencode(pin))
                    if lfd < 0:
                        raise BpfError(-lfd, f"sock_lb: open link pin {pin}")
                    try:
                        info = link_info(lfd)
                        if (info["type"] == _BPF_LINK_TYPE_CGROUP and info["cgroup_id"] == cg_id
                                and info["attach_type"] == want_type):
                            if info["prog_id"] == lib.mc_prog_id(prog_fd):
                                done[prog] = "kept"
                            else:
                                rc = lib.mc_link_update(lfd, prog_fd)
                                if rc < 0:
                                    raise BpfError(-rc, f"sock_lb: update link {pin}")
                                done[prog] = "updated"
                            continue
                    finally:
                        lib.mc_close(lfd)
                    os.unlink(pin)  # a stale link (cgroup gone, or another hook)
                lfd = lib.mc_link_create(prog_fd, cg_fd, want_type)
                if lfd < 0:
                    raise BpfError(-lfd, f"sock_lb: attach {prog} to cgroup {cgroup_path}")
                try:
                    rc = lib.mc_obj_pin(lfd, os.fsencode(pin))
                    if rc < 0:
                        raise BpfError(-rc, f"sock_lb: pin link {pin}")
                finally:
                    lib.mc_close(lfd)
                done[prog] = "attached"
        finally:
            os.close(cg_fd)
        return done

    def detach(self, cgroup_path: str) -> int:
        """Detach every hook from ``cgroup_path``; returns how many links went."""
        d = self._link_dir(cgroup_path)
        if not os.path.isdir(d):
            return 0
        n = 0
        for name in sorted(os.listdir(d)):
            pin = os.path.join(d, name)
            lfd = lib.mc_obj_get(os.fsencode(pin))
            if lfd >= 0:
                # detach now, not when the last fd closes: a process may hold one
                lib.mc_link_detach(lfd)
                lib.mc_close(lfd)
            os.unlink(pin)
            n += 1
        os.rmdir(d)
        return n

    def close(self) -> None:
        self.obj.close()

