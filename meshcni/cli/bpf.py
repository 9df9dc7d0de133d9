# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni bpf ...`` and ``meshcni monitor``: the pinned maps, read directly.

Every reader opens its pins read-only (:func:`meshcni.bpf.pin.open_existing`)
and says which path is missing instead of creating anything; decoding is
:mod:`meshcni.bpf.decode`. These need root (or CAP_BPF + CAP_SYS_ADMIN) and a
bpffs at ``--bpf-root``; no agent has to run.
"""
from __future__ import annotations

import json
import os
import sys
import time

from .output import Column, Table, add_output_args, emit
from .parser import flag

DEFAULT_BPF_ROOT = "/sys/fs/bpf/meshcni"  # meshcni.bpf.pin.DEFAULT_ROOT (tested equal); no extension import here
DEFAULT_SOCKET = "/var/run/meshcni/agent.sock"

NEEDS_PINS = ("Reads the pinned maps under --bpf-root directly (no agent needed); needs root "
              "(or CAP_BPF + CAP_SYS_ADMIN) and a bpffs there.")


def bpf_root_arg(p) -> None:
    flag(p, "--bpf-root", "--root", dest="bpf_root", metavar="DIR",
         default=os.environ.get("MESHCNI_BPF_ROOT", DEFAULT_BPF_ROOT),
         help="bpffs directory holding meshcni's pins (default %(default)s, env MESHCNI_BPF_ROOT)")


def socket_arg(p, why: str = "") -> None:
    flag(p, "--socket", "--agent-socket", dest="socket", metavar="PATH",
         default=os.environ.get("MESHCNI_AGENT_SOCKET", DEFAULT_SOCKET),
         help=f"the agent's local API socket{why} (default $MESHCNI_AGENT_SOCKET or %(default)s)")


def _desc(text: str) -> str:
    return f"{text} {NEEDS_PINS}"


# ---------------------------------------------------------------- maps


def cmd_maps_list(args):
    from ..bpf.maps import BpfMap
    from ..bpf.pin import compatible, info_mismatch
    from ..layout import map_specs
    doc = []
    for name, spec in map_specs().items():
        path = os.path.join(args.bpf_root, name)
        row = {"name": name, "type": spec.type_name, "key_size": spec.key_size, "value_size": spec.value_size,
               "max_entries": spec.max_entries, "map_flags": spec.map_flags, "path": path,
               "state": "absent", "mismatch": None, "id": None, "entries": None}
        if os.path.exists(path):
            with BpfMap.open_pinned(path, name=name) as m:
                pinned = m.spec
                row["id"] = m.info().id
                if not compatible(pinned, spec):
                    row["state"], row["mismatch"] = "mismatch", info_mismatch(pinned, spec)
                else:
                    row["state"] = "ok"
                    if spec.type_name != "ringbuf":
                        row["entries"] = len(m)
        doc.append(row)

    def pin(r):
        if r["state"] == "mismatch":
            return "MISMATCH: " + r["mismatch"]
        if r["state"] == "ok":
            return f"ok (id {r['id']})" if r["entries"] is None else f"ok (id {r['id']}, {r['entries']} entries)"
        return "absent"
    emit(args, doc, Table([Column("NAME", "name"), Column("TYPE", "type"), Column("KEY", "key_size"),
                           Column("VALUE", "value_size"), Column("MAX", "max_entries"),
                           Column("FLAGS", lambda r: hex(r["map_flags"]), wide=True), Column("PIN", pin),
                           Column("PATH", "path", wide=True)], doc))
    return 0


def cmd_maps_create(args):
    from ..bpf.typed import MeshMaps
    with MeshMaps(args.bpf_root) as mm:
        print(f"{len(mm.maps)} maps pinned under {args.bpf_root}")
    return 0


def cmd_maps_dump(args):
    from ..bpf.decode import record
    from ..bpf.pin import open_existing
    from ..layout import map_specs
    spec = map_specs().get(args.name)
    if spec is None:
        print(f"meshcni: no meshcni map {args.name!r}", file=sys.stderr)
        return 2
    if spec.type_name == "ringbuf":
        print(f"meshcni: map {args.name} is a ring buffer; it has no entries to dump", file=sys.stderr)
        return 2
    with open_existing(args.bpf_root, args.name) as m:
        keys, vals = m.dump()
    for k, v in zip(keys, vals):
        if spec.percpu:
            print(json.dumps({"key": record(k), "per_cpu": [record(x) for x in v]}))
        else:
            print(json.dumps({"key": record(k), "value": record(v)}))
    return 0


def add_maps(sub, **kw):
    x = sub.add_parser("maps", help="the pinned maps: list, create, dump", **kw)
    s = x.add_subparsers(dest="maps_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="the map table and the state of each pin",
                     description=_desc("The map table of this meshcni (name, type, sizes) and, for each, whether "
                                       "its pin exists, matches the layout, and how many entries it holds."))
    bpf_root_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_maps_list)
    y = s.add_parser("create", help="create or migrate every pinned map (needs root)",
                     description="Creates every map of the table under --bpf-root, reusing compatible pins with "
                     "their entries and migrating incompatible ones. Needs root and a bpffs there.")
    bpf_root_arg(y)
    y.set_defaults(fn=cmd_maps_create)
    y = s.add_parser("dump", help="entries of one map, one JSON object a line",
                     description=_desc("Every entry of one pinned map as a JSON object a line: "
                                       "{key, value} (or {key, per_cpu} for per-CPU maps), addresses as text."))
    y.add_argument("name", help="map name, e.g. mc_ipcache")
    bpf_root_arg(y)
    y.set_defaults(fn=cmd_maps_dump)


# ---------------------------------------------------------------- ipcache


def cmd_ipcache_lookup(args):
    from ..bpf.pin import open_existing
    from ..bpf.typed import IPCacheMap
    with open_existing(args.bpf_root, "mc_ipcache", IPCacheMap) as m:
        ident = m.lookup_ip(args.ip)
    if ident is None:
        print(f"{args.ip}: no prefix covers it")
        return 1
    print(f"{args.ip}: identity {ident}")
    return 0


def cmd_ipcache_list(args):
    from ..bpf.decode import identity_kind, identity_label, prefix_sort_key
    from ..bpf.pin import open_existing
    from ..bpf.typed import IPCacheMap
    with open_existing(args.bpf_root, "mc_ipcache", IPCacheMap) as m:
        prefixes = m.prefixes()
    rows = sorted(prefixes.items(), key=lambda kv: prefix_sort_key(kv[0]))
    clusters = _remote_clusters(args.socket) if args.output in ("table", "wide") else {}
    emit(args, {k: v for k, v in rows},
         Table([Column("PREFIX", lambda r: r[0]),
                # a meshed cluster's pod identity: "2147483990 (west)"
                Column("IDENTITY", lambda r: identity_label(r[1]) + (f" ({clusters[r[1]]})" if r[1] in clusters
                                                                     else "")),
                Column("KIND", lambda r: identity_kind(r[1]), wide=True)], rows))
    return 0


def _remote_clusters(sock: str) -> dict:
    """{identity: cluster} of the meshed clusters' pod identities, from the agent; {} when it does not answer
    (the map holds only ids)."""
    from ..cni.endpoints import AgentClient
    from ..cni.spec import CNIError
    try:
        got = AgentClient(sock, timeout=2.0).identities() or {}
    except (CNIError, ValueError):
        return {}
    return {int(k): v.get("cluster") for k, v in got.items() if isinstance(v, dict) and v.get("kind") == "RemoteIdentity"}


def add_ipcache(sub, **kw):
    x = sub.add_parser("ipcache", help="the ipcache: prefix -> identity", **kw)
    s = x.add_subparsers(dest="ipcache_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="every prefix and its identity",
                     description=_desc("Every prefix of the mc_ipcache LPM trie and its identity; a meshed "
                                       "cluster's pod identity is followed by its cluster, '2147483990 (west)' (asked "
                                       "of the agent at --socket; only the number when it does not answer). "
                                       "json/yaml: {prefix: identity}."))
    bpf_root_arg(y)
    socket_arg(y, ", for the clusters of remote identities")
    add_output_args(y)
    y.set_defaults(fn=cmd_ipcache_list)
    y = s.add_parser("lookup", help="identity of the longest prefix covering an IP",
                     description=_desc("The identity the datapath gives IP: its longest matching prefix in "
                                       "mc_ipcache. Exit 1 when no prefix covers it."))
    y.add_argument("ip")
    bpf_root_arg(y)
    y.set_defaults(fn=cmd_ipcache_lookup)


# ---------------------------------------------------------------- policy


def cmd_policy_list(args):
    from ..bpf.decode import decode_enforce, decode_policy, identity_label, port_text
    from ..bpf.pin import open_existing
    with open_existing(args.bpf_root, "mc_policy") as pm, open_existing(args.bpf_root, "mc_enforce") as em:
        pol = decode_policy(*pm.dump())
        enf = decode_enforce(*em.dump())
    emit(args, {"policy": pol, "enforce": enf},
         Table([Column("IDENTITY", lambda r: identity_label(r["identity"])), Column("DIRECTION", "direction"),
                Column("PEER", lambda r: "any" if r["peer"] is None else identity_label(r["peer"])),
                Column("PROTO", lambda r: r["proto"] or "any"), Column("PORT", port_text),
                Column("ACTION", "action"), Column("RULE", "rule_id"),
                Column("PREFIXLEN", "prefixlen", wide=True)], pol),
         Table([Column("IDENTITY", lambda r: identity_label(r["identity"])), Column("DIRECTION", "direction"),
                Column("ENFORCED", lambda r: "yes" if r["enforced"] else "no")], enf))
    return 0


def add_policy(sub, **kw):
    x = sub.add_parser("policy", help="the policy maps (mc_policy, mc_enforce), decoded", **kw)
    s = x.add_subparsers(dest="policy_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="every mc_policy row and mc_enforce flag",
                     description=_desc(
                         "Reads the pinned mc_policy LPM trie and mc_enforce hash. A policy row: the local IDENTITY, "
                         "the pod's DIRECTION (ingress/egress), the PEER identity (any = every peer), PROTO and PORT "
                         "(any, one port, or the aligned range a port-range prefix covers), ACTION (allow/deny) and "
                         "the RULE id. mc_enforce lists the (identity, direction) pairs under default deny; unlisted "
                         "ones allow everything. json/yaml: {policy: [...], enforce: [...]}."))
    bpf_root_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_policy_list)


# ---------------------------------------------------------------- conntrack


def cmd_ct_list(args):
    from ..bpf.decode import decode_ct, hostport, identity_label
    from ..bpf.pin import open_existing
    with open_existing(args.bpf_root, "mc_ct") as m:
        keys, vals = m.dump()
        now = time.monotonic_ns()  # the clock of bpf_ktime_get_ns
    rows = decode_ct(keys, vals, now, include_expired=args.all)
    emit(args, rows, Table([
        Column("PROTO", "proto"), Column("SOURCE", lambda r: hostport(r["src"], r["sport"])),
        Column("DESTINATION", lambda r: hostport(r["dst"], r["dport"])), Column("DIR", "direction"),
        Column("STATE", "state"),
        Column("EXPIRES", lambda r: f"{r['expires_in_s']:.0f}s" if not r["expired"]
               else f"expired {-r['expires_in_s']:.0f}s ago"),
        Column("PACKETS", "packets"), Column("BYTES", "bytes"),
        Column("SRC IDENTITY", lambda r: identity_label(r["src_identity"])),
        Column("FLAGS", lambda r: ",".join(r["flags"])),
        Column("EXPIRES IN", lambda r: f"{r['expires_in_s']:.3f}s", wide=True)], rows))
    return 0


def add_ct(sub, name="ct", **kw):
    x = sub.add_parser(name, help="the conntrack map (mc_ct), decoded", **kw)
    s = x.add_subparsers(dest="ct_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="conntrack entries: tuple, direction, state, time left",
                     description=_desc(
                         "Reads the pinned mc_ct map. Each entry is the originator's tuple and the policy direction "
                         "of the hook that admitted it; EXPIRES is the time left (CLOCK_MONOTONIC, the datapath's "
                         "clock). Expired entries count as absent to the datapath and are not shown unless --all "
                         "(the agent's GC deletes them)."))
    y.add_argument("--all", action="store_true", help="include expired entries")
    bpf_root_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_ct_list)


# ---------------------------------------------------------------- lb


def cmd_lb_list(args):
    from ..bpf.decode import decode_lb, hostport
    from ..bpf.pin import open_existing
    with open_existing(args.bpf_root, "mc_svc") as sm, open_existing(args.bpf_root, "mc_backends") as bm:
        rows = decode_lb(*sm.dump(), *bm.dump())

    def backends(r):
        return ", ".join(hostport(b["addr"], b["port"]) if b["addr"] else f"(backend {b['backend_id']} missing)"
                         for b in r["backends"]) or "(none: refused)"
    emit(args, rows, Table([
        Column("SERVICE ID", "service_id"), Column("FRONTEND", "frontend"), Column("BACKENDS", backends),
        Column("FLAGS", lambda r: ",".join(r["flags"]), wide=True),
        Column("AFFINITY", lambda r: f"{r['affinity_timeout_s']}s" if "affinity" in r["flags"] else None, wide=True),
        Column("BACKEND IDS", lambda r: ",".join(str(b["backend_id"]) for b in r["backends"]), wide=True)], rows))
    return 0


def add_lb(sub, **kw):
    x = sub.add_parser("lb", help="the socket load balancer's service maps (mc_svc, mc_backends), decoded", **kw)
    s = x.add_subparsers(dest="lb_cmd", required=True, metavar="COMMAND")
    y = s.add_parser("list", help="every frontend and the backends the socket LB picks from",
                     description=_desc(
                         "Reads the pinned mc_svc and mc_backends maps: each frontend (address:port/protocol) with "
                         "its service id and its backends in slot order. A frontend without backends refuses "
                         "connections (ECONNREFUSED). wide adds the flags (maglev, affinity), the affinity timeout "
                         "and the backend ids. For what the agent meant to program, see meshcni service list."))
    bpf_root_arg(y)
    add_output_args(y)
    y.set_defaults(fn=cmd_lb_list)


# ---------------------------------------------------------------- drops and monitor


def cmd_drops(args):
    from ..bpf.pin import open_existing
    from ..datapath.policy import DropEvents, drop_counts, drop_reasons
    with open_existing(args.bpf_root, "mc_drops") as m:
        counts = drop_counts(m)
    rows = [{"reason": name, "packets": counts.get(name, (0, 0))[0], "bytes": counts.get(name, (0, 0))[1]}
            for _, name in sorted(drop_reasons().items())]
    emit(args, rows, Table([Column("REASON", "reason"), Column("PACKETS", "packets"), Column("BYTES", "bytes")],
                           rows))
    if not args.follow:
        return 0
    with open_existing(args.bpf_root, "mc_events") as em, DropEvents(em) as ev:
        try:
            while True:
                for e in ev.poll(1000):
                    print(json.dumps(e.__dict__), flush=True)
        except KeyboardInterrupt:
            return 0


def add_drops(sub, **kw):
    x = sub.add_parser("drops", help="drop counters by reason (and live drop events)",
                       description=_desc("The per-CPU drop counters (mc_drops) summed per reason; with --follow, "
                                         "then every drop event of mc_events as a JSON line (see also meshcni "
                                         "monitor, which names the pods)."), **kw)
    x.add_argument("--follow", action="store_true", help="then print each drop event as JSON")
    bpf_root_arg(x)
    add_output_args(x)
    x.set_defaults(fn=cmd_drops)


def _pod_names(sock):
    """{pod IP: "ns/name"} from the agent; {} when it is not reachable (the monitor still runs)."""
    from ..cni.endpoints import AgentClient
    from ..cni.spec import CNIError
    try:
        return AgentClient(sock, timeout=2.0).pod_ips()
    except (CNIError, ValueError):
        return {}


def _cluster_of(pod: str):
    """The meshed cluster of a remote pod's name as the agent gives it ("cluster:ns/name"); None for a local one."""
    return pod.split(":", 1)[0] if ":" in pod.split("/", 1)[0] else None


