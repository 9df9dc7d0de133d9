# SPDX-License-Identifier: MIT OR Apache-2.0
"""Frames for fuzzing the tc programs: a grammar of valid frames plus mutations
(hypothesis draws), and an oracle that reads frame *bytes* the way a receiving
Linux stack would and says what a policy may let through.

The oracle is deliberately not a copy of bpf/lib/parse.h: it walks IPv6
extension headers without the program's limit, honours the IP length fields,
knows which ICMP belongs to which family, and keys fragments per hook, so
every place where the program reads a packet differently from the stack that
receives it shows up as a pass the oracle cannot explain.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from hypothesis import strategies as st

TCP, UDP, ICMP, ICMP6, SCTP = 6, 17, 1, 58, 132
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
EGRESS_HOOK, INGRESS_HOOK = "mc_from_pod", "mc_to_pod"

POD, PEER, OTHER, WORLD = 1000, 2000, 3000, 2
POD4, PEER4, OTHER4, WORLD4 = "10.0.0.1", "10.0.1.1", "192.168.7.9", "203.0.113.5"
POD6, PEER6, WORLD6 = "fd00::1", "fd00::1:1", "2001:db8::5"
IPCACHE = {POD4 + "/32": POD, PEER4 + "/32": PEER, "192.168.0.0/16": OTHER,
           POD6 + "/128": POD, PEER6 + "/128": PEER}
REMOTE4 = [PEER4, OTHER4, WORLD4, "192.168.200.1", "10.0.0.2"]
REMOTE6 = [PEER6, WORLD6, "fe80::1", "ff02::1", "::ffff:10.0.1.1", "fd00::2"]
PORTS = [80, 53, 22, 443, 1234, 40000, 0, 65535]
V4_ERRORS, V6_ERRORS = (3, 4, 5, 11, 12), (1, 2, 3, 4)
ND_TYPES = set(range(130, 138)) | {143}
# Linux conntrack's ICMP pairs (nf_conntrack_proto_icmp.c / _icmpv6.c invmap and valid_new):
# request type -> its reply type; only a request opens a flow, only its reply answers it, and
# any other non-error message is not tracked at all
ICMP_PAIRS = {4: {8: 0, 13: 14, 15: 16, 17: 18}, 6: {128: 129, 139: 140}}
EXT_TYPES = (0, 43, 60, 51, 44)


def _u16(a: str) -> bytes:
    ip = ipaddress.ip_address(a)
    return ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed


_NETS = [(ipaddress.ip_network(p), i) for p, i in IPCACHE.items()]


def identity(addr16: bytes) -> int:
    """The policy's identity of a unified (v4-mapped) address: longest prefix, else world."""
    a = ipaddress.IPv6Address(addr16)
    ip = a.ipv4_mapped or a
    best = None
    for net, ident in _NETS:
        if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, ident)
    return best[1] if best else WORLD


# ---------------------------------------------------------------------------
# building frames


@dataclass
class Spec:
    """A frame as the grammar made it (before byte mutations); mirrors and ICMP
    errors of earlier frames are made from this."""
    fam: int
    src: str
    dst: str
    proto: int              # the L4 protocol number the last header names
    sport: int = 0
    dport: int = 0
    flags: int = 0
    itype: int = 0
    icode: int = 0
    iid: int = 0
    inner: bytes = b""      # quoted packet of an ICMP error
    payload: bytes = b""
    options: bytes = b""    # IPv4 options
    frag: Optional[Tuple[int, bool, int]] = None  # (offset in 8-byte units, more, ident)
    ext: Tuple = ()         # IPv6 extension headers before the L4: (type, size units, extra)
    l4_raw: bool = False    # a later fragment: payload only, no L4 header


def l4_bytes(s: Spec) -> bytes:
    if s.l4_raw:
        return s.payload
    if s.proto == TCP:
        return struct.pack("!HHIIBBHHH", s.sport, s.dport, 1, 0, 5 << 4, s.flags, 65535, 0, 0) + s.payload
    if s.proto == UDP:
        return struct.pack("!HHHH", s.sport, s.dport, 8 + len(s.payload), 0) + s.payload
    if s.proto == SCTP:
        return struct.pack("!HHII", s.sport, s.dport, 1, 0) + b"\x01\x00\x00\x04" + s.payload
    if s.proto in (ICMP, ICMP6):
        if s.inner:
            body = b"\0\0\x05\xdc" + s.inner
        else:
            body = struct.pack("!HH", s.iid, 1) + s.payload
        return struct.pack("!BBH", s.itype, s.icode, 0) + body
    return s.payload


