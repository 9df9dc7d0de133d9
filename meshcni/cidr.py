# SPDX-License-Identifier: MIT OR Apache-2.0
"""CIDR parsing, ipBlock ``except`` arithmetic and LPM-trie key encoding.

This module is pure Python (stdlib :mod:`ipaddress` plus numpy) so that the
policy compiler and its tests can run without the BPF extensions.

Parsing rules (:func:`parse_cidr`)
----------------------------------
* ``"10.0.0.0/8"``, ``"2001:db8::/32"`` and bare addresses (``/32`` or
  ``/128`` implied) are accepted.
* Host bits set (``"10.1.2.3/8"``): by default the value is normalised to
  ``10.0.0.0/8`` and a :class:`CIDRNormalizedWarning` naming both forms is
  emitted; with ``strict=True`` it is a :class:`ValueError`.  The default is
  lenient because Go's ``net.ParseCIDR`` -- and therefore the Kubernetes API
  server -- has historically accepted such values in NetworkPolicy
  ``ipBlock`` fields, so rejecting them would make the CNI refuse policies
  the cluster already admitted.  Normalising *silently* would hide a likely
  typo (``10.1.2.3/8`` was probably meant as ``/32``), hence the warning.
* Leading zeros in IPv4 octets (``"010.0.0.1"``) are rejected, exactly as
  :mod:`ipaddress` does: some parsers read them as octal and others as
  decimal, and a security policy must not guess.  For the same reason a
  leading zero in the prefix length (``"/08"``) is rejected, as are netmask
  forms (``"/255.0.0.0"``), which Kubernetes does not accept either.
* IPv6 zone IDs (``"fe80::1%eth0"``) are rejected: a zone has no meaning in
  a policy prefix and cannot be represented in an LPM key.
* Every error is a :class:`ValueError` whose message quotes the offending
  value, e.g. ``CIDR "10.0.0.0/33": prefix length 33 out of range 0..32``.

Unified address space
---------------------
The datapath keeps IPv4 and IPv6 in a single LPM trie keyed by 128-bit
addresses: IPv6 as-is and IPv4 as the IPv4-mapped address ``::ffff:a.b.c.d``
with the prefix length shifted by 96.  One consequence callers must keep in
mind: an IPv6 prefix that covers ``::ffff:0:0/96`` (``::/0`` up to
``::/80``, and ``::ffff:0:0/96`` itself) also matches IPv4 traffic in that
trie, and ``::ffff:10.0.0.0/104`` produces the same key as ``10.0.0.0/8``.
:func:`longest_prefix_match` models exactly this behaviour because it is the
oracle for the kernel trie.
"""

from __future__ import annotations

import ipaddress
import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Union

import numpy as np

