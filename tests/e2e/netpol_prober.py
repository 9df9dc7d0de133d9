# SPDX-License-Identifier: MIT OR Apache-2.0
"""A probe worker that runs inside one pod (or an external host, or a node): standard library only.

Reads one JSON line per round from stdin, a list of
``[ip, port, protocol, source_port, expected_name]``, runs every probe of
the round at once and writes one JSON line back, a result per probe:

- ``ok``: TCP connected and the server greeted with ``expected_name``;
  UDP got ``expected_name`` back;
- ``timeout``: nothing within the round's timeout (dropped by policy);
- anything else (``wrong:<name>``, ``err:<reason>``) is always a failure.

Each probe binds its own source port, so no probe reuses the conntrack
entry of an earlier one.
"""
import json
import selectors
import socket
import sys
import time


def run(probes, timeout):
    sel = selectors.DefaultSelector()
    res = [None] * len(probes)
    live = {}
    for i, (ip, port, proto, sport, _) in enumerate(probes):
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", sport))
            s.setblocking(False)
            if proto == "TCP":
                s.connect_ex((ip, port))
            else:
                s.connect((ip, port))
                s.send(b"probe")
        except OSError as e:
            res[i] = f"err:{e.strerror or e}"
            s.close()
            continue
        sel.register(s, selectors.EVENT_READ, i)
        live[i] = s
    end = time.monotonic() + timeout
    while live:
        left = end - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            i, s = key.data, key.fileobj
            try:
                data = s.recv(256)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                res[i] = f"err:{e.strerror or e}"
            else:
                name = data.decode(errors="replace").strip()
                res[i] = "ok" if name == probes[i][4] else f"wrong:{name}"
            sel.unregister(s)
            s.close()
            del live[i]
    for i, s in live.items():
        res[i] = "timeout"
        s.close()
    return res


def main():
    timeout = float(sys.argv[1])
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line), timeout)), flush=True)


if __name__ == "__main__":
    main()
