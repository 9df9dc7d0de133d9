# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pod-facing tc programs (bpf/policy.bpf.c): policy, conntrack, drops.

Directions are the pod's (Cilium's naming): ``mc_from_pod`` runs on tc
*ingress* of the host-side veth (packets leaving the pod: the pod's EGRESS
policy), ``mc_to_pod`` on tc *egress* (packets entering the pod: its INGRESS
policy).

- :func:`build_policy` turns desired :class:`PolicyEntry` rows and enforced
  flags into ``mc_policy`` / ``mc_enforce`` arrays (a port range becomes the
  minimal aligned power-of-two prefixes); :class:`PolicyDatapath` applies
  them with ``BpfMap.reconcile``.
- :func:`ct_gc` deletes expired conntrack entries (only those) in batches.
- :func:`drop_counts` sums the per-CPU drop counters by reason name;
  :class:`DropEvents` reads the ring buffer of drop events live.
- :class:`PolicyProgram` attaches the two programs to an interface inside a
  network namespace (attaching twice is a no-op), and detaches them.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .. import layout
from .._libbpf import ffi, lib
from ..bpf import BpfMap, BpfObject, MeshMaps, object_path, rows
from ..bpf.pin import ensure_root
from ..errors import BpfError
from .._closing import Closing
from .. import cidr
from ..bpf.typed import IPCacheMap
from ..controllers.model import ALLOW, ANY, DENY, EGRESS, INGRESS, PolicyEntry, PortSpec  # noqa: F401 (re-exported)

_C = layout.constants()


def drop_reasons() -> Dict[int, str]:
    """reason number -> name (from the MC_DROP_REASON_* constants of layout.h)."""
    pre = "MC_DROP_REASON_"
    return {v: k[len(pre):].lower() for k, v in layout.constants().items() if k.startswith(pre)}


def port_blocks(lo: int, hi: int) -> List[Tuple[int, int]]:
    """Minimal aligned power-of-two blocks covering [lo, hi]: (start, prefix bits of 16)."""
    if not (0 <= lo <= hi <= 0xFFFF):
        raise ValueError(f"bad port range {lo}-{hi}")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 16 - size.bit_length() + 1))
        lo += size
    return out


def entry_rows(e: PolicyEntry) -> List[Tuple[int, int, int, int, int, int]]:
    """The mc_policy keys of one entry: (prefixlen, identity, direction, peer, proto, port)."""
    if e.direction not in (INGRESS, EGRESS):
        raise ValueError(f"bad direction {e.direction}")
    peer = e.peer or 0
    if e.proto is None:
        if e.port is not None:
            raise ValueError("a port needs a protocol")
        return [(_C["MC_POLICY_PREFIX_PEER"], e.identity, e.direction, peer, 0, 0)]
    if e.port is None:
        return [(_C["MC_POLICY_PREFIX_PROTO"], e.identity, e.direction, peer, e.proto, 0)]
    lo, hi = (e.port, e.port) if isinstance(e.port, int) else e.port
    return [(_C["MC_POLICY_PREFIX_PROTO"] + bits, e.identity, e.direction, peer, e.proto, start)
            for start, bits in port_blocks(lo, hi)]


def _pack_policy(rows: Dict[tuple, Tuple[int, int]]):
    kdt, vdt = layout.dtype_of("mc_policy_key"), layout.dtype_of("mc_policy")
    pk = np.zeros(len(rows), kdt)
    pv = np.zeros(len(rows), vdt)
    if not rows:
        return pk, pv
    items = sorted(rows.items())
    # column by column: numpy converts each (with the field's byte order) in one call
    cols = np.array([k for k, _ in items], np.int64)
    for j, name in enumerate(("prefixlen", "identity", "dir", "peer", "proto", "port")):
        pk[name] = cols[:, j]
    vals = np.array([v for _, v in items], np.int64)
    pv["action"], pv["rule_id"] = vals[:, 0], vals[:, 1]
    return pk, pv


