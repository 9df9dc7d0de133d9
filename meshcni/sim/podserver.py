# SPDX-License-Identifier: MIT OR Apache-2.0
"""The built-in workload of a simulated pod: answer on every container port with the pod's name.

    python -m meshcni.sim.podserver --name NS/POD [--tcp PORT ...] [--udp PORT ...]

TCP: on connect, writes ``NS/POD\\n`` (then echoes what it receives until the
peer closes, so long-lived connections can be tested); UDP: every datagram
is answered with ``NS/POD``. The one message ``PEER`` (TCP: the line
``PEER\\n``) is answered with the client's address as the pod saw it
instead (TCP ``peer IP\\n``, UDP ``NS/POD IP``): what tests of source
address preservation (``externalTrafficPolicy: Local``) read. Listens on
all addresses of the pod (IPv4 and IPv6). Standard library only: it starts
for every pod.
"""
from __future__ import annotations

import argparse
import selectors
import socket
import sys


def _listeners(port: int, kind: int) -> list:
    out = []
    for fam, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(fam, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                s.listen(512)
            s.setblocking(False)
            out.append(s)
        except OSError:
            continue  # no IPv6 in this pod: IPv4 only
    if not out:
        raise SystemExit(f"podserver: cannot listen on port {port}")
    return out


def _host(peer) -> str:
    """The client's address as text; an IPv4 client of a dual-stack socket without its ::ffff: prefix."""
    h = peer[0]
    return h[7:] if h.startswith("::ffff:") else h


def serve(name: str, tcp: list, udp: list) -> None:
    reply = name.encode()
    sel = selectors.DefaultSelector()
    for p in tcp:
        for s in _listeners(p, socket.SOCK_STREAM):
            sel.register(s, selectors.EVENT_READ, "accept")
    for p in udp:
        for s in _listeners(p, socket.SOCK_DGRAM):
            sel.register(s, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            try:
                if key.data == "accept":
                    c, peer = s.accept()
                    c.setblocking(False)
                    c.send(reply + b"\n")
                    sel.register(c, selectors.EVENT_READ, ("conn", _host(peer)))
                elif key.data != "udp":
                    data = s.recv(65536)
                    if data == b"PEER\n":
                        s.send(b"peer " + key.data[1].encode() + b"\n")
                    elif data:
                        s.send(data)
                    else:
                        sel.unregister(s)
                        s.close()
                else:
                    data, peer = s.recvfrom(65536)
                    s.sendto(reply + b" " + _host(peer).encode() if data == b"PEER" else reply, peer)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                if key.data != "udp" and key.data != "accept":
                    sel.unregister(s)
                    s.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="meshcni-podserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--tcp", type=int, action="append", default=[])
    p.add_argument("--udp", type=int, action="append", default=[])
    a = p.parse_args(argv)
    try:
        serve(a.name, a.tcp, a.udp)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
