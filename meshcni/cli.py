# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni``: the command line. A thin shell over the library.

    meshcni version                     versions of meshcni, libbpf, the kernel
    meshcni maps list   [--root R]      the map table and the state of each pin
    meshcni maps create [--root R]      create (or migrate) every pinned map
    meshcni maps dump NAME [--root R]   entries of one map, one JSON object a line
    meshcni ipcache lookup IP [--root R]  identity of the longest prefix covering IP
    meshcni ipcache list [--root R]     every prefix and its identity
    meshcni drops [--follow] [--root R]  drop counters by reason; --follow prints drop events
    meshcni monitor [--root R] [--socket S] [-o json]  live drop events with pod names
    meshcni policy list [--root R] [-o json]     mc_policy rows and mc_enforce flags, decoded
    meshcni conntrack list [--root R] [--all] [-o json]  mc_ct entries (live ones unless --all)
    meshcni identity list [--root R] [-o json]   identities in the ipcache, prefixes per identity
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
import functools
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
    from .bpf.typed import IPCacheMap
    with _open_pin(args.root, "mc_ipcache", IPCacheMap) as m:  # read-only: never creates a pin
        ident = m.lookup_ip(args.ip)
    if ident is None:
        print(f"{args.ip}: no prefix covers it")
        return 1
    print(f"{args.ip}: identity {ident}")
    return 0


def cmd_ipcache_list(args):
    import ipaddress
    from .bpf.typed import IPCacheMap
    with _open_pin(args.root, "mc_ipcache", IPCacheMap) as m:  # read-only: never creates a pin
        prefixes = m.prefixes()
    names = _reserved_names()
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


def _pod_names(sock):
    """{pod IP: "ns/name"} from the agent's /v1/ips; {} when the agent is not reachable."""
    from .cni.endpoints import AgentClient
    try:
        return AgentClient(sock, timeout=2.0)._call("GET", "/v1/ips") or {}
    except Exception:
        return {}


def cmd_monitor(args):
    """Live drop events, with pod names (from the agent) and identity names."""
    from .datapath.policy import DropEvents
    names, fetched = _pod_names(args.socket), time.monotonic()
    if not names:
        print(f"meshcni monitor: agent at {args.socket} not reachable: addresses without pod names",
              file=sys.stderr)
    seen, end = 0, (time.monotonic() + args.timeout) if args.timeout else None
    with _open_pin(args.root, "mc_events") as em, DropEvents(em) as ev:
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
                    # ts_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns): shift it onto the wall clock
                    wall = time.time() - (time.monotonic_ns() - e.ts_ns) / 1e9
                    src, dst = names.get(e.saddr, ""), names.get(e.daddr, "")
                    d = "ingress" if e.direction == 0 else "egress"
                    if args.output == "json":
                        print(json.dumps({**e.__dict__, "time": wall, "direction": d, "src_pod": src or None,
                                          "dst_pod": dst or None, "proto": _proto_name(e.proto)}), flush=True)
                    else:
                        t = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
                        who = lambda ip, port, pod: (f"{pod} " if pod else "") + (f"[{ip}]" if ":" in ip else ip) + \
                            (f":{port}" if port else "")
                        print(f"{t} DROP {e.reason} {d} {_proto_name(e.proto)} {who(e.saddr, e.sport, src)} -> "
                              f"{who(e.daddr, e.dport, dst)}  identity {_identity_label(e.src_identity)} -> "
                              f"{_identity_label(e.dst_identity)}", flush=True)
                    if args.count is not None and seen >= args.count:
                        break
        except KeyboardInterrupt:
            pass
    return 0


# ---- decoded views of the pinned maps (cilium-dbg style) ----
# Names come from the layout header's constants and field positions from its
# struct descriptors (meshcni.layout): nothing below knows an offset.

_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}  # IANA numbers


@functools.lru_cache(maxsize=None)
def _const_names(prefix, exclude=()):
    """value -> lower-case name of the layout constants ``prefix``NAME (first one wins)."""
    from .layout import constants
    out = {}
    for k, v in constants().items():
        if k.startswith(prefix) and k not in exclude:
            out.setdefault(v, k[len(prefix):].lower())
    return out


@functools.lru_cache(maxsize=None)
def _reserved_names():
    """Reserved identity -> name (host, world, remote-node, ...), from the MC_ID_* constants."""
    return {v: n.replace("_", "-") for v, n in _const_names("MC_ID_", exclude=("MC_ID_ANY",)).items()}


