# SPDX-License-Identifier: MIT OR Apache-2.0
"""JSON for the large bodies: list responses and watch frames, on both ends.

``orjson`` (a dependency; compiled) encodes a 30 MB EndpointSlice list about
8x faster than the standard library and decodes it no slower (as fast, or up
to 1.4x faster). What decoding gains most is ``gc_paused()`` below: 1.6-2.0 s
with the collector running, 0.5 s without, for either library. Without orjson,
everything here is the standard library's ``json`` with the same results.

``dumps`` gives the bytes of ``json.dumps(obj, separators=(",", ":"))``
(what the API server always sent): orjson's output is used only when it is
pure printable-range ASCII (the standard library escapes every other
character as ``\\uXXXX``), and anything orjson refuses (integers beyond 64
bits, non-string keys) goes to the standard library. One difference is left:
a float below 1e-4 is written as Go's encoding/json (so kube-apiserver)
writes it, ``0.00001`` or ``2.5e-7``, where Python writes ``1e-05`` and
``2.5e-07`` -- the same number to every JSON parser. (NaN and Infinity, which
orjson would write as ``null``, are refused by the API server on input.)

``loads`` gives ``json.loads``'s values, with one difference: an integer
literal beyond 64 bits becomes a float (as Go's decoder, and so kube-apiserver,
reads it; the API never sends one: it holds numbers as int64 or float64).
What orjson refuses (a lone surrogate, NaN) goes to the standard library.

``gc_paused()`` holds off the cyclic garbage collector while a large body is
decoded and cached: the decoded objects hold no cycles, and with two million
new containers the collector's full passes cost more than the decoding.
"""
from __future__ import annotations

import gc
import json
import threading
from contextlib import contextmanager
from typing import Any, Iterator

try:  # pragma: no cover - which branch runs depends on the install
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

BACKEND = "orjson" if _orjson is not None else "json"


def _std_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


if _orjson is not None:
    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        """``json.loads``; raises ``ValueError`` (``json.JSONDecodeError``) on bad input."""
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # what orjson alone refuses (lone surrogates, NaN) the standard library decodes,
            # or raises its own error for
            return json.loads(data)

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes, as ``json.dumps(obj, separators=(",", ":")).encode()``."""
        try:
            data = _orjson.dumps(obj)
        except TypeError:
            return _std_dumps(obj)
        if not data.isascii() or b"\x7f" in data:
            return _std_dumps(obj)
        return data
else:  # pragma: no cover
    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return _std_dumps(obj)


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC inside (nested and from several threads: the first in turns it off,
    the last out turns it back on if it was on)."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