def _pack_enforce(enforced: Iterable[Tuple[int, int]]):
    enf = sorted(set((int(i), int(d)) for i, d in enforced))
    ek = np.zeros(len(enf), layout.dtype_of("mc_enforce_key"))
    ev = np.zeros(len(enf), layout.dtype_of("mc_enforce"))
    for i, (ident, d) in enumerate(enf):
        ek[i]["identity"], ek[i]["dir"] = ident, d
        ev[i]["enforced"] = 1
    return ek, ev


def build_policy(entries: Iterable[PolicyEntry], enforced: Iterable[Tuple[int, int]]):
    """Desired state -> ``(policy_keys, policy_values, enforce_keys, enforce_values)``.

    ``enforced``: (identity, direction) pairs selected by some policy in that
    direction (default deny there). A later entry with the same key wins
    unless an earlier one was a DENY (deny is sticky).
    """
    rows: Dict[tuple, Tuple[int, int]] = {}
    for e in entries:
        for k in entry_rows(e):
            old = rows.get(k)
            if old and old[0] == DENY:
                continue
            rows[k] = (e.action, e.rule_id)
    pk, pv = _pack_policy(rows)
    ek, ev = _pack_enforce(enforced)
    return pk, pv, ek, ev


def policy_rows(entries: Iterable[PolicyEntry]) -> int:
    """How many mc_policy rows ``entries`` take (endPort ranges expand to prefixes; duplicates merge)."""
    return len(build_policy(entries, ())[0])


def fit_policy(entries: Iterable[PolicyEntry], enforced: Iterable[Tuple[int, int]], capacity: int,
               host: int = 1, rank: Optional[Dict[int, tuple]] = None, default_rank: tuple = ()):
    """Fail closed when the desired policy does not fit a map of ``capacity`` rows.

    Returns ``(entries, enforced, closed)``. If everything fits, unchanged and
    ``closed`` is empty. Otherwise whole (identity, direction) groups are
    taken in order — ``rank[identity]`` ascending (identities missing from it
    get ``default_rank``), then size (smallest first), then identity and
    direction — and each is kept if it fits in the rows left (every later
    group keeps room for its one host row); a group that does not fit is
    *closed*: it stays enforced with only the allow for ``host`` (its own
    node), so it denies everything else instead of admitting what its policy
    would not. The order is total, so which groups close is predictable.
    ``closed`` lists those groups. Enforced groups without entries cost
    nothing and are never closed.
    """
    entries = list(entries)
    enforced = set(enforced)
    # an upper bound first (duplicates only merge rows): the common case costs no extra build
    bound = sum(len(port_blocks(*e.port)) if isinstance(e.port, tuple) else 1 for e in entries)
    if bound <= capacity or policy_rows(entries) <= capacity:
        return entries, enforced, []
    groups: Dict[Tuple[int, int], List[PolicyEntry]] = {}
    for e in entries:
        groups.setdefault((e.identity, e.direction), []).append(e)
    sized = sorted(((rank.get(k[0], default_rank) if rank is not None else (), policy_rows(g), k)
                    for k, g in groups.items()))
    keep: List[PolicyEntry] = []
    used, closed = 0, []
    for i, (_, n, k) in enumerate(sized):
        rest = len(sized) - i - 1  # each later group needs at least its one host row
        if used + len(closed) + n + rest <= capacity:
            keep += groups[k]
            used += n
        else:
            closed.append(k)
    if used + len(closed) > capacity:
        raise ValueError(f"policy map of {capacity} rows cannot even hold one row per isolated endpoint")
    keep += [PolicyEntry(i, d, peer=host) for i, d in closed]
    enforced |= set(closed)
    return keep, enforced, closed


def addr16(ip: str) -> bytes:
    """The unified 16-byte address (IPv4 as ::ffff:a.b.c.d)."""
    return cidr.unified_addr(ip)