def _ext6(chain, l4_proto: int) -> Tuple[int, bytes]:
    """IPv6 extension headers: (first next-header, bytes)."""
    out = b""
    types = [c[0] for c in chain]
    for i, (t, size, extra) in enumerate(chain):
        nh = types[i + 1] if i + 1 < len(chain) else l4_proto
        if t == 44:
            off, more, ident = extra
            out += struct.pack("!BBHI", nh, 0, (off << 3) | (1 if more else 0), ident)
        elif t == 51:   # AH: length in 4-byte units minus 2
            out += bytes([nh, size + 1]) + b"\0" * ((size + 3) * 4 - 2)
        elif t == 43:   # routing: type, segments left
            out += bytes([nh, size, extra & 0xFF, (extra >> 8) & 0xFF]) + b"\0" * ((size + 1) * 8 - 4)
        else:           # hop-by-hop, destination options: PadN
            body = (size + 1) * 8 - 2
            out += bytes([nh, size, 1, body - 2]) + b"\0" * (body - 2)
    return (types[0] if chain else l4_proto), out


def l3_bytes(s: Spec) -> bytes:
    l4 = l4_bytes(s)
    src, dst = ipaddress.ip_address(s.src).packed, ipaddress.ip_address(s.dst).packed
    if s.fam == 4:
        ihl = 5 + len(s.options) // 4
        off, more, ident = s.frag or (0, False, 1)
        fo = (off & 0x1FFF) | (0x2000 if more else 0)
        return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident & 0xFFFF, fo, 64,
                           s.proto, 0, src, dst) + s.options + l4
    nh, ext = _ext6(s.ext, s.proto)
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), nh, 64, src, dst) + ext + l4


def frame_bytes(s: Spec, ethertype: Optional[int] = None) -> bytes:
    if ethertype is None:
        ethertype = 0x0800 if s.fam == 4 else 0x86DD
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + l3_bytes(s)


def _fam_of(a: str) -> int:
    return ipaddress.ip_address(a).version


