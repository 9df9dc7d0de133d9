# SPDX-License-Identifier: MIT OR Apache-2.0
"""A peer that answers with the address it saw, for the NAT tests.

    peerecho.py serve IP PORT         TCP and UDP on IP:PORT; prints "ready";
                                      each request is answered "IP PORT" of its sender
    peerecho.py ask tcp|udp IP PORT [TIMEOUT [SRC_PORT]]
                                      prints the answer ("IP PORT"), exit 1 on none
    peerecho.py rate IP PORT SECONDS  TCP connect+exchange+close in a loop; prints the count

Standard library only, so it starts fast under ``ip netns exec``.
"""
import socket
import sys
import threading
import time


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def serve(ip, port):
    t = socket.socket(family(ip))
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((ip, port))
    t.listen(1024)
    u = socket.socket(family(ip), socket.SOCK_DGRAM)
    u.bind((ip, port))

    def udp():
        while True:
            data, peer = u.recvfrom(2048)
            u.sendto(f"{peer[0]} {peer[1]}".encode(), peer)

    threading.Thread(target=udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        c, peer = t.accept()
        c.settimeout(2)
        try:
            c.recv(100)
            c.sendall(f"{peer[0]} {peer[1]}".encode())
        except OSError:
            pass
        c.close()


def ask(proto, ip, port, timeout=2.0, sport=0):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family(ip), kind)
    s.settimeout(timeout)
    if sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
    try:
        if proto == "tcp":
            s.connect((ip, port))
            s.sendall(b"?")
            data = s.recv(100)
        else:
            # connected: only an answer from (ip, port) itself counts, as for TCP
            s.connect((ip, port))
            s.send(b"?")
            data = s.recv(100)
    except OSError as e:
        print(type(e).__name__, file=sys.stderr)
        return 1
    print(data.decode())
    return 0


def rate(ip, port, seconds):
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.create_connection((ip, port), timeout=2)
        s.sendall(b"?")
        s.recv(100)
        s.close()
        n += 1
    print(n)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif cmd == "ask":
        a = sys.argv[2:]
        sys.exit(ask(a[0], a[1], int(a[2]), float(a[3]) if len(a) > 3 else 2.0, int(a[4]) if len(a) > 4 else 0))
    elif cmd == "rate":
        rate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