class PolicyDatapath:
    """The maps of a loaded policy object: policy, enforce, endpoints, ipcache, ct, drops.

    With ``maps`` (the node's :class:`~meshcni.bpf.MeshMaps`), those shared
    handles are used and left open by :meth:`close`: one writer object per
    map, so a ``cache=True`` reconcile elsewhere is never stale. Without,
    the object's own (dup'ed) handles are opened and closed here.
    """

    def __init__(self, obj: BpfObject, maps: Optional[MeshMaps] = None):
        self.obj = obj
        self._owns = maps is None
        get = (lambda name, cls=BpfMap: obj.map(name, map_class=cls)) if maps is None else \
            (lambda name, cls=BpfMap: maps.map(name))
        self.policy = get("mc_policy")
        self.enforce = get("mc_enforce")
        self.endpoints = get("mc_endpoints")
        self.ipcache = get("mc_ipcache", IPCacheMap)
        self.ct = get("mc_ct")
        self.drops = get("mc_drops")

    def apply(self, entries: Iterable[PolicyEntry], enforced: Iterable[Tuple[int, int]]):
        """Make mc_policy / mc_enforce hold exactly this desired state.

        Order avoids transient drops of traffic that is allowed before and
        after: enforcement that goes away is lifted first, then the policy
        entries are reconciled (adds before deletes), and enforcement that
        is new is switched on last, once its allow entries are in.
        Returns the two ReconcileResults (policy, enforce-final).
        """
        pk, pv, ek, ev = build_policy(entries, enforced)
        # refused before the first write: the maps keep the previous policy whole
        for m, k in ((self.policy, pk), (self.enforce, ek)):
            if len(k) > m.spec.max_entries:
                raise m.full_error(len(k))
        cur_k, cur_v = self.enforce.dump()
        have = {r.tobytes() for r in rows(cur_k)}
        keep = np.array([r.tobytes() in have for r in rows(ek)], bool)
        self.enforce.reconcile(ek[keep], ev[keep])
        rp = self.policy.reconcile(pk, pv)
        re_ = self.enforce.reconcile(ek, ev)
        return rp, re_

    def set_endpoint(self, ifindex: int, identity: int, ip: str = "::", flags: int = 0) -> None:
        k = np.zeros(1, self.endpoints.key_dtype)
        v = np.zeros(1, self.endpoints.value_dtype)
        k[0]["ifindex"] = ifindex
        v[0]["addr"] = np.frombuffer(addr16(ip), np.uint8)
        v[0]["identity"], v[0]["flags"] = identity, flags
        self.endpoints.update(k, v)

    def set_ipcache(self, prefixes: Dict[str, int]) -> None:
        """Add (or overwrite) ipcache entries: {"cidr": identity}."""
        self.ipcache.insert_prefixes(list(prefixes), list(prefixes.values()))

    def ct_gc(self, now_ns: Optional[int] = None, batch: int = 4096) -> int:
        return ct_gc(self.ct, now_ns, batch)

    def drop_counts(self) -> Dict[str, Tuple[int, int]]:
        return drop_counts(self.drops)

    def close(self) -> None:
        if not self._owns:
            return  # the MeshMaps they came from closes them
        for m in (self.policy, self.enforce, self.endpoints, self.ipcache, self.ct, self.drops):
            m.close()


def ct_gc(ct: BpfMap, now_ns: Optional[int] = None, batch: int = 4096) -> int:
    """Delete the conntrack entries with ``expires_ns < now`` (CLOCK_MONOTONIC,
    the clock of bpf_ktime_get_ns), ``batch`` keys per delete call; returns
    how many went. Live entries are never touched; an entry the datapath
    refreshed between the dump and the delete is re-checked by lookup."""
    now = time.monotonic_ns() if now_ns is None else now_ns
    keys, vals = ct.dump()
    dead = keys[vals["expires_ns"] < now]
    n = 0
    for i in range(0, len(dead), batch):
        chunk = dead[i:i + batch]
        cur, found = ct.lookup(chunk)  # refreshed since the dump? keep it
        chunk = chunk[found & (cur["expires_ns"] < now)]
        if len(chunk):
            ct.delete(chunk, missing_ok=True)
            n += len(chunk)
    return n


