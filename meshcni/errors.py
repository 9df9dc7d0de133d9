# SPDX-License-Identifier: MIT OR Apache-2.0
"""Errors of the map library. Every message names the map and what failed."""
from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from typing import List

ENOTSUPP = 524  # kernel-internal errno that bpf() returns for unsupported ops


def errno_name(e: int) -> str:
    if e == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(e, f"errno {e}")


class BpfError(OSError):
    """A bpf() call failed. ``errno`` is set; the message says on what."""

    def __init__(self, err: int, what: str):
        super().__init__(err, f"{what}: {errno_name(err)} ({os.strerror(err) if err != ENOTSUPP else 'operation not supported'})")
        self.what = what


class PinMismatchError(BpfError):
    """A pin exists but its layout differs from the spec (and migration is off)."""


@dataclass
class BulkFailure:
    index: int   # row in the caller's input
    errno: int

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)


class PartialFailureError(Exception):
    """A bulk operation applied some entries and not others.

    ``written`` entries went in; ``failures`` lists (row index, errno) of each
    entry that did not (up to ``len(failures)``; ``failed_total`` counts all).
    Rows neither written nor failed (only when ``stopped_at`` is set) were not
    attempted. The map holds exactly the written rows' effect.
    """

    def __init__(self, map_name: str, op: str, attempted: int, written: int,
                 failures: List[BulkFailure], failed_total: int,
                 stopped_at: int | None = None):
        self.map_name = map_name
        self.op = op
        self.attempted = attempted
        self.written = written
        self.failures = failures
        self.failed_total = failed_total
        self.stopped_at = stopped_at
        by_errno: dict = {}
        for f in failures:
            by_errno.setdefault(f.errno_name, []).append(f.index)
        parts = []
        for name, idx in sorted(by_errno.items()):
            shown = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
            parts.append(f"{name} at rows [{shown}] ({len(idx)})")
        msg = (f"map {map_name}: {op} of {attempted} entries: {written} written, "
               f"{failed_total} failed: " + "; ".join(parts))
        if stopped_at is not None:
            msg += f"; stopped at row {stopped_at}, {attempted - written - failed_total} rows not attempted"
        super().__init__(msg)

    @property
    def failed_rows(self) -> List[int]:
        return [f.index for f in self.failures]


class MapFullError(PartialFailureError):
    """An update ran into the map's max_entries."""

    def __init__(self, map_name: str, capacity: int, attempted: int, written: int,
                 failures: List[BulkFailure], failed_total: int, stopped_at: int,
                 entries: int | None = None):
        super().__init__(map_name, "update", attempted, written, failures, failed_total,
                         stopped_at)
        self.capacity = capacity
        self.entries = entries
        self.args = (f"map {map_name} is full (max_entries {capacity}"
                     + (f", {entries} entries" if entries is not None else "")
                     + f"): {written} of {attempted} entries written, stopped at row {stopped_at}",)

    def __str__(self) -> str:
        return self.args[0]
