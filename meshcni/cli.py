# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni``: the command line. A thin shell over the library.

    meshcni version                     versions of meshcni, libbpf, the kernel
    meshcni maps list   [--root R]      the map table and the state of each pin
    meshcni maps create [--root R]      create (or migrate) every pinned map
    meshcni maps dump NAME [--root R]   entries of one map, one JSON object a line
    meshcni ipcache lookup IP [--root R]  identity of the longest prefix covering IP
    meshcni ipcache list [--root R]     every prefix and its identity
    meshcni drops [--follow] [--root R]  drop counters by reason; --follow prints drop events
    meshcni demo                        the map library on a private bpffs
    meshcni cni install --bin-dir D --conf-dir C (--subnet CIDR ... | --chained)
                                        put the CNI plugin and its network config on a node
    meshcni cni uninstall --bin-dir D --conf-dir C
    meshcni status | service list | endpoint list [--socket S] [-o json]
                                        what the node agent runs (its local API)
    meshcni agent ...                   the per-node agent (DaemonSet)
    meshcni controller ...              identities and CIDR identities (Deployment, leader-elected)
    meshcni apiserver ...               a Kubernetes-compatible API server
    meshcni sim ...                     simulated clusters in network namespaces

Exit codes: 0 ok, 1 operational error (message on stderr names the map or
pin), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

from . import __version__

log = logging.getLogger("meshcni")


def _root_arg(p):
    from .bpf.pin import DEFAULT_ROOT
    p.add_argument("--root", default=os.environ.get("MESHCNI_BPF_ROOT", DEFAULT_ROOT),
                   help="bpffs directory holding meshcni's pins (default %(default)s, env MESHCNI_BPF_ROOT)")


def _record_json(rec):
    import numpy as np
    out = {}
    for name in rec.dtype.names or ():
        if name.startswith("pad"):
            continue
        v = rec[name]
        if isinstance(v, np.ndarray):
            if name.endswith("addr") and v.size == 16:
                from .cidr import from_unified
                out[name] = str(from_unified(bytes(v)))
            else:
                out[name] = v.tolist()
        else:
            out[name] = v.item() if hasattr(v, "item") else v
    return out


def cmd_version(args):
    from ._libbpf import ffi, lib
    print(f"meshcni {__version__}")
    print(f"libbpf {ffi.string(lib.mc_libbpf_version()).decode()} (built against)")
    print(f"kernel {platform.release()}")
    return 0


def cmd_maps_list(args):
    from .bpf.maps import BpfMap
    from .bpf.pin import compatible, info_mismatch
    from .layout import MapSpec, map_specs
    print(f"{'NAME':16} {'TYPE':13} {'KEY':>4} {'VALUE':>5} {'MAX':>8}  PIN")
    for name, spec in map_specs().items():
        path = os.path.join(args.root, name)
        state = "absent"
        if os.path.exists(path):
            with BpfMap.open_pinned(path) as m:
                i = m.info()
                pinned = MapSpec(name, i.type, i.key_size, i.value_size, i.max_entries, i.map_flags)
                if not compatible(pinned, spec):
                    state = "MISMATCH: " + info_mismatch(pinned, spec)
                elif spec.type == 27:
                    state = f"ok (id {i.id})"
                else:
                    state = f"ok (id {i.id}, {len(m)} entries)"
        print(f"{name:16} {spec.type_name:13} {spec.key_size:>4} {spec.value_size:>5} {spec.max_entries:>8}  {state}")
    return 0


def cmd_maps_create(args):
    from .bpf.typed import MeshMaps
    with MeshMaps(args.root) as mm:
        print(f"{len(mm.maps)} maps pinned under {args.root}")
    return 0


def cmd_maps_dump(args):
    from .bpf.maps import BpfMap
    from .layout import map_specs
    spec = map_specs().get(args.name)
    if spec is None:
        print(f"meshcni: no meshcni map {args.name!r}", file=sys.stderr)
        return 2
    if spec.type == 27:
        print(f"meshcni: map {args.name} is a ring buffer; it has no entries to dump", file=sys.stderr)
        return 2
    path = os.path.join(args.root, args.name)
    opened = BpfMap.open_pinned(path)
    with BpfMap(os.dup(opened.fd), spec.with_(max_entries=opened.spec.max_entries,
                                              map_flags=opened.spec.map_flags), path=path) as m:
        opened.close()
        keys, vals = m.dump()
        for k, v in zip(keys, vals):
            if spec.percpu:
                print(json.dumps({"key": _record_json(k), "per_cpu": [_record_json(x) for x in v]}))
            else:
                print(json.dumps({"key": _record_json(k), "value": _record_json(v)}))
    return 0