@st.composite
def fresh_spec(draw, hook: str) -> Spec:
    fam = draw(st.sampled_from([4, 4, 6]))
    local = POD4 if fam == 4 else POD6
    remote = draw(st.sampled_from(REMOTE4 if fam == 4 else REMOTE6))
    if draw(st.integers(0, 3)) == 0:  # what the policy admits, so that flows open
        src, dst = (local, PEER4 if fam == 4 else PEER6)
        if hook == INGRESS_HOOK:
            src, dst = dst, src
        return Spec(fam, src, dst, draw(st.sampled_from([TCP, UDP])), sport=draw(st.sampled_from([1234, 40000])),
                    dport=draw(st.sampled_from([80, 53])), flags=SYN,
                    frag=(0, True, draw(st.sampled_from([1, 2]))) if fam == 4 and draw(st.booleans()) else None,
                    ext=((44, 0, (0, True, 2)),) if fam == 6 and draw(st.booleans()) else ())
    if draw(st.integers(0, 9)) == 0:  # spoofed / odd: anything on either side
        local = draw(st.sampled_from(REMOTE4 if fam == 4 else REMOTE6))
    src, dst = (local, remote) if hook == EGRESS_HOOK else (remote, local)
    icmp = ICMP if fam == 4 else ICMP6
    proto = draw(st.sampled_from([TCP, TCP, TCP, UDP, UDP, SCTP, icmp, icmp,
                                  ICMP6 if fam == 4 else ICMP, 253, 47, 50, 59]))
    s = Spec(fam, src, dst, proto)
    port = st.one_of(st.sampled_from(PORTS), st.integers(0, 65535))
    s.sport, s.dport = draw(port), draw(port)
    if proto == TCP:
        s.flags = draw(st.sampled_from([SYN, SYN, ACK, SYN | ACK, PSH | ACK, FIN | ACK, RST, 0, 0xFF]))
    if proto in (ICMP, ICMP6):
        types = ([8, 0, 13, 14, 15, 16, 17, 18, 9] + list(V4_ERRORS)) if proto == ICMP else \
            ([128, 129, 139, 135, 136, 133, 143, 200] + list(V6_ERRORS))
        s.itype = draw(st.one_of(st.sampled_from(types), st.integers(0, 255)))
        s.iid = draw(st.sampled_from([7, 77, 1234]))
        if s.itype in (V4_ERRORS if proto == ICMP else V6_ERRORS) and draw(st.booleans()):
            inner_src, inner_dst = dst, draw(st.sampled_from(REMOTE4 if fam == 4 else REMOTE6))
            inner = Spec(fam, inner_src, inner_dst, draw(st.sampled_from([TCP, UDP, icmp])),
                         sport=s.sport, dport=s.dport, itype=8 if fam == 4 else 128, iid=s.iid)
            s.inner = l3_bytes(inner)[:draw(st.sampled_from([28, 48, 60, 200]))]
    s.payload = draw(st.binary(max_size=24))
    if fam == 4:
        if draw(st.integers(0, 7)) == 0:
            n = draw(st.integers(1, 10))
            s.options = draw(st.sampled_from([b"\x01" * 4 * n, b"\x00" * 4 * n]))
        if draw(st.integers(0, 4)) == 0:
            s.frag = (draw(st.sampled_from([0, 0, 1, 2, 3, 185, 8191])), draw(st.booleans()),
                      draw(st.sampled_from([1, 2, 3, 0xBEEF])))
            if s.frag[0]:
                s.l4_raw = True
    else:
        n = draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 6, 7]))
        chain = []
        for _ in range(n):
            t = draw(st.sampled_from(EXT_TYPES))
            size = draw(st.integers(0, 3))
            extra = 0
            if t == 44:
                extra = (draw(st.sampled_from([0, 0, 1, 2, 185])), draw(st.booleans()),
                         draw(st.sampled_from([1, 2, 0x12345678])))
            elif t == 43:
                extra = draw(st.sampled_from([0, 0, 0x0100, 0x0104, 0x0204]))
            chain.append((t, size, extra))
        s.ext = tuple(chain)
        if any(t == 44 and e[0] for t, _, e in chain):
            s.l4_raw = True
    return s


def mirror(s: Spec, draw) -> Spec:
    """The other side of the flow s belongs to (a reply, or a forward packet seen twice)."""
    r = Spec(**{**s.__dict__})
    if draw(st.integers(0, 3)):
        r.src, r.dst, r.sport, r.dport = s.dst, s.src, s.dport, s.sport
        r.itype = {8: 0, 0: 8, 128: 129, 129: 128, 13: 14, 15: 16, 17: 18, 139: 140}.get(s.itype, s.itype)
    if r.proto == TCP:
        r.flags = draw(st.sampled_from([SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, SYN]))
    r.frag, r.l4_raw = None, False
    r.ext = tuple(e for e in s.ext if e[0] != 44)
    r.payload = draw(st.binary(max_size=16))
    return r


def later_fragment(s: Spec, draw) -> Spec:
    """Another fragment of s's datagram (same addresses, protocol and id)."""
    r = Spec(**{**s.__dict__})
    r.l4_raw, r.inner = True, b""
    r.payload = draw(st.binary(min_size=8, max_size=32))
    off = draw(st.sampled_from([1, 2, 3, 9, 185]))
    more = draw(st.booleans())
    if s.fam == 4:
        r.frag = (off, more, (s.frag or (0, False, 1))[2])
    else:
        fr = [e for e in s.ext if e[0] == 44]
        ident = fr[0][2][2] if fr else 0x12345678
        keep = [e for e in s.ext if e[0] != 44]
        pos = draw(st.integers(0, len(keep)))
        keep.insert(pos, (44, 0, (off, more, ident)))
        r.ext = tuple(keep)
    return r


def icmp_error_about(s: Spec, draw) -> Spec:
    """An ICMP error quoting the packet s, sent back towards s's sender by any router."""
    inner = l3_bytes(s)
    inner = inner[:draw(st.sampled_from([len(inner), 28 + len(s.options), 48, 56, 8]))]
    fam = s.fam
    router = draw(st.sampled_from(REMOTE4 if fam == 4 else REMOTE6))
    proto = ICMP if fam == 4 else ICMP6
    if draw(st.integers(0, 9)) == 0:
        proto = ICMP6 if fam == 4 else ICMP  # the other family's ICMP
    itype = draw(st.sampled_from(V4_ERRORS if proto == ICMP else V6_ERRORS))
    return Spec(fam, router, s.src, proto, itype=itype, icode=draw(st.integers(0, 4)), inner=inner)


