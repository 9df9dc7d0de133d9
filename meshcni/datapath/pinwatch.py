# SPDX-License-Identifier: MIT OR Apache-2.0
"""Checking the pins the agent owns against the objects it holds, and repairing deleted ones.

The BPF programs keep using maps by reference, but the CNI plugin, the CLI
and a restarted agent find maps, tc programs and socket-LB links by pin path.
A pin deleted under a running agent therefore splits the node silently: the
next pod ADD finds no program, a restarted agent creates an empty map beside
the one the programs use. The agent holds an fd on every object it pinned, so
it can tell, by object id, whether each pin still holds that object:

- pin missing: pinned again from the held fd (``repaired``);
- pin holds another object (someone replaced it): reported and left alone
  (``replaced``) — clobbering it could undo a deliberate operator action or
  a newer agent's work, and deciding is not ours;
- re-pinning failed: reported (``failed``) and tried again next time.

Object identity comes from ``/proc/self/fdinfo``: the kernel writes
``map_id``, ``prog_id`` or ``link_id`` there, so the kind and the id are
both known (ids are per kind, a map and a program may share one).
"""
from __future__ import annotations

import errno as _errno
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .._libbpf import lib
from ..errors import errno_name

log = logging.getLogger("meshcni.datapath.pins")

_ID_FIELDS = {"map_id": "map", "prog_id": "prog", "link_id": "link"}
REPAIRED, REPLACED, FAILED = "repaired", "replaced", "failed"


def object_identity(fd: int) -> Optional[Tuple[str, int]]:
    """(kind, id) of the BPF object behind ``fd`` ("map", "prog" or "link"), None if it is not one."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            text = f.read()
    except OSError:
        return None
    # a link's fdinfo also names its program (prog_id): the link's own id decides
    found = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in _ID_FIELDS:
            found[_ID_FIELDS[k]] = int(v.strip())
    for kind in ("link", "map", "prog"):
        if kind in found:
            return kind, found[kind]
    return None


def pinned_identity(path: str) -> Tuple[Optional[Tuple[str, int]], int]:
    """(identity of the object pinned at ``path`` or None, errno of opening it or 0)."""
    fd = lib.mc_obj_get(os.fsencode(path))
    if fd < 0:
        return None, -fd
    try:
        return object_identity(fd), 0
    finally:
        lib.mc_close(fd)


@dataclass(frozen=True)
class PinFinding:
    pin: str                     # path relative to the bpf root (the metric label)
    path: str
    outcome: str                 # repaired | replaced | failed
    held: Tuple[str, int]        # (kind, id) the agent holds
    found: Optional[Tuple[str, int]] = None  # what the path holds now (replaced)
    error: str = ""

    @property
    def message(self) -> str:
        kind, oid = self.held
        if self.outcome == REPAIRED:
            return f"pin {self.path} was deleted; pinned again from the agent's {kind} id {oid}"
        if self.outcome == REPLACED:
            what = f"{self.found[0]} id {self.found[1]}" if self.found else "something that is not a BPF object"
            return (f"pin {self.path} now holds {what}, not the agent's {kind} id {oid}; left as it is "
                    f"(the datapath still uses id {oid}; restart the agent or restore the pin)")
        return f"pin {self.path} is missing and could not be pinned again from {kind} id {oid}: {self.error}"


class PinWatch:
    """Compares ``owned`` pins (path -> fd the caller holds and keeps open) with what bpffs holds.

    A replaced pin is reported once while it stays replaced (:meth:`check`
    returns it again only after it was fixed and replaced anew); repairs and
    failures are returned every time they happen.
    """

    def __init__(self, root: str, owned: Dict[str, int]):
        self.root = root
        self.owned: Dict[str, Tuple[int, Tuple[str, int]]] = {}
        for path, fd in owned.items():
            ident = object_identity(fd)
            if ident is None:
                raise ValueError(f"pin {path}: fd {fd} is not a BPF map, program or link")
            self.owned[path] = (fd, ident)
        self._replaced: Dict[str, Optional[Tuple[str, int]]] = {}

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def check(self) -> List[PinFinding]:
        out = []
        for path, (fd, held) in self.owned.items():
            found, err = pinned_identity(path)
            if found == held:
                self._replaced.pop(path, None)
                continue
            if err == _errno.ENOENT and not os.path.lexists(path):
                self._replaced.pop(path, None)
                out.append(self._repin(path, fd, held))
                continue
            # something else is there (another object, or a directory/file we cannot open)
            if path in self._replaced and self._replaced[path] == found:
                continue
            self._replaced[path] = found
            f = PinFinding(self._rel(path), path, REPLACED, held, found,
                           error=errno_name(err) if err else "")
            log.warning("%s", f.message)
            out.append(f)
        return out

    def _repin(self, path: str, fd: int, held: Tuple[str, int]) -> PinFinding:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            rc = lib.mc_obj_pin(fd, os.fsencode(path))
            err = f"{errno_name(-rc)}" if rc < 0 else ""
        except OSError as e:
            err = f"{os.path.dirname(path)}: {e.strerror}"
        if not err and pinned_identity(path)[0] != held:
            err = "the new pin does not hold the object (raced with another writer?)"
        f = PinFinding(self._rel(path), path, FAILED if err else REPAIRED, held, error=err)
        (log.error if err else log.warning)("%s", f.message)
        return f
