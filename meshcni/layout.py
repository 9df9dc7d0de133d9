# SPDX-License-Identifier: MIT OR Apache-2.0
"""numpy dtypes and map specs derived from the one layout header.

The header text is the copy compiled into ``meshcni._libbpf`` (so Python
always describes exactly the structs the extension was built with), and the
map table comes from the extension too (``mc_map_specs``, expanded from
bpf/include/meshcni/maps.h). Nothing here is written by hand per struct.

The integer constants are also generated at build time into
:mod:`meshcni.layout_constants` (by :mod:`meshcni._layoutgen`), for code that
must not load the extension; :func:`compiled` refuses to run when that module
and the extension were built from different headers.

Offsets are computed by natural alignment, and the header's rules (explicit
padding only, see layout.h) are enforced, so a layout that a compiler could
pad differently is rejected here rather than misread later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

from ._layoutgen import defines, sha256, strip_comments

_TYPES = {
    "__u8": ("u1", 1), "__u16": ("<u2", 2), "__u32": ("<u4", 4), "__u64": ("<u8", 8),
    "__be16": (">u2", 2), "__be32": (">u4", 4), "__be64": (">u8", 8),
}

# BPF map types used by meshcni (values of enum bpf_map_type)
MAP_TYPES = {
    1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array",
    9: "lru_hash", 10: "lru_percpu_hash", 11: "lpm_trie", 27: "ringbuf",
}
PERCPU_TYPES = {5, 6, 10}


class LayoutError(ValueError):
    """The layout header breaks one of its own rules."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    count: int  # 1 for scalars, N for arrays
    offset: int
    size: int  # bytes of the whole field

    @property
    def big_endian(self) -> bool:
        return self.ctype.startswith("__be")


@dataclass(frozen=True)
class Struct:
    name: str
    fields: Tuple[Field, ...]
    size: int
    align: int

    @property
    def dtype(self) -> np.dtype:
        return _dtype(self)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name!r}")


@lru_cache(maxsize=None)
def _dtype(s: Struct) -> np.dtype:
    names, formats, offsets = [], [], []
    for f in s.fields:
        base, _ = _TYPES[f.ctype]
        names.append(f.name)
        formats.append(base if f.count == 1 else (base, (f.count,)))
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": s.size, "aligned": False})


_STRUCT_RE = re.compile(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_FIELD_RE = re.compile(r"^\s*(__u8|__u16|__u32|__u64|__be16|__be32|__be64)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?\s*;\s*$")


def parse(text: str) -> Tuple[Dict[str, Struct], Dict[str, int]]:
    """Parse layout.h text into structs and integer constants."""
    body = strip_comments(text)
    consts = defines(body)
    structs: Dict[str, Struct] = {}
    for m in _STRUCT_RE.finditer(body):
        name, inner = m.group(1), m.group(2)
        fields: List[Field] = []
        off = 0
        align = 1
        for line in inner.split("\n"):
            if not line.strip():
                continue
            fm = _FIELD_RE.match(line)
            if not fm:
                raise LayoutError(f"struct {name}: cannot parse field line {line.strip()!r}")
            ctype, fname, dim = fm.groups()
            count = 1
            if dim is not None:
                count = int(dim) if dim.isdigit() else consts.get(dim, -1)
                if count <= 0:
                    raise LayoutError(f"struct {name}.{fname}: array size {dim!r} is not a known constant")
            _, esize = _TYPES[ctype]
            if off % esize:
                raise LayoutError(
                    f"struct {name}.{fname}: at offset {off} a {ctype} would get implicit "
                    f"padding; add an explicit pad field")
            fields.append(Field(fname, ctype, count, off, esize * count))
            off += esize * count
            align = max(align, esize)
        if off % align:
            raise LayoutError(f"struct {name}: size {off} leaves trailing padding to {align}-byte alignment")
        structs[name] = Struct(name, tuple(fields), off, align)
    return structs, consts


@dataclass(frozen=True)
class MapSpec:
    """What a map is: enough to create it, check a pin, or migrate one."""
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    key_struct: str | None = None
    value_struct: str | None = None

    @property
    def type_name(self) -> str:
        return MAP_TYPES.get(self.type, f"type{self.type}")

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    def with_(self, **kw) -> "MapSpec":
        d = self.__dict__.copy()
        d.update(kw)
        return MapSpec(**d)


def _lib():
    from . import _libbpf
    return _libbpf


@lru_cache(maxsize=None)
def compiled():
    """(structs, consts) of the header compiled into the extension."""
    from . import layout_constants

    ext = _lib()
    text = ext.ffi.string(ext.lib.mc_layout_header()).decode()
    if sha256(text) != layout_constants.HEADER_SHA256:
        # the pure side (controllers, model) would write constants the datapath does not share
        raise LayoutError("meshcni/layout_constants.py and the extension meshcni._libbpf were built from "
                          "different layout.h: rebuild (scripts/setup-machine.sh)")
    return parse(text)


def structs() -> Dict[str, Struct]:
    return compiled()[0]


def constants() -> Dict[str, int]:
    return compiled()[1]


@lru_cache(maxsize=None)
def map_specs() -> Dict[str, MapSpec]:
    """Every meshcni map, from the extension's table (maps.h)."""
    ext = _lib()
    out = {}
    table = ext.lib.mc_map_specs()
    st = structs()
    for i in range(ext.lib.mc_map_specs_count()):
        row = table[i]
        name = ext.ffi.string(row.name).decode()
        ks = vs = None
        if row.key_type != ext.ffi.NULL:
            ks = ext.ffi.string(row.key_type).decode().replace("struct ", "").strip()
            vs = ext.ffi.string(row.value_type).decode().replace("struct ", "").strip()
        spec = MapSpec(name, row.type, row.key_size, row.value_size, row.max_entries,
                       row.map_flags, ks, vs)
        if ks is not None and (st[ks].size != spec.key_size or st[vs].size != spec.value_size):
            raise LayoutError(
                f"map {name}: table says key {spec.key_size}/value {spec.value_size} bytes, "
                f"layout.h says {ks} {st[ks].size}/{vs} {st[vs].size}")
        out[name] = spec
    return out


def dtype_of(struct_name: str) -> np.dtype:
    return structs()[struct_name].dtype