class CTGC:
    """Run :func:`ct_gc` every ``interval`` seconds in a thread."""

    thread_name = "meshcni-ct-gc"
    retry_on: Tuple[type, ...] = ()  # errors a round may meet that the next round retries

    def __init__(self, ct: BpfMap, interval: float = 60.0, batch: int = 4096):
        self.ct, self.interval, self.batch = ct, interval, batch
        self._stop = threading.Event()
        self.deleted = 0
        self._t = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> "CTGC":
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.deleted += ct_gc(self.ct, batch=self.batch)
            except self.retry_on:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def drop_counts(drops: BpfMap) -> Dict[str, Tuple[int, int]]:
    """reason name -> (packets, bytes), summed over CPUs; only reasons seen."""
    names = drop_reasons()
    reasons = sorted(names)
    k = np.array(reasons, np.uint32).view(drops.key_dtype)
    vals, found = drops.lookup(k)
    out = {}
    for i, r in enumerate(reasons):
        p, b = int(vals[i]["packets"].sum()), int(vals[i]["bytes"].sum())
        if p:
            out[names[r]] = (p, b)
    return out


@dataclass(frozen=True)
class DropEvent:
    ts_ns: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    proto: int
    direction: int
    reason: str
    src_identity: int
    dst_identity: int
    ifindex: int


class DropEvents(Closing):
    """Live reader of ``mc_events`` (the ring buffer of struct mc_drop_event)."""

    def __init__(self, events: BpfMap):
        self._map = events
        self._dt = layout.dtype_of("mc_drop_event")
        err = ffi.new("int *")
        self._rb = lib.mc_ringbuf_open(events.fd, self._dt.itemsize, err)
        if self._rb == ffi.NULL:
            raise BpfError(-err[0], "mc_events: ring_buffer__new")
        # a whole ring's worth of records fits, so poll never discards
        self._cap = layout.constants()["MC_EVENTS_BYTES"] // (self._dt.itemsize + 8) + 1
        self._buf = np.zeros(self._cap, self._dt)
        self._names = drop_reasons()

    def poll(self, timeout_ms: int = 0) -> List[DropEvent]:
        n = lib.mc_ringbuf_poll(self._rb, ffi.from_buffer(self._buf), self._cap, timeout_ms)
        if n < 0:
            raise BpfError(-n, "mc_events: poll")
        out = []
        for r in self._buf[:n]:
            out.append(DropEvent(int(r["ts_ns"]), str(cidr.from_unified(r["saddr"].tobytes())),
                                 str(cidr.from_unified(r["daddr"].tobytes())),
                                 int(r["sport"]), int(r["dport"]), int(r["proto"]), int(r["dir"]),
                                 self._names.get(int(r["reason"]), str(int(r["reason"]))),
                                 int(r["src_identity"]), int(r["dst_identity"]), int(r["ifindex"])))
        return out

    def close(self) -> None:
        if self._rb is not None:
            lib.mc_ringbuf_close(self._rb)
            self._rb = None



_CLONE_NEWNET = 0x40000000
from .tcpins import HOOKS as _HOOKS, POD_TC  # noqa: E402  (one place for the tc hook table)
from . import tcpins  # noqa: E402


@contextlib.contextmanager
def in_netns(name_or_path: Optional[str]):
    """Run the body in a network namespace (a name under /run/netns or a path);
    the thread's own namespace is restored afterwards."""
    if not name_or_path:
        yield
        return
    path = name_or_path if "/" in name_or_path else f"/run/netns/{name_or_path}"
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    new = os.open(path, os.O_RDONLY)
    try:
        rc = lib.mc_setns(new, _CLONE_NEWNET)
        if rc < 0:
            raise BpfError(-rc, f"setns {path}")
        try:
            yield
        finally:
            rc = lib.mc_setns(old, _CLONE_NEWNET)
            if rc < 0:  # cannot happen short of a kernel bug; never continue elsewhere
                os.abort()
    finally:
        os.close(new)
        os.close(old)