def _identity_kind(ident):
    from .controllers.identity import (ATOM_ID_MAX, ATOM_ID_MIN, CIDR_ID_MAX, CIDR_ID_MIN, POD_ID_MIN,
                                       RESERVED_MAX)
    if ident <= RESERVED_MAX:
        return "reserved"
    if CIDR_ID_MIN <= ident <= CIDR_ID_MAX:
        return "cidr"
    if ATOM_ID_MIN <= ident <= ATOM_ID_MAX:
        return "cidr-atom"
    return "pod" if ident >= POD_ID_MIN else "unknown"


def _identity_label(ident):
    name = _reserved_names().get(ident)
    return f"{ident} ({name})" if name else str(ident)


def _proto_name(proto):
    return _PROTO_NAMES.get(proto, str(proto))


def _open_pin(root, name, map_class=None):
    """The pin ``root/name`` with meshcni's dtypes; opens only, never creates anything.

    Missing pin -> FileNotFoundError naming the path; a pin whose type, key or
    value size differs from this meshcni's layout -> ValueError (decoding it
    would be garbage). max_entries / flags may differ (tests, resized maps).
    """
    from .bpf.maps import BpfMap
    from .layout import map_specs
    spec = map_specs()[name]
    path = os.path.join(root, name)
    if not os.path.exists(path):
        why = f"{root} does not exist" if not os.path.isdir(root) else f"{root} has no {name}"
        raise FileNotFoundError(f"no pinned map {name} at {path}: {why} "
                                f"(wrong --root, or the agent has not pinned its maps yet)")
    opened = BpfMap.open_pinned(path)
    try:
        got = opened.spec
        if (got.type, got.key_size, got.value_size) != (spec.type, spec.key_size, spec.value_size):
            raise ValueError(f"pin {path}: {got.type_name} key {got.key_size} value {got.value_size} bytes, "
                             f"this meshcni expects {spec.type_name} key {spec.key_size} value {spec.value_size} "
                             f"(a different meshcni version pinned it)")
        cls = map_class or BpfMap
        return cls(os.dup(opened.fd), spec.with_(max_entries=got.max_entries, map_flags=got.map_flags), path=path)
    finally:
        opened.close()


def _lpm_bits(struct_name, prefixlen):
    """field name -> how many of its bits an LPM key of ``prefixlen`` matches.

    The trie's bits start after the ``prefixlen`` field, in field order
    (layout.h), so each field's position comes from its struct descriptor.
    """
    from .layout import structs
    st = structs()[struct_name]
    pl = st.field("prefixlen")
    base = pl.offset + pl.size
    out = {}
    for f in st.fields:
        if f is pl:
            continue
        start = (f.offset - base) * 8
        out[f.name] = max(0, min(f.size * 8, prefixlen - start))
    return out


def decode_policy(keys, vals):
    """Decoded mc_policy rows (dicts, JSON-ready), sorted."""
    from .layout import constants
    dirs = _const_names("MC_DIR_")
    c = constants()
    actions = {c["MC_POLICY_ALLOW"]: "allow", c["MC_POLICY_DENY"]: "deny"}
    reserved = _reserved_names()
    out = []
    for k, v in zip(keys, vals):
        plen = int(k["prefixlen"])
        bits = _lpm_bits("mc_policy_key", plen)
        peer = int(k["peer"]) if bits["peer"] else 0
        proto = int(k["proto"]) if bits["proto"] else None
        port = port_end = port_bits = None
        if proto is not None and bits["port"]:
            width = k.dtype["port"].itemsize * 8
            port_bits = bits["port"]
            span = 1 << (width - port_bits)
            port = int(k["port"]) & ~(span - 1) & ((1 << width) - 1)
            port_end = port + span - 1
        d, a = int(k["dir"]), int(v["action"])
        out.append({
            "identity": int(k["identity"]), "direction": dirs.get(d, str(d)),
            "peer": peer or None, "peer_name": "any" if not peer else reserved.get(peer),
            "proto": None if proto is None else _proto_name(proto), "proto_num": proto,
            "port": port, "port_end": port_end, "port_prefix": port_bits,
            "prefixlen": plen, "action": actions.get(a, str(a)), "rule_id": int(v["rule_id"]),
        })
    out.sort(key=lambda r: (r["identity"], r["direction"], r["peer"] or 0, r["proto_num"] or 0,
                            r["port"] or 0, r["prefixlen"]))
    return out


