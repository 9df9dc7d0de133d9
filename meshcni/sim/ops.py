# SPDX-License-Identifier: MIT OR Apache-2.0
"""What ``meshcni sim`` does, as functions: bring a cluster up and down, talk to its API,
apply objects. The command line (:mod:`.cli`) and the demo (:mod:`.demo`) are both thin
callers of this module (the demo used to import the command line, which imported the demo).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable, List, Optional, Tuple

from .cluster import _pid_alive, daemon_pid
from .topology import DEFAULT_STATE_ROOT, SimError

READY = "READY "


def state_root(explicit: Optional[str] = None) -> str:
    """--state-root, else $MESHCNI_SIM_ROOT, else /var/run/meshcni-sim."""
    return explicit or os.environ.get("MESHCNI_SIM_ROOT") or DEFAULT_STATE_ROOT


def up(root: str, name: str, nodes: int = 2, pod_cidr: Optional[str] = None, service_cidr: Optional[str] = None,
       agent: bool = True, say: Callable[[str], None] = print) -> str:
    """Start the cluster's daemon and return its kubeconfig once the daemon says every component
    is ready (progress lines go to ``say``); a failed bring-up is cleaned up and raised as a
    :class:`SimError` with the end of the daemon's log. Idempotent: a cluster that is up is left."""
    from .cluster import ClusterConfig, cluster_dir, destroy, reserve
    cfg = ClusterConfig(name=name, nodes=nodes, pod_cidr=pod_cidr or "", service_cidr=service_cidr or "",
                        agent=agent, state_root=root)
    cfg.validate()
    d = cluster_dir(root, name)
    if daemon_pid(root, name):
        say(f"cluster {name} is already up")
        return os.path.join(d, "kubeconfig")
    if os.path.isdir(d):
        say(f"cluster {name}: removing what a previous run left")
        destroy(root, name)
    cfg = reserve(cfg)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    argv = [sys.executable, "-m", "meshcni.cli", "sim", "--state-root", root, "_daemon", "--name", name,
            "--nodes", str(nodes), "--pod-cidr", cfg.pod_cidr, "--service-cidr", cfg.service_cidr,
            "--index", str(cfg.index)]
    if not agent:
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
        say(f"  {line}")
    pr.stdout.close()
    if ready is None:
        rc = pr.wait()
        msg = f"cluster {name} failed (daemon exit {rc}); see {os.path.join(d, 'logs', 'daemon.log')}"
        tail = _tail(os.path.join(d, "logs", "daemon.log"), 5)
        try:
            destroy(root, name)
        except SimError as e:
            msg += f"\ncleanup: {e}"
        raise SimError(msg + (f"\n{tail}" if tail else ""))
    return ready


def _tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ""


def down(root: str, names: List[str], say: Callable[[str], None] = print,
         warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> int:
    """Stop each cluster's daemon and remove whatever it left; returns how many could not be
    taken down fully (each reported through ``warn``, the others still go down)."""
    from .cluster import cluster_dir, destroy
    failed = 0
    for name in names:
        d = cluster_dir(root, name)
        if not os.path.isdir(d):
            say(f"cluster {name} is not up")
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
        try:  # whatever the daemon could not remove (or a crash left)
            done = destroy(root, name)
        except (SimError, OSError, ValueError) as e:
            # the other clusters still go down; this one is reported, never called down
            warn(f"meshcni sim: cluster {name} is NOT fully down: {e}")
            failed += 1
            continue
        extra = f" (cleaned up after the daemon: {done})" if any(done.values()) else ""
        say(f"cluster {name} is down{extra}")
    return failed


class Client:
    """Discovery-driven REST on the cluster's API server (the kubernetes client's transport)."""

    def __init__(self, root: str, name: str):
        from ..k8s.client import api_client
        from .cluster import cluster_dir
        kc = os.path.join(cluster_dir(root, name), "kubeconfig")
        if not daemon_pid(root, name) or not os.path.exists(kc):
            raise SimError(f"cluster {name} is not up (meshcni sim up --name {name})")
        self.api = api_client(kc)
        self._resources: Optional[List[dict]] = None

    def request(self, method: str, path: str, body=None, content_type="application/json", query=()):
        from ..k8s.rest import APIStatusError, rest
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


def plan_documents(c: "Client", docs, default_ns: str):
    plan = []
    for src, d in docs:
        r = c.by_kind(d["apiVersion"], d["kind"])
        if r is None:
            raise SimError(f"{src}: unknown kind {d['kind']} in {d['apiVersion']}")
        ns = d["metadata"].get("namespace") or (default_ns if r["namespaced"] else None)
        plan.append((src, d, r, ns))
    return plan


def apply(c: "Client", docs: List[Tuple[str, dict]], default_ns: str = "default",
          say: Callable[[str], None] = print) -> None:
    """Server-side apply of every object, all sent as a dry run first: one bad object, nothing applied."""
    plan = plan_documents(c, docs, default_ns)
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
                say(f"{r['kind'].lower()}/{d['metadata']['name']} applied")


def _exists(c: Client, path: str) -> bool:
    try:
        c.request("GET", path)
        return True
    except SimError:
        return False