@st.composite
def mutate(draw, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(draw(st.integers(1, 3))):
        m = draw(st.integers(0, 6))
        low = 34 if b[12:14] == b"\x08\x00" else 54
        if m == 0 and len(b) > low:
            # (BPF_PROG_TEST_RUN refuses frames shorter than the IP header their ethertype names)
            del b[draw(st.integers(low, len(b) - 1)):]
        elif m == 1:
            i = draw(st.integers(14, max(14, min(len(b) - 1, 100))))
            if i < len(b):
                b[i] = draw(st.integers(0, 255))
        elif m == 2 and len(b) >= 20:  # IPv4 total length / IPv6 payload length
            i = 16 if b[12:14] == b"\x08\x00" else 18
            b[i:i + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 20, 28, 40, 0xFFFF,
                                                                   len(b) - 14, len(b) - 60])) & 0xFFFF)
        elif m == 3 and len(b) > 14:   # IHL / version nibble
            b[14] = draw(st.integers(0, 255))
        elif m == 4 and len(b) > 23:   # protocol / next header
            i = 23 if b[12:14] == b"\x08\x00" else 20
            b[i] = draw(st.sampled_from([0, 6, 17, 1, 58, 43, 44, 51, 60, 59, 132, 255]))
        elif m == 5:
            b += draw(st.binary(min_size=1, max_size=40))
        elif m == 6:
            b[12:14] = struct.pack("!H", draw(st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0])))
    return bytes(b)


# ---------------------------------------------------------------------------
# the oracle


class Bad(Exception):
    """The receiving stack drops this (invalid or truncated where it must not be)."""


@dataclass
class Sem:
    kind: str                      # "nonip" | "bad" | "ip"
    src: bytes = b""               # unified 16-byte addresses
    dst: bytes = b""
    proto: int = 0
    sport: int = 0
    dport: int = 0
    flags: int = 0
    nd: bool = False               # ICMPv6 ND/MLD
    error_inner: Optional[Tuple] = None   # flow tuple quoted by an ICMP error
    is_error: bool = False
    icmp_ct: str = "any"           # ICMP: "request" | "reply" | "none" (no pair: never tracked)
    later_frag: Optional[Tuple] = None    # reassembly key of a non-first fragment
    first_frag: Optional[Tuple] = None    # reassembly key of a first fragment
    why: str = ""

    def flow(self):
        return (self.src, self.dst, self.proto, self.sport, self.dport)

    def tracked(self):
        """The flow with what conntrack may do with it: (flow, may open / be forward, may be a reply)."""
        return (self.flow(), self.icmp_ct in ("any", "request"), self.icmp_ct in ("any", "reply"))


def _v4_mapped(a: bytes) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + a


def _l4(sem: Sem, fam: int, p: bytes, strict: bool, quoted: bool = False) -> None:
    """Ports / type of the L4 header at the start of p (the datagram's payload)."""
    proto = sem.proto
    icmp_here = (proto == ICMP and fam == 4) or (proto == ICMP6 and fam == 6)
    need = {TCP: 20, UDP: 8, SCTP: 12}.get(proto, 8 if icmp_here else 0)
    if quoted:
        need = min(need, 8)
    if len(p) < need:
        raise Bad(f"L4 header of proto {proto} truncated ({len(p)} < {need})")
    if proto == TCP:
        sem.sport, sem.dport = struct.unpack("!HH", p[:4])
        if not quoted:
            sem.flags = p[13]
            if strict and (p[12] >> 4 < 5 or (p[12] >> 4) * 4 > len(p)):
                raise Bad("TCP data offset")
    elif proto in (UDP, SCTP):
        sem.sport, sem.dport = struct.unpack("!HH", p[:4])
        if proto == UDP and strict and not quoted:
            ulen = struct.unpack("!H", p[4:6])[0]
            if ulen < 8 or ulen > len(p):
                raise Bad("UDP length")
    elif icmp_here:
        t = p[0]
        pairs = ICMP_PAIRS[fam]
        replies = {v: k for k, v in pairs.items()}
        ident = ("id", struct.unpack("!H", p[4:6])[0])
        if t in pairs:        # a request: its flow is (type, identifier), as Linux keys it
            sem.sport, sem.dport, sem.icmp_ct = ident, ("type", t), "request"
        elif t in replies:    # reverses onto its own request type's flow only
            sem.sport, sem.dport, sem.icmp_ct = ("type", replies[t]), ident, "reply"
        elif t not in (V4_ERRORS if fam == 4 else V6_ERRORS):
            sem.icmp_ct = "none"
        if sem.icmp_ct != "any":
            if not quoted and fam == 6 and t in ND_TYPES:
                sem.nd = True
        elif not quoted and (t in V4_ERRORS if fam == 4 else t in V6_ERRORS):
            sem.is_error = True
            try:
                sem.error_inner = parse_l3(p[8:], fam, strict=False, quoted=True).flow()
            except Bad:
                sem.error_inner = None


