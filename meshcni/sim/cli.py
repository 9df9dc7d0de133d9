# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni sim``: whole clusters on this machine, in network namespaces.

    meshcni sim up [--name N] [--nodes K] [--pod-cidr C] [--service-cidr C] [--no-agent]
                                         CIDRs default to ranges no other cluster of the state root uses
    meshcni sim down [--name N]          remove every namespace, cgroup, mount and process it made
    meshcni sim status                   clusters, nodes, pods
    meshcni sim apply -f FILE|DIR        create or update objects (all validated first)
    meshcni sim delete -f FILE|DIR
    meshcni sim get KIND [-n NS | -A] [-o json]
    meshcni sim exec NS/POD -- CMD ...   run inside the pod (its netns and cgroup)
    meshcni sim host add|del|list [NAME] [--ip ADDR]
                                         external hosts on the underlay (clients from outside the cluster)
    meshcni sim exec host/NAME -- CMD    run on such a host
    meshcni sim exec node/NODE -- CMD    run on a node (its netns, a cgroup under the node's: the socket LB applies)
    meshcni sim logs [COMPONENT]         daemon, cni-<node>, or a pod's NS/POD
    meshcni sim mesh A B [C ...]         in each cluster a Cluster + kubeconfig Secret for every other
    meshcni sim unmesh A B [C ...]       remove them again
    meshcni sim apiserver stop|start     the API server as nodes and other clusters reach it (faults)
    meshcni sim demo [--keep]            2 nodes + the demo app, checked live

The cluster runs in a background process (``sim up`` returns once it is
ready and prints the kubeconfig path; kubectl and the ``kubernetes`` client
work against it). State lives under --state-root (default
/var/run/meshcni-sim, or $MESHCNI_SIM_ROOT). Needs root.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import List

from .cluster import daemon_pid
from .ops import READY, Client, load_documents, plan_documents, state_root
from .topology import DEFAULT_STATE_ROOT, SimError


def _root(args) -> str:
    return state_root(args.state_root)


# ---- up / down / the daemon -----------------------------------------------------

def cmd_up(args) -> int:
    from . import ops
    say = lambda s: print(s, flush=True)  # noqa: E731
    was_up = daemon_pid(_root(args), args.name)
    try:
        kubeconfig = ops.up(_root(args), args.name, args.nodes, args.pod_cidr, args.service_cidr,
                            agent=not args.no_agent, say=say)
    except SimError as e:
        print(f"meshcni sim up: {e}", file=sys.stderr)
        return 1
    if not was_up:
        say(f"cluster {args.name} is up; kubeconfig:")
    print(kubeconfig)
    return 0


def cmd_daemon(args) -> int:
    """The cluster's process: bring up, say READY, serve until SIGTERM, tear down."""
    import logging
    from .cluster import Cluster, ClusterConfig
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = _root(args)
    cfg = ClusterConfig(name=args.name, nodes=args.nodes, pod_cidr=args.pod_cidr, service_cidr=args.service_cidr,
                        agent=not args.no_agent, state_root=root, index=args.index)
    cl = Cluster(cfg)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    # `sim apiserver stop|start`: handled in the loop below, not in the handler
    node_api = []
    signal.signal(signal.SIGUSR1, lambda *a: node_api.append(False))
    signal.signal(signal.SIGUSR2, lambda *a: node_api.append(True))
    with open(os.path.join(cl.dir, "daemon.pid"), "w") as f:
        f.write(str(os.getpid()))
    try:
        cl.up(progress=lambda s: (print(s, flush=True), logging.getLogger("meshcni.sim").info(s)))
        if os.environ.get("MESHCNI_SIM_FAIL_AFTER_UP"):  # test hook: a bring-up that dies late
            raise SimError("MESHCNI_SIM_FAIL_AFTER_UP is set")
    except BaseException as e:
        logging.getLogger("meshcni.sim").error("bring-up failed: %s", e)
        print(f"error: {e}", flush=True)
        try:
            cl.down()
        except Exception as e2:
            logging.getLogger("meshcni.sim").error("teardown after failure: %s", e2)
        return 1
    print(READY + cl.kubeconfig, flush=True)
    # from now on stdout is nobody's: keep prints out of a closed pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    while not stop:
        while node_api:
            want = node_api.pop(0)
            try:
                cl.set_node_api(want)
                logging.getLogger("meshcni.sim").info("node-facing API server %s", "started" if want else "stopped")
            except Exception as e:
                logging.getLogger("meshcni.sim").error("node-facing API server: %s", e)
        time.sleep(0.1)
    logging.getLogger("meshcni.sim").info("stopping")
    try:
        cl.down()
    except Exception as e:  # `sim down` retries from the ledger; the reason stays in daemon.log
        logging.getLogger("meshcni.sim").error("teardown: %s", e)
        return 1
    return 0


def cmd_down(args) -> int:
    from . import ops
    from .cluster import list_clusters
    root = _root(args)
    return 1 if ops.down(root, list_clusters(root) if args.all else [args.name]) else 0


def cmd_apply(args) -> int:
    from . import ops
    ops.apply(Client(_root(args), args.name), load_documents(args.filename), args.namespace)
    return 0


def cmd_mesh(args) -> int:
    from .mesh import mesh
    n = mesh(_root(args), args.clusters, stale_grace=args.stale_grace)
    print(f"meshed {', '.join(args.clusters)}: {n['written']} objects written, {n['unchanged']} unchanged")
    return 0


def cmd_unmesh(args) -> int:
    from .mesh import unmesh
    n = unmesh(_root(args), args.clusters)
    print(f"unmeshed {', '.join(args.clusters)}: {n} objects deleted")
    return 0


def cmd_apiserver(args) -> int:
    """Stop or start the API server as nodes, controllers and other clusters see it (loopback stays)."""
    from .cluster import read_config
    from .supervise import probe_tcp
    from .topology import underlay_ns
    root = _root(args)
    pid = daemon_pid(root, args.name)
    if not pid:
        raise SimError(f"cluster {args.name} is not up")
    addr = read_config(root, args.name).node_api.split("//", 1)[1]
    host, port = addr.rsplit(":", 1)
    os.kill(pid, signal.SIGUSR2 if args.action == "start" else signal.SIGUSR1)
    want = args.action == "start"
    end = time.monotonic() + 10
    while probe_tcp(f"/run/netns/{underlay_ns(root)}", host, int(port)) != want:
        if time.monotonic() > end:
            raise SimError(f"cluster {args.name}: the API server on {addr} did not {args.action} within 10 s "
                           "(see sim logs)")
        time.sleep(0.05)
    print(f"cluster {args.name}: API server on {addr} {'started' if want else 'stopped'} "
          f"(127.0.0.1:{read_config(root, args.name).api_port} keeps serving)")
    return 0


def cmd_status(args) -> int:
    """Clusters and whether each is ready: its daemon up, and every component it started (the
    controller, each agent) running and serving, not in a restart loop; otherwise why not, with
    the component's last log line."""
    from .cluster import cluster_dir, list_clusters, read_config
    from .supervise import cluster_readiness
    root = _root(args)
    out = []
    for name in list_clusters(root):
        cfg = read_config(root, name)
        pid = daemon_pid(root, name)
        row = {"name": name, "nodes": cfg.nodes, "podCIDR": cfg.pod_cidr, "serviceCIDR": cfg.service_cidr,
               "api": f"http://127.0.0.1:{cfg.api_port}", "kubeconfig": os.path.join(root, name, "kubeconfig"),
               "ready": False, "problems": []}
        if not pid:
            row["state"] = "down (stale state: run sim down)"
            out.append(row)
            continue
        ready, row["problems"] = cluster_readiness(cluster_dir(root, name))
        try:
            c = Client(root, name)
            row["pods"] = len(c.request("GET", "/api/v1/pods")["items"])
            row["readyNodes"] = sum(1 for n in c.request("GET", "/api/v1/nodes")["items"]
                                    if any(x.get("type") == "Ready" and x.get("status") == "True"
                                           for x in n.get("status", {}).get("conditions", [])))
        except Exception as e:
            ready = False
            row["problems"].append(f"API server: {e}")
        row["ready"] = ready
        row["state"] = "ready" if ready else "not ready"
        out.append(row)
    if args.output == "json":
        print(json.dumps(out, indent=2))
    elif not out:
        print("no simulated clusters")
    else:
        _table(["NAME", "STATE", "NODES", "PODS", "POD-CIDR", "SERVICE-CIDR", "API"],
               [[r["name"], r["state"], f"{r.get('readyNodes', '-')}/{r['nodes']}", r.get("pods", "-"),
                 r["podCIDR"], r["serviceCIDR"], r["api"]] for r in out])
        for r in out:
            for p in r["problems"]:
                print(f"{r['name']}: {p}")
    return 0


# ---- talking to the cluster's API -----------------------------------------------

def cmd_delete(args) -> int:
    c = Client(_root(args), args.name)
    plan = plan_documents(c, load_documents(args.filename), args.namespace)
    for src, d, r, ns in reversed(plan):
        try:
            c.request("DELETE", Client.path(r, ns, d["metadata"]["name"]))
            print(f"{r['kind'].lower()}/{d['metadata']['name']} deleted")
        except SimError as e:
            if "not found" in str(e).lower():
                print(f"{r['kind'].lower()}/{d['metadata']['name']} not found")
            else:
                raise SimError(f"{src}: {e}") from None
    return 0


def _table(headers: List[str], rows: List[List]) -> None:
    rows = [[str(x) for x in r] for r in rows]
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for r in [headers] + rows:
        print("   ".join(x.ljust(w[i]) for i, x in enumerate(r)).rstrip())


def _age(ts: str) -> str:
    import datetime as dt
    try:
        s = (dt.datetime.now(dt.timezone.utc) - dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{int(s)}s" if s < 120 else f"{int(s // 60)}m" if s < 7200 else f"{int(s // 3600)}h"


def cmd_get(args) -> int:
    c = Client(_root(args), args.name)
    r = c.by_name(args.kind)
    if r is None:
        raise SimError(f"unknown resource type {args.kind!r} (try pods, services, nodes, endpointslices, ...)")
    ns = None if args.all_namespaces or not r["namespaced"] else args.namespace
    items = c.request("GET", Client.path(r, ns))["items"]
    if args.output == "json":  # a List, as kubectl prints it: scripts read .items either way
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}},
                         indent=2))
        return 0
    kind = r["kind"]
    rows = []
    for o in items:
        m, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
        base = ([m.get("namespace", "")] if r["namespaced"] and ns is None else []) + [m["name"]]
        if kind == "Pod":
            ready = next((x.get("status") for x in st.get("conditions") or [] if x.get("type") == "Ready"), "-")
            extra = [st.get("phase", "Pending"), ready, st.get("podIP", "") or "-", spec.get("nodeName", "") or "-"]
        elif kind == "Service":
            extra = [spec.get("type", "ClusterIP"), spec.get("clusterIP", "") or "-",
                     ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])]
        elif kind == "Node":
            ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), "-")
            extra = [ip, spec.get("podCIDR", "-")]
        elif kind == "EndpointSlice":
            extra = [o.get("addressType", ""), ",".join(str(p.get("port")) for p in o.get("ports") or []),
                     ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses", []))]
        else:
            extra = []
        rows.append(base + extra + [_age(m.get("creationTimestamp", ""))])
    headers = (["NAMESPACE"] if r["namespaced"] and ns is None else []) + ["NAME"] + {
        "Pod": ["STATUS", "READY", "IP", "NODE"], "Service": ["TYPE", "CLUSTER-IP", "PORTS"],
        "Node": ["INTERNAL-IP", "POD-CIDR"], "EndpointSlice": ["ADDRESSTYPE", "PORTS", "ENDPOINTS"]}.get(kind, []) + ["AGE"]
    if rows:
        _table(headers, rows)
    else:
        print(f"No {r['name']} found" + (f" in namespace {ns}" if ns else ""))
    return 0


def cmd_exec(args) -> int:
    from .cluster import cluster_dir
    from .kubelet import in_pod_argv, read_pod_record
    root = _root(args)
    if "/" not in args.pod:
        raise SimError(f"{args.pod!r}: give the pod as NAMESPACE/NAME (or host/NAME for an external host)")
    ns, name = args.pod.split("/", 1)
    if not daemon_pid(root, args.name):
        raise SimError(f"cluster {args.name} is not up")
    if ns == "host":  # an external host (sim host add); pods are never in a namespace called "host" here
        from .hosts import host_argv
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            raise SimError("nothing to run: meshcni sim exec host/NAME -- CMD ...")
        return subprocess.run(host_argv(root, args.name, name, cmd)).returncode
    if ns == "node":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            raise SimError("nothing to run: meshcni sim exec node/NODE -- CMD ...")
        return subprocess.run(_node_argv(root, args.name, name, cmd)).returncode
    rec = read_pod_record(os.path.join(cluster_dir(root, args.name), "pods"), ns, name)
    if rec is None:
        raise SimError(f"pod {ns}/{name} is not running in cluster {args.name}")
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise SimError("nothing to run: meshcni sim exec NS/POD -- CMD ...")
    return subprocess.run(in_pod_argv(rec, cmd)).returncode


def cmd_host(args) -> int:
    from . import hosts
    root = _root(args)
    if args.action == "list":
        rows = hosts.list_hosts(root, args.name)
        if args.output == "json":
            print(json.dumps(rows, indent=2))
        elif rows:
            _table(["NAME", "IP", "EXTRA-IP", "NETNS"], [[h["name"], h["ip"], h.get("extra") or "-",
                                                          h["netns"] + ("" if h["present"] else " (gone)")]
                                                         for h in rows])
        else:
            print(f"no hosts in cluster {args.name}")
        return 0
    if not args.host:
        raise SimError(f"meshcni sim host {args.action} NAME: which host?")
    if args.action == "add":
        h = hosts.add_host(root, args.name, args.host, args.ip)
        print(f"host {h['name']}: netns {h['netns']}, IP {h['ip']}" + (f", sends from {h['extra']}"
                                                                        if h.get("extra") else ""))
        return 0
    if not hosts.del_host(root, args.name, args.host):
        print(f"host {args.host} not found")
        return 1
    print(f"host {args.host} deleted")
    return 0


def _node_argv(root: str, cluster: str, node: str, cmd: List[str]) -> List[str]:
    """cmd as a process of node ``node``: its network namespace and a cgroup under the node's (a node's own
    processes are under the cgroup its agent attaches the socket LB to, as on a real node)."""
    from .cluster import cluster_dir, read_config
    from .topology import Ledger, plan_nodes
    cfg = read_config(root, cluster)
    n = next((x for x in plan_nodes(cluster, cfg.index, cfg.nodes, cfg.pod_cidr, root) if x.name == node), None)
    if n is None:
        raise SimError(f"no node {node} in cluster {cluster}")
    d = cluster_dir(root, cluster)
    cg = os.path.join(d, "cgroup2", f"meshcni-sim-{cluster}", node, "node-exec")
    if not os.path.isdir(cg):
        os.makedirs(cg, exist_ok=True)
        Ledger(os.path.join(d, "ledger.json")).add("cgroup", cg)
    script = 'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" -- "${@:3}"'
    return ["bash", "-c", script, "on-node", cg, n.netns_path] + list(cmd)


def cmd_logs(args) -> int:
    from .cluster import cluster_dir
    d = cluster_dir(_root(args), args.name)
    comp = args.component or "daemon"
    candidates = {"daemon": os.path.join(d, "logs", "daemon.log")}
    if comp.startswith("cni-"):
        candidates[comp] = os.path.join(d, "logs", f"{comp}.log")
    if "/" in comp:
        candidates[comp] = os.path.join(d, "pods", comp.replace("/", "_", 1) + ".log")
    path = candidates.get(comp)
    if not path or not os.path.exists(path):
        have = ["daemon"] + sorted(f[:-4] for f in os.listdir(os.path.join(d, "logs")) if f.startswith("cni-")) \
            if os.path.isdir(os.path.join(d, "logs")) else []
        raise SimError(f"no log for {comp!r} in cluster {args.name}" + (f" (have: {', '.join(have)}, NS/POD)" if have else ""))
    with open(path, errors="replace") as f:
        sys.stdout.write(f.read())
    return 0


# ---- argparse -----------------------------------------------------------------------

def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


def _with_errors(fn):
    def run(args):
        try:
            return fn(args)
        except SimError as e:
            print(f"meshcni sim: {e}", file=sys.stderr)
            return 1
    return run


def add_parser(sub) -> None:
    import argparse
    sim = sub.add_parser("sim", help="simulated clusters in network namespaces (needs root)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sim.add_argument("--state-root", help=f"where clusters keep state (default $MESHCNI_SIM_ROOT or {DEFAULT_STATE_ROOT})")
    ssub = sim.add_subparsers(dest="sim_cmd", required=True)

    def named(p):
        p.add_argument("--name", default="mesh", help="cluster name (default %(default)s)")
        return p

    def spec(p):
        named(p)
        p.add_argument("--nodes", type=int, default=2, help="number of nodes (default %(default)s)")
        p.add_argument("--pod-cidr", help="cluster pod CIDR, a /24 per node (default: the first of 10.244.0.0/16, "
                       "10.245.0.0/16, ... not used by another cluster of the state root)")
        p.add_argument("--service-cidr", help="ClusterIP range (default: the first of 10.96.0.0/16, 10.97.0.0/16, "
                       "... not used by another cluster of the state root)")
        p.add_argument("--no-agent", action="store_true", help="run the nodes without meshcni agents")
        return p

    spec(ssub.add_parser("up", help="bring a cluster up (idempotent)")).set_defaults(fn=_with_errors(cmd_up))
    x = spec(ssub.add_parser("_daemon", help=argparse.SUPPRESS))
    x.add_argument("--index", type=int, default=0)
    x.set_defaults(fn=_with_errors(cmd_daemon))
    x = named(ssub.add_parser("down", help="remove everything the cluster made"))
    x.add_argument("--all", action="store_true", help="every simulated cluster")
    x.set_defaults(fn=_with_errors(cmd_down))
    x = ssub.add_parser("status", help="clusters, nodes and pods")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")
    x.set_defaults(fn=_with_errors(cmd_status))
    for verb, fn in (("apply", cmd_apply), ("delete", cmd_delete)):
        x = named(ssub.add_parser(verb, help=f"{verb} objects from YAML files or directories"))
        x.add_argument("-f", "--filename", action="append", required=True)
        x.add_argument("-n", "--namespace", default="default")
        x.set_defaults(fn=_with_errors(fn))
    x = named(ssub.add_parser("get", help="list objects of a kind"))
    x.add_argument("kind")
    x.add_argument("-n", "--namespace", default="default")
    x.add_argument("-A", "--all-namespaces", action="store_true")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")
    x.set_defaults(fn=_with_errors(cmd_get))
    x = named(ssub.add_parser("host", help="external hosts on the underlay: add, del, list"))
    x.add_argument("action", choices=("add", "del", "list"))
    x.add_argument("host", nargs="?", metavar="NAME")
    x.add_argument("--ip", metavar="ADDR", help="an extra address the host sends from (e.g. 203.0.113.7); the "
                   "cluster's nodes route it to the host")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")
    x.set_defaults(fn=_with_errors(cmd_host))
    x = named(ssub.add_parser("exec", help="run a command inside a pod, or on an external host"))
    x.add_argument("pod", help="NAMESPACE/NAME, or host/NAME")
    x.add_argument("command", nargs=argparse.REMAINDER)
    x.set_defaults(fn=_with_errors(cmd_exec))
    x = named(ssub.add_parser("demo", help="2 nodes, the demo app, and what works today, checked live"))
    x.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    x.add_argument("-f", "--file", help="demo manifest (default deploy/examples/demo.yaml)")
    x.set_defaults(fn=_with_errors(_demo))
    x = ssub.add_parser("mesh", help="mesh clusters: in each, a Cluster + kubeconfig Secret for every other (idempotent)")
    x.add_argument("clusters", nargs="+", metavar="CLUSTER", help="two or more running clusters")
    x.add_argument("--stale-grace", type=int, metavar="SECONDS",
                   help="spec.staleGracePeriodSeconds of each Cluster (default: the controller's)")
    x.set_defaults(fn=_with_errors(cmd_mesh))
    x = ssub.add_parser("unmesh", help="remove what sim mesh made between these clusters")
    x.add_argument("clusters", nargs="+", metavar="CLUSTER")
    x.set_defaults(fn=_with_errors(cmd_unmesh))
    x = named(ssub.add_parser("apiserver", help="stop or start the API server for nodes, controllers and other "
                                                "clusters (fault injection; loopback keeps serving)"))
    x.add_argument("action", choices=("stop", "start"))
    x.set_defaults(fn=_with_errors(cmd_apiserver))
    x = named(ssub.add_parser("logs", help="logs of the daemon, a node's CNI (cni-<node>) or a pod (NS/POD)"))
    x.add_argument("component", nargs="?")
    x.set_defaults(fn=_with_errors(cmd_logs))

