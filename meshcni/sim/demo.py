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
6-8. multi-cluster (when the controller can mesh): a second cluster ``<name>-west``
   with ``deploy/examples/mesh-demo.yaml`` (the same Service demo/web, two
   backends of its own), ``sim mesh`` both ways and the Clusters Ready; demo/web
   annotated ``mesh-cni.dev/multi-cluster`` answers from both clusters through
   one ClusterIP; then ``mesh-cni.dev/affinity: local``: only local backends,
   the other cluster's while the local ones are not ready, and back;
9. ``sim down`` unless ``--keep``.
Exit status 0 only if every check passed.
"""
from __future__ import annotations

import json
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


def mesh_available() -> str:
    """Empty if this build can mesh clusters, else why not (the controller predates the mesh)."""
    from .cluster import controller_flags
    if "--cluster-name" not in controller_flags():
        return "this build's meshcni controller has no mesh (no --cluster-name flag)"
    return ""


def run_demo(args) -> int:
    root = ops.state_root(args.state_root)
    name = args.name
    west = f"{name}-west"
    say = lambda s: print(s, flush=True)  # noqa: E731
    ok = True
    no_mesh = mesh_available()
    total = 6 if no_mesh else 9
    step = iter(range(1, total + 1))

    def head(text: str) -> None:
        say(f"[{next(step)}/{total}] {text}")
    head(f"bringing up cluster {name!r}: 2 nodes, a meshcni agent on each")
    try:
        ops.up(root, name, nodes=2, say=say)
    except SimError as e:
        print(f"meshcni sim demo: {e}", file=sys.stderr)
        return 1
    try:
        head(f"applying {os.path.relpath(EXAMPLE)}")
        c = ops.Client(root, name)
        ops.apply(c, ops.load_documents([args.file or EXAMPLE]), "default", say=say)
        head("waiting for the pods to run")
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
        head("the client connects to each web backend by pod IP")
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
        head("the Service and its endpoints")
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
        if no_mesh:
            say(f"      (multi-cluster step skipped: {no_mesh})")
        else:
            ok &= _mesh_steps(root, name, west, c, head, say)
        up_now = [name] + ([] if no_mesh else [west])
        head("leaving the clusters up (--keep): meshcni sim down --all" if args.keep
             else f"taking {' and '.join(up_now)} down")
    except SimError as e:
        print(f"meshcni sim demo: {e}", file=sys.stderr)
        ok = False
    finally:
        if not args.keep:
            ok &= ops.down(root, [name] + ([] if no_mesh or not os.path.isdir(os.path.join(root, west))
                                           else [west]), say=say) == 0
    say("demo: " + ("every check passed" if ok else "SOME CHECKS FAILED"))
    return 0 if ok else 1


COUNT = ("import socket,sys,collections,json\n"
         "c=collections.Counter()\n"
         "for _ in range(int(sys.argv[3])):\n"
         "    try:\n"
         "        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2); c[s.recv(200).decode().strip()]+=1\n"
         "        s.close()\n"
         "    except OSError:\n"
         "        c['failed']+=1\n"
         "print(json.dumps(c))\n")


def _mesh_steps(root: str, east: str, west: str, c: "ops.Client", head, say) -> bool:
    """Two clusters, demo/web meshed: answers from both through one ClusterIP, then affinity local
    with failover to the other cluster and back. True if every check passed."""
    from .cluster import read_config
    from .mesh import mesh
    ok = True
    head(f"a second cluster {west!r} (1 node) with {os.path.relpath(MESH_EXAMPLE)}; `meshcni sim mesh {east} {west}`")
    ops.up(root, west, nodes=1, say=lambda s: None)
    w = ops.Client(root, west)
    ops.apply(w, ops.load_documents([MESH_EXAMPLE]), "default", say=lambda s: None)
    _wait_pods(w, "demo", 60)
    mesh(root, [east, west], say=lambda s: say(f"      {s}"))
    for n in (east, west):
        cfg = read_config(root, n)
        say(f"      {n}: pod CIDR {cfg.pod_cidr}, service CIDR {cfg.service_cidr} (no overlap: chosen by sim up)")
    for cl, here, other in ((c, east, west), (w, west, east)):
        ready = _wait(lambda: _condition(cl, other, "Ready") == "True", 30)
        ok &= ready
        say(f"      {here}: Cluster {other} Ready={_condition(cl, other, 'Ready')}  {'ok' if ready else 'FAILED'}")

    head(f"Service demo/web annotated mesh-cni.dev/multi-cluster in {east}: its ClusterIP answered from both clusters")
    c.request("PATCH", "/api/v1/namespaces/demo/services/web",
              {"metadata": {"annotations": {"mesh-cni.dev/multi-cluster": "true"}}}, "application/merge-patch+json")
    east_webs = sorted(p["metadata"]["name"] for p in c.request("GET", "/api/v1/namespaces/demo/pods")["items"]
                       if (p["metadata"].get("labels") or {}).get("app") == "web")
    west_webs = ["web-west-1", "web-west-2"]
    both = {f"demo/{x}" for x in east_webs + west_webs}
    cip = c.request("GET", "/api/v1/namespaces/demo/services/web")["spec"]["clusterIP"]
    me = f"/apis/mesh-cni.dev/v1alpha1/namespaces/demo/meshendpoints/web-{west}"
    got = _wait(lambda: _get(c, me), 30)
    if got:
        ips = ", ".join(m["ip"] for m in got["spec"].get("backend_port_mappings") or [])
        say(f"      MeshEndpoint demo/web-{west} (written by {east}'s controller): {ips}")
    counts = {}

    def answered_by_both():
        counts.clear()
        counts.update(_count(root, east, cip, 40))
        return set(counts) == both
    good = _wait(answered_by_both, 30)
    ok &= good
    say(f"      40 connections to {cip}:80 from {east}'s client -> " + _fmt(counts) + f"  {'ok' if good else 'FAILED'}")

    head(f"mesh-cni.dev/affinity: local in {east}: local backends first, {west} only while none is ready")
    c.request("PATCH", "/api/v1/namespaces/demo/services/web",
              {"metadata": {"annotations": {"mesh-cni.dev/affinity": "local"}}}, "application/merge-patch+json")
    local, remote = {f"demo/{x}" for x in east_webs}, {f"demo/{x}" for x in west_webs}

    def set_ready(ready: bool) -> None:
        for x in east_webs:  # the simulator's kubelet turns the pod's Ready off while annotated
            c.request("PATCH", f"/api/v1/namespaces/demo/pods/{x}",
                      {"metadata": {"annotations": {"sim.mesh-cni.dev/not-ready": None if ready else "true"}}},
                      "application/merge-patch+json")
    for label, want, ready in (("local only", local, None),
                               (f"{east}'s backends made not ready -> {west} answers", remote, False),
                               (f"ready again -> back to {east}", local, True)):
        if ready is not None:
            set_ready(ready)

        def only():
            counts.clear()
            counts.update(_count(root, east, cip, 20))
            return set(counts) == want
        good = _wait(only, 30)
        ok &= good
        say(f"      {label}: 20 connections -> " + _fmt(counts) + f"  {'ok' if good else 'FAILED'}")
    return ok


MESH_EXAMPLE = os.path.join(os.path.dirname(EXAMPLE), "mesh-demo.yaml")


def _fmt(counts: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "nothing"


def _count(root: str, cluster: str, ip: str, n: int) -> dict:
    argv = [sys.executable, "-m", "meshcni.cli", "sim", "--state-root", root, "exec", "--name", cluster,
            "demo/client", "--", sys.executable, "-c", COUNT, ip, "80", str(n)]
    p = subprocess.run(argv, capture_output=True, text=True)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"failed": n}


def _get(c: "ops.Client", path: str):
    try:
        return c.request("GET", path)
    except SimError:
        return None


def _condition(c: "ops.Client", cluster: str, kind: str):
    cl = _get(c, f"/apis/mesh-cni.dev/v1alpha1/clusters/{cluster}") or {}
    return next((x.get("status") for x in (cl.get("status") or {}).get("conditions") or [] if x.get("type") == kind),
                None)


def _wait(pred, timeout: float):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.3)


def _wait_pods(c: "ops.Client", ns: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        pods = c.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if pods and len(running) == len(pods):
            return pods
        if time.monotonic() > deadline:
            raise SimError(f"pods not running after {int(timeout)} s: "
                           f"{[p['metadata']['name'] for p in pods if p not in running]}")
        time.sleep(0.3)
