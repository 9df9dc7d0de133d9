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
