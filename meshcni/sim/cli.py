# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni sim``: whole clusters on this machine, in network namespaces.

    meshcni sim up [--name N] [--nodes K] [--pod-cidr C] [--service-cidr C] [--no-agent]
    meshcni sim down [--name N]          remove every namespace, cgroup, mount and process it made
    meshcni sim status                   clusters, nodes, pods
    meshcni sim apply -f FILE|DIR        create or update objects (all validated first)
    meshcni sim delete -f FILE|DIR
    meshcni sim get KIND [-n NS | -A] [-o json]
    meshcni sim exec NS/POD -- CMD ...   run inside the pod (its netns and cgroup)
    meshcni sim logs [COMPONENT]         daemon, cni-<node>, or a pod's NS/POD
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
from typing import List, Optional, Tuple

from .topology import DEFAULT_STATE_ROOT, SimError

READY = "READY "


def _root(args) -> str:
    return args.state_root or os.environ.get("MESHCNI_SIM_ROOT") or DEFAULT_STATE_ROOT


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def daemon_pid(root: str, name: str) -> Optional[int]:
    from .cluster import cluster_dir
    try:
        with open(os.path.join(cluster_dir(root, name), "daemon.pid")) as f:
            pid = int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


# ---- up / down / the daemon -----------------------------------------------------

def cmd_up(args) -> int:
    from .cluster import ClusterConfig, cluster_dir, destroy
    root = _root(args)
    cfg = ClusterConfig(name=args.name, nodes=args.nodes, pod_cidr=args.pod_cidr, service_cidr=args.service_cidr,
                        agent=not args.no_agent, state_root=root)
    cfg.validate()
    d = cluster_dir(root, args.name)
    if daemon_pid(root, args.name):
        print(f"cluster {args.name} is already up")
        print(os.path.join(d, "kubeconfig"))
        return 0
    if os.path.isdir(d):
        print(f"cluster {args.name}: removing what a previous run left")
        destroy(root, args.name)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    argv = [sys.executable, "-m", "meshcni.cli", "sim", "--state-root", root, "_daemon", "--name", args.name,
            "--nodes", str(args.nodes), "--pod-cidr", args.pod_cidr, "--service-cidr", args.service_cidr]
    if args.no_agent:
        argv.append("--no-agent")
    logf = open(os.path.join(d, "logs", "daemon.log"), "ab")
    env = dict(os.environ)
    pr = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL,
                          start_new_session=True, env=env)
    logf.close()
    ready = None
    for raw in pr.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith(READY):
            ready = line[len(READY):]
            break
        print(f"  {line}", flush=True)
    pr.stdout.close()
    if ready is None:
        rc = pr.wait()
        print(f"meshcni sim up: cluster {args.name} failed (daemon exit {rc}); see "
              f"{os.path.join(d, 'logs', 'daemon.log')}", file=sys.stderr)
        tail = _tail(os.path.join(d, "logs", "daemon.log"), 5)
        if tail:
            print(tail, file=sys.stderr)
        try:
            destroy(root, args.name)
        except SimError as e:
            print(f"meshcni sim up: cleanup: {e}", file=sys.stderr)
        return 1
    print(f"cluster {args.name} is up; kubeconfig:")
    print(ready)
    return 0


def _tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ""


def cmd_daemon(args) -> int:
    """The cluster's process: bring up, say READY, serve until SIGTERM, tear down."""
    import logging
    from .cluster import Cluster, ClusterConfig
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = _root(args)
    cfg = ClusterConfig(name=args.name, nodes=args.nodes, pod_cidr=args.pod_cidr, service_cidr=args.service_cidr,
                        agent=not args.no_agent, state_root=root)
    cl = Cluster(cfg)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
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
        time.sleep(0.2)
    logging.getLogger("meshcni.sim").info("stopping")
    try:
        cl.down()
    except SimError as e:
        logging.getLogger("meshcni.sim").error("%s", e)
        return 1
    return 0


