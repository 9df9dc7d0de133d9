# SPDX-License-Identifier: MIT OR Apache-2.0
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot paths of the map library.

Everything here works on fixed-width records given as 2-D ``uint8`` arrays
(one row per key or value: the bytes of a numpy structured array viewed as
``(n, itemsize)``), so it is independent of any particular map layout.

- :func:`diff` is the core of ``reconcile``: given what the kernel map holds
  and what it should hold, it finds the adds, changes and deletes in O(n)
  with an open-addressing hash table keyed on the raw key bytes.
- :func:`duplicate_keys` finds repeated keys (an input error: the kernel
  would keep the last one silently).
"""
import numpy as np

from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memcmp, memcpy
from libc.stdlib cimport malloc, free


cdef inline uint64_t _fmix(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef inline uint64_t _hash(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    # 8 bytes at a time; keys are small (4..40 bytes) so this is a handful
    # of multiplies per key, and fmix gives the avalanche linear probing needs.
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n
    cdef uint64_t w
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        h = (h ^ _fmix(w)) * 0x9E3779B97F4A7C15ULL
        i += 8
    if i < n:
        w = 0
        memcpy(&w, p + i, n - i)
        h = (h ^ _fmix(w)) * 0x9E3779B97F4A7C15ULL
    return _fmix(h)


cdef struct _Slot:
    uint64_t tag
    int64_t row


cdef class _KeyTable:
    """Open-addressing set of row indices of a key array (linear probing).

    Slot = (hash, row) side by side, so a probe touches one cache line
    before the key itself.
    """
    cdef _Slot *slots
    cdef uint64_t mask
    cdef const uint8_t *keys
    cdef Py_ssize_t ks

    def __dealloc__(self):
        free(self.slots)

    cdef int init(self, const uint8_t *base, Py_ssize_t n, Py_ssize_t ks) except -1:
        cdef uint64_t size = 16
        while size < <uint64_t>(2 * n):
            size <<= 1
        self.mask = size - 1
        self.slots = <_Slot *>malloc(size * sizeof(_Slot))
        if self.slots == NULL:
            raise MemoryError()
        cdef uint64_t i
        for i in range(size):
            self.slots[i].row = -1
        self.ks = ks
        self.keys = base
        return 0

    cdef inline int64_t insert(self, int64_t row) noexcept nogil:
        """Insert row; return -1, or the earlier row holding the same key."""
        cdef const uint8_t *k = self.keys + row * self.ks
        cdef uint64_t h = _hash(k, self.ks)
        cdef uint64_t j = h & self.mask
        cdef int64_t other
        while True:
            other = self.slots[j].row
            if other < 0:
                self.slots[j].row = row
                self.slots[j].tag = h
                return -1
            if self.slots[j].tag == h and memcmp(self.keys + other * self.ks, k, self.ks) == 0:
                return other
            j = (j + 1) & self.mask

    cdef inline int64_t find(self, const uint8_t *k) noexcept nogil:
        cdef uint64_t h = _hash(k, self.ks)
        cdef uint64_t j = h & self.mask
        cdef int64_t other
        while True:
            other = self.slots[j].row
            if other < 0:
                return -1
            if self.slots[j].tag == h and memcmp(self.keys + other * self.ks, k, self.ks) == 0:
                return other
            j = (j + 1) & self.mask


def _rows(a, name):
    a = np.ascontiguousarray(a)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise TypeError(f"{name}: expected a 2-D uint8 array, got {a.dtype} {a.shape}")
    return a


def duplicate_keys(keys):
    """Return ``(i, j)`` for the first key at row j that repeats row i, or None."""
    cdef const uint8_t[:, ::1] k = _rows(keys, "keys")
    cdef _KeyTable t = _KeyTable()
    cdef int64_t i, other = -1, n = k.shape[0]
    t.init(&k[0, 0] if n else NULL, n, k.shape[1])
    with nogil:
        for i in range(n):
            other = t.insert(i)
            if other >= 0:
                break
    if other >= 0:
        return (int(other), int(i))
    return None


DEF _BLOCK = 16


def diff(cur_keys, cur_values, want_keys, want_values, bint return_aligned=False):
    """Compare a map's contents with the wanted contents.

    All four arguments are 2-D uint8 arrays of rows (keys of one width,
    values of one width). Returns ``(add, change, delete, unchanged)``:
    ``add`` and ``change`` are int64 row indices into ``want_*``, ``delete``
    row indices into ``cur_*``, ``unchanged`` a count.

    Rows that line up (same key at the same position, as when the caller
    regenerates its desired state in a stable order and ``cur`` is the
    previous desired state) are compared in one sequential pass from the
    front and one from the back; only the stretch in between, where keys
    were added, removed or reordered, goes through a hash table. So a value
    change anywhere, or entries appended, removed or inserted in one place,
    cost a memcmp per row; a kernel dump (hash order) costs the hash pass.

    ``cur_keys`` must not repeat a key (a kernel dump, or a previous input
    that passed this check, never does). Raises ValueError if ``want_keys``
    repeats a key (which row, which earlier row), since applying it would
    keep one of the two silently.
    """
    cdef const uint8_t[:, ::1] ck = _rows(cur_keys, "cur_keys")
    cdef const uint8_t[:, ::1] cv = _rows(cur_values, "cur_values")
    cdef const uint8_t[:, ::1] wk = _rows(want_keys, "want_keys")
    cdef const uint8_t[:, ::1] wv = _rows(want_values, "want_values")
    cdef Py_ssize_t nc = ck.shape[0], nw = wk.shape[0]
    if cv.shape[0] != nc or wv.shape[0] != nw:
        raise ValueError("keys and values differ in length")
    if nc and nw and ck.shape[1] != wk.shape[1]:
        raise ValueError(f"key widths differ: {ck.shape[1]} != {wk.shape[1]}")
    if nc and nw and cv.shape[1] != wv.shape[1]:
        raise ValueError(f"value widths differ: {cv.shape[1]} != {wv.shape[1]}")
    cdef Py_ssize_t ks = wk.shape[1] if nw else ck.shape[1]
    cdef Py_ssize_t vs = wv.shape[1] if nw else cv.shape[1]

    add = np.empty(nw, dtype=np.int64)
    change = np.empty(nw, dtype=np.int64)
    delete = np.empty(nc, dtype=np.int64)
    cdef int64_t[::1] a = add, c = change, d = delete
    cdef Py_ssize_t na = 0, nch = 0, nd = 0, same = 0
    cdef Py_ssize_t head = 0, tail = 0, i, j

    # aligned front and back. The front pass first compares blocks of rows
    # with one memcmp each (unchanged stretches cost a memory scan), and only
    # goes row by row through a block that differs.
    cdef Py_ssize_t lim = nc if nc < nw else nw, end
    cdef bint stop = False
    with nogil:
        while head < lim and not stop:
            if head + _BLOCK <= lim and memcmp(&ck[head, 0], &wk[head, 0], _BLOCK * ks) == 0 and \
                    (vs == 0 or memcmp(&cv[head, 0], &wv[head, 0], _BLOCK * vs) == 0):
                same += _BLOCK
                head += _BLOCK
                continue
            end = head + _BLOCK if head + _BLOCK < lim else lim
            while head < end:
                if memcmp(&ck[head, 0], &wk[head, 0], ks) != 0:
                    stop = True
                    break
                if vs and memcmp(&cv[head, 0], &wv[head, 0], vs) != 0:
                    c[nch] = head
                    nch += 1
                else:
                    same += 1
                head += 1
        while tail < nc - head and tail < nw - head and \
                memcmp(&ck[nc - 1 - tail, 0], &wk[nw - 1 - tail, 0], ks) == 0:
            if vs and memcmp(&cv[nc - 1 - tail, 0], &wv[nw - 1 - tail, 0], vs) != 0:
                c[nch] = nw - 1 - tail
                nch += 1
            else:
                same += 1
            tail += 1

    cdef Py_ssize_t mc = nc - head - tail, mw = nw - head - tail
    cdef _KeyTable t
    cdef int64_t r, dup = -1, dup_at = -1
    seen_arr = np.zeros(max(mw, 1), dtype=np.uint8)
    cdef uint8_t[::1] seen = seen_arr
    if mw > 0 or mc > 0:
        # A table over the wanted middle only: small when the change is.
        t = _KeyTable()
        t.init(&wk[head, 0] if mw > 0 else NULL, mw, ks)
        with nogil:
            for i in range(mw):
                r = t.insert(i)
                if r >= 0:
                    dup = head + r
                    dup_at = head + i
                    break
            # An aligned row is also a cur row, and cur is unique, so the only
            # repeats left to find are of aligned rows inside the middle.
            i = 0
            while dup < 0 and mw > 0 and i < nw:
                if i == head:
                    i = head + mw
                    continue
                r = t.find(&wk[i, 0])
                if r >= 0:
                    dup = i
                    dup_at = head + r
                i += 1
        if dup >= 0:
            raise ValueError(f"wanted entries repeat a key: rows {min(dup, dup_at)} and {max(dup, dup_at)}")
        with nogil:
            for i in range(head, head + mc):
                r = t.find(&ck[i, 0])
                if r < 0:
                    d[nd] = i
                    nd += 1
                    continue
                if seen[r]:
                    # cur repeats a key (a dump racing with a writer can):
                    # the key is wanted, so it is neither deleted nor counted
                    continue
                seen[r] = 1
                if vs and memcmp(&cv[i, 0], &wv[head + r, 0], vs) != 0:
                    c[nch] = head + r
                    nch += 1
                else:
                    same += 1
            for j in range(mw):
                if not seen[j]:
                    a[na] = head + j
                    na += 1
    if return_aligned:
        return (add[:na].copy(), change[:nch].copy(), delete[:nd].copy(), same,
                nc == nw and head + tail == nc)
    return add[:na].copy(), change[:nch].copy(), delete[:nd].copy(), same


# ---------------------------------------------------------------- row packer

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1
    bint PyLong_Check(object)
    bint PyTuple_Check(object)
    bint PyList_Check(object)
    bint PyDict_Check(object)
    bint PyBytes_CheckExact(object)
    bint PyByteArray_CheckExact(object)
    char *PyBytes_AS_STRING(object)
    char *PyByteArray_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)
    Py_ssize_t PyByteArray_GET_SIZE(object)


cdef struct _Field:
    Py_ssize_t off
    int esize       # bytes of one element: 1, 2, 4 or 8
    int count       # elements: 1 for a scalar field, N for an array field
    bint signed
    bint big
    bint addr16     # u1[16]: an ipaddress object packs to its 16-byte unified form


# what one value did: packed, or not packed by this code (the row goes to the
# numpy path, which decides whether it is an error)
DEF _OK = 0
DEF _NO = 1

cdef object _np_integer = np.integer
cdef object _ip_types = None


cdef object _address_types():
    global _ip_types
    if _ip_types is None:
        import ipaddress
        _ip_types = (ipaddress.IPv4Address, ipaddress.IPv6Address)
    return _ip_types


cdef inline void _store(uint8_t *p, uint64_t v, int esize, bint big) noexcept nogil:
    cdef int j
    if big:
        for j in range(esize):
            p[esize - 1 - j] = <uint8_t>(v >> (8 * j))
    else:
        for j in range(esize):
            p[j] = <uint8_t>(v >> (8 * j))


cdef int _int(object v, _Field *f, uint64_t *out) except -1:
    """A Python int (or bool, or numpy integer) in the element's range -> _OK."""
    cdef int ovf = 0
    cdef long long x
    cdef unsigned long long u
    if not PyLong_Check(v):
        if isinstance(v, _np_integer):
            v = int(v)
        else:
            return _NO
    x = PyLong_AsLongLongAndOverflow(v, &ovf)
    if ovf == 0:
        if f.signed:
            if f.esize < 8 and (x < -(1LL << (8 * f.esize - 1)) or x >= (1LL << (8 * f.esize - 1))):
                return _NO
        else:
            if x < 0 or (f.esize < 8 and x >= (1LL << (8 * f.esize))):
                return _NO
        out[0] = <uint64_t>x
        return _OK
    if ovf > 0 and not f.signed and f.esize == 8:
        try:
            u = PyLong_AsUnsignedLongLong(v)
        except OverflowError:
            return _NO
        out[0] = u
        return _OK
    return _NO


