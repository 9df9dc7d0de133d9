# SPDX-License-Identifier: MIT OR Apache-2.0
"""Host-local style IPAM: ranges from the config, allocations on disk.

One JSON file per network under the data dir holds every allocation, keyed by
``containerID/ifname``; a lock file next to it (flock, exclusive) serialises
the plugin processes a runtime starts in parallel, and every write goes to a
temporary file that is fsynced and renamed over the old one, so a crash
leaves either the old or the new state, never half of one.

An ADD retried after a crash finds its key and gets the same addresses back
(nothing leaks); allocation walks round-robin from the last address handed
out, as host-local does, so a released address is not reused at once (a
stale conntrack or ipcache entry for it has time to go).
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import time
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .spec import INVALID_CONFIG, IO_FAILURE, IPAM_EXHAUSTED, CNIError

DEFAULT_DATA_DIR = "/var/lib/cni/meshcni"
_FORMAT = 1


class Range:
    """One subnet to allocate from (host-local's range object).

    Plain classes here, not dataclasses: importing dataclasses costs the
    plugin ~6 ms per pod, a tenth of its start-up."""
    __slots__ = ("subnet", "start", "end", "gateway")

    def __init__(self, subnet, start, end, gateway):
        self.subnet, self.start, self.end, self.gateway = subnet, start, end, gateway

    @property
    def family(self) -> int:
        return self.subnet.version

    def usable(self) -> int:
        return int(self.end) - int(self.start) + 1


class IPAMConfig:
    __slots__ = ("ranges", "exclude", "data_dir")

    def __init__(self, ranges: List[List[Range]], exclude=None, data_dir: str = DEFAULT_DATA_DIR):
        self.ranges = ranges            # one list per family, tried in order (host-local's "range sets")
        self.exclude = list(exclude or [])
        self.data_dir = data_dir


def _net(s, where: str):
    try:
        return ipaddress.ip_network(s, strict=False)
    except (TypeError, ValueError):
        raise CNIError(INVALID_CONFIG, f"{where}: {s!r} is not a CIDR") from None


def _addr(s, where: str):
    try:
        return ipaddress.ip_address(s)
    except (TypeError, ValueError):
        raise CNIError(INVALID_CONFIG, f"{where}: {s!r} is not an IP address") from None


def parse_range(obj, where: str) -> Range:
    if not isinstance(obj, dict) or "subnet" not in obj:
        raise CNIError(INVALID_CONFIG, f"{where}.subnet is required")
    net = _net(obj["subnet"], f"{where}.subnet")
    if net.version == 4 and net.prefixlen > 30 or net.version == 6 and net.prefixlen > 126:
        raise CNIError(INVALID_CONFIG, f"{where}.subnet: {net} is too small to allocate from")
    # the network and (IPv4) broadcast addresses are never handed out
    first = net.network_address + 1
    last = net.broadcast_address - (1 if net.version == 4 else 0)
    start = _addr(obj["rangeStart"], f"{where}.rangeStart") if "rangeStart" in obj else first
    end = _addr(obj["rangeEnd"], f"{where}.rangeEnd") if "rangeEnd" in obj else last
    for name, a in (("rangeStart", start), ("rangeEnd", end)):
        if a.version != net.version or not (first <= a <= last):
            raise CNIError(INVALID_CONFIG, f"{where}.{name}: {a} is not a usable address of {net}")
    if start > end:
        raise CNIError(INVALID_CONFIG, f"{where}: rangeStart {start} is after rangeEnd {end}")
    gw = None
    if obj.get("gateway"):
        gw = _addr(obj["gateway"], f"{where}.gateway")
        if gw not in net:
            raise CNIError(INVALID_CONFIG, f"{where}.gateway: {gw} is not in {net}")
    return Range(net, start, end, gw)


def parse_config(ipam: dict, default_data_dir: str = DEFAULT_DATA_DIR) -> IPAMConfig:
    """The plugin's ``ipam`` object: ``subnet`` (shorthand) or ``ranges``."""
    if not isinstance(ipam, dict):
        raise CNIError(INVALID_CONFIG, "ipam: must be an object")
    sets: List[List[Range]] = []
    if "ranges" in ipam:
        if not isinstance(ipam["ranges"], list) or not ipam["ranges"]:
            raise CNIError(INVALID_CONFIG, "ipam.ranges: must be a non-empty list of range lists")
        for i, rs in enumerate(ipam["ranges"]):
            if not isinstance(rs, list) or not rs:
                raise CNIError(INVALID_CONFIG, f"ipam.ranges[{i}]: must be a non-empty list of ranges")
            sets.append([parse_range(r, f"ipam.ranges[{i}][{j}]") for j, r in enumerate(rs)])
    elif "subnet" in ipam:
        sets.append([parse_range(ipam, "ipam")])
    else:
        raise CNIError(INVALID_CONFIG, "ipam: needs subnet or ranges")
    fams = [s[0].family for s in sets]
    for i, s in enumerate(sets):
        if any(r.family != s[0].family for r in s):
            raise CNIError(INVALID_CONFIG, f"ipam.ranges[{i}]: mixes IPv4 and IPv6")
    if len(set(fams)) != len(fams):
        raise CNIError(INVALID_CONFIG, "ipam.ranges: one range set per IP family")
    all_ranges = [r for s in sets for r in s]
    for i, a in enumerate(all_ranges):
        for b in all_ranges[i + 1:]:
            if a.subnet.version == b.subnet.version and a.subnet.overlaps(b.subnet):
                raise CNIError(INVALID_CONFIG, f"ipam: ranges {a.subnet} and {b.subnet} overlap")
    exclude = [_net(x, f"ipam.exclude[{i}]") for i, x in enumerate(ipam.get("exclude") or [])]
    data_dir = ipam.get("dataDir") or default_data_dir
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise CNIError(INVALID_CONFIG, f"ipam.dataDir: {data_dir!r} must be an absolute path")
    return IPAMConfig(sets, exclude, data_dir)


class Allocation:
    __slots__ = ("container_id", "ifname", "ips", "gateways", "extra", "created")

    def __init__(self, container_id: str, ifname: str, ips: List[str], gateways: List[Optional[str]],
                 extra: Optional[Dict[str, str]] = None, created: float = 0.0):
        self.container_id, self.ifname = container_id, ifname
        self.ips = ips                  # CIDR notation with the range's prefix ("10.1.0.5/24")
        self.gateways = gateways
        self.extra = dict(extra or {})  # e.g. host-side veth name
        self.created = created

    @property
    def key(self) -> str:
        return f"{self.container_id}/{self.ifname}"


class Store:
    """The allocations of one network, on disk, under a lock."""

    def __init__(self, data_dir: str, network: str):
        if not network or "/" in network or network in (".", ".."):
            raise CNIError(INVALID_CONFIG, f"network name {network!r} cannot name a directory")
        self.dir = os.path.join(data_dir, network)
        self.path = os.path.join(self.dir, "allocations.json")
        self._state: Optional[dict] = None

    @contextlib.contextmanager
    def locked(self) -> Iterator["Store"]:
        """Hold the network's lock; read state on entry, write it on clean exit if changed."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise CNIError(IO_FAILURE, f"IPAM data dir {self.dir}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._state = self._read()
            before = json.dumps(self._state, sort_keys=True)
            yield self
            if json.dumps(self._state, sort_keys=True) != before:
                self._write(self._state)
        finally:
            self._state = None
            os.close(fd)  # closing releases the flock

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                st = json.load(f)
        except FileNotFoundError:
            return {"format": _FORMAT, "allocations": {}, "last": {}}
        except (OSError, ValueError) as e:
            raise CNIError(IO_FAILURE, f"IPAM state {self.path} is unreadable: {e}") from None
        if not isinstance(st, dict) or st.get("format") != _FORMAT:
            raise CNIError(IO_FAILURE, f"IPAM state {self.path}: unknown format {st.get('format') if isinstance(st, dict) else st!r}")
        return st

    def _write(self, st: dict) -> None:
        try:
            tmp = os.path.join(self.dir, f".allocations.{os.getpid()}")  # under the lock: one writer
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(st, f, sort_keys=True, indent=1)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the rename itself must survive a crash
            finally:
                os.close(dfd)
        except OSError as e:
            raise CNIError(IO_FAILURE, f"IPAM state {self.path}: {e.strerror}") from None

    # -- operations (inside locked()) --------------------------------------

    def get(self, container_id: str, ifname: str) -> Optional[Allocation]:
        rec = self._state["allocations"].get(f"{container_id}/{ifname}")
        return _alloc(rec) if rec else None

    def all(self) -> List[Allocation]:
        return [_alloc(r) for r in self._state["allocations"].values()]

    def used(self) -> Set[str]:
        return {ip.split("/")[0] for r in self._state["allocations"].values() for ip in r["ips"]}

    def allocate(self, cfg: IPAMConfig, container_id: str, ifname: str,
                 extra: Optional[Dict[str, str]] = None) -> Tuple[Allocation, bool]:
        """(allocation, created). An existing key returns what it has (retry-safe)."""
        old = self.get(container_id, ifname)
        if old is not None:
            if extra and any(old.extra.get(k) != v for k, v in extra.items()):
                old.extra.update(extra)
                self._state["allocations"][old.key] = _rec(old)
            return old, False
        used = self.used()
        ips, gws = [], []
        for i, rset in enumerate(cfg.ranges):
            got = self._pick(rset, used, cfg.exclude, str(i))
            if got is None:
                total = sum(r.usable() for r in rset)
                raise CNIError(IPAM_EXHAUSTED,
                               f"IPAM: no free address in {', '.join(str(r.subnet) for r in rset)} "
                               f"({total} usable, all allocated or excluded) for {container_id}/{ifname}")
            r, a = got
            ips.append(f"{a}/{r.subnet.prefixlen}")
            gws.append(str(r.gateway) if r.gateway else None)
            self._state["last"][str(i)] = str(a)
        al = Allocation(container_id, ifname, ips, gws, dict(extra or {}), round(time.time(), 3))
        self._state["allocations"][al.key] = _rec(al)
        return al, True

    def _pick(self, rset: List[Range], used: Set[str], exclude, slot: str):
        last = self._state["last"].get(slot)
        last_a = ipaddress.ip_address(last) if last else None
        # start right after the last address handed out, wrapping once over every range
        order: List[Tuple[Range, int, int]] = []
        for r in rset:
            lo, hi = int(r.start), int(r.end)
            if last_a is not None and last_a.version == r.family and lo <= int(last_a) <= hi:
                order.insert(0, (r, int(last_a) + 1, hi))
                order.append((r, lo, int(last_a)))
            else:
                order.append((r, lo, hi))
        for r, lo, hi in order:
            n = lo
            while n <= hi:
                a = ipaddress.ip_address(n) if r.family == 4 else ipaddress.IPv6Address(n)
                skip = next((x for x in exclude if x.version == r.family and a in x), None)
                if skip is not None:
                    n = int(skip.broadcast_address) + 1
                    continue
                if (r.gateway is None or a != r.gateway) and str(a) not in used:
                    return r, a
                n += 1
        return None

    def release(self, container_id: str, ifname: str) -> Optional[Allocation]:
        rec = self._state["allocations"].pop(f"{container_id}/{ifname}", None)
        return _alloc(rec) if rec else None

    def gc(self, valid: Iterable[Tuple[str, str]]) -> List[Allocation]:
        """Release every allocation whose (containerID, ifname) is not in ``valid``."""
        keep = {f"{c}/{i}" for c, i in valid}
        gone = [k for k in self._state["allocations"] if k not in keep]
        return [_alloc(self._state["allocations"].pop(k)) for k in gone]


def _rec(a: Allocation) -> dict:
    return {"containerID": a.container_id, "ifname": a.ifname, "ips": a.ips,
            "gateways": a.gateways, "extra": a.extra, "created": a.created}


def _alloc(r: dict) -> Allocation:
    return Allocation(r["containerID"], r["ifname"], list(r["ips"]), list(r.get("gateways") or []),
                      dict(r.get("extra") or {}), r.get("created", 0.0))
