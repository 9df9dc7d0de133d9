# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pod-facing tc programs as pinned by the agent, attached by the CNI plugin.

The agent loads ``policy.bpf.o`` once and pins its two programs under
``<pin_root>/progs/``; the CNI plugin, started per pod, only opens those pins
and attaches them to the new host-side veth. That keeps a pod ADD free of
verifier work and makes every veth run the same program ids, so an agent
upgrade that re-pins and re-attaches is visible as an id change.

Imports only the cffi extension: the plugin must start fast (no numpy).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from .._libbpf import lib
from ..errors import BpfError
from .tc import TC_EGRESS, TC_INGRESS, TcHooks

PROG_DIR = "progs"
TC_HANDLE, TC_PRIORITY = 0x4D43, 1  # "MC"
# (program, tc hook on the host-side veth): from_pod sees what the pod sends
HOOKS = (("mc_from_pod", TC_INGRESS), ("mc_to_pod", TC_EGRESS))
POD_TC = TcHooks(TC_HANDLE, TC_PRIORITY, HOOKS)


def prog_pin(pin_root: str, prog: str) -> str:
    return os.path.join(pin_root, PROG_DIR, prog)


def present(pin_root: str) -> bool:
    """Are both programs pinned (the datapath is loaded on this node)?"""
    return all(os.path.exists(prog_pin(pin_root, p)) for p, _ in HOOKS)


def pin_programs(prog_fds: Dict[str, int], pin_root: str) -> None:
    """Pin (or atomically re-pin) programs: a new pin replaces the old by rename."""
    d = os.path.join(pin_root, PROG_DIR)
    os.makedirs(d, exist_ok=True)
    for prog, fd in prog_fds.items():
        path = prog_pin(pin_root, prog)
        tmp = path + "_new"  # bpffs refuses dots in names
        if os.path.exists(tmp):
            os.unlink(tmp)
        rc = lib.mc_obj_pin(fd, tmp.encode())
        if rc < 0:
            raise BpfError(-rc, f"pin program {prog} at {tmp}")
        os.rename(tmp, path)


def pinned_ids(pin_root: str) -> Dict[str, int]:
    """prog -> id of the pinned program."""
    out = {}
    for prog, _ in HOOKS:
        fd = lib.mc_obj_get(prog_pin(pin_root, prog).encode())
        if fd < 0:
            raise BpfError(-fd, f"pinned program {prog_pin(pin_root, prog)}")
        try:
            out[prog] = lib.mc_prog_id(fd)
        finally:
            lib.mc_close(fd)
    return out


def attached(ifindex: int) -> Dict[str, Optional[int]]:
    """prog -> id attached at meshcni's tc handle on ifindex (None: nothing)."""
    return POD_TC.attached(ifindex)


def attach(pin_root: str, ifindex: int) -> Dict[str, int]:
    """Attach both pinned programs to ifindex (current netns); prog -> id.

    Replaces whatever sits at meshcni's handle, so a retried ADD converges.
    """
    fds: Dict[str, int] = {}
    try:
        for prog, _ in HOOKS:
            path = prog_pin(pin_root, prog)
            fd = lib.mc_obj_get(path.encode())
            if fd < 0:
                raise BpfError(-fd, f"pinned program {path}")
            fds[prog] = fd
        POD_TC.attach(ifindex, fds, f"ifindex {ifindex}", keep_same=False)
        return {prog: lib.mc_prog_id(fd) for prog, fd in fds.items()}
    finally:
        for fd in fds.values():
            lib.mc_close(fd)


def detach(ifindex: int) -> int:
    """Detach both programs; how many were there. A missing link is not an error."""
    return POD_TC.detach(ifindex, strict=True)