def cmd_down(args) -> int:
    from .cluster import cluster_dir, destroy, list_clusters
    root = _root(args)
    names = list_clusters(root) if args.all else [args.name]
    for name in names:
        d = cluster_dir(root, name)
        if not os.path.isdir(d):
            print(f"cluster {name} is not up")
            continue
        pid = daemon_pid(root, name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(600):
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        done = destroy(root, name)  # whatever the daemon could not remove (or a crash left)
        extra = f" (cleaned up after the daemon: {done})" if any(done.values()) else ""
        print(f"cluster {name} is down{extra}")
    return 0


def cmd_status(args) -> int:
    from .cluster import list_clusters, read_config
    root = _root(args)
    out = []
    for name in list_clusters(root):
        cfg = read_config(root, name)
        pid = daemon_pid(root, name)
        row = {"name": name, "state": "up" if pid else "down (stale state: run sim down)", "nodes": cfg.nodes,
               "podCIDR": cfg.pod_cidr, "serviceCIDR": cfg.service_cidr, "api": f"http://127.0.0.1:{cfg.api_port}",
               "kubeconfig": os.path.join(root, name, "kubeconfig")}
        if pid:
            try:
                c = Client(root, name)
                row["pods"] = len(c.request("GET", "/api/v1/pods")["items"])
                row["readyNodes"] = sum(1 for n in c.request("GET", "/api/v1/nodes")["items"]
                                        if any(x.get("type") == "Ready" and x.get("status") == "True"
                                               for x in n.get("status", {}).get("conditions", [])))
            except Exception as e:
                row["error"] = str(e)
        out.append(row)
    if args.output == "json":
        print(json.dumps(out, indent=2))
    elif not out:
        print("no simulated clusters")
    else:
        _table(["NAME", "STATE", "NODES", "PODS", "POD-CIDR", "API"],
               [[r["name"], r["state"], f"{r.get('readyNodes', '-')}/{r['nodes']}", r.get("pods", "-"),
                 r["podCIDR"], r["api"]] for r in out])
    return 0


# ---- talking to the cluster's API -----------------------------------------------

class Client:
    """Discovery-driven REST on the cluster's API server (the kubernetes client's transport)."""

    def __init__(self, root: str, name: str):
        from kubernetes import client, config
        from .cluster import cluster_dir
        kc = os.path.join(cluster_dir(root, name), "kubeconfig")
        if not daemon_pid(root, name) or not os.path.exists(kc):
            raise SimError(f"cluster {name} is not up (meshcni sim up --name {name})")
        c = client.Configuration()
        config.load_kube_config(config_file=kc, client_configuration=c)
        self.api = client.ApiClient(c)
        self._resources: Optional[List[dict]] = None

    def request(self, method: str, path: str, body=None, content_type="application/json", query=()):
        from .controllers import APIStatusError, rest
        try:
            return rest(self.api, method, path, query, body, content_type)
        except APIStatusError as e:
            raise SimError(str(e)) from None
        except OSError as e:
            raise SimError(f"API server not reachable: {e}") from None

    def resources(self) -> List[dict]:
        if self._resources is None:
            res = []
            for gv in ["v1"]:
                for r in self.request("GET", "/api/v1")["resources"]:
                    res.append(dict(r, groupVersion=gv, prefix="/api/v1"))
            for g in self.request("GET", "/apis")["groups"]:
                for v in g["versions"]:
                    gv = v["groupVersion"]
                    for r in self.request("GET", f"/apis/{gv}")["resources"]:
                        res.append(dict(r, groupVersion=gv, prefix=f"/apis/{gv}"))
            self._resources = [r for r in res if "/" not in r["name"]]
        return self._resources

    def by_kind(self, api_version: str, kind: str) -> Optional[dict]:
        return next((r for r in self.resources() if r["groupVersion"] == api_version and r["kind"] == kind), None)

    def by_name(self, word: str) -> Optional[dict]:
        w = word.lower()
        for r in self.resources():
            names = {r["name"], r.get("singularName", ""), r["kind"].lower()} | set(r.get("shortNames") or [])
            if w in names or w.split(".")[0] in names and r["groupVersion"].startswith(w.split(".", 1)[-1]):
                return r
        return None

    @staticmethod
    def path(r: dict, ns: Optional[str], name: Optional[str] = None) -> str:
        p = r["prefix"]
        if r["namespaced"] and ns:
            p += f"/namespaces/{ns}"
        p += f"/{r['name']}"
        return p + (f"/{name}" if name else "")


def load_documents(paths: List[str]) -> List[Tuple[str, dict]]:
    """(source, object) for every YAML/JSON document; one clear error for bad input."""
    import yaml
    files: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".yaml", ".yml", ".json")))
        elif os.path.exists(p):
            files.append(p)
        else:
            raise SimError(f"{p}: no such file or directory")
    docs = []
    for f in files:
        try:
            with open(f) as fh:
                loaded = list(yaml.safe_load_all(fh))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise SimError(f"{f}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
        for i, d in enumerate(loaded):
            if d is None:
                continue
            src = f"{f}#{i + 1}"
            if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
                raise SimError(f"{src}: needs apiVersion and kind")
            if d["kind"].endswith("List") and isinstance(d.get("items"), list):
                docs += [(f"{src}[{j}]", x) for j, x in enumerate(d["items"])]
                continue
            if not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
                raise SimError(f"{src}: {d['kind']} needs metadata.name")
            docs.append((src, d))
    if not docs:
        raise SimError(f"{', '.join(paths)}: no objects found")
    return docs


def _plan(c: Client, docs, default_ns: str):
    plan = []
    for src, d in docs:
        r = c.by_kind(d["apiVersion"], d["kind"])
        if r is None:
            raise SimError(f"{src}: unknown kind {d['kind']} in {d['apiVersion']}")
        ns = d["metadata"].get("namespace") or (default_ns if r["namespaced"] else None)
        plan.append((src, d, r, ns))
    return plan


def cmd_apply(args) -> int:
    c = Client(_root(args), args.name)
    plan = _plan(c, load_documents(args.filename), args.namespace)
    q = [("fieldManager", "meshcni-sim"), ("force", "true")]
    new_ns = set()
    for src, d, r, ns in plan:
        if r["kind"] == "Namespace" and not _exists(c, f"/api/v1/namespaces/{d['metadata']['name']}"):
            new_ns.add(d["metadata"]["name"])
    # every object is first sent as a dry run, so one bad object means nothing is applied
    for dry in (True, False):
        for src, d, r, ns in plan:
            if r["namespaced"] and ns not in new_ns and not _exists(c, f"/api/v1/namespaces/{ns}"):
                raise SimError(f"{src}: {d['kind']} {d['metadata']['name']}: namespace {ns} does not exist")
            if dry and r["namespaced"] and ns in new_ns:
                continue  # its namespace is created by this apply: the server checks it then
            body = dict(d, metadata=dict(d["metadata"], **({"namespace": ns} if ns else {})))
            try:
                c.request("PATCH", Client.path(r, ns, d["metadata"]["name"]), body, "application/apply-patch+yaml",
                          q + ([("dryRun", "All")] if dry else []))
            except SimError as e:
                raise SimError(f"{src}: {r['kind']} {(ns + '/') if ns else ''}{d['metadata']['name']}: {e}") from None
            if not dry:
                print(f"{r['kind'].lower()}/{d['metadata']['name']} applied")
    return 0


def _exists(c: Client, path: str) -> bool:
    try:
        c.request("GET", path)
        return True
    except SimError:
        return False


def cmd_delete(args) -> int:
    c = Client(_root(args), args.name)
    plan = _plan(c, load_documents(args.filename), args.namespace)
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
        raise SimError(f"{args.pod!r}: give the pod as NAMESPACE/NAME")
    ns, name = args.pod.split("/", 1)
    if not daemon_pid(root, args.name):
        raise SimError(f"cluster {args.name} is not up")
    rec = read_pod_record(os.path.join(cluster_dir(root, args.name), "pods"), ns, name)
    if rec is None:
        raise SimError(f"pod {ns}/{name} is not running in cluster {args.name}")
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise SimError("nothing to run: meshcni sim exec NS/POD -- CMD ...")
    return subprocess.run(in_pod_argv(rec, cmd)).returncode


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
        p.add_argument("--pod-cidr", default="10.244.0.0/16", help="cluster pod CIDR, a /24 per node (default %(default)s)")
        p.add_argument("--service-cidr", default="10.96.0.0/16", help="ClusterIP range (default %(default)s)")
        p.add_argument("--no-agent", action="store_true", help="run the nodes without meshcni agents")
        return p

    spec(ssub.add_parser("up", help="bring a cluster up (idempotent)")).set_defaults(fn=_with_errors(cmd_up))
    spec(ssub.add_parser("_daemon", help=argparse.SUPPRESS)).set_defaults(fn=_with_errors(cmd_daemon))
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
    x = named(ssub.add_parser("exec", help="run a command inside a pod"))
    x.add_argument("pod", help="NAMESPACE/NAME")
    x.add_argument("command", nargs=argparse.REMAINDER)
    x.set_defaults(fn=_with_errors(cmd_exec))
    x = named(ssub.add_parser("demo", help="2 nodes, the demo app, and what works today, checked live"))
    x.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    x.add_argument("-f", "--file", help="demo manifest (default deploy/examples/demo.yaml)")
    x.set_defaults(fn=_with_errors(_demo))
    x = named(ssub.add_parser("logs", help="logs of the daemon, a node's CNI (cni-<node>) or a pod (NS/POD)"))
    x.add_argument("component", nargs="?")
    x.set_defaults(fn=_with_errors(cmd_logs))