class PolicyProgram(Closing):
    """policy.bpf.o loaded against the pins; attach to pod veths (host side)."""

    HOOKS = _HOOKS

    def __init__(self, pin_root: str, path: Optional[str] = None):
        self.obj = BpfObject(path or object_path("policy"), ensure_root(pin_root)).load()

    def datapath(self, maps: Optional[MeshMaps] = None) -> PolicyDatapath:
        return PolicyDatapath(self.obj, maps)

    def attached(self, ifname: str, netns: Optional[str] = None) -> Dict[str, Optional[int]]:
        """prog -> attached program id (None if nothing at meshcni's handle)."""
        with in_netns(netns):
            return POD_TC.attached(_ifindex(ifname))

    def attach(self, ifname: str, netns: Optional[str] = None) -> Dict[str, str]:
        """Attach both programs; prog -> "attached" / "kept" / "updated"."""
        with in_netns(netns):
            return POD_TC.attach(_ifindex(ifname), {p: self.obj.prog_fd(p) for p, _ in self.HOOKS}, ifname)

    def detach(self, ifname: str, netns: Optional[str] = None) -> int:
        """Detach both programs (the clsact qdisc stays); returns how many went."""
        with in_netns(netns):
            return POD_TC.detach(_ifindex(ifname))

    def pin_programs(self, pin_root: str) -> Dict[str, int]:
        """Pin both programs under ``<pin_root>/progs`` for the CNI plugin; prog -> id."""
        fds = {prog: self.obj.prog_fd(prog) for prog, _ in self.HOOKS}
        tcpins.pin_programs(fds, pin_root)
        return {prog: lib.mc_prog_id(fd) for prog, fd in fds.items()}

    def close(self) -> None:
        self.obj.close()



def _ifindex(ifname: str) -> int:
    try:
        return int(ifname) if ifname.isdigit() else _if_nametoindex(ifname)
    except OSError as e:
        raise BpfError(e.errno or 19, f"interface {ifname}") from None


def _if_nametoindex(name: str) -> int:
    # socket.if_nametoindex asks the calling thread's network namespace
    import socket
    return socket.if_nametoindex(name)


def apply_policy_delta(dp: "PolicyDatapath", changes: Dict[Tuple[int, int], Tuple[frozenset, frozenset]],
                       enforce_off: Iterable[Tuple[int, int]], enforce_on: Iterable[Tuple[int, int]]) -> dict:
    """Write only what changed. ``changes``: (identity, direction) -> (old, new) entry sets of that pair
    (PolicyEntry, or tuples of its fields); rows of other pairs are neither read nor written. Only the rows
    of entries that came or went are built; a row a gone entry shares with one that stays (overlapping
    port ranges) stays. Order as :meth:`PolicyDatapath.apply`: enforcement lifted, rows written, stale rows
    deleted, enforcement switched on. No map is dumped."""
    write: Dict[tuple, Tuple[int, int]] = {}
    gone: set = set()
    for old, new in changes.values():
        added, removed = new - old, old - new
        if not added and not removed:
            continue
        added = [e if isinstance(e, PolicyEntry) else PolicyEntry(*e) for e in added]
        removed = [e if isinstance(e, PolicyEntry) else PolicyEntry(*e) for e in removed]
        if any(e.action != ALLOW for e in added + removed):
            raise ValueError("apply_policy_delta: only allow entries (deny rows would need the whole pair)")
        for e in added:
            for k in entry_rows(e):
                write[k] = (e.action, e.rule_id)
        if removed:
            dead = {k for e in removed for k in entry_rows(e)} - set(write)
            # an entry that stays may hold one of those rows too (same peer and protocol, ports overlapping)
            near = {(e.peer or 0, e.proto or 0) for e in removed}
            for e in new:
                e = e if isinstance(e, PolicyEntry) else PolicyEntry(*e)
                if (e.peer or 0, e.proto or 0) in near:
                    dead.difference_update(entry_rows(e))
            gone |= dead
    gone -= set(write)
    off_k, _ = _pack_enforce(enforce_off)
    on_k, on_v = _pack_enforce(enforce_on)
    if len(off_k):
        dp.enforce.delete(off_k, missing_ok=True)
    if write:
        dp.policy.update(*_pack_policy(write))
    if gone:
        dp.policy.delete(_pack_policy({k: (0, 0) for k in gone})[0], missing_ok=True)
    if len(on_k):
        dp.enforce.update(on_k, on_v)
    return {"written": len(write), "deleted": len(gone), "enforceOff": len(off_k), "enforceOn": len(on_k)}
