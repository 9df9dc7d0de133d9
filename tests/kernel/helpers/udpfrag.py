# SPDX-License-Identifier: MIT OR Apache-2.0
"""A UDP peer for fragment tests, run inside a test namespace.

    udpfrag.py serve IP PORT REPLY_LEN   prints "ready"; for each datagram prints its length
                                         and answers REPLY_LEN bytes (0: no answer)
    udpfrag.py send IP PORT LEN TIMEOUT  sends LEN bytes; prints the answer's length, or
                                         "none" when none came within TIMEOUT seconds
    udpfrag.py send6-dstopts SRC DST PORT LEN
                                         sends a LEN-byte UDP datagram from SRC as two IPv6
                                         fragments with a destination-options header after
                                         the fragment header (raw socket); prints "sent"

Datagrams larger than the link MTU are fragmented by the sending kernel
(IP_PMTUDISC_DONT / IPV6_PMTUDISC_DONT), so the peer only gets a datagram
when every fragment passed. Standard library only: starts fast.
"""
import os
import socket
import struct
import sys

IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT = 23, 0


def sock(ip):
    if ":" in ip:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    return s


def serve(ip, port, reply_len):
    s = sock(ip)
    s.bind((ip, port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        print(len(data), flush=True)
        if reply_len:
            s.sendto(b"r" * reply_len, peer)


def send(ip, port, n, timeout):
    s = sock(ip)
    s.settimeout(timeout)
    s.sendto(b"q" * n, (ip, port))
    try:
        print(len(s.recv(65535)))
    except socket.timeout:
        print("none")


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF or 0xFFFF


def send6_dstopts(src, dst, port, n):
    """The fragment layout Linux itself makes only behind a routing header (ip6_find_1stfragopt):
    RFC 8200 lets a sender put dest-opts in the fragmentable part, so every fragment's fragment
    header names dest-opts (60) as the next header, and only the first one holds the UDP header."""
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    payload = b"q" * n
    ulen = 8 + n
    pseudo = s6 + d6 + struct.pack("!IxxxB", ulen, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", 40000, port, ulen, 0) + payload
    udp = udp[:6] + struct.pack("!H", _csum(pseudo + udp)) + udp[8:]
    part = bytes([socket.IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0]) + udp  # dest-opts (PadN) + UDP
    ident = int.from_bytes(os.urandom(4), "big")
    cut = 1200
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
    for off, chunk in ((0, part[:cut]), (cut, part[cut:])):
        more = off == 0
        frag = struct.pack("!BBHI", 60, 0, off | int(more), ident)
        hdr = struct.pack("!IHBB16s16s", 6 << 28, len(frag) + len(chunk), 44, 64, s6, d6)
        s.sendto(hdr + frag + chunk, (dst, 0))
    print("sent")


if __name__ == "__main__":
    if sys.argv[1] == "send6-dstopts":
        send6_dstopts(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