def parse_l3(b: bytes, fam: int, strict: bool = True, quoted: bool = False) -> Sem:
    sem = Sem("ip")
    if fam == 4:
        if len(b) < 20 or b[0] >> 4 != 4 or (b[0] & 15) < 5:
            raise Bad("IPv4 header")
        ihl = (b[0] & 15) * 4
        tot = struct.unpack("!H", b[2:4])[0]
        if strict:
            if tot < ihl or tot > len(b):
                raise Bad("IPv4 total length")
            b = b[:tot]
        if len(b) < ihl:
            raise Bad("IPv4 options truncated")
        sem.src, sem.dst = _v4_mapped(b[12:16]), _v4_mapped(b[16:20])
        sem.proto = b[9]
        fo = struct.unpack("!H", b[6:8])[0]
        off, more, ident = fo & 0x1FFF, bool(fo & 0x2000), struct.unpack("!H", b[4:6])[0]
        key = (4, sem.src, sem.dst, sem.proto, ident)
        if off:
            if quoted:
                raise Bad("quoted non-first fragment")
            sem.later_frag = key
            return sem
        if more and not quoted:
            sem.first_frag = key
        _l4(sem, 4, b[ihl:], strict, quoted)
        return sem
    if len(b) < 40 or b[0] >> 4 != 6:
        raise Bad("IPv6 header")
    plen, nh = struct.unpack("!HB", b[4:7])
    if strict:
        if plen == 0 and nh == 0:
            raise Bad("jumbogram")
        if 40 + plen > len(b):
            raise Bad("IPv6 payload length")
        b = b[:40 + plen]
    sem.src, sem.dst = b[8:24], b[24:40]
    off = 40
    if not quoted:  # the program reads a quoted packet's L4 right after its fixed header
        for i in range(64):
            if nh not in EXT_TYPES:
                break
            if len(b) < off + 8:
                raise Bad("extension header truncated")
            e = b[off:off + 8]
            if nh == 0 and i and strict:
                raise Bad("hop-by-hop not first")
            if nh == 43 and e[3] and strict:
                raise Bad("routing header with segments left")
            if nh == 44:
                fo = struct.unpack("!H", e[2:4])[0]
                key = (6, sem.src, sem.dst, struct.unpack("!I", e[4:8])[0])
                nh = e[0]
                off += 8
                if fo & 0xFFF8:
                    sem.proto = nh
                    sem.later_frag = key
                    return sem
                if fo & 1:
                    sem.first_frag = key
                continue
            size = (e[1] + 2) * 4 if nh == 51 else (e[1] + 1) * 8
            nh = e[0]
            off += size
        else:
            raise Bad("extension header chain too long")
    if nh == 59:
        raise Bad("no next header")
    sem.proto = nh
    _l4(sem, 6, b[off:], strict, quoted)
    return sem


def parse_frame(frame: bytes) -> Sem:
    if len(frame) < 14:
        return Sem("nonip")
    et = struct.unpack("!H", frame[12:14])[0]
    if et not in (0x0800, 0x86DD):
        return Sem("nonip")
    try:
        return parse_l3(frame[14:], 4 if et == 0x0800 else 6)
    except Bad as e:
        return Sem("bad", why=str(e))


