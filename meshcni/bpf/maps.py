# SPDX-License-Identifier: MIT OR Apache-2.0
"""Bulk BPF map programming from numpy structured arrays.

``BpfMap`` wraps one map file descriptor with its layout (numpy dtypes for key
and value). Bulk operations hand the arrays' bytes straight to the C glue
(``meshcni._libbpf``), which uses ``BPF_MAP_*_BATCH`` where the kernel takes
it and a per-element loop in C where it does not; the diff behind
``reconcile`` runs in ``meshcni._fastmap``. Python only coerces inputs and
turns outcomes into results or errors.

Ownership: a ``BpfMap`` owns its fd and closes it on ``close()`` / context
exit / garbage collection. It never owns the pin: unpinning is explicit.
"""
from __future__ import annotations

import errno as _errno
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from .. import _fastmap
from .._libbpf import ffi, lib
from ..errors import (BpfError, BulkFailure, MapFullError, PartialFailureError)
from ..layout import MAP_TYPES, MapSpec, PERCPU_TYPES, dtype_of

ANY, NOEXIST, EXIST = 0, 1, 2
_MODES = {"auto": lib.MC_MODE_AUTO, "batch": lib.MC_MODE_BATCH, "loop": lib.MC_MODE_LOOP}
_TYPE_HASH, _TYPE_ARRAY, _TYPE_LPM, _TYPE_RINGBUF = 1, 2, 11, 27
_DUMP_CHUNK = 65536


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says a map is (BPF_OBJ_GET_INFO_BY_FD)."""
    id: int
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int

    @property
    def type_name(self) -> str:
        return MAP_TYPES.get(self.type, f"type{self.type}")

    def spec(self, name: Optional[str] = None) -> MapSpec:
        """The map as a ``MapSpec`` named ``name`` (default: the kernel's name)."""
        return MapSpec(name or self.name, self.type, self.key_size, self.value_size, self.max_entries,
                       self.map_flags)


def open_pin(path: str, name: Optional[str] = None) -> Tuple[int, MapSpec]:
    """Open the pinned map at ``path``: ``(fd, its spec as the kernel reports it)``; the caller owns the fd.

    Every reader of a pin (the loader, ``open_or_create``, ``BpfMap.open_pinned``
    and so the CLI) starts here, then compares the spec with the one it wants
    (:func:`meshcni.bpf.pin.compatible`). ``name`` names the map in the spec
    and in errors; without it, the kernel's name for the map, else the pin's
    file name.
    """
    fd = lib.mc_obj_get(os.fsencode(path))
    if fd < 0:
        raise BpfError(-fd, f"map {name}: open pin {path}" if name else f"open pinned map {path}")
    try:
        info = map_info(fd)
    except BaseException:
        lib.mc_close(fd)
        raise
    return fd, info.spec(name or info.name or os.path.basename(path))


def map_info(fd: int) -> MapInfo:
    out = ffi.new("struct mc_map_info *")
    rc = lib.mc_map_info(fd, out)
    if rc < 0:
        raise BpfError(-rc, f"map fd {fd}: get info")
    return MapInfo(out.id, ffi.string(out.name).decode(), out.type, out.key_size,
                   out.value_size, out.max_entries, out.map_flags)


@dataclass(frozen=True)
class BulkResult:
    written: int
    syscalls: int
    used_batch: bool


@dataclass(frozen=True)
class ReconcileResult:
    added: int
    changed: int
    deleted: int
    unchanged: int
    syscalls: int

    @property
    def writes(self) -> int:
        return self.added + self.changed + self.deleted


def _pad_dtype(dt: np.dtype, size: int) -> np.dtype:
    if dt.itemsize == size:
        return dt
    if dt.names is None:
        return np.dtype({"names": ["raw"], "formats": [dt], "offsets": [0], "itemsize": size})
    return np.dtype({"names": list(dt.names), "formats": [dt.fields[n][0] for n in dt.names],
                     "offsets": [dt.fields[n][1] for n in dt.names], "itemsize": size})


def _generic_dtype(size: int) -> np.dtype:
    return np.dtype((np.void, size)) if size else np.dtype((np.void, 1))


def _ncpus() -> int:
    n = lib.mc_num_possible_cpus()
    if n <= 0:
        raise BpfError(-n if n < 0 else _errno.EINVAL, "libbpf_num_possible_cpus")
    return n


class BpfMap:
    """One BPF map: its fd, spec and numpy layout.

    ``key_dtype`` / ``value_dtype`` describe one key / one value. For per-CPU
    maps, value arrays have shape ``(n, ncpus)`` of ``value_dtype`` (padded to
    8 bytes as the kernel lays them out).
    """

    def __init__(self, fd: int, spec: MapSpec, path: Optional[str] = None,
                 key_dtype: Optional[np.dtype] = None,
                 value_dtype: Optional[np.dtype] = None):
        self._fd = fd
        self.spec = spec
        self.path = path
        if key_dtype is None:
            key_dtype = dtype_of(spec.key_struct) if spec.key_struct else _generic_dtype(spec.key_size)
        if value_dtype is None:
            value_dtype = dtype_of(spec.value_struct) if spec.value_struct else _generic_dtype(spec.value_size)
        key_dtype, value_dtype = np.dtype(key_dtype), np.dtype(value_dtype)
        if spec.type != _TYPE_RINGBUF:
            if key_dtype.itemsize != spec.key_size:
                raise ValueError(f"map {spec.name}: key dtype is {key_dtype.itemsize} bytes, map key is {spec.key_size}")
            if value_dtype.itemsize != spec.value_size:
                raise ValueError(f"map {spec.name}: value dtype is {value_dtype.itemsize} bytes, map value is {spec.value_size}")
        self.key_dtype = key_dtype
        self.value_dtype = value_dtype
        self.ncpus = _ncpus() if spec.type in PERCPU_TYPES else 1
        if spec.type in PERCPU_TYPES:
            # the kernel lays per-CPU values out at 8-byte strides
            self.value_dtype = _pad_dtype(value_dtype, (spec.value_size + 7) // 8 * 8)
        self.value_stride = self.value_dtype.itemsize * self.ncpus
        self._batch_ok: Optional[bool] = None  # learnt on first bulk op
        self._shadow: Optional[Tuple[np.ndarray, np.ndarray]] = None  # see reconcile(cache=True)

    # ---- lifecycle ----
    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"map {self.spec.name}: closed")
        return self._fd

    @property
    def name(self) -> str:
        return self.spec.name

    def close(self) -> None:
        if self._fd >= 0:
            lib.mc_close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.spec.name} {self.spec.type_name} "
                f"key={self.spec.key_size} value={self.spec.value_size} "
                f"max={self.spec.max_entries} fd={self._fd} path={self.path}>")

    def info(self) -> MapInfo:
        return map_info(self.fd)

    # ---- creation ----
    @classmethod
    def create(cls, spec: MapSpec, **kw) -> "BpfMap":
        """Create an unpinned map from a spec (tests, scratch maps)."""
        fd = lib.mc_map_create(spec.type, spec.name.encode()[:15], spec.key_size,
                               spec.value_size, spec.max_entries, spec.map_flags)
        if fd < 0:
            raise BpfError(-fd, f"map {spec.name}: create ({spec.type_name}, key {spec.key_size}, "
                                f"value {spec.value_size}, max_entries {spec.max_entries}, flags {spec.map_flags:#x})")
        return cls(fd, spec, **kw)

    @classmethod
    def open_pinned(cls, path: str, key_dtype=None, value_dtype=None, name: Optional[str] = None) -> "BpfMap":
        """Open any pinned map; the layout comes from the kernel, dtypes from the caller."""
        fd, spec = open_pin(path, name)
        try:
            return cls(fd, spec, path=path, key_dtype=key_dtype, value_dtype=value_dtype)
        except BaseException:
            lib.mc_close(fd)
            raise

    def pin(self, path: str) -> None:
        rc = lib.mc_obj_pin(self.fd, os.fsencode(path))
        if rc < 0:
            raise BpfError(-rc, f"map {self.name}: pin at {path}")
        self.path = path

    # ---- input coercion ----
    def _records(self, data: Any, dtype: np.dtype, what: str) -> np.ndarray:
        """Turn user input into a contiguous 1-D array of ``dtype``."""
        if isinstance(data, np.ndarray):
            if data.dtype == dtype:
                return np.ascontiguousarray(data).reshape(-1)
            if data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == dtype.itemsize:
                return np.ascontiguousarray(data).view(dtype).reshape(-1)
            if dtype.subdtype is None and data.dtype.names and dtype.names and \
                    data.dtype.names == dtype.names:
                return data.astype(dtype)
            raise TypeError(f"map {self.name}: {what} array has dtype {data.dtype}, expected {dtype}")
        return as_records(data, dtype, f"map {self.name}", what)

    def keys_array(self, keys: Any) -> np.ndarray:
        return self._records(keys, self.key_dtype, "keys")

    def values_array(self, values: Any) -> np.ndarray:
        if self.spec.percpu:
            arr = np.asarray(values) if isinstance(values, np.ndarray) else None
            if arr is not None and arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == self.value_stride:
                arr = np.ascontiguousarray(arr).view(self.value_dtype).reshape(-1, self.ncpus)
            if arr is None:
                rows = [self._records(v, self.value_dtype, "per-CPU values") for v in values]
                arr = np.stack(rows) if rows else np.zeros((0, self.ncpus), self.value_dtype)
            if arr.dtype != self.value_dtype or arr.ndim != 2 or arr.shape[1] != self.ncpus:
                raise TypeError(f"map {self.name}: per-CPU values must be ({self.ncpus} CPUs) arrays of {self.value_dtype}")
            return np.ascontiguousarray(arr)
        return self._records(values, self.value_dtype, "values")

    @staticmethod
    def _ptr(arr: np.ndarray):
        return ffi.from_buffer(arr) if arr.size else ffi.NULL

    # ---- bulk operations ----
    def _mode(self, mode: str, flags: int = ANY) -> int:
        try:
            m = _MODES[mode]
        except KeyError:
            raise ValueError(f"mode {mode!r}: expected one of {sorted(_MODES)}") from None
        if m == lib.MC_MODE_AUTO:
            # the kernel's batch update takes no NOEXIST/EXIST element flags,
            # and once a map refused batch ops there is no point asking again
            if flags != ANY or self._batch_ok is False:
                return lib.MC_MODE_LOOP
        return m

    def _run_bulk(self, op: str, keys: np.ndarray, values: Optional[np.ndarray], flags: int,
                  mode: str) -> Tuple[int, Any, np.ndarray, np.ndarray]:
        n = len(keys)
        self._shadow = None  # any write makes the reconcile cache stale
        fail_idx = np.empty(max(n, 1), np.uint32)
        fail_err = np.empty(max(n, 1), np.int32)
        res = ffi.new("struct mc_op_result *")
        m = self._mode(mode, flags)
        if op == "update":
            rc = lib.mc_update(self.fd, self._ptr(keys), self._ptr(values), n, self.spec.key_size,
                               self.value_stride, flags, m, ffi.from_buffer("uint32_t[]", fail_idx),
                               ffi.from_buffer("int32_t[]", fail_err), n, res)
        else:
            rc = lib.mc_delete(self.fd, self._ptr(keys), n, self.spec.key_size, m,
                               ffi.from_buffer("uint32_t[]", fail_idx), ffi.from_buffer("int32_t[]", fail_err), n, res)
        if rc < 0:
            raise BpfError(-rc, f"map {self.name}: {op} of {n} entries (mode {mode})")
        if n and m == lib.MC_MODE_AUTO:
            self._batch_ok = bool(res.used_batch)
        return n, res, fail_idx[:res.nfailed], fail_err[:res.nfailed]

    def _raise_failures(self, op, n, res, fidx, ferr):
        failures = [BulkFailure(int(i), int(e)) for i, e in zip(fidx, ferr)]
        stopped = int(res.stop_index) if res.stop_errno else None
        if op == "update" and res.stop_errno in (_errno.E2BIG, _errno.ENOSPC) and \
                self.spec.type not in (_TYPE_ARRAY, 6):
            raise MapFullError(self.name, self.spec.max_entries, n, int(res.done), failures,
                               int(res.nfailed_total), stopped)
        raise PartialFailureError(self.name, op, n, int(res.done), failures,
                                  int(res.nfailed_total), stopped)

    def full_error(self, wanted: int, entries: Optional[int] = None) -> MapFullError:
        """The error for ``wanted`` entries that cannot fit this map; nothing was written."""
        e = MapFullError(self.name, self.spec.max_entries, wanted, 0, [], wanted, 0, entries=entries)
        e.args = (f"map {self.name} is full (max_entries {self.spec.max_entries}): {wanted} entries wanted, "
                  f"nothing written" + (f", its {entries} entries kept" if entries is not None else ""),)
        return e

    def update(self, keys: Any, values: Any, flags: int = ANY, mode: str = "auto") -> BulkResult:
        """Write ``values[i]`` at ``keys[i]`` for all i.

        ``flags``: ANY (create or replace), NOEXIST (fail rows whose key
        exists: EEXIST), EXIST (fail rows whose key is missing: ENOENT).
        ``mode``: "auto" (batch when the kernel takes it), "batch", "loop".
        All rows that can be written are written; failures raise
        ``PartialFailureError`` (``MapFullError`` when the map is full, after
        which nothing more is attempted) listing each failed row and errno.
        """
        k = self.keys_array(keys)
        v = self.values_array(values)
        if len(k) != len(v):
            raise ValueError(f"map {self.name}: {len(k)} keys but {len(v)} values")
        n, res, fidx, ferr = self._run_bulk("update", k, v, flags, mode)
        if res.nfailed_total:
            self._raise_failures("update", n, res, fidx, ferr)
        return BulkResult(int(res.done), int(res.syscalls), bool(res.used_batch))

    def delete(self, keys: Any, missing_ok: bool = False, mode: str = "auto") -> BulkResult:
        """Delete the given keys. Missing keys fail with ENOENT unless ``missing_ok``."""
        k = self.keys_array(keys)
        n, res, fidx, ferr = self._run_bulk("delete", k, None, ANY, mode)
        if res.nfailed_total:
            keep = ferr != _errno.ENOENT if missing_ok else np.ones(len(ferr), bool)
            only_missing = missing_ok and not keep.any() and res.nfailed == res.nfailed_total
            if not only_missing:
                if missing_ok:
                    fidx, ferr = fidx[keep], ferr[keep]
                    res.nfailed_total = len(fidx) + (res.nfailed_total - res.nfailed)
                    res.nfailed = len(fidx)
                self._raise_failures("delete", n, res, fidx, ferr)
        return BulkResult(int(res.done), int(res.syscalls), bool(res.used_batch))

    def lookup(self, keys: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Look up many keys: ``(values, found)``; rows not found are zero.

        On an LPM trie a key is a search: the longest stored prefix that
        covers it answers.
        """
        k = self.keys_array(keys)
        n = len(k)
        if self.spec.percpu:
            vals = np.zeros((n, self.ncpus), self.value_dtype)
        else:
            vals = np.zeros(n, self.value_dtype)
        found = np.zeros(n, np.uint8)
        if n:
            rc = lib.mc_lookup(self.fd, self._ptr(k), ffi.from_buffer(vals), n, self.spec.key_size,
                               self.value_stride, ffi.from_buffer("uint8_t[]", found))
            if rc < 0:
                raise BpfError(-rc, f"map {self.name}: lookup of {n} keys")
        return vals, found.astype(bool)

    def get(self, key: Any, default: Any = None) -> Any:
        vals, found = self.lookup([key])
        return vals[0] if found[0] else default

    def dump(self, mode: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
        """All entries as ``(keys, values)`` arrays, read in batches."""
        m = self._mode(mode)
        chunk = min(_DUMP_CHUNK, max(self.spec.max_entries, 1))
        token = ffi.new("uint8_t[]", 2 * (self.spec.key_size + 8))
        state = ffi.new("int *", 0)
        used = ffi.new("int *", 1 if m != lib.MC_MODE_LOOP else 0)
        kparts, vparts = [], []
        while state[0] != 2:
            kbuf = np.empty(chunk, self.key_dtype)
            if self.spec.percpu:
                vbuf = np.empty((chunk, self.ncpus), self.value_dtype)
            else:
                vbuf = np.empty(chunk, self.value_dtype)
            got = lib.mc_dump(self.fd, self.spec.key_size, self.value_stride, ffi.from_buffer(kbuf),
                              ffi.from_buffer(vbuf), chunk, m, token, state, used)
            if got == -_errno.ENOSPC:  # one hash bucket holds more than a chunk
                chunk *= 2
                continue
            if got < 0:
                raise BpfError(-got, f"map {self.name}: dump (mode {mode})")
            kparts.append(kbuf[:got])
            vparts.append(vbuf[:got])
        if m == lib.MC_MODE_AUTO:
            self._batch_ok = bool(used[0]) if self._batch_ok is None else self._batch_ok
        if not kparts:
            return np.zeros(0, self.key_dtype), vbuf[:0]
        if len(kparts) == 1:
            return kparts[0], vparts[0]
        return concat_records(kparts), concat_records(vparts)

    def __len__(self) -> int:
        """Number of entries. O(n): the kernel keeps no count we can read."""
        return len(self.dump()[0])

    def clear(self) -> int:
        keys, _ = self.dump()
        if self.spec.type in (_TYPE_ARRAY, 6):
            raise TypeError(f"map {self.name}: array maps cannot be cleared by deletion")
        self.delete(keys, missing_ok=True)
        return len(keys)

    def reconcile(self, keys: Any, values: Any, mode: str = "auto",
                  cache: bool = False) -> ReconcileResult:
        """Make the map hold exactly ``keys -> values`` with the fewest writes.

        Reads the current contents (a batched dump of the kernel map, or with
        ``cache=True`` the contents this object last reconciled to), diffs in
        compiled code (``_fastmap.diff``), then writes only adds and changes
        and deletes only what is not wanted. A second call with the same
        input writes nothing. Adds and changes go in before deletes, so an
        entry that stays is never absent; when the map could not hold both
        at once, deletes go first. Repeated keys in the input are a
        ValueError and nothing is written.

        ``cache=True`` is for maps this object alone writes (the agent's
        service, ipcache and policy maps): it skips the dump, which for 1M
        entries costs more than the diff. Any ``update``/``delete``/``clear``
        through this object, or a failed reconcile, drops the cache; the next
        call then dumps. If another process may write the map, call with
        ``cache=False`` now and then to resynchronise.
        """
        if self.spec.type in (_TYPE_ARRAY, 6):
            raise TypeError(f"map {self.name}: reconcile needs a map that can delete (not an array)")
        k = self.keys_array(keys)
        v = self.values_array(values)
        if len(k) != len(v):
            raise ValueError(f"map {self.name}: {len(k)} keys but {len(v)} values")
        shadow, self._shadow = self._shadow if cache else None, None
        cur_k, cur_v = shadow if shadow is not None else self.dump(mode)
        if len(k) > self.spec.max_entries:
            # refuse before writing: a desired state that cannot fit must leave the current one whole,
            # not half replaced by it (deletes of what it drops would have gone first)
            self._shadow = shadow
            raise self.full_error(len(k), len(cur_k))
        try:
            add, change, delete, same, aligned = _fastmap.diff(rows(cur_k), rows(cur_v), rows(k), rows(v),
                                                               return_aligned=True)
        except ValueError as e:
            self._shadow = shadow
            raise ValueError(f"map {self.name}: reconcile: {e}") from None
        writes = np.concatenate([add, change]) if len(change) else add
        syscalls = 0
        deletes_first = len(cur_k) + len(add) > self.spec.max_entries
        if deletes_first and len(delete):
            syscalls += self.delete(cur_k[delete], missing_ok=True, mode=mode).syscalls
        if len(writes):
            syscalls += self.update(k[writes], v[writes], mode=mode).syscalls
        if not deletes_first and len(delete):
            syscalls += self.delete(cur_k[delete], missing_ok=True, mode=mode).syscalls
        if shadow is not None and aligned:
            # same keys in the same order: patch the cached values in place
            # instead of copying the whole input again
            if len(change):
                shadow[1][change] = v[change]
            self._shadow = shadow
        else:
            # copies: the caller may reuse its arrays
            self._shadow = (k.copy(), v.copy())
        return ReconcileResult(len(add), len(change), len(delete), int(same), syscalls)


def concat_records(parts: List[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` that keeps the exact dtype. numpy's own makes a
    structured dtype's fields native-endian (a big-endian ``port`` becomes
    little-endian: same numbers, other bytes), and the map code compares
    raw rows: a dump of more than one chunk then matched nothing and a
    reconcile deleted every entry it had just written."""
    out = np.empty((sum(len(p) for p in parts),) + parts[0].shape[1:], parts[0].dtype)
    i = 0
    for p in parts:
        out[i:i + len(p)] = p  # identical dtypes: a byte copy
        i += len(p)
    return out


def rows(arr: np.ndarray) -> np.ndarray:
    """View records as a 2-D uint8 array, one row per record."""
    arr = np.ascontiguousarray(arr)
    n = arr.shape[0]
    return arr.view(np.uint8).reshape(n, -1) if n else np.zeros((0, arr.dtype.itemsize * (arr.shape[1] if arr.ndim > 1 else 1)), np.uint8)


def _field_value(v: Any, sub: Optional[np.dtype] = None) -> Any:
    # bytes for an array field: numpy wants a sequence of ints for u1[16]
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    # an address object into addr[16] is its unified form (IPv4 as ::ffff:a.b.c.d); numpy alone
    # would take int(address) and repeat it in every byte
    if sub is not None and sub.subdtype is not None and sub.subdtype[0] == np.uint8 and \
            sub.subdtype[1] == (16,) and isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        b = v.packed
        return list(_V4_MAPPED + b if len(b) == 4 else b)
    return v


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _row_form(dtype: np.dtype, first: Any) -> str:
    """How rows are read, decided by the first row: "scalar", "dict" or "tuple"."""
    if dtype.names and len(dtype.names) == 1 and not isinstance(first, (tuple, list, dict)):
        return "scalar"
    if dtype.names and isinstance(first, dict):
        return "dict"
    return "tuple"


def _convert(seq: list, dtype: np.dtype, form: str) -> np.ndarray:
    if form == "scalar":
        out = np.zeros(len(seq), dtype)
        out[dtype.names[0]] = seq
        return out
    if form == "dict":
        out = np.zeros(len(seq), dtype)
        for i, row in enumerate(seq):
            for k, v in row.items():
                out[i][k] = _field_value(v, dtype.fields[k][0] if k in dtype.fields else None)
        return out
    if dtype.names:
        subs = [dtype.fields[n][0] for n in dtype.names]
        seq = [tuple(_field_value(v, sub) for v, sub in zip(row, subs)) + tuple(row)[len(subs):]
               for row in seq]
    return np.array(seq, dtype=dtype)


def as_records(data: Any, dtype: np.dtype, owner: str = "rows", what: str = "rows") -> np.ndarray:
    """Rows of Python values (tuples/lists, dicts or bare values, see the README) -> records.

    The compiled packer (``_fastmap.Packer``) writes the records directly from the dtype's
    field offsets, sizes and byte order; a row it leaves alone (a float, a string, a value
    out of range) sends the whole input through numpy (:func:`records_py`), which converts it
    as it always has or fails: then the ``TypeError`` names ``owner``, the first bad row and
    its field, and nothing has been written anywhere.
    """
    seq = data if type(data) is list else list(data)
    if not seq:
        return np.zeros(0, dtype)
    packer = packer_for(dtype)
    stop = 0
    if packer is not None:
        out, stop = packer.pack(seq)
        if out is not None:
            return out
    try:
        return records_py(seq, dtype)
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        where = locate_bad_row(seq, dtype, stop)
        raise TypeError(f"{owner}: cannot convert {what} to {dtype}: {where[0] if where else e}") from None


def records_py(seq: list, dtype: np.dtype) -> np.ndarray:
    """Rows of Python values -> records, with numpy doing the conversion row by row.

    The reference for the compiled packer (``_fastmap.Packer``), and what converts the
    values that packer leaves alone (floats, strings: numpy's own rules).
    """
    return _convert(seq, dtype, _row_form(dtype, seq[0]))


def locate_bad_row(seq: list, dtype: np.dtype, start: int = 0) -> Optional[Tuple[str]]:
    """The first row (from ``start``) numpy cannot convert, as ``("row I, field F: why",)``."""
    form = _row_form(dtype, seq[0])
    errors = (ValueError, TypeError, KeyError, OverflowError, AttributeError)
    for i in range(start, len(seq)):
        row = seq[i]
        try:
            _convert([row], dtype, form)
            continue
        except errors as e:
            why = e
        field = None
        if form == "scalar":
            field = dtype.names[0]
        elif form == "dict" and isinstance(row, dict):
            for k, v in row.items():
                try:
                    _convert([{k: v}], dtype, form)
                except errors as e:
                    field, why = k, e
                    break
        elif dtype.names and isinstance(row, (tuple, list)) and len(row) == len(dtype.names):
            for j, name in enumerate(dtype.names):
                probe = [0] * len(row)
                probe[j] = row[j]
                try:
                    _convert([tuple(probe)], dtype, form)
                except errors as e:
                    field, why = name, e
                    break
        return (f"row {i}" + (f", field {field!r}" if field is not None else "") + f": {why}",)
    return None


_PACKERS: dict = {}


def packer_for(dtype: np.dtype) -> Optional["_fastmap.Packer"]:
    """The compiled packer for ``dtype``, or None when its fields are not all integers."""
    try:
        return _PACKERS[dtype]
    except KeyError:
        pass
    try:
        p = _fastmap.Packer(dtype)
    except TypeError:
        p = None
    _PACKERS[dtype] = p
    return p


def spec_for(name: str, key_dtype: np.dtype, value_dtype: np.dtype, type: int = _TYPE_HASH,
             max_entries: int = 1024, map_flags: int = 0) -> MapSpec:
    """A spec for a map of the caller's own layout (the generic case)."""
    return MapSpec(name, type, np.dtype(key_dtype).itemsize, np.dtype(value_dtype).itemsize,
                   max_entries, map_flags)