cdef int _put(uint8_t *row, _Field *f, object v) except -1:
    cdef uint64_t x
    cdef Py_ssize_t n, j
    cdef const uint8_t *src
    cdef uint8_t *p = row + f.off
    if f.count == 1:
        if _int(v, f, &x) != _OK:
            return _NO
        _store(p, x, f.esize, f.big)
        return _OK
    # an array field: bytes, a sequence of ints, one int for every element
    # (numpy broadcasts it), or an address object for addr[16]
    if PyBytes_CheckExact(v) or PyByteArray_CheckExact(v):
        if PyBytes_CheckExact(v):
            src = <const uint8_t *>PyBytes_AS_STRING(v)
            n = PyBytes_GET_SIZE(v)
        else:
            src = <const uint8_t *>PyByteArray_AS_STRING(v)
            n = PyByteArray_GET_SIZE(v)
        if n != f.count:
            return _NO
        if f.esize == 1 and not f.signed:
            memcpy(p, src, n)
            return _OK
        if f.signed and f.esize == 1:
            for j in range(n):
                if src[j] > 127:
                    return _NO
        for j in range(n):
            _store(p + j * f.esize, src[j], f.esize, f.big)
        return _OK
    if PyTuple_Check(v) or PyList_Check(v):
        n = len(v)
        if n != f.count:
            return _NO
        for j in range(n):
            if _int(v[j], f, &x) != _OK:
                return _NO
            _store(p + j * f.esize, x, f.esize, f.big)
        return _OK
    if PyLong_Check(v) or isinstance(v, _np_integer):
        if _int(v, f, &x) != _OK:
            return _NO
        for j in range(f.count):
            _store(p + j * f.esize, x, f.esize, f.big)
        return _OK
    if f.addr16 and isinstance(v, _address_types()):
        b = v.packed
        if len(b) == 4:
            b = b"\0" * 10 + b"\xff\xff" + b
        memcpy(p, PyBytes_AS_STRING(b), 16)
        return _OK
    return _NO


