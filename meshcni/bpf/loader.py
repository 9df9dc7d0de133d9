# SPDX-License-Identifier: MIT OR Apache-2.0
"""Loading BPF objects through libbpf, with pin reuse and migration.

``BpfObject(path, pin_root).load()`` opens the object, checks every pinned
map it declares against the pin already under ``pin_root``: compatible pins
are reused by libbpf (contents kept), incompatible ones are renamed aside
before the load and removed only once the load succeeded — or put back if it
failed, so a bad upgrade leaves the node's maps as they were.
"""
from __future__ import annotations

import errno as _errno
import importlib.resources
import logging
import os
import threading
from typing import Dict, List, Optional, Tuple

from .._libbpf import ffi, lib
from ..errors import BpfError
from ..layout import MapSpec
from .maps import BpfMap, map_info, open_pin
from .pin import (MigrationSet, _copy_entries, begin_migration, compatible, ensure_root)

log = logging.getLogger("meshcni.loader")

# libbpf's print hook is process-global; loads are serialised here
_LOAD_LOCK = threading.Lock()


class LoadError(BpfError):
    """The kernel or libbpf refused the object; ``log`` holds libbpf's words."""

    def __init__(self, err: int, what: str, log_text: str):
        super().__init__(err, what)
        self.log = log_text

    def __str__(self) -> str:
        tail = self.log.strip().splitlines()[-25:]
        return super().__str__() + ("\n" + "\n".join(tail) if tail else "")


def objects_dir() -> str:
    """Where the compiled bpf/*.bpf.c objects were installed."""
    env = os.environ.get("MESHCNI_BPF_OBJECTS")
    if env:
        return env
    return str(importlib.resources.files("meshcni") / "bpf_objects")


def object_path(name: str) -> str:
    """Path of the shipped object ``name`` (e.g. "maps" -> maps.bpf.o)."""
    fname = name if name.endswith(".o") else f"{name}.bpf.o"
    p = os.path.join(objects_dir(), fname)
    if not os.path.exists(p):
        raise FileNotFoundError(f"BPF object {fname} not found in {objects_dir()} "
                                f"(was the package built? pip install -e . compiles bpf/)")
    return p


class BpfObject:
    """One loaded BPF object. Owns the libbpf object (and so its fds)."""

    def __init__(self, path: str, pin_root: Optional[str] = None):
        self.path = path
        self.pin_root = ensure_root(pin_root) if pin_root else None
        err = ffi.new("int *")
        obj = lib.mc_obj_open(os.fsencode(path), os.fsencode(self.pin_root) if self.pin_root else ffi.NULL, err)
        if obj == ffi.NULL:
            raise BpfError(-err[0], f"BPF object {path}: open")
        self._obj = obj
        self.loaded = False
        self.migrations = MigrationSet()

    def map_specs(self) -> List[Tuple[MapSpec, bool]]:
        """(spec, pinned) of every map the object declares."""
        out = []
        spec = ffi.new("struct mc_map_spec *")
        name = ffi.new("char[]", 64)
        pinned = ffi.new("int *")
        for i in range(lib.mc_obj_map_count(self._obj)):
            rc = lib.mc_obj_map_spec(self._obj, i, spec, name, 64, pinned)
            if rc < 0:
                raise BpfError(-rc, f"BPF object {self.path}: map #{i}")
            out.append((MapSpec(ffi.string(name).decode(), spec.type, spec.key_size, spec.value_size,
                                spec.max_entries, spec.map_flags), bool(pinned[0])))
        return out

    def programs(self) -> Dict[str, str]:
        """name -> ELF section of every program."""
        out = {}
        name, sec = ffi.new("char[]", 128), ffi.new("char[]", 128)
        for i in range(lib.mc_obj_prog_count(self._obj)):
            if lib.mc_obj_prog_name(self._obj, i, name, 128, sec, 128) == 0:
                out[ffi.string(name).decode()] = ffi.string(sec).decode()
        return out

    def _prepare_pins(self) -> List[Tuple[str, BpfMap]]:
        """Rename incompatible pins aside; return (name, old map) to copy from."""
        olds = []
        if not self.pin_root:
            return olds
        for spec, pinned in self.map_specs():
            if not pinned:
                continue
            path = os.path.join(self.pin_root, spec.name)
            if not os.path.exists(path):
                continue
            fd, existing = open_pin(path, spec.name)
            if compatible(existing, spec):
                lib.mc_close(fd)
                continue
            self.migrations.items.append(begin_migration(spec, path, existing))
            olds.append((spec.name, BpfMap(fd, existing, path=path + ":migrating")))
        return olds

    def load(self) -> "BpfObject":
        if self.loaded:
            return self
        with _LOAD_LOCK:
            olds = self._prepare_pins()
            logbuf = ffi.new("char[]", 1 << 16)
            rc = lib.mc_obj_load(self._obj, logbuf, 1 << 16)
            if rc < 0:
                for _, m in olds:
                    m.close()
                self.migrations.rollback()
                raise LoadError(-rc, f"BPF object {os.path.basename(self.path)}: load",
                                ffi.string(logbuf).decode(errors="replace"))
        self.loaded = True
        for (name, old), mig in zip(olds, self.migrations.items):
            try:
                new = self.map(name)
                if old.spec.key_size == new.spec.key_size and old.spec.value_size == new.spec.value_size:
                    mig.copied, mig.dropped = _copy_entries(old, new)
            finally:
                old.close()
        self.migrations.commit()
        return self

    def map(self, name: str, map_class=BpfMap) -> BpfMap:
        """A ``BpfMap`` over the object's map ``name`` (its own dup'ed fd)."""
        if not self.loaded:
            raise ValueError(f"BPF object {self.path}: not loaded")
        fd = lib.mc_obj_map_fd(self._obj, name.encode())
        if fd < 0:
            raise BpfError(-fd if fd != -1 else _errno.ENOENT, f"BPF object {self.path}: map {name}")
        dup = os.dup(fd)
        actual = map_info(dup).spec(name)
        from ..layout import map_specs
        known = map_specs().get(name)
        spec = known if known and compatible(known, actual) else actual
        path = os.path.join(self.pin_root, name) if self.pin_root else None
        return map_class(dup, spec, path=path)

    def prog_fd(self, name: str) -> int:
        """The program's fd (owned by this object: do not close it)."""
        if not self.loaded:
            raise ValueError(f"BPF object {self.path}: not loaded")
        fd = lib.mc_obj_prog_fd(self._obj, name.encode())
        if fd < 0:
            raise BpfError(_errno.ENOENT, f"BPF object {self.path}: program {name}")
        return fd

    def test_run(self, prog: str, data: bytes, repeat: int = 1, out_size: int = 0) -> Tuple[int, bytes, int]:
        """BPF_PROG_TEST_RUN: ``(retval, data_out, duration_ns)``."""
        out_size = out_size or max(len(data) + 256, 256)
        dout = ffi.new("uint8_t[]", out_size)
        size_out = ffi.new("uint32_t *", out_size)
        retval = ffi.new("uint32_t *")
        duration = ffi.new("uint32_t *")
        rc = lib.mc_prog_test_run(self.prog_fd(prog), data, len(data), dout, size_out, repeat,
                                  retval, duration)
        if rc < 0:
            raise BpfError(-rc, f"program {prog}: test run")
        return retval[0], bytes(ffi.buffer(dout, size_out[0])), duration[0]

    def close(self) -> None:
        if self._obj is not None and self._obj != ffi.NULL:
            lib.mc_obj_close(self._obj)
            self._obj = None

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