def cmd_monitor(args):
    """Live drop events, with pod names (from the agent) and identity names."""
    from ..bpf.decode import identity_label, proto_name
    from ..bpf.pin import open_existing
    from ..datapath.policy import DropEvents
    names, fetched = _pod_names(args.socket), time.monotonic()
    if not names:
        print(f"meshcni monitor: agent at {args.socket} not reachable: addresses without pod names",
              file=sys.stderr)
    seen, end = 0, (time.monotonic() + args.timeout) if args.timeout else None
    with open_existing(args.bpf_root, "mc_events") as em, DropEvents(em) as ev:
        if args.output == "table":
            print("listening for drop events (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            while args.count is None or seen < args.count:
                if end is not None and time.monotonic() >= end:
                    return 0 if seen else 2
                batch = ev.poll(250)
                if batch and time.monotonic() - fetched > 5.0:
                    names, fetched = _pod_names(args.socket) or names, time.monotonic()
                for e in batch:
                    seen += 1
                    # ts_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns): shifted onto the wall clock
                    wall = time.time() - (time.monotonic_ns() - e.ts_ns) / 1e9
                    src, dst = names.get(e.saddr, ""), names.get(e.daddr, "")
                    d = "ingress" if e.direction == 0 else "egress"
                    if args.output == "json":
                        print(json.dumps({**e.__dict__, "time": wall, "direction": d, "src_pod": src or None,
                                          "dst_pod": dst or None, "src_cluster": _cluster_of(src),
                                          "dst_cluster": _cluster_of(dst), "proto": proto_name(e.proto)}),
                              flush=True)
                    else:
                        t = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"

                        def who(ip, port, pod):
                            return (f"{pod} " if pod else "") + (f"[{ip}]" if ":" in ip else ip) + \
                                (f":{port}" if port else "")
                        print(f"{t} DROP {e.reason} {d} {proto_name(e.proto)} {who(e.saddr, e.sport, src)} -> "
                              f"{who(e.daddr, e.dport, dst)}  identity {identity_label(e.src_identity)} -> "
                              f"{identity_label(e.dst_identity)}", flush=True)
                    if args.count is not None and seen >= args.count:
                        break
        except KeyboardInterrupt:
            pass
    return 0


def add_monitor(sub):
    x = sub.add_parser("monitor", help="live drop events with pod names",
                       description="Reads drop events from the pinned mc_events ring buffer under --bpf-root (the "
                       "datapath writes one per dropped packet: addresses, ports, identities, direction, reason) "
                       "and names the pods through the agent's local API at --socket (without it, addresses "
                       "only). One reader at a time: a ring buffer has one consumer position. Needs root. "
                       "Exit 0 after --count events, 2 when --timeout passes without any. "
                       "-o json prints one JSON object per event.")
    socket_arg(x, ", for pod names")
    x.add_argument("--count", type=int, help="stop after this many events")
    x.add_argument("--timeout", type=float, help="stop after this many seconds")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="table (default): one line per event; json: one object per line")
    bpf_root_arg(x)
    x.set_defaults(fn=cmd_monitor)


# ---------------------------------------------------------------- the group


def add_bpf(sub) -> None:
    """``meshcni bpf ...``, and the older top-level spellings (hidden) of the same commands."""
    x = sub.add_parser("bpf", help="the pinned BPF maps, read directly (needs root)",
                       description="The pinned maps under --bpf-root, read directly in the manner of cilium-dbg "
                       "bpf: no agent needed. Needs root (or CAP_BPF + CAP_SYS_ADMIN) and a bpffs there.")
    s = x.add_subparsers(dest="bpf_cmd", required=True, metavar="COMMAND")
    add_lb(s)
    add_ipcache(s)
    add_policy(s)
    add_ct(s, hidden_aliases=("conntrack",))
    add_maps(s)
    add_drops(s)
    # the spellings of the flat CLI, kept for scripts and older docs
    add_maps(sub, hidden=True)
    add_ipcache(sub, hidden=True)
    add_policy(sub, hidden=True)
    add_ct(sub, "conntrack", hidden=True)
    add_drops(sub, hidden=True)
