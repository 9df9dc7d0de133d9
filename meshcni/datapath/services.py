# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired Service state -> the socket LB's maps (mc_svc, mc_backends, mc_revnat, mc_maglev).

``build_tables(services, backend_ids)`` is pure: it validates and lays the
services out as numpy arrays of the layout.h dtypes. ``ServiceDatapath.apply``
reconciles the pinned maps with them through ``BpfMap.reconcile`` (batched),
ordered so that a frontend never points at a missing backend, revnat entry or
Maglev table: new/changed backends, revnat and Maglev tables first, then the
service entries (slots before their master, so a grown count only ever covers
written slots), then deletes of what is no longer referenced.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import layout
from ..bpf import MeshMaps
from .._closing import Closing

PROTOS = {"tcp": 6, "udp": 17, 6: 6, 17: 17}
M = None  # MC_MAGLEV_M, read from the layout on first use


class ServiceError(ValueError):
    pass


def _addr16(ip) -> bytes:
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return b"\0" * 10 + b"\xff\xff" + a.packed
    return a.packed


@dataclass(frozen=True)
class Frontend:
    ip: str
    port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int


@dataclass
class Service:
    name: str
    frontends: Sequence[Frontend]
    backends: Sequence[Backend]
    svc_id: int
    affinity_timeout: Optional[int] = None  # seconds; None = no ClientIP affinity
    maglev: bool = False

    def __post_init__(self):
        if isinstance(self.frontends, Frontend):
            self.frontends = [self.frontends]


def _check_addr_port(who: str, what: str, ip, port) -> None:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ServiceError(f"{who}: {what} port {port} out of range")
    try:
        _addr16(ip)
    except ValueError:
        raise ServiceError(f"{who}: {what} ip {ip!r} is not an address") from None


def _check(svc: Service) -> int:
    who = f"Service {svc.name}"
    if not isinstance(svc.svc_id, int) or not 0 < svc.svc_id < 2 ** 32:
        raise ServiceError(f"{who}: svc_id {svc.svc_id!r} out of range (1..2^32-1)")
    if not svc.frontends:
        raise ServiceError(f"{who}: no frontends")
    protos = set()
    for i, fe in enumerate(svc.frontends):
        p = PROTOS.get(fe.proto.lower() if isinstance(fe.proto, str) else fe.proto)
        if p is None:
            raise ServiceError(f"{who}: frontend {i} protocol {fe.proto!r} not tcp/udp")
        protos.add(p)
        _check_addr_port(who, "frontend", fe.ip, fe.port)
    if len(protos) > 1:
        raise ServiceError(f"{who}: frontends mix protocols (one Service per protocol)")
    for i, be in enumerate(svc.backends):
        _check_addr_port(who, f"backend {i}", be.ip, be.port)
    if len(set(svc.backends)) != len(svc.backends):
        raise ServiceError(f"{who}: backends repeat")
    if svc.affinity_timeout is not None and not 0 < svc.affinity_timeout < 2 ** 32:
        raise ServiceError(f"{who}: affinity_timeout {svc.affinity_timeout} out of range")
    return protos.pop()


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


def backend_identity(be: Backend, proto: int) -> Tuple[bytes, int, int]:
    return (_addr16(be.ip), be.port, proto)