def cmd_ipcache_lookup(args):
    from .bpf.pin import open_or_create
    from .bpf.typed import IPCacheMap
    from .layout import map_specs
    with open_or_create(map_specs()["mc_ipcache"], args.root, migrate=False, map_class=IPCacheMap) as m:
        ident = m.lookup_ip(args.ip)
    if ident is None:
        print(f"{args.ip}: no prefix covers it")
        return 1
    print(f"{args.ip}: identity {ident}")
    return 0


def cmd_ipcache_list(args):
    import ipaddress
    from .bpf.pin import open_or_create
    from .bpf.typed import IPCacheMap
    from .layout import map_specs
    with open_or_create(map_specs()["mc_ipcache"], args.root, migrate=False, map_class=IPCacheMap) as m:
        prefixes = m.prefixes()
    names = {1: "host", 2: "world", 6: "remote-node"}
    rows = sorted(prefixes.items(), key=lambda kv: (ipaddress.ip_network(kv[0]).version, ipaddress.ip_network(kv[0])))
    if args.output == "json":
        print(json.dumps({k: v for k, v in rows}, indent=2))
        return 0
    w = max([6] + [len(k) for k, _ in rows])
    print(f"{'PREFIX'.ljust(w)}   IDENTITY")
    for k, v in rows:
        print(f"{k.ljust(w)}   {v}{' (' + names[v] + ')' if v in names else ''}")
    return 0


def cmd_drops(args):
    from .bpf.maps import BpfMap
    from .datapath.policy import DropEvents, drop_counts, drop_reasons
    from .layout import map_specs
    path = os.path.join(args.root, "mc_drops")
    spec = map_specs()["mc_drops"]
    with BpfMap.open_pinned(path) as opened, BpfMap(os.dup(opened.fd), spec, path=path) as m:
        counts = drop_counts(m)
    print(f"{'REASON':16} {'PACKETS':>12} {'BYTES':>14}")
    for _, name in sorted(drop_reasons().items()):
        p, b = counts.get(name, (0, 0))
        print(f"{name:16} {p:>12} {b:>14}")
    if not args.follow:
        return 0
    espec = map_specs()["mc_events"]
    epath = os.path.join(args.root, "mc_events")
    with BpfMap.open_pinned(epath) as opened, BpfMap(os.dup(opened.fd), espec, path=epath) as em, \
            DropEvents(em) as ev:
        try:
            while True:
                for e in ev.poll(1000):
                    print(json.dumps(e.__dict__), flush=True)
        except KeyboardInterrupt:
            return 0