__all__ = [
    "CIDRNormalizedWarning",
    "Network",
    "Address",
    "parse_cidr",
    "exclude",
    "ipblock_prefixes",
    "lpm_keys",
    "from_lpm_key",
    "unified_addr",
    "from_unified",
    "longest_prefix_match",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_V4_MAPPED_INT = 0xFFFF << 32
_ALL_ONES_128 = (1 << 128) - 1
# Longest valid textual IPv4 CIDR: "255.255.255.255/32".
_MAX_V4_TEXT = 18
# Longest textual IPv6 address: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
_MAX_ADDR_TEXT = 45
# Keep error messages readable when someone feeds us a megabyte of garbage.
_MAX_QUOTED = 120
# How many examples a bulk normalisation warning lists before summarising.
_MAX_WARN_EXAMPLES = 3


class CIDRNormalizedWarning(UserWarning):
    """A CIDR had host bits set and was normalised to its network address.

    ``normalized`` holds ``(original, network)`` pairs for every value that was
    normalised by the call that emitted the warning.
    """

    def __init__(self, message: str, normalized: Iterable[tuple[Any, Network]] = ()):
        super().__init__(message)
        self.normalized = tuple(normalized)


class _Invalid(ValueError):
    """Internal: a reason without the value/label prefix, wrapped by callers."""


def _q(value: Any) -> str:
    """Quote a user-supplied value for an error message."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network,
                          ipaddress.IPv4Address, ipaddress.IPv6Address)):
        value = str(value)
    if isinstance(value, str):
        if len(value) > _MAX_QUOTED:
            value = value[:_MAX_QUOTED] + "..."
        # JSON quoting escapes control characters and non-ASCII look-alikes
        # (e.g. fullwidth digits) that would otherwise be invisible in logs.
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "..."


def _parse_text(text: str) -> tuple[Network, bool]:
    """Parse a CIDR string; return (normalised network, host_bits_were_set)."""
    if not text:
        raise _Invalid("empty string")
    addr_part, sep, plen_part = text.partition("/")
    if len(addr_part) > _MAX_ADDR_TEXT:
        # ipaddress would quote the whole value back in its own message.
        raise _Invalid(f"address part is {len(addr_part)} characters, "
                       f"longer than any IP address ({_MAX_ADDR_TEXT})")
    # Python < 3.9.5 ipaddress silently read leading zeros as decimal, so
    # check ourselves rather than depend on the interpreter's patch level.
    dotted = addr_part.rpartition(":")[2]
    for octet in dotted.split(".") if "." in dotted else ():
        if len(octet) > 1 and octet[0] == "0" and octet.isascii() and octet.isdigit():
            raise _Invalid(f"Leading zeros are not permitted in {octet!r} in {dotted!r}")
    # Choosing the class ourselves gives ipaddress's specific reason (e.g.
    # "Leading zeros are not permitted") instead of the generic
    # "does not appear to be an IPv4 or IPv6 address".
    try:
        if ":" in addr_part:
            addr: Address = ipaddress.IPv6Address(addr_part)
        else:
            addr = ipaddress.IPv4Address(addr_part)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise _Invalid("IPv6 zone IDs are not allowed in a CIDR")
    max_len = addr.max_prefixlen
    if not sep:
        plen = max_len
    else:
        if not plen_part:
            raise _Invalid("missing prefix length after '/'")
        if not (plen_part.isascii() and plen_part.isdigit()):
            raise _Invalid(
                f"prefix length {_q(plen_part)} is not a decimal integer")
        if len(plen_part) > 1 and plen_part[0] == "0":
            raise _Invalid(
                f"prefix length {_q(plen_part)} has a leading zero")
        # Length check first: int() of a huge digit string is slow (and
        # raises past sys.int_info.str_digits_check_threshold).
        if len(plen_part) > 3 or int(plen_part) > max_len:
            shown = plen_part if len(plen_part) <= 10 else plen_part[:10] + "..."
            raise _Invalid(
                f"prefix length {shown} out of range 0..{max_len}")
        plen = int(plen_part)
    net = ipaddress.ip_network((addr, plen), strict=False)
    return net, net.network_address != addr


def _check_network_obj(net: Network) -> Network:
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.scope_id is not None:
        raise _Invalid("IPv6 zone IDs are not allowed in a CIDR")
    return net


def _coerce(value: Any, strict: bool, *, allow_objects: bool = True) -> tuple[Network, bool]:
    """Parse a string or accept a network object; (network, host_bits_set).

    Raises _Invalid with a reason; callers add the label and quoted value.
    """
    if isinstance(value, str):
        net, host_bits = _parse_text(value)
        if host_bits and strict:
            raise _Invalid(f"host bits set (the network address is {_q(str(net))})")
        return net, host_bits
    if allow_objects and isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        # Network objects cannot carry host bits: their constructor already
        # either rejected or masked them.
        return _check_network_obj(value), False
    expected = "a CIDR string or network object" if allow_objects else "a string"
    raise _Invalid(f"expected {expected}, got {type(value).__name__}")


def _coerce_labelled(value: Any, strict: bool, label: str,
                     normalized: list[tuple[str, Any, Network]], suffix: str = "") -> Network:
    try:
        net, host_bits = _coerce(value, strict)
    except _Invalid as exc:
        raise ValueError(f"{label} {_q(value)}{suffix}: {exc}") from None
    if host_bits:
        normalized.append((label, value, net))
    return net


def _normalized_warning(normalized: list[tuple[str, Any, Network]]) -> CIDRNormalizedWarning:
    parts = [f"{label} {_q(orig)} -> {_q(str(net))}"
             for label, orig, net in normalized[:_MAX_WARN_EXAMPLES]]
    if len(normalized) == 1:
        label, orig, net = normalized[0]
        msg = (f"{label} {_q(orig)} has host bits set; "
               f"normalised to {_q(str(net))}")
    else:
        msg = (f"{len(normalized)} CIDRs had host bits set and were normalised: "
               + ", ".join(parts))
        if len(normalized) > _MAX_WARN_EXAMPLES:
            msg += f", ... ({len(normalized) - _MAX_WARN_EXAMPLES} more)"
    return CIDRNormalizedWarning(msg, [(orig, net) for _, orig, net in normalized])


def parse_cidr(text: str, *, strict: bool = False) -> Network:
    """Parse ``text`` as an IPv4 or IPv6 CIDR (or bare address).

    A bare address becomes a /32 or /128.  If host bits are set the result
    is normalised to the network address and a
    :class:`CIDRNormalizedWarning` is emitted, unless ``strict`` is true, in
    which case that is an error.  Raises :class:`ValueError` (quoting
    ``text``) for anything else that is not a valid CIDR, including
    non-string input; see the module docstring for the exact rules.
    """
    normalized: list[tuple[str, Any, Network]] = []
    try:
        if not isinstance(text, str):
            raise _Invalid(f"expected a string, got {type(text).__name__}")
        net, host_bits = _coerce(text, strict, allow_objects=False)
    except _Invalid as exc:
        raise ValueError(f"CIDR {_q(text)}: {exc}") from None
    if host_bits:
        normalized.append(("CIDR", text, net))
        warnings.warn(_normalized_warning(normalized), stacklevel=2)
    return net


# --------------------------------------------------------------------------
# vectorised dotted-quad parsing
# --------------------------------------------------------------------------

def _fast_v4(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised parse of dotted-quad CIDR strings, each at most 18 chars.

    Returns ``(ok, prefixlen, raw_addr)``.  Rows that are not well-formed
    are merely flagged, never reported: callers hand them to the exact
    parser so that error messages (and their order) stay identical.
    """
    m = len(texts)
    width = _MAX_V4_TEXT
    try:
        chars = np.array(texts, dtype=f"S{width}").view(np.uint8).reshape(m, width)
    except UnicodeEncodeError:
        # Non-ASCII text is never valid but must still reach the exact parser
        # for its message; clamping code points keeps it invalid here.
        wide = np.array(texts, dtype=f"U{width}").view(np.uint32).reshape(m, width)
        chars = np.minimum(wide, 255).astype(np.uint8)
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=m)
    inside = np.arange(width)[None, :] < lens[:, None]
    d = chars - np.uint8(48)                   # wraps for chars < 48: never <= 9
    is_sep = inside & ((chars == 46) | (chars == 47))
    # NULs (inside the string) and every other character are rejected here.
    ok = ~np.any(inside & (d > 9) & ~is_sep, axis=1)

    # Separator positions, row-major so each row's are in string order.
    # Everything after this is per-row gathers of m elements, not per-char.
    sep_row, sep_col = np.nonzero(is_sep)
    nsep = np.bincount(sep_row, minlength=m)
    ok &= (nsep == 3) | (nsep == 4)
    offsets = np.cumsum(nsep) - nsep
    top = max(len(sep_col) - 1, 0)
    base = np.arange(m, dtype=np.int64) * width
    flat_c = chars.reshape(-1)
    flat_d = d.reshape(-1)

    def sep_at(k: int) -> np.ndarray:
        return sep_col[np.minimum(offsets + k, top)] if len(sep_col) else np.zeros(m, np.int64)

    s = [sep_at(k) for k in range(4)]
    has_slash = nsep == 4
    for k in range(3):
        ok &= flat_c[base + s[k]] == 46
    ok &= ~has_slash | (flat_c[base + s[3]] == 47)

    def field(start: np.ndarray, stop: np.ndarray, max_digits: int) -> np.ndarray:
        """Decimal value of chars[start:stop]; clears ok if malformed."""
        nonlocal ok
        n = stop - start
        lead = flat_d[base + np.minimum(start, width - 1)]
        ok &= (n >= 1) & (n <= max_digits) & ~((n > 1) & (lead == 0))
        value = np.zeros(m, dtype=np.int64)
        for k in range(1, max_digits + 1):
            digit = flat_d[base + np.maximum(stop - k, 0)].astype(np.int64)
            value += (n >= k) * digit * 10 ** (k - 1)
        return value

    raw = np.zeros(m, dtype=np.uint64)
    start = np.zeros(m, dtype=np.int64)
    for k in range(4):
        stop = s[k] if k < 3 else np.where(has_slash, s[3], lens)
        octet = field(start, stop, 3)
        ok &= octet <= 255
        raw = (raw << np.uint64(8)) | octet.astype(np.uint64)
        start = stop + 1
    ok_octets = ok.copy()
    plen = field(start, lens, 2)
    # Rows without a slash have no prefix field: its verdict does not apply.
    ok = np.where(has_slash, ok & (plen <= 32), ok_octets)
    plen = np.where(ok & has_slash, plen, 32)
    raw = np.where(ok, raw, np.uint64(0))
    return ok, plen, raw