def build_tables(services: Sequence[Service], backend_ids: Dict[Tuple[bytes, int, int], int],
                 previous_maglev: Optional[Dict[int, np.ndarray]] = None) -> ServiceTables:
    """Pure: services -> arrays for every map. ``backend_ids`` maps
    (addr16, port, proto) to the stable id of each backend; all must be present.
    ``previous_maglev``: svc_id -> the Maglev table programmed now (see
    maglev_table)."""
    previous_maglev = previous_maglev or {}
    dt = layout.dtype_of
    svc_rows: List[tuple] = []
    seen_fe: Dict[tuple, str] = {}
    seen_id: Dict[int, str] = {}
    bes: Dict[int, tuple] = {}
    revnat, maglev, pairs = [], [], set()
    for svc in services:
        proto = _check(svc)
        if svc.svc_id in seen_id:
            raise ServiceError(f"Service {svc.name}: svc_id {svc.svc_id} already used by Service {seen_id[svc.svc_id]}")
        seen_id[svc.svc_id] = svc.name
        ids = []
        for be in svc.backends:
            ident = backend_identity(be, proto)
            bid = backend_ids[ident]
            bes[bid] = ident
            ids.append(bid)
            pairs.add((svc.svc_id, bid))
        flags = (1 if svc.affinity_timeout else 0) | (2 if svc.maglev else 0)
        for fe in svc.frontends:
            fk = (_addr16(fe.ip), fe.port, proto)
            if fk in seen_fe:
                raise ServiceError(f"Service {svc.name}: frontend {fe.ip}:{fe.port}/{fe.proto} already used by Service {seen_fe[fk]}")
            seen_fe[fk] = svc.name
            # slots before the master: a batch applies in order
            for slot, bid in enumerate(ids, 1):
                svc_rows.append((fk, slot, (bid, 0, 0, svc.svc_id, 0)))
            svc_rows.append((fk, 0, (0, len(ids), flags, svc.svc_id, svc.affinity_timeout or 0)))
        fe0 = svc.frontends[0]
        revnat.append((svc.svc_id, _addr16(fe0.ip), fe0.port))
        if svc.maglev and ids:
            maglev.append((svc.svc_id, maglev_table(
                [(f"{ipaddress.ip_address(be.ip)}|{be.port}|{proto}", bid) for be, bid in zip(svc.backends, ids)],
                previous=previous_maglev.get(svc.svc_id))))

    sk = np.zeros(len(svc_rows), dt("mc_svc_key"))
    sv = np.zeros(len(svc_rows), dt("mc_svc_value"))
    for i, ((addr, port, proto), slot, val) in enumerate(svc_rows):
        sk[i]["addr"] = np.frombuffer(addr, np.uint8)
        sk[i]["port"], sk[i]["proto"], sk[i]["slot"] = port, proto, slot
        sv[i]["backend_id"], sv[i]["count"], sv[i]["flags"], sv[i]["svc_id"], sv[i]["affinity_timeout"] = val
    order = sorted(bes)
    bk = np.zeros(len(order), dt("mc_backend_key"))
    bv = np.zeros(len(order), dt("mc_backend"))
    for i, bid in enumerate(order):
        addr, port, proto = bes[bid]
        bk[i]["backend_id"] = bid
        bv[i]["addr"] = np.frombuffer(addr, np.uint8)
        bv[i]["port"], bv[i]["proto"] = port, proto
    rk = np.zeros(len(revnat), dt("mc_revnat_key"))
    rv = np.zeros(len(revnat), dt("mc_revnat"))
    for i, (sid, addr, port) in enumerate(revnat):
        rk[i]["svc_id"] = sid
        rv[i]["addr"] = np.frombuffer(addr, np.uint8)
        rv[i]["port"] = port
    mk = np.zeros(len(maglev), dt("mc_maglev_key"))
    mv = np.zeros(len(maglev), dt("mc_maglev"))
    for i, (sid, tbl) in enumerate(maglev):
        mk[i]["svc_id"] = sid
        mv[i]["backend_ids"] = tbl
    return ServiceTables(sk, sv, bk, bv, rk, rv, mk, mv, pairs)


class ServiceDatapath(Closing):
    """Reconciles the service maps pinned under ``pin_root`` to a desired state."""

    def __init__(self, pin_root: str):
        self.maps = MeshMaps(pin_root)
        self._ids: Dict[Tuple[bytes, int, int], int] = {}
        # recover ids from the pinned map, so an agent restart keeps them
        k, v = self.maps.backends.dump()
        for bid, addr, port, proto in zip(k["backend_id"], v["addr"], v["port"], v["proto"]):
            self._ids[(bytes(addr), int(port), int(proto))] = int(bid)
        self._next = max(self._ids.values(), default=0) + 1

    def _assign_ids(self, services: Sequence[Service]) -> Dict[Tuple[bytes, int, int], int]:
        for svc in services:
            proto = _check(svc)
            for be in svc.backends:
                ident = backend_identity(be, proto)
                if ident not in self._ids:
                    # never reused within the process: a freed id may still be
                    # in a slot until this apply's service writes land
                    self._ids[ident] = self._next
                    self._next += 1
        return self._ids

    @staticmethod
    def _union(m, keys, values):
        ck, cv = m.dump()
        want = {bytes(r): i for i, r in enumerate(keys.view(np.uint8).reshape(len(keys), -1))} if len(keys) else {}
        extra = [i for i, r in enumerate(ck.view(np.uint8).reshape(len(ck), -1)) if bytes(r) not in want] if len(ck) else []
        return np.concatenate([ck[extra], keys]), np.concatenate([cv[extra], values])

    def apply(self, services: Sequence[Service]) -> Dict[str, object]:
        mk, mv = self.maps.maglev.dump()
        prev = {int(k["svc_id"]): v["backend_ids"].copy() for k, v in zip(mk, mv)}
        t = build_tables(services, self._assign_ids(services), prev)
        mm = self.maps
        res = {}
        # 1. everything a frontend may point at, without deleting anything
        for name, k, v in (("backends", t.backend_keys, t.backend_values),
                           ("revnat", t.revnat_keys, t.revnat_values),
                           ("maglev", t.maglev_keys, t.maglev_values)):
            m = getattr(mm, name)
            uk, uv = self._union(m, k, v)
            m.reconcile(uk, uv)
        # 2. the frontends themselves
        res["svc"] = mm.svc.reconcile(t.svc_keys, t.svc_values)
        # 3. what nothing points at any more
        for name, k, v in (("maglev", t.maglev_keys, t.maglev_values),
                           ("revnat", t.revnat_keys, t.revnat_values),
                           ("backends", t.backend_keys, t.backend_values)):
            res[name] = getattr(mm, name).reconcile(k, v)
        # affinity to a backend that left its service must not outlive it
        ak, av = mm.affinity.dump()
        stale = [i for i in range(len(ak)) if (int(ak[i]["svc_id"]), int(av[i]["backend_id"])) not in t.pairs]
        if stale:
            mm.affinity.delete(ak[stale], missing_ok=True)
        res["affinity_dropped"] = len(stale)
        return res

    def close(self) -> None:
        self.maps.close()

