# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired Service state -> the socket LB's maps (mc_svc, mc_backends, mc_revnat, mc_maglev).

``build_tables(services, backend_ids)`` is pure: it validates and lays the
services out as numpy arrays of the layout.h dtypes. ``ServiceDatapath.apply``
reconciles the pinned maps with them through ``BpfMap.reconcile`` (batched),
ordered so that a frontend never points at a missing backend, revnat entry or
Maglev table: new/changed backends, revnat and Maglev tables first, then the
service entries (slots before their master, so a grown count only ever covers
written slots), then deletes of what is no longer referenced.

Speed: every address is parsed once per apply (``inet_pton``, falling back to
``ipaddress`` for anything it rejects). ``apply`` first checks all backends of
all Services in bulk (``map``/``zip`` over C callables, no Python frame per
backend) and fills the records column-wise with numpy; only when something is
wrong does it redo the check Service by Service, so the error names the first
bad Service and field exactly as before.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, compress, repeat
from operator import attrgetter, not_
from socket import AF_INET, AF_INET6, inet_pton
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import layout
from ..bpf import MeshMaps
from ..bpf.maps import ReconcileResult, concat_records
from .._closing import Closing
from ..controllers.model import (F_ETP_LOCAL, F_EXTERNAL, F_ITP_LOCAL, F_NODEPORT, F_SRC_RANGES,  # noqa: F401
                                 F_TWO_SCOPES, FLAG_NAMES, FRONTEND_FLAGS, SCOPE_EXT, SCOPE_INT, Backend, Frontend,
                                 Service)

PROTOS = {"tcp": 6, "udp": 17, 6: 6, 17: 17}
M = None  # MC_MAGLEV_M, read from the layout on first use
_MAX_SLOTS = 65535  # mc_svc_key.slot and mc_svc_value.count are __u16

Ident = Tuple[bytes, int, int]  # (addr16, port, proto): a backend's identity


class ServiceError(ValueError):
    pass


_V4MAPPED = b"\0" * 10 + b"\xff\xff"
_pton4, _pton6 = partial(inet_pton, AF_INET), partial(inet_pton, AF_INET6)


def _addr16_slow(ip) -> bytes:
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return _V4MAPPED + a.packed
    return a.packed


def _addr16(ip) -> bytes:
    """The 16-byte unified address (IPv4 as ::ffff:a.b.c.d) of ``ip``, as
    ``ipaddress.ip_address`` reads it; ValueError when it is not an address.

    Text goes through ``inet_pton`` (C, ~30x cheaper than ``ipaddress``),
    whose accepted set is a subset of ``ipaddress``'s with the same bytes
    (tests/pure/test_services.py checks this); whatever it rejects (scoped
    IPv6, non-str input, garbage) is decided by ``ipaddress`` itself.
    """
    if type(ip) is str:
        try:
            if ":" in ip:
                return _pton6(ip)
            return _V4MAPPED + _pton4(ip)
        except (OSError, ValueError):
            pass
    return _addr16_slow(ip)


