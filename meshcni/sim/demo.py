# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni sim demo``: a 2-node cluster, the demo app, and what works today, checked live.

Steps (each printed with what it showed):
1. ``sim up`` a 2-node cluster with a ``meshcni agent`` per node;
2. ``sim apply -f deploy/examples/demo.yaml`` (Service ``web`` + 3 backends, a
   client, an intruder, a NetworkPolicy);
3. wait for the pods (scheduled over both nodes, addressed by the real CNI plugin);
4. from the client, connect to every web backend by pod IP — across nodes —
   and print which pod answered;
5. the Service: its EndpointSlice, then 30 connections from the client to the
   ClusterIP (balanced by the agents' socket LB) must be answered by all
   three backends; then the NetworkPolicy: the intruder (not role=client) must
   be blocked while the client still gets through;
6. ``sim down`` unless ``--keep``.
Exit status 0 only if every check passed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from . import ops
from .topology import SimError

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "deploy", "examples", "demo.yaml")
PROBE = ("import socket,sys\n"
         "try:\n"
         "    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); print(s.recv(200).decode().strip())\n"
         "except OSError as e:\n"
         "    print('failed:', e); sys.exit(1)\n")


def run_demo(args) -> int:
    root = ops.state_root(args.state_root)
    name = args.name
    say = lambda s: print(s, flush=True)  # noqa: E731
    ok = True
    say(f"[1/6] bringing up cluster {name!r}: 2 nodes, a meshcni agent on each")
    try:
        ops.up(root, name, nodes=2, say=say)
    except SimError as e:
        print(f"meshcni sim demo: {e}", file=sys.stderr)
        return 1
    try:
        say(f"[2/6] applying {os.path.relpath(EXAMPLE)}")
        c = ops.Client(root, name)
        ops.apply(c, ops.load_documents([args.file or EXAMPLE]), "default", say=say)
        say("[3/6] waiting for the pods to run")
        deadline = time.monotonic() + 60
        while True:
            pods = c.request("GET", "/api/v1/namespaces/demo/pods")["items"]
            running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            if pods and len(running) == len(pods):
                break
            if time.monotonic() > deadline:
                raise SimError(f"pods not running after 60 s: "
                               f"{[p['metadata']['name'] for p in pods if p not in running]}")
            time.sleep(0.3)
        by_name = {p["metadata"]["name"]: p for p in pods}
        for p in sorted(by_name):
            st = by_name[p]["status"]
            say(f"      {p:9s} {st.get('podIP'):12s} on {by_name[p]['spec']['nodeName']}")
        client_node = by_name["client"]["spec"]["nodeName"]
        say("[4/6] the client connects to each web backend by pod IP")
        webs = sorted(n for n in by_name if n.startswith("web-"))
        crossed = False
        exec_argv = [sys.executable, "-m", "meshcni.cli", "sim"] + \
            (["--state-root", args.state_root] if args.state_root else []) + \
            ["exec", "--name", name, "demo/client", "--"]
        for w in webs:
            ip = by_name[w]["status"]["podIP"]
            node = by_name[w]["spec"]["nodeName"]
            crossed |= node != client_node
            p = subprocess.run(exec_argv + [sys.executable, "-c", PROBE, ip, "8080"], capture_output=True, text=True)
            answer = p.stdout.strip()
            good = p.returncode == 0 and answer == f"demo/{w}"
            ok &= good
            where = "another node" if node != client_node else "the same node"
            say(f"      {ip}:8080 ({w}, {where}) -> {answer or p.stderr.strip()}  {'ok' if good else 'FAILED'}")
        if not crossed:
            say("      (all backends landed on the client's node: cross-node not shown)")
        say("[5/6] the Service and its endpoints")
        svc = c.request("GET", "/api/v1/namespaces/demo/services/web")
        slices = c.request("GET", "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices",
                           query=[("labelSelector", "kubernetes.io/service-name=web")])["items"]
        eps = sorted(a for s in slices for e in s.get("endpoints", []) for a in e["addresses"])
        want = sorted(by_name[w]["status"]["podIP"] for w in webs)
        good = eps == want
        ok &= good
        say(f"      Service web: clusterIP {svc['spec'].get('clusterIP')}, EndpointSlice endpoints "
            f"{', '.join(eps)}  {'ok' if good else 'FAILED (want ' + ', '.join(want) + ')'}")
        cip = svc["spec"].get("clusterIP")
        counts = {}
        for _ in range(30):
            p = subprocess.run(exec_argv + [sys.executable, "-c", PROBE, cip, "80"], capture_output=True, text=True)
            who = p.stdout.strip() if p.returncode == 0 else "failed"
            counts[who] = counts.get(who, 0) + 1
        good = set(counts) == {f"demo/{w}" for w in webs}
        ok &= good
        say(f"      30 connections to {cip}:80 from the client -> "
            + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) + f"  {'ok' if good else 'FAILED'}")
        # the NetworkPolicy admits only role=client to app=web on the http port
        p = subprocess.run(exec_argv[:-2] + ["demo/intruder", "--", sys.executable, "-c", PROBE, cip, "80"],
                           capture_output=True, text=True)
        blocked = p.returncode != 0
        ok &= blocked
        say(f"      NetworkPolicy web-from-client: the intruder to {cip}:80 -> "
            f"{'blocked' if blocked else p.stdout.strip()}  {'ok' if blocked else 'FAILED (should be blocked)'}")
        say("[6/6] " + ("leaving the cluster up (--keep): meshcni sim down --name " + name if args.keep
                        else "taking the cluster down"))
    except SimError as e:
        print(f"meshcni sim demo: {e}", file=sys.stderr)
        ok = False
    finally:
        if not args.keep:
            ok &= ops.down(root, [name], say=say) == 0
    say("demo: " + ("every check passed" if ok else "SOME CHECKS FAILED"))
    return 0 if ok else 1
