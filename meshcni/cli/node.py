# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni status | service list | endpoint list | identity list | version``: this node's view.

status, service and endpoint read the agent's local API (``--socket``, which
serves root and the agent's user); identity list reads the pinned
ipcache and names the identities from the agent or the API server.
"""
from __future__ import annotations

import os
import platform
import sys
import time

from .. import __version__
from .bpf import bpf_root_arg, socket_arg
from .output import Column, Table, add_output_args, emit, emit_fields

READS_AGENT = "Reads the agent's local API at --socket (the agent must run); the socket serves root and the " \
              "agent's own user only."


def _agent(args, timeout: float = 5.0):
    from ..cni.endpoints import AgentClient
    return AgentClient(args.socket, timeout=timeout)


def _agent_call(args, method: str):
    """``AgentClient.<method>()``, or None after printing why not (to stderr)."""
    from ..cni.spec import CNIError
    try:
        return getattr(_agent(args), method)()
    except CNIError as e:
        print(f"meshcni: {e.msg}", file=sys.stderr)
        return None


def kubeconfig_arg(p) -> None:
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), metavar="PATH",
                   help="kubeconfig of the API server (default $KUBECONFIG, ~/.kube/config, else in-cluster)")


# ---------------------------------------------------------------- version


def versions() -> dict:
    """meshcni, libbpf (the version the extension was built against), the running kernel."""
    try:
        from .._libbpf import ffi, lib
        libbpf = ffi.string(lib.mc_libbpf_version()).decode()
    except ImportError as e:
        libbpf = None
        print(f"meshcni: libbpf version unknown: the extension is not built ({e})", file=sys.stderr)
    return {"meshcni": __version__, "libbpf": libbpf, "kernel": platform.release()}


def cmd_version(args):
    v = versions()
    emit_fields(args, v, [f"meshcni {v['meshcni']}", f"libbpf {v['libbpf'] or 'unknown'} (built against)",
                          f"kernel {v['kernel']}"])
    return 0


# ---------------------------------------------------------------- status


def datapath_state(bpf_root: str) -> dict:
    """What is attached and pinned under ``bpf_root``, read from the bpffs (no bpf() calls).

    ``socketLB``: the cgroups (by id) with pinned socket-LB links and their
    programs; ``tcPrograms``: the pod-facing tc programs the CNI plugin
    attaches, pinned or not; ``error`` when the root cannot be read.
    """
    from ..datapath.tcpins import HOOKS, prog_pin
    out = {"bpfRoot": bpf_root, "error": None, "socketLB": [], "tcPrograms": {}}
    try:
        links = os.path.join(bpf_root, "links")
        for cg in sorted(os.listdir(links)) if os.path.isdir(links) else []:
            out["socketLB"].append({"cgroupId": int(cg) if cg.isdigit() else cg,
                                    "programs": sorted(os.listdir(os.path.join(links, cg)))})
        out["tcPrograms"] = {prog: os.path.exists(prog_pin(bpf_root, prog)) for prog, _ in HOOKS}
    except OSError as e:
        out["error"] = f"{bpf_root}: {e.strerror or e}"
    return out


def apiserver_state(kubeconfig) -> dict:
    """``{"reachable": bool, "host", "version", "error"}``: one GET /version, 3 s timeout."""
    try:
        from kubernetes import client

        from ..k8s.client import api_client
        api = api_client(kubeconfig, pool_maxsize=1)
    except Exception as e:  # no config at all, or a config that does not load
        return {"reachable": False, "host": None, "version": None, "error": str(e)}
    try:
        v = client.VersionApi(api).get_code(_request_timeout=3)
        return {"reachable": True, "host": api.configuration.host, "version": v.git_version, "error": None}
    except Exception as e:
        return {"reachable": False, "host": api.configuration.host, "version": None,
                "error": f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"}
    finally:
        api.close()


def _status_lines(st: dict) -> list:
    svc = st.get("services") or {}
    out = [f"node:        {st['node']} ({'ready' if st['ready'] else 'NOT READY'})",
           f"podCIDRs:    {', '.join(st.get('podCIDRs') or []) or '-'}",
           f"endpoints:   {st.get('endpoints', 0)} local",
           f"services:    {svc.get('services', 0)} programmed, {svc.get('backends', 0)} backends, "
           f"last reconcile {svc.get('seconds', '-')} s"]
    for name, i in sorted((st.get("informers") or {}).items()):
        out.append(f"informer:    {name}: {'synced' if i['synced'] else 'NOT SYNCED'}, {i['objects']} objects, "
                   f"{i['relists']} relists, {i['watchRestarts']} watch restarts")
    return out


def _ago(ts) -> str:
    return f"{time.time() - ts:.0f} s ago" if isinstance(ts, (int, float)) else "-"


def _verbose_lines(st, v, dp, api) -> list:
    out = [f"meshcni:     {v['meshcni']}", f"libbpf:      {v['libbpf'] or 'unknown'} (built against)",
           f"kernel:      {v['kernel']}"]
    if dp["error"]:
        out.append(f"datapath:    unknown: {dp['error']}")
    else:
        lb = dp["socketLB"]
        out.append("socket LB:   " + ("; ".join(f"cgroup {c['cgroupId']}: {len(c['programs'])} links"
                                                for c in lb) if lb else f"NOT ATTACHED (no links under "
                                                                        f"{dp['bpfRoot']}/links)"))
        tc = dp["tcPrograms"]
        out.append("tc programs: " + ("pinned (" + ", ".join(tc) + ")" if tc and all(tc.values()) else
                                      "NOT PINNED: " + ", ".join(p for p, ok in tc.items() if not ok)))
    if api["reachable"]:
        out.append(f"API server:  reachable at {api['host']} ({api['version']})")
    else:
        out.append(f"API server:  NOT REACHABLE" + (f" at {api['host']}" if api["host"] else "") + f": {api['error']}")
    if st is not None:
        svc = st.get("services") or {}
        if svc:
            out.append(f"reconcile:   services: {svc.get('services', 0)} services, {svc.get('backends', 0)} backends "
                       f"in {svc.get('seconds', '-')} s, {_ago(svc.get('at'))}")
        if "ipcache" in st:
            out.append(f"reconcile:   ipcache: {st['ipcache']} prefixes")
        pol = st.get("policy") or {}
        if pol:
            out.append("reconcile:   policy: " + ", ".join(f"{k} {v_}" for k, v_ in sorted(pol.items())))
        for name, r in sorted((st.get("reconcilers") or {}).items()):  # the Runner's per-reconciler stats
            out.append(f"reconcile:   {name}: " + ", ".join(f"{k} {v_}" for k, v_ in sorted(r.items())))
    return out


def cmd_status(args):
    from ..cni.spec import CNIError
    try:
        st, err = _agent(args).status(), None
    except CNIError as e:
        st, err = None, e.msg
    if not args.detail:
        if st is None:
            print(f"meshcni: {err}", file=sys.stderr)
            return 1
        emit_fields(args, st, _status_lines(st))
        return 0
    v, dp, api = versions(), datapath_state(args.bpf_root), apiserver_state(args.kubeconfig)
    doc = {**(st or {}), "agent": {"socket": args.socket, "reachable": st is not None, "error": err},
           "versions": v, "datapath": dp, "apiServer": api}
    lines = (_status_lines(st) if st else [f"agent:       NOT REACHABLE: {err}"]) + _verbose_lines(st, v, dp, api)
    emit_fields(args, doc, lines)
    return 0 if st is not None else 1


# ---------------------------------------------------------------- service, endpoint


def cmd_service_list(args):
    svcs = _agent_call(args, "services")
    if svcs is None:
        return 1
    rows = []
    for s in svcs:
        remote = s.get("backendClusters") or {}  # remote backends -> their cluster; older agents do not send it
        backends = ", ".join(f"{b} ({remote[b]})" if b in remote else b for b in s["backends"]) or "(none)"
        for i, f in enumerate(s["frontends"]):
            rows.append({"id": s["id"] if i == 0 else "", "frontend": f, "backends": backends,
                         "service": s["name"] if i == 0 else "",
                         "affinity": s.get("affinityTimeout") if i == 0 else ""})
    emit(args, svcs, Table([Column("ID", "id"), Column("FRONTEND", "frontend"), Column("BACKENDS", "backends"),
                            Column("SERVICE", "service"), Column("AFFINITY TIMEOUT", "affinity", wide=True)], rows))
    return 0


def cmd_endpoint_list(args):
    eps = _agent_call(args, "endpoints")
    if eps is None:
        return 1
    emit(args, eps, Table([
        Column("POD", lambda e: f"{e.get('podNamespace')}/{e.get('podName')}"),
        Column("IPS", lambda e: ",".join(e.get("ips", []))), Column("HOST IFACE", "hostIfname"),
        Column("MODE", "mode"), Column("CONTAINER", lambda e: e.get("containerID", "")[:12]),
        Column("NETNS", "netns", wide=True), Column("IFNAME", "ifname", wide=True)], eps))
    return 0


# ---------------------------------------------------------------- identity


def identity_labels_from(args):
    """``(labels by id, source)``: the agent's view if it serves one, else the API server's, else ``({}, None)``."""
    from ..cni.spec import CNIError
    try:
        got = _agent(args, timeout=2.0).identities()
        if got is not None:
            return {int(k): v for k, v in got.items()}, "agent"
    except (CNIError, ValueError):
        pass
    try:
        from kubernetes import client

        from ..bpf.decode import identity_labels
        from ..k8s.client import api_client
        api = api_client(args.kubeconfig, pool_maxsize=1)
    except Exception:
        return {}, None
    try:
        custom = client.CustomObjectsApi(api)
        lst = lambda plural: custom.list_cluster_custom_object("mesh-cni.dev", "v1alpha1", plural,
                                                                _request_timeout=3)["items"]
        try:
            remote = lst("remoteidentities")
        except Exception:  # an API server without the CRD (before the mesh's identities)
            remote = []
        return identity_labels(lst("identities"), lst("cidridentities"), remote), "apiserver"
    except Exception:
        return {}, None
    finally:
        api.close()


def cmd_identity_list(args):
    from ..bpf.decode import group_identities, labels_text
    from ..bpf.pin import open_existing
    from ..bpf.typed import IPCacheMap
    with open_existing(args.bpf_root, "mc_ipcache", map_class=IPCacheMap) as m:
        rows = group_identities(m.prefixes())
    labels, source = identity_labels_from(args) if not args.no_labels else ({}, None)
    for r in rows:
        r["labels"] = labels.get(r["identity"])
        r["labels_from"] = source if r["labels"] is not None else None

    def obj(r):
        lab = r["labels"] or {}
        return "/".join(x for x in (lab.get("namespace"), lab.get("name")) if x) or None
    emit(args, rows, Table([
        Column("IDENTITY", "identity"), Column("NAME", lambda r: r["name"] or labels_text(r["labels"])),
        Column("KIND", "kind"), Column("PREFIXES", "prefixes"),
        Column("EXAMPLE", lambda r: r["cidrs"][0] + (f" (+{r['prefixes'] - 1})" if r["prefixes"] > 1 else "")),
        Column("OBJECT", obj, wide=True), Column("CLUSTER", lambda r: (r["labels"] or {}).get("cluster"), wide=True),
        Column("LABELS FROM", "labels_from", wide=True)], rows))
    return 0


# ---------------------------------------------------------------- parsers


def add_node(sub) -> None:
    x = sub.add_parser("version", help="versions of meshcni, libbpf and the kernel",
                   description="meshcni's version, the libbpf version its extension was built against and the "
                   "running kernel's release. Reads nothing else; no root needed.")
    x.set_defaults(fn=cmd_version)
    add_output_args(x, ("table", "json", "yaml"))

    x = sub.add_parser("status", help="the node agent's status (its local API)",
                       description=f"The agent's view of this node: readiness, pod CIDRs, endpoints, the last "
                       f"Service reconcile, its informers. {READS_AGENT} --verbose adds what this command checks "
                       f"itself: versions (meshcni, libbpf, kernel), whether the datapath is attached (socket-LB "
                       f"links and tc programs pinned under --bpf-root; reading them needs root), whether the API "
                       f"server answers (--kubeconfig), and the agent's last reconciles. Exit 1 when the agent is "
                       f"not reachable (--verbose still prints the rest).")
    socket_arg(x)
    x.add_argument("--verbose", dest="detail", action="store_true",
                   help="also versions, datapath attachment, API server reachability, last reconciles")
    bpf_root_arg(x)
    kubeconfig_arg(x)
    add_output_args(x, ("table", "json", "yaml"))
    x.set_defaults(fn=cmd_status)

    x = sub.add_parser("service", help="Services programmed by the node agent (its local API)")
    s = x.add_subparsers(dest="service_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="frontends and backends the agent programmed",
                     description=f"The Services the agent programmed into the socket LB, one line per frontend. "
                     f"{READS_AGENT} For what the kernel maps hold, see meshcni bpf lb list.")
    socket_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_service_list)

    x = sub.add_parser("endpoint", help="local endpoints (pods) known to the node agent (its local API)")
    s = x.add_subparsers(dest="endpoint_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="pods on this node",
                     description=f"The pods the CNI plugin registered on this node: addresses, host interface, "
                     f"mode. {READS_AGENT}")
    socket_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_endpoint_list)

    x = sub.add_parser("identity", help="identities in the ipcache, with their labels")
    s = x.add_subparsers(dest="identity_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="each identity in mc_ipcache, its labels and its prefixes",
                     description="Reads the pinned mc_ipcache under --bpf-root (needs root) and groups its prefixes "
                     "by identity. NAME is the reserved name (host, world, remote-node, ...) or what the identity "
                     "stands for: a pod identity's namespace and labels, a CIDR identity's cidr. The map holds only "
                     "ids, so labels come from the agent's local API (--socket) or, when it does not answer, from "
                     "the API server (--kubeconfig); - when neither is reachable. KIND is the id range: reserved "
                     "(0-255), cidr (CIDRIdentity), cidr-atom (agent-local set of overlapping CIDR identities) or "
                     "pod (Identity, or RemoteIdentity: a meshed cluster's pods, NAME starting cluster=<name>). -o wide "
                     "adds CLUSTER: the cluster a pod identity's pods live in (the local one's name as the agent "
                     "knows it; - from the API server).")
    bpf_root_arg(y)
    socket_arg(y, ", for labels")
    kubeconfig_arg(y)
    y.add_argument("--no-labels", action="store_true", help="read only the map: ask neither the agent nor the API")
    add_output_args(y)
    y.set_defaults(fn=cmd_identity_list)