def lenient(frame: bytes) -> Optional[Sem]:
    """The same frame read without the length checks (what else the program may have tracked)."""
    et = struct.unpack("!H", frame[12:14])[0] if len(frame) >= 14 else 0
    if et not in (0x0800, 0x86DD):
        return None
    try:
        return parse_l3(frame[14:], 4 if et == 0x0800 else 6, strict=False)
    except Bad:
        return None


DIR = {EGRESS_HOOK: "egress", INGRESS_HOOK: "ingress"}
OPPOSITE = {"egress": "ingress", "ingress": "egress"}


def policy_admits(direction: str, flow) -> bool:
    """The test's policy: ingress admits TCP/80 from PEER only; egress admits anything to
    PEER except TCP/22 (an explicit deny), UDP/53 to anyone, TCP/443 to OTHER."""
    src, dst, proto, _sport, dport = flow
    if direction == "ingress":
        return proto == TCP and dport == 80 and identity(src) == PEER
    peer = identity(dst)
    if peer == PEER:
        return not (proto == TCP and dport == 22)
    return (proto == UDP and dport == 53) or (proto == TCP and dport == 443 and peer == OTHER)


def _reverse(flow):
    s, d, p, sp, dp = flow
    return (d, s, p, dp, sp)


@dataclass
class Oracle:
    """What may pass, given what passed before (per direction)."""
    opened: Dict[str, Set[Tuple]] = field(default_factory=lambda: {"egress": set(), "ingress": set()})
    firsts: Dict[str, Dict[Tuple, Tuple]] = field(default_factory=lambda: {"egress": {}, "ingress": {}})
    # every first fragment seen (passed or not): a later fragment whose first was dropped may
    # still pass if its datagram is admitted *now* (the flow opened since). That is harmless:
    # the stack cannot reassemble it without a first fragment, and a first fragment sent
    # again meets the same (current) verdict; only the first fragment carries the L4 header.
    seen_firsts: Dict[str, Dict[Tuple, Tuple]] = field(default_factory=lambda: {"egress": {}, "ingress": {}})

    def seen(self, hook: str, sem: Sem) -> None:
        if sem.kind == "ip" and sem.first_frag and not sem.is_error and not sem.nd:
            self.seen_firsts[DIR[hook]][sem.first_frag] = sem.tracked()

    def explain(self, hook: str, frame: bytes, sem: Sem) -> Optional[str]:
        """Why a pass of this frame is admissible; None if it is not."""
        d = DIR[hook]
        if sem.kind == "nonip":
            return "non-ip"
        if sem.kind == "bad":
            return "dropped by the stack"
        if sem.nd and not sem.later_frag:
            return "nd"
        flow = None
        if sem.later_frag:
            if self.firsts[d].get(sem.later_frag):
                return "fragment of an admitted datagram"
            first = self.seen_firsts[d].get(sem.later_frag)
            if first is None:
                return None
            flow, forward, reply = first
            if (forward and flow in self.opened[d]) or (reply and _reverse(flow) in self.opened[OPPOSITE[d]]) \
                    or policy_admits(d, flow):
                return "fragment of a datagram admitted now"
            return None
        flow = sem.flow()
        if sem.is_error:
            inner = sem.error_inner
            if inner and (inner in self.opened[OPPOSITE[d]] or _reverse(inner) in self.opened[d]):
                return "related"
            flow = (sem.src, sem.dst, sem.proto, 0, 0)
        else:
            _, forward, reply = sem.tracked()
            if forward and flow in self.opened[d]:
                return "forward"
            syn_only = sem.proto == TCP and sem.flags & (SYN | ACK) == SYN
            if reply and not syn_only and _reverse(flow) in self.opened[OPPOSITE[d]]:
                return "reply"
        if policy_admits(d, flow):
            return "policy"
        return None

    def passed(self, hook: str, frame: bytes, sem: Sem) -> None:
        d = DIR[hook]
        for s in (sem, lenient(frame)):
            if s is None or s.kind != "ip" or s.is_error or s.nd:
                continue
            if s.later_frag:
                f = self.firsts[d].get(s.later_frag)
                if f and f[1]:
                    self.opened[d].add(f[0])
                continue
            if s.tracked()[1]:  # an ICMP reply or unpaired message opens nothing
                self.opened[d].add(s.flow())
            if s.first_frag:
                self.firsts[d][s.first_frag] = s.tracked()