def _addr_port(who: str, what: str, ip, port) -> bytes:
    """Check one address and port; the 16-byte address."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ServiceError(f"{who}: {what} port {port} out of range")
    try:
        return _addr16(ip)
    except ValueError:
        raise ServiceError(f"{who}: {what} ip {ip!r} is not an address") from None


def _src_rows(svc: Service, who: str) -> List[Tuple[int, bytes]]:
    """mc_lb_src_ranges (prefixlen, addr16) of ``svc``'s source ranges: the LPM prefix counts the svc_id's
    32 bits and the range's prefix in the 16-byte form (an IPv4 /p is a /96+p)."""
    out = []
    for i, r in enumerate(svc.src_ranges or ()):
        try:
            n = r if isinstance(r, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else ipaddress.ip_network(r)
        except (TypeError, ValueError):
            raise ServiceError(f"{who}: src_ranges[{i}] {r!r} is not a network (host bits must be zero)") from None
        if n.version == 4:
            out.append((32 + 96 + n.prefixlen, _V4MAPPED + n.network_address.packed))
        else:
            out.append((32 + n.prefixlen, n.network_address.packed))
    return out


def _parse_front(svc: Service, who: str) -> Tuple[int, List[bytes]]:
    """Check svc_id and frontends: (proto, frontend addr16s)."""
    if not isinstance(svc.svc_id, int) or not 0 < svc.svc_id < 2 ** 32:
        raise ServiceError(f"{who}: svc_id {svc.svc_id!r} out of range (1..2^32-1)")
    if not svc.frontends:
        raise ServiceError(f"{who}: no frontends")
    protos = set()
    fe_addrs = []
    for i, fe in enumerate(svc.frontends):
        p = PROTOS.get(fe.proto.lower() if isinstance(fe.proto, str) else fe.proto)
        if p is None:
            raise ServiceError(f"{who}: frontend {i} protocol {fe.proto!r} not tcp/udp")
        if type(fe.flags) is not int or fe.flags & ~FRONTEND_FLAGS:
            raise ServiceError(f"{who}: frontend {i} flags {fe.flags!r} not a set of MC_SVC_F_NODEPORT.."
                               "MC_SVC_F_ITP_LOCAL bits")
        if fe.scope not in (SCOPE_EXT, SCOPE_INT) or type(fe.scope) is not int:
            raise ServiceError(f"{who}: frontend {i} scope {fe.scope!r} is not 0 (EXT) or 1 (INT)")
        protos.add(p)
        fe_addrs.append(_addr_port(who, "frontend", fe.ip, fe.port))
    if len(protos) > 1:
        raise ServiceError(f"{who}: frontends mix protocols (one Service per protocol)")
    return protos.pop(), fe_addrs


def _parse_tail(svc: Service, who: str) -> None:
    """The checks after the backends'."""
    if svc.affinity_timeout is not None and not 0 < svc.affinity_timeout < 2 ** 32:
        raise ServiceError(f"{who}: affinity_timeout {svc.affinity_timeout} out of range")
    _src_rows(svc, who)
    if len(svc.backends) > _MAX_SLOTS:
        raise ServiceError(f"{who}: {len(svc.backends)} backends, more than the {_MAX_SLOTS} slots a frontend has")


def _parse(svc: Service) -> Tuple[int, List[bytes], List[Ident]]:
    """Validate ``svc``, errors naming the Service and the field, in a fixed
    order (svc_id, frontends, backends in order, repeats, affinity), and
    parse its addresses: (proto, frontend addr16s, backend identities)."""
    who = f"Service {svc.name}"
    proto, fe_addrs = _parse_front(svc, who)
    idents = []
    for i, be in enumerate(svc.backends):
        ip, port = be.ip, be.port
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ServiceError(f"{who}: backend {i} port {port} out of range")
        try:
            idents.append((_addr16(ip), port, proto))
        except ValueError:
            raise ServiceError(f"{who}: backend {i} ip {ip!r} is not an address") from None
    # equal Backends have equal identities, so distinct identities prove
    # there is no repeat; only when identities repeat (e.g. "10.0.0.1" and
    # "::ffff:10.0.0.1") do the Backends themselves decide
    if len(set(idents)) != len(idents) and len(set(svc.backends)) != len(svc.backends):
        raise ServiceError(f"{who}: backends repeat")
    _parse_tail(svc, who)
    return proto, fe_addrs, idents


_get_ip, _get_port, _get_proto = attrgetter("ip"), attrgetter("port"), attrgetter("proto")
_get_flags, _get_scope, _get_src = attrgetter("flags"), attrgetter("scope"), attrgetter("src_ranges")
_get_svc_id, _get_frontends, _get_backends = attrgetter("svc_id"), attrgetter("frontends"), attrgetter("backends")
_get_affinity = attrgetter("affinity_timeout")


def _ints_in(xs: List, lo: int, hi: int) -> bool:
    """All plain ints with lo <= x < hi (bool and the like: no, ask the exact path)."""
    return not xs or (set(map(type, xs)) == {int} and lo <= min(xs) and max(xs) < hi)


def _addrs_bulk(ips: List) -> Optional[List[bytes]]:
    """_addr16 of each, when all are text inet_pton reads; else None."""
    try:
        if ":" not in "\n".join(ips):  # TypeError unless all are str
            return list(map(_V4MAPPED.__add__, map(_pton4, ips)))
        v6 = list(map(str.__contains__, ips, repeat(":")))
        if all(v6):
            return list(map(_pton6, ips))
        mask = np.array(v6, bool)
        out = np.empty(len(ips), object)
        out[mask] = list(map(_pton6, compress(ips, v6)))
        out[~mask] = list(map(_V4MAPPED.__add__, map(_pton4, compress(ips, map(not_, v6)))))
        return out.tolist()
    except (OSError, ValueError, TypeError):  # scoped IPv6, not an address, not text
        return None


class _Parsed:
    """Services checked, every address parsed once; frontends and backends
    flat, in order."""
    __slots__ = ("svcs", "protos", "fe_counts", "fe_addr", "fe_port", "counts", "idents", "bids", "fe_flags",
                 "fe_scope")

    def __init__(self, svcs, protos, fe_counts, fe_addr, fe_port, counts, idents, bids=None, fe_flags=None,
                 fe_scope=None):
        self.svcs: List[Service] = svcs
        self.protos: List[int] = protos        # per Service
        self.fe_counts: List[int] = fe_counts  # frontends per Service
        self.fe_addr: List[bytes] = fe_addr    # every Service's frontends' addr16, flat
        self.fe_port: List[int] = fe_port      # and ports
        self.counts: List[int] = counts        # backends per Service
        self.idents: List[Ident] = idents      # every Service's backends, flat
        self.bids: Optional[List[int]] = bids  # their ids, flat
        self.fe_flags: List[int] = fe_flags if fe_flags is not None else []  # every frontend's own flags, flat
        self.fe_scope: List[int] = fe_scope if fe_scope is not None else []  # and scope

    @classmethod
    def empty(cls) -> "_Parsed":
        return cls([], [], [], [], [], [], [], [], [], [])

    def add(self, svc: Service, proto: int, fe_addrs: List[bytes], idents: List[Ident]) -> None:
        self.svcs.append(svc)
        self.protos.append(proto)
        self.fe_counts.append(len(fe_addrs))
        self.fe_addr += fe_addrs
        self.fe_port += [fe.port for fe in svc.frontends]
        self.fe_flags += [fe.flags for fe in svc.frontends]
        self.fe_scope += [fe.scope for fe in svc.frontends]
        self.counts.append(len(idents))
        self.idents += idents


def _parse_one_by_one(services: Sequence[Service], assign) -> _Parsed:
    """The exact, Service-by-Service check; ``assign(idents)`` (ids for one
    Service's backends) runs after each Service passed, before the next."""
    p = _Parsed.empty()
    for svc in services:
        proto, fe_addrs, idents = _parse(svc)
        p.add(svc, proto, fe_addrs, idents)
        p.bids += assign(idents)
    return p


def _parse_bulk(services: Sequence[Service]) -> Optional[_Parsed]:
    """Every check of ``_parse`` for all Services at once, each loop in C,
    when nothing is wrong; None when anything is (or is unusual, such as a
    bool port or scoped IPv6: the exact path decides those)."""
    svcs = services if isinstance(services, list) else list(services)
    if not svcs:
        return _Parsed.empty()
    if not _ints_in(list(map(_get_svc_id, svcs)), 1, 2 ** 32):
        return None
    try:
        fl = list(map(_get_frontends, svcs))
        fe_counts = list(map(len, fl))
        fes = list(chain.from_iterable(fl))
        pnums = list(map(PROTOS.get, map(str.lower, map(_get_proto, fes))))
    except TypeError:  # frontends None, a numeric proto, ...
        return None
    if min(fe_counts) < 1 or None in pnums:
        return None
    if max(fe_counts) == 1:
        protos = pnums
    else:
        protos, o = [], 0
        for c in fe_counts:
            if len(set(pnums[o:o + c])) != 1:
                return None
            protos.append(pnums[o])
            o += c
    fe_port = list(map(_get_port, fes))
    fe_addr = _addrs_bulk(list(map(_get_ip, fes))) if _ints_in(fe_port, 1, 65536) else None
    if fe_addr is None:
        return None
    fe_flags, fe_scope = list(map(_get_flags, fes)), list(map(_get_scope, fes))
    if not _ints_in(fe_flags, 0, 256) or any(map((~FRONTEND_FLAGS & 0xff).__and__, fe_flags)) \
            or not _ints_in(fe_scope, 0, 2):
        return None
    lists = list(map(_get_backends, svcs))
    counts = list(map(len, lists))
    if max(counts) > _MAX_SLOTS:
        return None
    bes = list(chain.from_iterable(lists))
    ports = list(map(_get_port, bes))
    addrs = _addrs_bulk(list(map(_get_ip, bes))) if _ints_in(ports, 1, 65536) else None
    if addrs is None:
        return None
    idents = list(zip(addrs, ports, chain.from_iterable(map(repeat, protos, counts))))
    if len(set(idents)) != len(idents):  # a backend in several Services, or a repeat
        o = 0
        for svc, c in zip(svcs, counts):
            if len(set(idents[o:o + c])) != c and len(set(svc.backends)) != c:
                return None
            o += c
    if not _ints_in([a for a in map(_get_affinity, svcs) if a is not None], 1, 2 ** 32):
        return None
    try:
        for svc in compress(svcs, map(_get_src, svcs)):
            _src_rows(svc, "")
    except ServiceError:
        return None
    return _Parsed(svcs, protos, fe_counts, fe_addr, fe_port, counts, idents, None, fe_flags, fe_scope)


def _h(s: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8, person=salt).digest(), "little")