def decode_enforce(keys, vals):
    dirs = _const_names("MC_DIR_")
    out = [{"identity": int(k["identity"]), "direction": dirs.get(int(k["dir"]), str(int(k["dir"]))),
            "enforced": bool(int(v["enforced"]))} for k, v in zip(keys, vals)]
    out.sort(key=lambda r: (r["identity"], r["direction"]))
    return out


def _port_text(r):
    if r["port"] is None:
        return "any"
    return str(r["port"]) if r["port"] == r["port_end"] else f"{r['port']}-{r['port_end']}"


def cmd_policy_list(args):
    with _open_pin(args.root, "mc_policy") as pm, _open_pin(args.root, "mc_enforce") as em:
        pol = decode_policy(*pm.dump())
        enf = decode_enforce(*em.dump())
    if args.output == "json":
        print(json.dumps({"policy": pol, "enforce": enf}, indent=2))
        return 0
    _print_table(["IDENTITY", "DIRECTION", "PEER", "PROTO", "PORT", "ACTION", "RULE"],
                 [[_identity_label(r["identity"]), r["direction"],
                   "any" if r["peer"] is None else _identity_label(r["peer"]),
                   r["proto"] or "any", _port_text(r), r["action"], r["rule_id"]] for r in pol])
    print()
    _print_table(["IDENTITY", "DIRECTION", "ENFORCED"],
                 [[_identity_label(r["identity"]), r["direction"], "yes" if r["enforced"] else "no"]
                  for r in enf])
    return 0


def decode_ct(keys, vals, now_ns, include_expired=False):
    """Decoded mc_ct entries (dicts, JSON-ready); expired ones only with ``include_expired``."""
    from .cidr import from_unified
    dirs = _const_names("MC_DIR_")
    states = _const_names("MC_CT_STATE_")
    flag_names = _const_names("MC_CT_F_")
    out = []
    for k, v in zip(keys, vals):
        exp = int(v["expires_ns"])
        if exp <= now_ns and not include_expired:  # the datapath treats these as absent
            continue
        st, fl, proto = int(v["state"]), int(v["flags"]), int(k["proto"])
        out.append({
            "proto": _proto_name(proto), "proto_num": proto,
            "src": str(from_unified(bytes(k["saddr"]))), "sport": int(k["sport"]),
            "dst": str(from_unified(bytes(k["daddr"]))), "dport": int(k["dport"]),
            "direction": dirs.get(int(k["dir"]), str(int(k["dir"]))),
            "state": states.get(st, str(st)),
            "expires_in_s": round((exp - now_ns) / 1e9, 3), "expired": exp <= now_ns,
            "packets": int(v["packets"]), "bytes": int(v["bytes"]),
            "src_identity": int(v["src_identity"]),
            "flags": [n for b, n in sorted(flag_names.items()) if fl & b],
        })
    out.sort(key=lambda r: (r["proto_num"], r["src"], r["sport"], r["dst"], r["dport"], r["direction"]))
    return out


def _hostport(addr, port):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def cmd_conntrack_list(args):
    with _open_pin(args.root, "mc_ct") as m:
        keys, vals = m.dump()
        now = time.monotonic_ns()  # the clock of bpf_ktime_get_ns
    rows = decode_ct(keys, vals, now, include_expired=args.all)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(["PROTO", "SOURCE", "DESTINATION", "DIR", "STATE", "EXPIRES", "PACKETS", "BYTES",
                  "SRC IDENTITY", "FLAGS"],
                 [[r["proto"], _hostport(r["src"], r["sport"]), _hostport(r["dst"], r["dport"]),
                   r["direction"], r["state"],
                   f"{r['expires_in_s']:.0f}s" if not r["expired"] else f"expired {-r['expires_in_s']:.0f}s ago",
                   r["packets"], r["bytes"], _identity_label(r["src_identity"]), ",".join(r["flags"]) or "-"]
                  for r in rows])
    return 0


def group_identities(prefixes):
    """{"cidr": identity} -> one dict per identity: name, kind, prefix count, prefixes (sorted)."""
    import ipaddress
    reserved = _reserved_names()
    by = {}
    for p, ident in prefixes.items():
        by.setdefault(ident, []).append(p)
    out = []
    for ident in sorted(by):
        ps = sorted(by[ident], key=lambda t: (ipaddress.ip_network(t).version, ipaddress.ip_network(t)))
        out.append({"identity": ident, "name": reserved.get(ident), "kind": _identity_kind(ident),
                    "prefixes": len(ps), "cidrs": ps})
    return out