cdef class Packer:
    """Packs rows of Python values into records of one numpy dtype, in C.

    The dtype's fields are read once (offset, element size, count, signedness,
    byte order); a row is then written straight into the output buffer.
    Handles structured dtypes whose fields are integers or 1-D integer arrays,
    and plain integer dtypes. Rows are tuples/lists (one value per field),
    dicts (field name -> value, missing fields zero) or, for a one-field or
    plain dtype, bare values -- the row forms ``BpfMap`` documents, with the
    row form chosen by the first row as there.

    Values packed here: ints (range-checked), bools, numpy integers; for an
    array field also bytes/bytearray or a sequence of ints of the field's
    length, one int for every element, and for ``u1[16]`` an ``ipaddress``
    address (its 16-byte unified form). Anything else -- floats, strings,
    a value out of range, a wrong length -- is not guessed at: ``pack``
    returns ``(None, row)`` naming the first row it did not pack, and the
    caller converts with numpy, which either accepts the value (as it always
    has) or raises the error.
    """
    cdef _Field *fields
    cdef int nf
    cdef readonly object dtype
    cdef readonly object names
    cdef dict index
    cdef bint plain

    def __cinit__(self):
        self.fields = NULL

    def __dealloc__(self):
        free(self.fields)

    def __init__(self, dtype):
        dtype = np.dtype(dtype)
        self.dtype = dtype
        self.plain = dtype.names is None
        if self.plain:
            names = (None,)
            specs = [(dtype, 0)]
        else:
            names = dtype.names
            specs = [dtype.fields[n][:2] for n in names]
        self.names = names
        self.nf = len(names)
        self.fields = <_Field *>malloc(max(self.nf, 1) * sizeof(_Field))
        if self.fields == NULL:
            raise MemoryError()
        self.index = {}
        cdef int i
        for i in range(self.nf):
            sub, off = specs[i]
            count = 1
            base = sub
            if sub.subdtype is not None:
                base, shape = sub.subdtype
                if len(shape) != 1:
                    raise TypeError(f"field {names[i]!r}: {sub} is not a 1-D array")
                count = shape[0]
            if base.kind not in "ui" or base.itemsize not in (1, 2, 4, 8):
                raise TypeError(f"field {names[i]!r}: {base} is not an integer type")
            self.fields[i].off = off
            self.fields[i].esize = base.itemsize
            self.fields[i].count = count
            self.fields[i].signed = base.kind == "i"
            self.fields[i].big = base.byteorder == ">" or (base.byteorder == "=" and np.little_endian is False)
            self.fields[i].addr16 = base.kind == "u" and base.itemsize == 1 and count == 16
            if names[i] is not None:
                self.index[names[i]] = i

    def pack(self, list seq):
        """``(records, n)`` when every row packed, else ``(None, row)`` of the first that did not."""
        cdef Py_ssize_t n = len(seq), i, j, ns = self.dtype.itemsize
        out = np.zeros(n, self.dtype)
        if n == 0:
            return out, 0
        cdef uint8_t[::1] buf = out.view(np.uint8)
        cdef uint8_t *base = &buf[0]
        cdef uint8_t *rp
        cdef object row, first = seq[0]
        cdef _Field *f = self.fields
        cdef int mode
        # the row form of the first row decides, as BpfMap's numpy path does
        if self.plain:
            mode = 0
        elif self.nf == 1 and not isinstance(first, (tuple, list, dict)):
            mode = 0
            if f[0].count != 1:
                return None, 0
        elif isinstance(first, dict):
            mode = 2
        else:
            mode = 1
        for i in range(n):
            row = seq[i]
            rp = base + i * ns
            if mode == 1:
                if not (PyTuple_Check(row) or PyList_Check(row)) or len(row) != self.nf:
                    return None, i
                for j in range(self.nf):
                    if _put(rp, &f[j], row[j]) != _OK:
                        return None, i
            elif mode == 0:
                if _put(rp, &f[0], row) != _OK:
                    return None, i
            else:
                if not PyDict_Check(row):
                    return None, i
                for k, v in (<dict>row).items():
                    j = self.index.get(k, -1) if type(k) is str else -1
                    if j < 0 or _put(rp, &f[j], v) != _OK:
                        return None, i
        return out, n