def maglev_table(backends: Sequence[Tuple[str, int]], m: Optional[int] = None,
                 previous: Optional[np.ndarray] = None) -> np.ndarray:
    """Maglev lookup table (Eisenbud et al., NSDI'16): ``m`` slots, each naming
    the id of one of ``backends`` (a list of (key string, id)). Backends are
    hashed by their address, not their id, so any node computes the same table.

    ``previous`` (the table in the map now): when the backend set only shrank,
    every slot of a surviving backend stays where it is and only the removed
    backends' slots are refilled, in Maglev preference order with each
    survivor capped at ceil(m/n) slots. So a removal moves exactly the clients
    of the removed backends, which plain Maglev only does approximately. Any
    addition rebuilds from scratch (plain Maglev's near-minimal disruption).
    """
    m = m or layout.constants()["MC_MAGLEV_M"]
    out = np.zeros(m, np.uint32)
    if not backends:
        return out
    keys = sorted(backends)
    n = len(keys)
    off = [_h(k, b"mc-maglev-off") % m for k, _ in keys]
    skip = [_h(k, b"mc-maglev-skip") % (m - 1) + 1 for k, _ in keys]
    nxt = [0] * n
    owner = [-1] * m
    count = [0] * n
    filled = 0
    cap = m  # no cap for a fresh build
    if previous is not None and len(previous) == m:
        index = {bid: i for i, (_, bid) in enumerate(keys)}
        prev_ids = {int(b) for b in previous}
        if set(index) <= prev_ids and prev_ids - set(index):
            for c, bid in enumerate(previous.tolist()):
                i = index.get(int(bid))
                if i is not None:
                    owner[c] = i
                    count[i] += 1
                    filled += 1
            cap = -(-m // n)
    while filled < m:
        for i in range(n):
            if count[i] >= cap:
                continue
            c = (off[i] + nxt[i] * skip[i]) % m
            while owner[c] >= 0:
                nxt[i] += 1
                c = (off[i] + nxt[i] * skip[i]) % m
            owner[c] = i
            count[i] += 1
            nxt[i] += 1
            filled += 1
            if filled == m:
                break
    out[:] = [keys[o][1] for o in owner]
    return out


@dataclass
class ServiceTables:
    svc_keys: np.ndarray
    svc_values: np.ndarray
    backend_keys: np.ndarray
    backend_values: np.ndarray
    revnat_keys: np.ndarray
    revnat_values: np.ndarray
    maglev_keys: np.ndarray
    maglev_values: np.ndarray
    pairs: set = field(default_factory=set)  # (svc_id, backend_id) in the desired state
    src_keys: Optional[np.ndarray] = None     # mc_lb_src_ranges
    src_values: Optional[np.ndarray] = None


def backend_identity(be: Backend, proto: int) -> Ident:
    return (_addr16(be.ip), be.port, proto)


def build_tables(services: Sequence[Service], backend_ids: Dict[Ident, int],
                 previous_maglev: Optional[Dict[int, np.ndarray]] = None) -> ServiceTables:
    """Pure: services -> arrays for every map. ``backend_ids`` maps
    (addr16, port, proto) to the stable id of each backend; all must be present.
    ``previous_maglev``: svc_id -> the Maglev table programmed now (see
    maglev_table)."""
    seen_id: Dict[int, str] = {}
    seen_fe: Dict[tuple, str] = {}
    p = _Parsed.empty()
    for svc in services:  # each Service's checks before the next's, as always
        proto, fe_addrs, idents = _parse(svc)
        _check_svc_id(svc, seen_id)
        bids = [backend_ids[i] for i in idents]
        _check_frontends(svc, proto, fe_addrs, seen_fe)
        p.add(svc, proto, fe_addrs, idents)
        p.bids += bids
    return _tables(p, previous_maglev)


def _check_svc_id(svc: Service, seen_id: Dict[int, str]) -> None:
    sid = svc.svc_id
    if sid in seen_id:
        raise ServiceError(f"Service {svc.name}: svc_id {sid} already used by Service {seen_id[sid]}")
    seen_id[sid] = svc.name


def _check_frontends(svc: Service, proto: int, fe_addrs: List[bytes], seen_fe: Dict[tuple, str]) -> None:
    for fe, addr in zip(svc.frontends, fe_addrs):
        fk = (addr, fe.port, proto, fe.scope)
        if fk in seen_fe:
            where = "" if fe.scope == SCOPE_EXT else " (scope INT)"
            raise ServiceError(f"Service {svc.name}: frontend {fe.ip}:{fe.port}/{fe.proto}{where} already used by "
                               f"Service {seen_fe[fk]}")
        seen_fe[fk] = svc.name


def _u8x16(chunks: List[bytes]) -> np.ndarray:
    """(n, 16) uint8 array of n 16-byte strings."""
    return np.frombuffer(b"".join(chunks), np.uint8).reshape(len(chunks), 16)


def _tables(p: _Parsed, previous_maglev: Optional[Dict[int, np.ndarray]]) -> ServiceTables:
    """The map arrays of parsed Services with backend ids. Python touches each
    Service and frontend once; the records are filled column-wise."""
    previous_maglev = previous_maglev or {}
    dt = layout.dtype_of
    svcs, counts, bids = p.svcs, p.counts, p.bids
    sids = [s.svc_id for s in svcs]
    fs = np.repeat(np.arange(len(svcs), dtype=np.int64), p.fe_counts)  # each frontend's Service
    protos = np.array(p.protos, np.int64)
    if len(set(sids)) != len(sids) or \
            len(set(zip(p.fe_addr, p.fe_port, protos[fs].tolist(), p.fe_scope))) != len(p.fe_addr):
        seen_id: Dict[int, str] = {}
        seen_fe: Dict[tuple, str] = {}
        o = 0
        for svc, proto, c in zip(svcs, p.protos, p.fe_counts):  # the first clash, in order
            _check_svc_id(svc, seen_id)
            _check_frontends(svc, proto, p.fe_addr[o:o + c], seen_fe)
            o += c
    sid = np.array(sids, np.int64)
    cnt = np.array(counts, np.int64)
    first = np.cumsum(cnt) - cnt  # each Service's first backend in the flat list
    maglev = []
    for si in [i for i, s in enumerate(svcs) if s.maglev and counts[i]]:
        svc, o = svcs[si], int(first[si])
        maglev.append((svc.svc_id, maglev_table(
            [(f"{ipaddress.ip_address(be.ip)}|{be.port}|{p.protos[si]}", bid)
             for be, bid in zip(svc.backends, bids[o:o + counts[si]])],
            previous=previous_maglev.get(svc.svc_id))))

    # mc_svc: per frontend, rows slot 1..count (its Service's backends in
    # order), then the master (slot 0): a batch applies in order
    reps = cnt[fs] + 1
    ends = np.cumsum(reps)
    total = int(ends[-1]) if len(fs) else 0
    master = ends - 1
    sk = np.zeros(total, dt("mc_svc_key"))
    sv = np.zeros(total, dt("mc_svc_value"))
    if total:
        pos = np.arange(total, dtype=np.int64) - np.repeat(ends - reps, reps)  # 0..count in each group
        flat_bids = np.array(bids + [0], np.int64)  # + a sentinel for the last master row
        sk["addr"] = np.repeat(_u8x16(p.fe_addr), reps, axis=0)
        sk["port"] = np.repeat(np.array(p.fe_port, np.int64), reps)
        sk["proto"] = np.repeat(protos[fs], reps)
        sk["scope"] = np.repeat(np.array(p.fe_scope, np.int64), reps)
        slot = pos + 1
        slot[master] = 0
        sk["slot"] = slot
        bcol = flat_bids[np.repeat(first[fs], reps) + pos]
        bcol[master] = 0
        sv["backend_id"] = bcol
        sv["svc_id"] = np.repeat(sid[fs], reps)
        flags = np.array([(1 if s.affinity_timeout else 0) | (2 if s.maglev else 0) for s in svcs], np.int64)
        aff = np.array([s.affinity_timeout or 0 for s in svcs], np.int64)
        sv["count"][master] = cnt[fs]
        sv["flags"][master] = flags[fs] | np.array(p.fe_flags, np.int64)
        sv["affinity_timeout"][master] = aff[fs]

    # mc_backends, by id (the last identity given an id wins, as a dict does)
    bes = dict(zip(bids, p.idents))
    nb = len(bes)
    bk = np.zeros(nb, dt("mc_backend_key"))
    bv = np.zeros(nb, dt("mc_backend"))
    if nb:
        bid = np.fromiter(bes, np.int64, nb)
        order = np.argsort(bid, kind="stable")
        idents = list(bes.values())
        bk["backend_id"] = bid[order]
        bv["addr"] = _u8x16([i[0] for i in idents])[order]
        bv["port"] = np.array([i[1] for i in idents], np.int64)[order]
        bv["proto"] = np.array([i[2] for i in idents], np.int64)[order]

    # mc_revnat: each Service's first frontend
    rk = np.zeros(len(svcs), dt("mc_revnat_key"))
    rv = np.zeros(len(svcs), dt("mc_revnat"))
    if svcs:
        fe0 = np.cumsum(p.fe_counts) - np.array(p.fe_counts)
        rk["svc_id"] = sid
        rv["addr"] = _u8x16(p.fe_addr)[fe0]
        rv["port"] = np.array(p.fe_port, np.int64)[fe0]

    mk = np.zeros(len(maglev), dt("mc_maglev_key"))
    mv = np.zeros(len(maglev), dt("mc_maglev"))
    for i, (s, tbl) in enumerate(maglev):
        mk[i]["svc_id"] = s
        mv[i]["backend_ids"] = tbl
    pairs = set(zip(chain.from_iterable(map(repeat, sids, counts)), bids))

    # mc_lb_src_ranges: (prefixlen, svc_id, addr16) per source range of a Service
    src = {}
    for svc in compress(svcs, map(_get_src, svcs)):
        for plen, addr in _src_rows(svc, f"Service {svc.name}"):
            src[(plen, svc.svc_id, addr)] = None
    lk = np.zeros(len(src), dt("mc_lb_src_range_key"))
    lv = np.zeros(len(src), dt("mc_lb_src_range"))
    if src:
        rows = list(src)
        lk["prefixlen"] = [r[0] for r in rows]
        lk["svc_id"] = [r[1] for r in rows]
        lk["addr"] = _u8x16([r[2] for r in rows])
    return ServiceTables(sk, sv, bk, bv, rk, rv, mk, mv, pairs, lk, lv)


def _isin_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which records of ``a`` (bytewise) are also in ``b`` (same itemsize)."""
    size = a.dtype.itemsize
    if size in (1, 2, 4, 8):
        u = np.dtype(f"u{size}")
        return np.isin(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u))
    v = np.dtype((np.void, size))  # each record as one opaque value: tolist() gives its bytes, in C
    want = set(np.ascontiguousarray(b).view(v).ravel().tolist())
    return np.fromiter(map(want.__contains__, np.ascontiguousarray(a).view(v).ravel().tolist()), bool, len(a))


class _Row:
    """What one Service put in the maps: its mc_svc keys, backend ids, frontend keys, source-range keys."""
    __slots__ = ("svc", "sk", "bids", "fes", "src")

    def __init__(self, svc, sk, bids, fes, src):
        self.svc, self.sk, self.bids, self.fes, self.src = svc, sk, bids, fes, src


class _Mirror:
    """The service maps as this process wrote them, per Service, so a change is applied without a dump."""

    def __init__(self):
        self.rows: Dict[str, _Row] = {}
        self.refs: Dict[int, int] = {}           # backend id -> Services using it
        self.maglev: Dict[int, np.ndarray] = {}  # svc_id -> table
        self.fe_owner: Dict[tuple, str] = {}     # (addr16, port, proto, scope) -> Service name
        self.sid_owner: Dict[int, str] = {}
        self.affinity_ever: set = set()          # svc_ids that had ClientIP affinity in this process
        self.n_svc = 0
        self.n_src = 0

    @classmethod
    def of(cls, p: _Parsed, t: ServiceTables) -> "_Mirror":
        m = cls()
        o_fe = o_be = o_row = 0
        src_by_sid: Dict[int, List[int]] = {}
        if t.src_keys is not None:
            for i, sid in enumerate(t.src_keys["svc_id"].tolist()):
                src_by_sid.setdefault(sid, []).append(i)
        for svc, proto, fc, c in zip(p.svcs, p.protos, p.fe_counts, p.counts):
            nrows = fc * (c + 1)
            fes = [(a, fe.port, proto, fe.scope) for fe, a in zip(svc.frontends, p.fe_addr[o_fe:o_fe + fc])]
            si = src_by_sid.get(svc.svc_id)
            r = _Row(svc, t.svc_keys[o_row:o_row + nrows], p.bids[o_be:o_be + c], fes,
                     t.src_keys[si] if si else None)
            m.remember(r)
            for b in r.bids:
                m.refs[b] = m.refs.get(b, 0) + 1
            o_fe += fc
            o_be += c
            o_row += nrows
        for k, v in zip(t.maglev_keys["svc_id"].tolist(), t.maglev_values):
            m.maglev[k] = v["backend_ids"].copy()
        return m

    def remember(self, r: _Row) -> None:
        self.rows[r.svc.name] = r
        for fk in r.fes:
            self.fe_owner[fk] = r.svc.name
        self.sid_owner[r.svc.svc_id] = r.svc.name
        if r.svc.affinity_timeout:
            self.affinity_ever.add(r.svc.svc_id)
        self.n_svc += len(r.sk)
        self.n_src += 0 if r.src is None else len(r.src)

    def forget(self, r: _Row) -> None:
        for fk in r.fes:
            if self.fe_owner.get(fk) == r.svc.name:
                del self.fe_owner[fk]
        if self.sid_owner.get(r.svc.svc_id) == r.svc.name:
            del self.sid_owner[r.svc.svc_id]
        self.n_svc -= len(r.sk)
        self.n_src -= 0 if r.src is None else len(r.src)


class ServiceDatapath(Closing):
    """Reconciles the service maps to a desired state.

    ``maps`` is a bpffs root (the maps pinned there are opened and closed
    here) or the node's :class:`~meshcni.bpf.MeshMaps` (shared, left open).
    """

    def __init__(self, maps: Union[str, MeshMaps]):
        self._owns = isinstance(maps, str)
        self.maps = MeshMaps(maps) if self._owns else maps
        self._ids: Dict[Ident, int] = {}
        # recover ids from the pinned map, so an agent restart keeps them
        k, v = self.maps.backends.dump()
        for bid, addr, port, proto in zip(k["backend_id"], v["addr"], v["port"], v["proto"]):
            self._ids[(bytes(addr), int(port), int(proto))] = int(bid)
        self._next = max(self._ids.values(), default=0) + 1
        self._mirror: Optional[_Mirror] = None  # what the last full apply and the deltas since wrote

    def _assign(self, idents: List[Ident]) -> List[int]:
        """Ids for these backends, new ones numbered in order of first use.
        Never reused within the process: a freed id may still be in a slot
        until this apply's service writes land."""
        ids = self._ids
        bids = list(map(ids.get, idents))
        if None not in bids:
            return bids
        n = len(bids)
        if bids.count(None) == n and len(set(idents)) == n:  # all new and distinct (first programming)
            bids = list(range(self._next, self._next + n))
            ids.update(zip(idents, bids))
            self._next += n
            return bids
        for j, b in enumerate(bids):
            if b is None:
                ident = idents[j]
                b = ids.get(ident)  # a backend seen earlier in this list
                if b is None:
                    b = ids[ident] = self._next
                    self._next += 1
                bids[j] = b
        return bids

    def _parse_and_assign(self, services: Sequence[Service]) -> _Parsed:
        """Check every Service and give each new backend an id. A bad Service
        raises after the Services before it got their ids, as always."""
        services = list(services)
        p = _parse_bulk(services)
        if p is None:
            return _parse_one_by_one(services, self._assign)
        p.bids = self._assign(p.idents)  # same ids in the same order as Service by Service
        return p

    @staticmethod
    def _union(m, keys, values):
        ck, cv = m.dump()
        if not len(ck):
            return keys, values
        extra = ~_isin_rows(ck, keys) if len(keys) else np.ones(len(ck), bool)
        if not extra.any():
            return keys, values
        return concat_records([ck[extra], keys]), concat_records([cv[extra], values])

    def apply(self, services: Sequence[Service]) -> Dict[str, object]:
        p = self._parse_and_assign(services)
        prev = {}
        if any(s.maglev for s in p.svcs):  # only Maglev Services read the tables in the map
            mk, mv = self.maps.maglev.dump()
            prev = {int(k["svc_id"]): v["backend_ids"].copy() for k, v in zip(mk, mv)}
        t = _tables(p, prev)
        mm = self.maps
        res = {}
        # a desired state that does not fit is refused before anything is written: the maps keep
        # the previous state whole (a half-written one could point frontends at missing backends)
        for name, k in (("svc", t.svc_keys), ("backends", t.backend_keys), ("revnat", t.revnat_keys),
                        ("maglev", t.maglev_keys), ("lb_src_ranges", t.src_keys)):
            m = getattr(mm, name)
            if len(k) > m.spec.max_entries:
                raise m.full_error(len(k))
        # 1. everything a frontend may point at, without deleting anything: old and new side by side
        unions = []
        for name, k, v in (("backends", t.backend_keys, t.backend_values),
                           ("revnat", t.revnat_keys, t.revnat_values),
                           ("maglev", t.maglev_keys, t.maglev_values),
                           ("lb_src_ranges", t.src_keys, t.src_values)):
            m = getattr(mm, name)
            uk, uv = self._union(m, k, v)
            if len(uk) > m.spec.max_entries:
                e = m.full_error(len(uk))
                e.args = (f"{e.args[0]}: the change needs the old and the {len(k)} new entries at once",)
                raise e
            unions.append((m, uk, uv))
        self._mirror = None  # rebuilt below once everything is written; a failure leaves none (full path next)
        writes = 0
        for m, uk, uv in unions:
            writes += m.reconcile(uk, uv).writes
        # 2. the frontends themselves
        res["svc"] = mm.svc.reconcile(t.svc_keys, t.svc_values)
        # 3. what nothing points at any more (diffed against what step 1
        # just wrote: the map object's cache of it, no second dump)
        for name, k, v in (("lb_src_ranges", t.src_keys, t.src_values),
                           ("maglev", t.maglev_keys, t.maglev_values),
                           ("revnat", t.revnat_keys, t.revnat_values),
                           ("backends", t.backend_keys, t.backend_values)):
            res[name] = getattr(mm, name).reconcile(k, v, cache=True)
        # affinity to a backend that left its service must not outlive it
        ak, av = mm.affinity.dump()
        stale = np.zeros(0, np.int64)
        if len(ak):
            want = np.fromiter((s << 32 | b for s, b in t.pairs), np.uint64, len(t.pairs))
            have = ak["svc_id"].astype(np.uint64) << np.uint64(32) | av["backend_id"].astype(np.uint64)
            stale = np.flatnonzero(~np.isin(have, want))
        if len(stale):
            mm.affinity.delete(ak[stale], missing_ok=True)
        res["affinity_dropped"] = len(stale)
        # forget ids of backends no Service has any more (their rows are gone
        # after step 3); amortised, so steady churn costs O(1) per backend.
        # _next never goes back, so a returning backend gets a fresh id.
        if len(self._ids) > 2 * len(p.bids) + 1024:
            live = set(p.bids)
            self._ids = {k: b for k, b in self._ids.items() if b in live}
        res["backend_ids_known"] = len(self._ids)
        res["writes"] = writes + sum(r.writes for r in res.values() if isinstance(r, ReconcileResult))
        self._mirror = _Mirror.of(p, t)
        return res

    @property
    def synced(self) -> bool:
        """Whether :meth:`apply_delta` may run: a full :meth:`apply` succeeded and no delta failed since."""
        return self._mirror is not None

    def resync(self, services: Sequence[Service]) -> int:
        """A full :meth:`apply` (every map dumped and diffed); the entries it wrote, which after a delta
        of the same state are drift: written by someone else, or lost."""
        return self.apply(services)["writes"]

    def apply_delta(self, upserts: Sequence[Service], removes: Sequence[str]) -> Dict[str, object]:
        """Write what changed: ``upserts`` (Services added or changed, complete) and ``removes`` (names of
        Services gone), against the in-memory mirror of the maps (no dump). The same order as
        :meth:`apply`: backends, revnat, Maglev and source ranges first, then the frontends (slots before
        their master), then what nothing points at any more. Any failure drops the mirror, so the next
        change takes the full path. Raises RuntimeError when there is no mirror (call :meth:`apply`)."""
        mir = self._mirror
        if mir is None:
            raise RuntimeError("service datapath: no mirror of the maps; a full apply is needed first")
        self._mirror = None
        p = self._parse_and_assign(upserts)
        touched = set(removes) | {s.name for s in p.svcs}
        # what the full path checks across all Services: svc_ids and frontends of the others
        o = 0
        new_fe: Dict[tuple, str] = {}
        for svc, proto, c in zip(p.svcs, p.protos, p.fe_counts):
            owner = mir.sid_owner.get(svc.svc_id)
            if owner is not None and owner not in touched:
                raise ServiceError(f"Service {svc.name}: svc_id {svc.svc_id} already used by Service {owner}")
            for fe, addr in zip(svc.frontends, p.fe_addr[o:o + c]):
                fk = (addr, fe.port, proto, fe.scope)
                owner = new_fe.get(fk)
                if owner is None:
                    owner = mir.fe_owner.get(fk)
                    owner = None if owner in touched else owner
                if owner is not None:
                    where = "" if fe.scope == SCOPE_EXT else " (scope INT)"
                    raise ServiceError(f"Service {svc.name}: frontend {fe.ip}:{fe.port}/{fe.proto}{where} already "
                                       f"used by Service {owner}")
                new_fe[fk] = svc.name
            o += c
        prev = {s.svc_id: mir.maglev[s.svc_id] for s in p.svcs if s.maglev and s.svc_id in mir.maglev}
        t = _tables(p, prev)
        new = _Mirror.of(p, t)
        old_rows = [mir.rows[n] for n in touched if n in mir.rows]
        refs = mir.refs  # backend id -> Services using it; changed only once everything is written
        dref: Dict[int, int] = {}
        for r in old_rows:
            for b in r.bids:
                dref[b] = dref.get(b, 0) - 1
        for r in new.rows.values():
            for b in r.bids:
                dref[b] = dref.get(b, 0) + 1
        born = {b for b, d in dref.items() if d > 0 and not refs.get(b)}
        dead = [b for b, d in dref.items() if d < 0 and refs.get(b, 0) + d == 0]
        mm = self.maps
        old_sk = concat_records([r.sk for r in old_rows]) if old_rows else None
        grown = len(t.svc_keys) if old_sk is None or not len(t.svc_keys) else \
            int((~_isin_rows(t.svc_keys, old_sk)).sum())
        # the peak each map reaches (writes go in before deletes), refused before anything is written
        for name, need in (("svc", mir.n_svc + grown), ("backends", len(mir.refs) + len(born)),
                           ("revnat", len(mir.sid_owner) + sum(1 for s in p.svcs if s.svc_id not in mir.sid_owner)),
                           ("maglev", len(mir.maglev) + sum(1 for s in new.maglev if s not in mir.maglev)),
                           ("lb_src_ranges", mir.n_src + len(t.src_keys))):
            m = getattr(mm, name)
            if need > m.spec.max_entries:
                e = m.full_error(need)
                e.args = (f"{e.args[0]}: the change needs the old and the new entries at once",)
                raise e
        res: Dict[str, object] = {}
        # 1. what a frontend may point at
        if born:
            sel = np.isin(t.backend_keys["backend_id"], np.fromiter(born, np.int64, len(born)))
            if sel.any():
                mm.backends.update(t.backend_keys[sel], t.backend_values[sel])
        for name, k, v in (("revnat", t.revnat_keys, t.revnat_values), ("maglev", t.maglev_keys, t.maglev_values),
                           ("lb_src_ranges", t.src_keys, t.src_values)):
            if len(k):
                getattr(mm, name).update(k, v)
        # 2. the frontends
        if len(t.svc_keys):
            mm.svc.update(t.svc_keys, t.svc_values)
        # 3. what nothing points at any more
        if old_sk is not None and len(old_sk):
            sk = old_sk
            if len(t.svc_keys):
                sk = sk[~_isin_rows(sk, t.svc_keys)]
            if len(sk):
                mm.svc.delete(sk, missing_ok=True)
        res["svc_rows_written"] = len(t.svc_keys)
        new_sids = {r.svc.svc_id for r in new.rows.values()}
        old_src = [r.src for r in old_rows if r.src is not None and len(r.src)]
        if old_src:
            lk = concat_records(old_src)
            if len(t.src_keys):
                lk = lk[~_isin_rows(lk, t.src_keys)]
            if len(lk):
                mm.lb_src_ranges.delete(lk, missing_ok=True)
        dt = layout.dtype_of
        gone_mg = [r.svc.svc_id for r in old_rows if r.svc.svc_id in mir.maglev and r.svc.svc_id not in new.maglev]
        if gone_mg:
            k = np.zeros(len(gone_mg), dt("mc_maglev_key"))
            k["svc_id"] = gone_mg
            mm.maglev.delete(k, missing_ok=True)
        gone_sid = [r.svc.svc_id for r in old_rows if r.svc.svc_id not in new_sids]
        if gone_sid:
            k = np.zeros(len(gone_sid), dt("mc_revnat_key"))
            k["svc_id"] = gone_sid
            mm.revnat.delete(k, missing_ok=True)
        if dead:
            k = np.zeros(len(dead), dt("mc_backend_key"))
            k["backend_id"] = dead
            mm.backends.delete(k, missing_ok=True)
        # affinity to a backend that left its Service must not outlive it; only a Service that has (or had)
        # ClientIP affinity can have such entries, so only then is the affinity map read
        aff = [r for r in old_rows if r.svc.svc_id in mir.affinity_ever] if mir.affinity_ever else ()
        gone_pairs = set()
        for r in aff:
            gone_pairs.update((r.svc.svc_id, b) for b in r.bids)
        gone_pairs -= t.pairs
        dropped = 0
        if gone_pairs:
            ak, av = mm.affinity.dump()
            if len(ak):
                gone = np.fromiter((a << 32 | b for a, b in gone_pairs), np.uint64, len(gone_pairs))
                have = ak["svc_id"].astype(np.uint64) << np.uint64(32) | av["backend_id"].astype(np.uint64)
                idx = np.flatnonzero(np.isin(have, gone))
                if len(idx):
                    mm.affinity.delete(ak[idx], missing_ok=True)
                dropped = len(idx)
        res["affinity_dropped"] = dropped
        # the new mirror: the old one with the touched Services replaced
        for n in touched:
            r = mir.rows.pop(n, None)
            if r is not None:
                mir.forget(r)
        for r in new.rows.values():
            mir.remember(r)
        mir.maglev.update(new.maglev)
        for sid in gone_mg:
            mir.maglev.pop(sid, None)
        for b, d in dref.items():
            c = refs.get(b, 0) + d
            if c:
                refs[b] = c
            else:
                refs.pop(b, None)
        mir.affinity_ever |= new.affinity_ever
        if len(self._ids) > 2 * len(refs) + 1024:
            self._ids = {k: b for k, b in self._ids.items() if b in refs}
        res["backend_ids_known"] = len(self._ids)
        res["services"], res["backends_born"], res["backends_dead"] = len(touched), len(born), len(dead)
        self._mirror = mir
        return res

    def close(self) -> None:
        if self._owns:
            self.maps.close()