def cmd_identity_list(args):
    from .bpf.typed import IPCacheMap
    with _open_pin(args.root, "mc_ipcache", map_class=IPCacheMap) as m:
        rows = group_identities(m.prefixes())
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(["IDENTITY", "NAME", "KIND", "PREFIXES", "EXAMPLE"],
                 [[r["identity"], r["name"] or "-", r["kind"], r["prefixes"],
                   r["cidrs"][0] + (f" (+{r['prefixes'] - 1})" if r["prefixes"] > 1 else "")] for r in rows])
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
            remote = s.get("backendClusters") or {}  # older agents do not send it
            rows.append([s["id"] if i == 0 else "", f,
                         ", ".join(f"{b} ({remote[b]})" if b in remote else b for b in s["backends"]) or "(none)",
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


def _add_inspect(sub):
    def out(x):
        x.add_argument("-o", "--output", choices=("table", "json"), default="table",
                       help="table (default) or JSON")
    x = sub.add_parser("policy", help="the policy maps (mc_policy, mc_enforce), decoded")
    psub = x.add_subparsers(dest="policy_cmd", required=True)
    y = psub.add_parser("list", help="every mc_policy row and mc_enforce flag",
                        description="Reads the pinned mc_policy LPM trie and mc_enforce hash directly. "
                        "A policy row: the local IDENTITY, the pod's DIRECTION (ingress/egress), the PEER "
                        "identity (any = every peer), PROTO and PORT (any, one port, or the aligned range a "
                        "port-range prefix covers), ACTION (allow/deny) and the RULE id. mc_enforce lists the "
                        "(identity, direction) pairs under default deny; unlisted ones allow everything.")
    _root_arg(y)
    out(y)
    y.set_defaults(fn=cmd_policy_list)
    x = sub.add_parser("conntrack", help="the conntrack map (mc_ct), decoded")
    csub = x.add_subparsers(dest="conntrack_cmd", required=True)
    y = csub.add_parser("list", help="conntrack entries: tuple, direction, state, time left",
                        description="Reads the pinned mc_ct map directly. Each entry is the originator's tuple "
                        "and the policy direction of the hook that admitted it; EXPIRES is the time left "
                        "(CLOCK_MONOTONIC, the datapath's clock). Expired entries count as absent to the "
                        "datapath and are not shown unless --all (the agent's GC deletes them).")
    y.add_argument("--all", action="store_true", help="include expired entries")
    _root_arg(y)
    out(y)
    y.set_defaults(fn=cmd_conntrack_list)
    x = sub.add_parser("identity", help="identities in the ipcache")
    isub = x.add_subparsers(dest="identity_cmd", required=True)
    y = isub.add_parser("list", help="each identity in mc_ipcache and how many prefixes map to it",
                        description="Reads the pinned mc_ipcache directly and groups its prefixes by identity. "
                        "NAME is the reserved name (host, world, remote-node, ...); KIND is the id range: "
                        "reserved (0-255), cidr (CIDRIdentity), cidr-atom (agent-local set of overlapping "
                        "CIDR identities) or pod (Identity).")
    _root_arg(y)
    out(y)
    y.set_defaults(fn=cmd_identity_list)


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

    x = sub.add_parser("monitor", help="live drop events with pod names",
                       description="Reads drop events from the pinned mc_events ring buffer (the datapath "
                       "writes one per dropped packet: addresses, ports, identities, direction, reason) and "
                       "names the pods through the agent's local API. One reader at a time: a ring buffer "
                       "has one consumer position. Exit 0 after --count events, 2 when --timeout passes "
                       "without any.")
    x.add_argument("--socket", default=os.environ.get("MESHCNI_AGENT_SOCKET", "/var/run/meshcni/agent.sock"),
                   help="the agent's local API socket, for pod names (default $MESHCNI_AGENT_SOCKET or %(default)s)")
    x.add_argument("--count", type=int, help="stop after this many events")
    x.add_argument("--timeout", type=float, help="stop after this many seconds")
    x.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _root_arg(x)
    x.set_defaults(fn=cmd_monitor)

    x = sub.add_parser("drops", help="drop counters by reason (and live drop events)")
    x.add_argument("--follow", action="store_true", help="then print each drop event as JSON")
    _root_arg(x)
    x.set_defaults(fn=cmd_drops)

    _add_inspect(sub)

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
