# SPDX-License-Identifier: MIT OR Apache-2.0
"""Ethernet/IP/L4 frames with correct checksums, and a parser that checks them.

For the translation tests: an incremental checksum update is only right if
the checksums were right before, and the test must see that they still are.
"""
import ipaddress
import struct

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _pseudo(src, dst, proto, length):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + struct.pack("!BBH", 0, proto, length)
    return a.packed + b.packed + struct.pack("!IxxxB", length, proto)


def l4(src, dst, proto, sport=0, dport=0, flags=SYN, payload=b"x", icmp_type=8, ident=0, zero_udp_csum=False,
       icmp_body=None):
    if proto == TCP:
        h = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
        c = csum(_pseudo(src, dst, proto, len(h)) + h)
        return h[:16] + struct.pack("!H", c) + h[18:]
    if proto == UDP:
        h = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        if zero_udp_csum:
            return h
        c = csum(_pseudo(src, dst, proto, len(h)) + h) or 0xFFFF
        return h[:6] + struct.pack("!H", c) + h[8:]
    body = icmp_body if icmp_body is not None else struct.pack("!HH", ident, 1) + payload
    h = struct.pack("!BBH", icmp_type, 0, 0) + body
    c = csum((_pseudo(src, dst, proto, len(h)) if proto == ICMP6 else b"") + h)
    return h[:2] + struct.pack("!H", c) + h[4:]


def ip(src, dst, proto, payload, ident=1, frag=0, mf=False, ttl=64):
    a = ipaddress.ip_address(src)
    if a.version == 6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, ttl, a.packed,
                           ipaddress.ip_address(dst).packed) + payload
    fo = (frag & 0x1FFF) | (0x2000 if mf else 0)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, fo, ttl, proto, 0, a.packed,
                    ipaddress.ip_address(dst).packed)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def eth(l3: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x86DD if (l3[0] >> 4) == 6 else 0x0800) + l3


def packet(src, dst, proto, sport=0, dport=0, **kw) -> bytes:
    ipkw = {k: kw.pop(k) for k in ("frag", "mf") if k in kw}
    if "ip_id" in kw:
        ipkw["ident"] = kw.pop("ip_id")
    return eth(ip(src, dst, proto, l4(src, dst, proto, sport, dport, **kw), **ipkw))


class Parsed:
    """What a frame says, with every checksum checked (assert)."""

    def __init__(self, frame: bytes, check_l4=True):
        l3 = frame[14:]
        self.v6 = (l3[0] >> 4) == 6
        if self.v6:
            self.proto = l3[6]
            self.src = str(ipaddress.ip_address(l3[8:24]))
            self.dst = str(ipaddress.ip_address(l3[24:40]))
            self.payload = l3[40:40 + struct.unpack("!H", l3[4:6])[0]]
        else:
            ihl = (l3[0] & 0xF) * 4
            assert csum(l3[:ihl]) == 0, "IPv4 header checksum"
            self.proto = l3[9]
            self.src = str(ipaddress.ip_address(l3[12:16]))
            self.dst = str(ipaddress.ip_address(l3[16:20]))
            self.payload = l3[ihl:struct.unpack("!H", l3[2:4])[0]]
            self.frag = struct.unpack("!H", l3[6:8])[0]
        p = self.payload
        self.sport = self.dport = None
        if self.proto in (TCP, UDP):
            self.sport, self.dport = struct.unpack("!HH", p[:4])
            if check_l4 and not (self.proto == UDP and not self.v6 and p[6:8] == b"\0\0"):
                assert csum(_pseudo(self.src, self.dst, self.proto, len(p)) + p) == 0, "L4 checksum"
        elif self.proto in (ICMP, ICMP6):
            self.icmp_type = p[0]
            self.ident = struct.unpack("!H", p[4:6])[0]
            ph = _pseudo(self.src, self.dst, self.proto, len(p)) if self.proto == ICMP6 else b""
            assert csum(ph + p) == 0, "ICMP checksum"

    def inner(self) -> "Parsed":
        """The packet quoted in an ICMP error (its L4 checksum is not checked)."""
        return Parsed(b"\0" * 14 + self.payload[8:], check_l4=False)