def _v4_mask(plen: np.ndarray) -> np.ndarray:
    return (np.uint64(0xFFFFFFFF) << (32 - plen).astype(np.uint64)) & np.uint64(0xFFFFFFFF)


def _fast_v4_scan(items: list[Any], strict: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fast-parse the dotted-quad strings among ``items``.

    Returns ``(idx, prefixlen, net_addr, host_bits)`` for the items the fast
    path accepted, ``idx`` ascending.  Everything else (IPv6, objects,
    malformed text, and with ``strict`` host-bit values) is left for the
    exact parser, which then raises in input order.
    """
    cand = [i for i, x in enumerate(items) if isinstance(x, str) and len(x) <= _MAX_V4_TEXT]
    if not cand:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(np.uint64), empty.astype(bool)
    ok, plen, raw = _fast_v4([items[i] for i in cand])
    net = raw & _v4_mask(plen)
    host = net != raw
    if strict:
        ok &= ~host
    idx = np.asarray(cand, dtype=np.int64)[ok]
    return idx, plen[ok], net[ok], host[ok]


# --------------------------------------------------------------------------
# except arithmetic
# --------------------------------------------------------------------------

def _range_to_prefixes(first: int, last: int, bits: int) -> Iterable[tuple[int, int]]:
    """Minimal aligned-block decomposition of the inclusive range [first, last]."""
    while first <= last:
        # The block starting at `first` is limited both by its alignment and
        # by how much of the range is left; greedy largest-first is optimal.
        align = (first & -first).bit_length() - 1 if first else bits
        span = (last - first + 1).bit_length() - 1
        size = min(align, span)
        yield first, bits - size
        first += 1 << size


def _exclude(cidr: Any, excepts: Any, strict: bool, cidr_label: str,
             except_label, index_suffix) -> tuple[list[Network], list]:
    normalized: list[tuple[str, Any, Network]] = []
    base = _coerce_labelled(cidr, strict, cidr_label, normalized)
    if isinstance(excepts, (str, bytes)) or not isinstance(excepts, Iterable):
        # A bare string would otherwise be iterated character by character.
        raise ValueError(
            f"{except_label(None)}: expected a list of CIDRs, got {type(excepts).__name__}")
    items = list(excepts)
    bits = base.max_prefixlen
    base_first = int(base.network_address)
    base_last = int(base.broadcast_address)
    base_plen = base.prefixlen
    fast_at: dict[int, tuple[int, int, bool]] = {}
    if base.version == 4:
        # Thousands of excepts are typical for generated policies; the
        # vectorised parser avoids building an ipaddress object per except.
        f_idx, f_plen, f_net, f_host = _fast_v4_scan(items, strict)
        fast_at = dict(zip(f_idx.tolist(), zip(f_net.tolist(), f_plen.tolist(), f_host.tolist())))
    intervals: list[tuple[int, int]] = []
    for i, raw in enumerate(items):
        label = except_label(i)
        hit = fast_at.get(i)
        if hit is not None:
            first, plen, host = hit
            if host:
                normalized.append((label, raw, ipaddress.IPv4Network((first, plen))))
        else:
            net = _coerce_labelled(raw, strict, label, normalized, index_suffix(i))
            if net.version != base.version:
                raise ValueError(
                    f"{label} {_q(raw)} is IPv{net.version} but {cidr_label} "
                    f"{_q(cidr)} is IPv{base.version}{index_suffix(i)}")
            first, plen = int(net.network_address), net.prefixlen
        if plen < base_plen or not base_first <= first <= base_last:
            raise ValueError(
                f"{label} {_q(raw)} is not inside {cidr_label} {_q(cidr)}{index_suffix(i)}")
        intervals.append((first, first + (1 << (bits - plen)) - 1))

    # Merge the excepts into disjoint intervals, then emit the gaps between
    # them.  Every result prefix lies inside one gap and gaps are separated
    # by excluded addresses, so per-gap minimal decompositions are globally
    # minimal.  O(n log n) regardless of how the excepts overlap.
    intervals.sort()
    net_cls = type(base)
    out: list[Network] = []
    cursor = base_first
    for first, last in intervals:
        if first > cursor:
            out.extend(net_cls((a, p)) for a, p in _range_to_prefixes(cursor, first - 1, bits))
        if last + 1 > cursor:
            cursor = last + 1
    if cursor <= base_last:
        out.extend(net_cls((a, p)) for a, p in _range_to_prefixes(cursor, base_last, bits))
    return out, normalized


def exclude(cidr: Any, excepts: Iterable[Any], *, strict: bool = False) -> list[Network]:
    """Return the minimal sorted list of prefixes covering ``cidr`` minus ``excepts``.

    ``cidr`` and each except may be a CIDR string or a network object;
    strings follow :func:`parse_cidr` (``strict`` is passed through).
    Excepts may overlap, repeat or equal ``cidr`` (giving ``[]``).  Raises
    :class:`ValueError` naming the value for unparsable input, an except of
    the other address family, or an except not inside ``cidr``.  Runs in
    O(n log n) in the number of excepts.
    """
    out, normalized = _exclude(
        cidr, excepts, strict, "cidr",
        lambda i: "except" if i is not None else "excepts",
        lambda i: f" (excepts[{i}])")
    if normalized:
        warnings.warn(_normalized_warning(normalized), stacklevel=2)
    return out


def ipblock_prefixes(ipblock: Mapping[str, Any], *, strict: bool = False) -> list[str]:
    """Expand a NetworkPolicy ``ipBlock`` into the prefixes it allows, as strings.

    ``ipblock`` is ``{"cidr": ..., "except": [...]}`` with ``except``
    optional (``None`` counts as absent).  Unknown fields are rejected
    rather than ignored, because silently dropping a misspelt ``except``
    would widen the policy.  Errors name the field, e.g.
    ``ipBlock.except[1] "10.96.0.0/12" is not inside ipBlock.cidr ...``.
    """
    if not isinstance(ipblock, Mapping):
        raise ValueError(f"ipBlock: expected a mapping, got {type(ipblock).__name__}")
    unknown = sorted(str(k) for k in ipblock if k not in ("cidr", "except"))
    if unknown:
        raise ValueError(f"ipBlock: unknown field {_q(unknown[0])}")
    if ipblock.get("cidr") is None:
        raise ValueError("ipBlock.cidr: required field is missing")
    excepts = ipblock.get("except")
    if excepts is None:
        excepts = []
    out, normalized = _exclude(
        ipblock["cidr"], excepts, strict, "ipBlock.cidr",
        lambda i: f"ipBlock.except[{i}]" if i is not None else "ipBlock.except",
        lambda i: "")
    if normalized:
        warnings.warn(_normalized_warning(normalized), stacklevel=2)
    return [str(n) for n in out]


# --------------------------------------------------------------------------
# unified (v4-mapped) address space and LPM keys
# --------------------------------------------------------------------------

def _unified_key(net: Network) -> tuple[int, bytes]:
    if net.version == 4:
        return net.prefixlen + 96, _V4_MAPPED_PREFIX + net.network_address.packed
    return net.prefixlen, net.network_address.packed


def lpm_keys(prefixes: Iterable[Any], *, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Bulk-convert CIDRs into unified-address-space LPM trie keys.

    Returns ``(prefixlen, addr)``: a ``uint32`` array of shape ``(n,)`` and a
    ``uint8`` array of shape ``(n, 16)``.  IPv6 prefixes are used as-is;
    IPv4 ones become ``::ffff:a.b.c.d`` with ``prefixlen + 96``.  Strings
    follow :func:`parse_cidr`: host bits are masked off and reported in a
    single :class:`CIDRNormalizedWarning` for the whole call (or rejected
    with ``strict=True``).  Dotted-quad strings take a vectorised numpy path,
    so 100k+ IPv4 entries are cheap; everything else goes through
    :mod:`ipaddress`.  Errors name the index and value,
    e.g. ``prefixes[3] "10.0.0.0/33": ...``.
    """
    if isinstance(prefixes, (str, bytes)):
        raise ValueError(f"prefixes: expected a sequence of CIDRs, got {type(prefixes).__name__}")
    items = list(prefixes)
    n = len(items)
    out_plen = np.zeros(n, dtype=np.uint32)
    out_addr = np.zeros((n, 16), dtype=np.uint8)
    slow = np.ones(n, dtype=bool)
    f_idx, f_plen, f_net, f_host = _fast_v4_scan(items, strict)
    out_plen[f_idx] = f_plen.astype(np.uint32) + 96
    out_addr[f_idx, 10:12] = 0xFF
    out_addr[f_idx, 12:16] = f_net.astype(">u4").view(np.uint8).reshape(-1, 4)
    slow[f_idx] = False
    fast_host = f_idx[f_host].tolist()

    normalized: list[tuple[int, tuple[str, Any, Network]]] = []
    for i in fast_host:
        p = int(out_plen[i]) - 96
        normalized.append((i, (f"prefixes[{i}]", items[i],
                               ipaddress.IPv4Network((bytes(out_addr[i, 12:]), p)))))
    for i in np.flatnonzero(slow).tolist():
        label = f"prefixes[{i}]"
        recs: list[tuple[str, Any, Network]] = []
        netw = _coerce_labelled(items[i], strict, label, recs)
        if recs:
            normalized.append((i, recs[0]))
        p, key = _unified_key(netw)
        out_plen[i] = p
        out_addr[i] = np.frombuffer(key, dtype=np.uint8)
    if normalized:
        normalized.sort(key=lambda r: r[0])
        warnings.warn(_normalized_warning([r for _, r in normalized]), stacklevel=2)
    return out_plen, out_addr


def _as_16_bytes(value: Any, what: str) -> bytes:
    try:
        if isinstance(value, np.ndarray):
            if value.dtype != np.uint8:
                raise TypeError
            data = value.tobytes()
        else:
            data = bytes(memoryview(value))
    except TypeError:
        raise ValueError(f"{what} {_q(value)}: expected 16 bytes") from None
    if len(data) != 16:
        raise ValueError(f"{what} {_q(value)}: expected 16 bytes, got {len(data)}")
    return data


def from_lpm_key(prefixlen: int, addr16: Any, *, strict: bool = False) -> Network:
    """Inverse of :func:`lpm_keys` for one key.

    ``addr16`` is 16 bytes (bytes-like or a ``uint8`` array).  A key inside
    ``::ffff:0:0/96`` with ``prefixlen >= 96`` becomes an
    :class:`~ipaddress.IPv4Network`; anything else an IPv6 network.  Bits
    beyond ``prefixlen`` (the kernel trie ignores but stores them) are
    masked with a :class:`CIDRNormalizedWarning`, or rejected if ``strict``.
    """
    data = _as_16_bytes(addr16, "LPM key address")
    try:
        plen = int(prefixlen)
    except (TypeError, ValueError):
        raise ValueError(f"LPM key prefixlen {_q(prefixlen)}: not an integer") from None
    if plen != prefixlen or not 0 <= plen <= 128:
        raise ValueError(f"LPM key prefixlen {_q(prefixlen)}: out of range 0..128")
    value = int.from_bytes(data, "big")
    mask = (_ALL_ONES_128 << (128 - plen)) & _ALL_ONES_128
    masked = value & mask
    if plen >= 96 and masked >> 32 == 0xFFFF:
        net: Network = ipaddress.IPv4Network((masked & 0xFFFFFFFF, plen - 96))
    else:
        net = ipaddress.IPv6Network((masked, plen))
    if masked != value:
        shown = f"{ipaddress.IPv6Address(value)}/{plen}"
        if strict:
            raise ValueError(f"LPM key {_q(shown)}: host bits set (the network is {_q(str(net))})")
        warnings.warn(_normalized_warning([("LPM key", shown, net)]), stacklevel=2)
    return net


def _parse_address(ip: Any) -> Address:
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        addr = ip
    elif isinstance(ip, str):
        try:
            addr = ipaddress.IPv6Address(ip) if ":" in ip else ipaddress.IPv4Address(ip)
        except ValueError as exc:
            raise ValueError(f"address {_q(ip)}: {exc}") from None
    else:
        raise ValueError(f"address {_q(ip)}: expected a string or address object, "
                         f"got {type(ip).__name__}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise ValueError(f"address {_q(str(ip))}: IPv6 zone IDs are not supported")
    return addr


def unified_addr(ip: Any) -> bytes:
    """Return the 16-byte unified form of ``ip`` (IPv4 as ``::ffff:a.b.c.d``).

    ``ip`` is an address string or :mod:`ipaddress` address object; invalid
    input raises :class:`ValueError` quoting it.
    """
    addr = _parse_address(ip)
    if addr.version == 4:
        return _V4_MAPPED_PREFIX + addr.packed
    return addr.packed


def from_unified(b: Any) -> Address:
    """Inverse of :func:`unified_addr`: v4-mapped bytes give an IPv4Address."""
    data = _as_16_bytes(b, "unified address")
    if data[:12] == _V4_MAPPED_PREFIX:
        return ipaddress.IPv4Address(data[12:])
    return ipaddress.IPv6Address(data)


def longest_prefix_match(prefixes_to_values: Mapping[Any, Any], ip: Any) -> Any:
    """Reference longest-prefix match; returns the value or ``None``.

    Keys are CIDR strings or network objects and ``ip`` an address (string,
    address object or 16 unified bytes).  Matching happens in the unified
    address space, exactly like the kernel trie this is an oracle for: so
    ``::/0`` matches IPv4 addresses too.  Two keys that map to the same
    trie key (e.g. ``"10.0.0.0/8"`` and ``"::ffff:10.0.0.0/104"``) are a
    :class:`ValueError`, since the map could hold only one of them.
    Deliberately a plain linear scan: it must be obviously correct.
    """
    if isinstance(ip, (bytes, bytearray, memoryview, np.ndarray)):
        target = int.from_bytes(_as_16_bytes(ip, "address"), "big")
    else:
        target = int.from_bytes(unified_addr(ip), "big")
    normalized: list[tuple[str, Any, Network]] = []
    seen: dict[tuple[int, int], Any] = {}
    best_len = -1
    best_value = None
    for key, value in prefixes_to_values.items():
        net = _coerce_labelled(key, False, "prefix", normalized)
        plen, packed = _unified_key(net)
        start = int.from_bytes(packed, "big")
        if (plen, start) in seen:
            raise ValueError(
                f"prefixes {_q(seen[(plen, start)])} and {_q(key)} map to the same LPM key")
        seen[(plen, start)] = key
        shift = 128 - plen
        if target >> shift == start >> shift and plen > best_len:
            best_len, best_value = plen, value
    if normalized:
        warnings.warn(_normalized_warning(normalized), stacklevel=2)
    return best_value