def cmd_demo(args):
    """Bulk-program the ipcache on a private bpffs, then reconcile a change."""
    import numpy as np
    from .bpf.pin import mount_bpffs, umount
    from .bpf.typed import MeshMaps

    n = args.entries
    tmp = tempfile.mkdtemp(prefix="meshcni-demo-")
    mount_bpffs(tmp)
    try:
        root = os.path.join(tmp, "meshcni")
        with MeshMaps(root) as mm:
            print(f"created {len(mm.maps)} pinned maps under {root} (private bpffs)")
            base = np.arange(n, dtype=np.uint32)
            # n distinct /32s in 10.0.0.0/8 and a few wider prefixes
            texts = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32" for i in base.tolist()]
            texts += ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
            idents = [100000 + i for i in range(n)] + [2, 30001, 30002]
            t = time.perf_counter()
            written = mm.ipcache.insert_prefixes(texts, idents)
            dt = time.perf_counter() - t
            print(f"bulk insert: {written} prefixes in {dt * 1e3:.1f} ms ({written / dt:,.0f}/s)")
            for ip in ("10.0.1.5", "10.255.255.254", "192.0.2.7", "2001:db8::1", "198.51.100.1"):
                print(f"  lookup {ip:16} -> identity {mm.ipcache.lookup_ip(ip)}")
            changed = dict(zip(texts, idents))
            for t_ in texts[: max(1, n // 100)]:
                changed[t_] += 1
            for t_ in texts[n // 2: n // 2 + n // 200]:
                del changed[t_]
            t = time.perf_counter()
            r = mm.ipcache.reconcile_prefixes(changed)
            dt = time.perf_counter() - t
            print(f"reconcile: +{r.added} ~{r.changed} -{r.deleted} ={r.unchanged} in {dt * 1e3:.1f} ms "
                  f"({r.syscalls} bpf() calls)")
            r2 = mm.ipcache.reconcile_prefixes(changed)
            print(f"reconcile again: {r2.writes} writes, {r2.syscalls} bpf() calls")
    finally:
        umount(tmp)
        os.rmdir(tmp)
    print("cleaned up the private bpffs")
    return 0


def _agent_get(args, path):
    from .cni.endpoints import AgentClient
    from .cni.spec import CNIError
    try:
        return AgentClient(args.socket, timeout=5.0)._call("GET", path)
    except CNIError as e:
        print(f"meshcni: {e.msg}", file=sys.stderr)
        return None


def _print_table(headers, rows):
    w = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    for r in [headers] + rows:
        print("   ".join(str(x).ljust(w[i]) for i, x in enumerate(r)).rstrip())


def cmd_status(args):
    st = _agent_get(args, "/v1/status")
    if st is None:
        return 1
    if args.output == "json":
        print(json.dumps(st, indent=2))
        return 0
    svc = st.get("services") or {}
    print(f"node:        {st['node']} ({'ready' if st['ready'] else 'NOT READY'})")
    print(f"podCIDRs:    {', '.join(st.get('podCIDRs') or []) or '-'}")
    print(f"endpoints:   {st.get('endpoints', 0)} local")
    print(f"services:    {svc.get('services', 0)} programmed, {svc.get('backends', 0)} backends, "
          f"last reconcile {svc.get('seconds', '-')} s")
    for name, i in sorted((st.get("informers") or {}).items()):
        print(f"informer:    {name}: {'synced' if i['synced'] else 'NOT SYNCED'}, {i['objects']} objects, "
              f"{i['relists']} relists, {i['watchRestarts']} watch restarts")
    return 0


def cmd_service_list(args):
    svcs = _agent_get(args, "/v1/services")
    if svcs is None:
        return 1
    if args.output == "json":
        print(json.dumps(svcs, indent=2))
        return 0
    rows = []
    for s in svcs:
        for i, f in enumerate(s["frontends"]):
            rows.append([s["id"] if i == 0 else "", f, ", ".join(s["backends"]) or "(none)",
                         s["name"] if i == 0 else ""])
    _print_table(["ID", "FRONTEND", "BACKENDS", "SERVICE"], rows)
    return 0


def cmd_endpoint_list(args):
    eps = _agent_get(args, "/v1/endpoints")
    if eps is None:
        return 1
    if args.output == "json":
        print(json.dumps(eps, indent=2))
        return 0
    _print_table(["POD", "IPS", "HOST IFACE", "MODE", "CONTAINER"],
                 [[f"{e.get('podNamespace')}/{e.get('podName')}", ",".join(e.get("ips", [])), e.get("hostIfname", ""),
                   e.get("mode", ""), e.get("containerID", "")[:12]] for e in eps])
    return 0


def _agent_args(x):
    x.add_argument("--socket", default=os.environ.get("MESHCNI_AGENT_SOCKET", "/var/run/meshcni/agent.sock"),
                   help="the agent's local API socket (default $MESHCNI_AGENT_SOCKET or %(default)s)")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")


def cmd_cni_install(args):
    from .cni.install import InstallError, install
    try:
        done = install(args.bin_dir, args.conf_dir, chained=args.chained, name=args.name,
                       datapath=args.datapath, bpf_root=args.bpf_root, state_dir=args.state_dir,
                       agent_socket=args.agent_socket, log_file=args.log_file, mtu=args.mtu,
                       subnets=args.subnet, data_dir=args.data_dir)
    except InstallError as e:
        print(f"meshcni cni install: {e}", file=sys.stderr)
        return 1
    print(json.dumps(done, indent=2))
    return 0


def cmd_cni_uninstall(args):
    from .cni.install import uninstall
    print(json.dumps(uninstall(args.bin_dir, args.conf_dir), indent=2))
    return 0


def _cni_dirs(x):
    x.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI plugin directory (default %(default)s)")
    x.add_argument("--conf-dir", default="/etc/cni/net.d", help="CNI config directory (default %(default)s)")


def _add_cni(sub):
    cni = sub.add_parser("cni", help="install the CNI plugin and its network config on a node")
    csub = cni.add_subparsers(dest="cni_cmd", required=True)
    x = csub.add_parser("install", help="copy the plugin launcher and write (or chain into) the config",
                        description="Standalone (--subnet): writes 05-meshcni.conflist with the built-in IPAM. "
                        "Chained (--chained): appends meshcni to the first existing config, after e.g. "
                        "ptp + host-local. Idempotent; files are replaced atomically.")
    _cni_dirs(x)
    x.add_argument("--chained", action="store_true", help="append to the first existing conflist")
    x.add_argument("--subnet", action="append", metavar="CIDR",
                   help="pod CIDR to allocate from (repeat for dual stack); standalone only")
    x.add_argument("--name", default="meshcni", help="network name of a standalone config (default %(default)s)")
    x.add_argument("--datapath", choices=("auto", "required", "off"), default="auto",
                   help="auto: attach tc programs when the agent has pinned them; required: refuse pods "
                   "until it has; off (default %(default)s)")
    x.add_argument("--bpf-root", help="pin root of the agent (default /sys/fs/bpf/meshcni)")
    x.add_argument("--state-dir", help="endpoint records (default /var/run/meshcni)")
    x.add_argument("--data-dir", help="IPAM allocations (default /var/lib/cni/meshcni)")
    x.add_argument("--agent-socket", help="the agent's local API socket; ADDs wait for it")
    x.add_argument("--log-file", help="the plugin appends one line per call here")
    x.add_argument("--mtu", type=int, help="pod interface MTU (default 1500)")
    x.set_defaults(fn=cmd_cni_install)
    x = csub.add_parser("uninstall", help="remove the launcher and meshcni's config or chain entry")
    _cni_dirs(x)
    x.set_defaults(fn=cmd_cni_uninstall)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshcni", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version", help="versions of meshcni, libbpf and the kernel").set_defaults(fn=cmd_version)

    maps = sub.add_parser("maps", help="inspect and create the pinned maps")
    msub = maps.add_subparsers(dest="maps_cmd", required=True)
    x = msub.add_parser("list", help="the map table and the state of each pin")
    _root_arg(x)
    x.set_defaults(fn=cmd_maps_list)
    x = msub.add_parser("create", help="create or migrate every pinned map")
    _root_arg(x)
    x.set_defaults(fn=cmd_maps_create)
    x = msub.add_parser("dump", help="entries of one map as JSON lines")
    x.add_argument("name", help="map name, e.g. mc_ipcache")
    _root_arg(x)
    x.set_defaults(fn=cmd_maps_dump)

    ipc = sub.add_parser("ipcache", help="query the ipcache")
    isub = ipc.add_subparsers(dest="ipcache_cmd", required=True)
    x = isub.add_parser("list", help="every prefix and its identity")
    _root_arg(x)
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")
    x.set_defaults(fn=cmd_ipcache_list)
    x = isub.add_parser("lookup", help="identity of the longest prefix covering an IP")
    x.add_argument("ip")
    _root_arg(x)
    x.set_defaults(fn=cmd_ipcache_lookup)

    x = sub.add_parser("drops", help="drop counters by reason (and live drop events)")
    x.add_argument("--follow", action="store_true", help="then print each drop event as JSON")
    _root_arg(x)
    x.set_defaults(fn=cmd_drops)

    x = sub.add_parser("demo", help="bulk-program maps on a private bpffs (needs root)")
    x.add_argument("--entries", type=int, default=100000, help="number of /32 prefixes (default %(default)s)")
    x.set_defaults(fn=cmd_demo)
    _add_cni(sub)
    x = sub.add_parser("status", help="the node agent's status (over its local API)")
    _agent_args(x)
    x.set_defaults(fn=cmd_status)
    x = sub.add_parser("service", help="Services programmed by the node agent")
    ssub = x.add_subparsers(dest="service_cmd", required=True)
    y = ssub.add_parser("list", help="frontends and backends")
    _agent_args(y)
    y.set_defaults(fn=cmd_service_list)
    x = sub.add_parser("endpoint", help="local endpoints (pods) known to the node agent")
    esub = x.add_subparsers(dest="endpoint_cmd", required=True)
    y = esub.add_parser("list", help="pods on this node")
    _agent_args(y)
    y.set_defaults(fn=cmd_endpoint_list)
    from .sim.cli import add_parser as add_sim
    add_sim(sub)
    from .apiserver.cli import add_parser as add_apiserver
    add_apiserver(sub)
    from .agent.cli import add_parser as add_agent
    add_agent(sub)
    from .controller.cli import add_parser as add_controller
    add_controller(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .errors import BpfError, PartialFailureError
    try:
        return args.fn(args)
    except (BpfError, PartialFailureError, FileNotFoundError, ValueError) as e:
        print(f"meshcni: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
