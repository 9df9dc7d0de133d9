# SPDX-License-Identifier: MIT OR Apache-2.0
"""A TCP echo peer for datapath tests, run inside a test namespace.

    tcpecho.py serve IP PORT            prints "ready", echoes each connection once
    tcpecho.py connect IP PORT TIMEOUT  exit 0 if the echo came back, 1 if not

Standard library only, so it starts fast under ``ip netns exec``.
"""
import socket
import sys


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def serve(ip, port):
    s = socket.socket(family(ip))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.settimeout(2)
        try:
            c.sendall(c.recv(100))
        except OSError:
            pass
        c.close()


def connect(ip, port, timeout):
    try:
        s = socket.create_connection((ip, port), timeout=timeout)
        s.sendall(b"ping")
        return s.recv(10) == b"ping"
    except OSError:
        return False


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(0 if connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])) else 1)
