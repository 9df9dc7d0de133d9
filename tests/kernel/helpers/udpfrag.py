# SPDX-License-Identifier: MIT OR Apache-2.0
"""A UDP peer for fragment tests, run inside a test namespace.

    udpfrag.py serve IP PORT REPLY_LEN   prints "ready"; for each datagram prints its length
                                         and answers REPLY_LEN bytes (0: no answer)
    udpfrag.py send IP PORT LEN TIMEOUT  sends LEN bytes; prints the answer's length, or
                                         "none" when none came within TIMEOUT seconds

Datagrams larger than the link MTU are fragmented by the sending kernel
(IP_PMTUDISC_DONT / IPV6_PMTUDISC_DONT), so the peer only gets a datagram
when every fragment passed. Standard library only: starts fast.
"""
import socket
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


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
