# SPDX-License-Identifier: MIT OR Apache-2.0
"""Client + backends in one process, run inside a test cgroup and netns.

argv[1] is JSON: {"backends": [[ip, port], ...], "ops": [op, ...]}. Listeners
(TCP and UDP) are opened on every backend address; each op then acts as a
client of the service address and reports which backend got it. Prints a JSON
list of results, one per op. Standard library only (fast start-up).
"""
import errno
import json
import select
import socket
import sys
import time


def fam(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def main():
    cfg = json.loads(sys.argv[1])
    tcp, udp = [], []
    for ip, port in cfg["backends"]:
        t = socket.socket(fam(ip), socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((ip, port))
        t.listen(1024)
        tcp.append(t)
        u = socket.socket(fam(ip), socket.SOCK_DGRAM)
        u.bind((ip, port))
        udp.append(u)
    out = []
    for op in cfg["ops"]:
        kind = op["op"]
        if kind == "sleep":
            time.sleep(op["s"])
            out.append(None)
        elif kind == "tcp":
            hits, peers, errs = [], [], []
            for _ in range(op.get("n", 1)):
                c = socket.socket(fam(op["ip"]), socket.SOCK_STREAM)
                try:
                    c.connect((op["ip"], op["port"]))
                except OSError as e:
                    errs.append(errno.errorcode.get(e.errno, str(e.errno)))
                    c.close()
                    continue
                peers.append(list(c.getpeername()[:2]))
                r, _, _ = select.select(tcp, [], [], 2)
                idx = tcp.index(r[0]) if r else -1
                if r:
                    r[0].accept()[0].close()
                hits.append(idx)
                c.close()
            out.append({"hits": hits, "peers": peers, "errors": errs})
        elif kind == "udp":
            hits, srcs, errs = [], [], []
            for _ in range(op.get("n", 1)):
                c = socket.socket(fam(op["ip"]), socket.SOCK_DGRAM)
                try:
                    c.sendto(b"ping", (op["ip"], op["port"]))
                except OSError as e:
                    errs.append(errno.errorcode.get(e.errno, str(e.errno)))
                    c.close()
                    continue
                r, _, _ = select.select(udp, [], [], 2)
                if not r:
                    hits.append(-1)
                    c.close()
                    continue
                data, peer = r[0].recvfrom(100)
                r[0].sendto(b"pong", peer)
                hits.append(udp.index(r[0]))
                c.settimeout(2)
                _, src = c.recvfrom(100)
                srcs.append(list(src[:2]))
                c.close()
            out.append({"hits": hits, "srcs": srcs, "errors": errs})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
