# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pinned maps under a bpffs root: reuse, create, and layout migration.

A pin whose layout (type, key size, value size, max_entries, flags) equals
the spec is reused with its contents: that is what lets the agent restart
without dropping a connection. A pin whose layout changed is migrated the
way Cilium does it: the old pin is renamed aside (``NAME:migrating``), the
new map is created and pinned, entries are copied when key and value sizes
allow, and the old map is removed only on ``commit()`` — after the program
load that needed the new map succeeded. ``rollback()`` puts the old pin back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import logging
import os
import subprocess
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .._libbpf import lib
from ..errors import BpfError, MapFullError, PartialFailureError, PinMismatchError
from ..layout import MapSpec
from .maps import BpfMap, open_pin, rows

log = logging.getLogger("meshcni.pin")

DEFAULT_ROOT = "/sys/fs/bpf/meshcni"
BPF_FS_MAGIC = 0xCAFE4A11
MIGRATING_SUFFIX = ":migrating"


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def is_bpffs(path: str) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buf = _Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return False
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_root(root: str) -> str:
    """Create ``root`` (a directory on a bpffs) if needed; refuse other filesystems."""
    root = os.path.abspath(root)
    probe = root
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not is_bpffs(probe):
        raise BpfError(_errno.EINVAL, f"bpffs root {root}: {probe} is not on a bpf filesystem "
                                      f"(mount one: mount -t bpf bpf {probe})")
    os.makedirs(root, exist_ok=True)
    return root


def mount_bpffs(path: str) -> None:
    """Mount a private bpffs at ``path`` (tests, the simulator)."""
    os.makedirs(path, exist_ok=True)
    if is_bpffs(path):
        return
    subprocess.run(["mount", "-t", "bpf", "bpf", path], check=True)


def umount(path: str) -> None:
    subprocess.run(["umount", "-l", path], check=False)


def compatible(existing: MapSpec, wanted: MapSpec) -> bool:
    return (existing.type, existing.key_size, existing.value_size, existing.max_entries,
            existing.map_flags) == (wanted.type, wanted.key_size, wanted.value_size,
                                    wanted.max_entries, wanted.map_flags)


@dataclass
class Migration:
    """A layout migration awaiting the verdict of the load that needed it."""
    path: str
    old_path: str
    reason: str
    copied: int = 0
    dropped: int = 0
    done: bool = False

    def commit(self) -> None:
        """The new map is in use: remove the old one."""
        if not self.done:
            try:
                os.unlink(self.old_path)
            except FileNotFoundError:
                pass
            self.done = True
            log.info("pin %s: migration committed (%s)", self.path, self.reason)

    def rollback(self) -> None:
        """The load failed: drop the new pin, put the old one back."""
        if not self.done:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.rename(self.old_path, self.path)
            self.done = True
            log.warning("pin %s: migration rolled back", self.path)


@dataclass
class MigrationSet:
    items: List[Migration] = field(default_factory=list)

    def commit(self) -> None:
        for m in self.items:
            m.commit()

    def rollback(self) -> None:
        for m in reversed(self.items):
            m.rollback()


def _copy_entries(old: BpfMap, new: BpfMap) -> tuple:
    """Copy what fits; report (copied, dropped). Only when sizes match."""
    keys, values = old.dump()
    if new.spec.type in (2, 6):  # arrays: only indices inside the new size
        idx = keys.view(np.uint32) < new.spec.max_entries if old.spec.key_size == 4 else None
        if idx is not None:
            keys, values = keys[idx], values[idx]
    try:
        # as raw rows: the old map's dtypes are generic, the new one's typed
        new.update(rows(keys), rows(values))
        return len(keys), 0
    except MapFullError as e:
        return e.written, len(keys) - e.written
    except PartialFailureError as e:
        return e.written, len(keys) - e.written


def begin_migration(spec: MapSpec, path: str, existing: MapSpec) -> Migration:
    """Rename the incompatible pin at ``path`` aside."""
    reason = ", ".join(f"{f} {getattr(existing, f)}->{getattr(spec, f)}"
                       for f in ("type", "key_size", "value_size", "max_entries", "map_flags")
                       if getattr(existing, f) != getattr(spec, f))
    old_path = path + MIGRATING_SUFFIX
    if os.path.exists(old_path):
        # a migration interrupted before its verdict: the newer pin at path is
        # the half-made one, the renamed pin is the map in service
        log.warning("pin %s: leftover %s from an interrupted migration, restoring it", path, old_path)
        os.unlink(path)
        os.rename(old_path, path)
        raise BpfError(_errno.EAGAIN, f"pin {path}: restored from an interrupted migration; retry")
    os.rename(path, old_path)
    log.info("pin %s: layout changed (%s), migrating", path, reason)
    return Migration(path, old_path, reason)


def open_or_create(spec: MapSpec, root: str = DEFAULT_ROOT, *, migrate: bool = True,
                   migrations: Optional[MigrationSet] = None, map_class=BpfMap) -> BpfMap:
    """Open the pin ``root/spec.name`` if compatible, else create (and migrate).

    With ``migrate`` and no ``migrations`` set given, a migration is committed
    at once (there is no program load to wait for). With a ``MigrationSet``,
    the caller commits or rolls back.
    """
    root = ensure_root(root)
    path = os.path.join(root, spec.name)
    if os.path.exists(path + MIGRATING_SUFFIX) and not os.path.exists(path):
        os.rename(path + MIGRATING_SUFFIX, path)  # died between rename and create
    mig = None
    if os.path.exists(path):
        fd, existing = open_pin(path, spec.name)
        if compatible(existing, spec):
            return map_class(fd, spec, path=path)
        if not migrate:
            lib.mc_close(fd)
            raise PinMismatchError(_errno.EEXIST, f"map {spec.name}: pin {path} has "
                                   f"{info_mismatch(existing, spec)}")
        old = BpfMap(fd, existing, path=path)
        mig = begin_migration(spec, path, existing)
    try:
        new = map_class.create(spec)
        new.pin(path)
    except BaseException:
        if mig:
            os.rename(mig.old_path, path)
        raise
    if mig:
        try:
            if existing.key_size == spec.key_size and existing.value_size == spec.value_size:
                mig.copied, mig.dropped = _copy_entries(old, new)
                if mig.dropped:
                    log.warning("pin %s: %d entries did not fit the new map", path, mig.dropped)
        finally:
            old.close()
        if migrations is not None:
            migrations.items.append(mig)
        else:
            mig.commit()
    return new


def info_mismatch(existing: MapSpec, wanted: MapSpec) -> str:
    return ", ".join(f"{f} {getattr(existing, f)} (pinned) != {getattr(wanted, f)} (wanted)"
                     for f in ("type", "key_size", "value_size", "max_entries", "map_flags")
                     if getattr(existing, f) != getattr(wanted, f))


def open_existing(root: str, name: str, map_class=None) -> BpfMap:
    """The pin ``root/name`` with meshcni's dtypes, for readers: opens only, never creates.

    Missing pin -> FileNotFoundError naming the path; a pin whose type, key or
    value size differs from this meshcni's layout -> ValueError (decoding it
    would be garbage). max_entries and flags may differ (tests, resized maps).
    """
    from ..layout import map_specs
    spec = map_specs()[name]
    path = os.path.join(root, name)
    if not os.path.exists(path):
        why = f"{root} does not exist" if not os.path.isdir(root) else f"{root} has no {name}"
        raise FileNotFoundError(f"no pinned map {name} at {path}: {why} "
                                f"(wrong --bpf-root, or the agent has not pinned its maps yet)")
    opened = BpfMap.open_pinned(path)
    try:
        got = opened.spec
        if (got.type, got.key_size, got.value_size) != (spec.type, spec.key_size, spec.value_size):
            raise ValueError(f"pin {path}: {got.type_name} key {got.key_size} value {got.value_size} bytes, "
                             f"this meshcni expects {spec.type_name} key {spec.key_size} value {spec.value_size} "
                             f"(a different meshcni version pinned it)")
        cls = map_class or BpfMap
        return cls(os.dup(opened.fd), spec.with_(max_entries=got.max_entries, map_flags=got.map_flags), path=path)
    finally:
        opened.close()
