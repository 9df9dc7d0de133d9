# SPDX-License-Identifier: MIT OR Apache-2.0
"""Rows of the pinned maps as plain, JSON-ready dicts (the inverse of what the appliers write).

Names come from the layout header's constants (``MC_DIR_*``, ``MC_CT_STATE_*``,
``MC_ID_*``, ...) and field positions from its struct descriptors
(:mod:`meshcni.layout`): nothing here knows an offset. The functions take
numpy rows as ``BpfMap.dump()`` returns them and open nothing, so they are
tested without a kernel; ``meshcni bpf ...`` opens the pins and prints these.
"""
from __future__ import annotations

import functools
import ipaddress
from typing import Dict, Iterable, List, Mapping, Optional

from ..cidr import from_unified

# IANA protocol numbers: the maps store numbers, people read names
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def prefix_sort_key(text: str):
    """IPv4 before IPv6, then by network: the order every list of prefixes is printed in."""
    n = ipaddress.ip_network(text)
    return (n.version, n)


@functools.lru_cache(maxsize=None)
def const_names(prefix: str, exclude: tuple = ()) -> Dict[int, str]:
    """value -> lower-case name of the layout constants ``prefix``NAME (the first one wins)."""
    from ..layout import constants
    out: Dict[int, str] = {}
    for k, v in constants().items():
        if k.startswith(prefix) and k not in exclude:
            out.setdefault(v, k[len(prefix):].lower())
    return out


@functools.lru_cache(maxsize=None)
def reserved_names() -> Dict[int, str]:
    """Reserved identity -> name (host, world, remote-node, ...), from the MC_ID_* constants."""
    return {v: n.replace("_", "-") for v, n in const_names("MC_ID_", exclude=("MC_ID_ANY",)).items()}


def identity_kind(ident: int) -> str:
    """Which id range ``ident`` is in: reserved, cidr, cidr-atom, pod (or unknown)."""
    from ..controllers.identity import (ATOM_ID_MAX, ATOM_ID_MIN, CIDR_ID_MAX, CIDR_ID_MIN, POD_ID_MIN,
                                        RESERVED_MAX)
    if ident <= RESERVED_MAX:
        return "reserved"
    if CIDR_ID_MIN <= ident <= CIDR_ID_MAX:
        return "cidr"
    if ATOM_ID_MIN <= ident <= ATOM_ID_MAX:
        return "cidr-atom"
    return "pod" if ident >= POD_ID_MIN else "unknown"


def identity_label(ident: int) -> str:
    """``1 (host)`` for reserved identities, the bare number otherwise."""
    name = reserved_names().get(ident)
    return f"{ident} ({name})" if name else str(ident)


def record(rec) -> dict:
    """One numpy record as a dict: padding dropped, 16-byte ``*addr`` fields as address text."""
    import numpy as np
    out = {}
    for name in rec.dtype.names or ():
        if name.startswith("pad"):
            continue
        v = rec[name]
        if isinstance(v, np.ndarray):
            if name.endswith("addr") and v.size == 16:
                out[name] = str(from_unified(bytes(v)))
            else:
                out[name] = v.tolist()
        else:
            out[name] = v.item() if hasattr(v, "item") else v
    return out


def lpm_bits(struct_name: str, prefixlen: int) -> Dict[str, int]:
    """field name -> how many of its bits an LPM key of ``prefixlen`` matches.

    The trie's bits start after the ``prefixlen`` field, in field order
    (layout.h), so each field's position comes from its struct descriptor.
    """
    from ..layout import structs
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


# ---------------------------------------------------------------- policy


def decode_policy(keys, vals) -> List[dict]:
    """mc_policy rows, sorted: identity, direction, peer (None = any), proto, port range, action, rule id."""
    from ..layout import constants
    dirs = const_names("MC_DIR_")
    c = constants()
    actions = {c["MC_POLICY_ALLOW"]: "allow", c["MC_POLICY_DENY"]: "deny"}
    reserved = reserved_names()
    out = []
    for k, v in zip(keys, vals):
        plen = int(k["prefixlen"])
        bits = lpm_bits("mc_policy_key", plen)
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
            "proto": None if proto is None else proto_name(proto), "proto_num": proto,
            "port": port, "port_end": port_end, "port_prefix": port_bits,
            "prefixlen": plen, "action": actions.get(a, str(a)), "rule_id": int(v["rule_id"]),
        })
    out.sort(key=lambda r: (r["identity"], r["direction"], r["peer"] or 0, r["proto_num"] or 0,
                            r["port"] or 0, r["prefixlen"]))
    return out


def decode_enforce(keys, vals) -> List[dict]:
    """mc_enforce rows, sorted: the (identity, direction) pairs under default deny."""
    dirs = const_names("MC_DIR_")
    out = [{"identity": int(k["identity"]), "direction": dirs.get(int(k["dir"]), str(int(k["dir"]))),
            "enforced": bool(int(v["enforced"]))} for k, v in zip(keys, vals)]
    out.sort(key=lambda r: (r["identity"], r["direction"]))
    return out


def port_text(row: Mapping) -> str:
    """A decoded policy row's port: ``any``, ``80`` or ``8192-16383``."""
    if row["port"] is None:
        return "any"
    return str(row["port"]) if row["port"] == row["port_end"] else f"{row['port']}-{row['port_end']}"


# ---------------------------------------------------------------- conntrack


def decode_ct(keys, vals, now_ns: int, include_expired: bool = False) -> List[dict]:
    """mc_ct entries, sorted; ``now_ns`` is CLOCK_MONOTONIC (the datapath's clock).

    Expired entries count as absent to the datapath and are left out unless
    ``include_expired``.
    """
    dirs = const_names("MC_DIR_")
    states = const_names("MC_CT_STATE_")
    flag_names = const_names("MC_CT_F_")
    out = []
    for k, v in zip(keys, vals):
        exp = int(v["expires_ns"])
        if exp <= now_ns and not include_expired:
            continue
        st, fl, proto = int(v["state"]), int(v["flags"]), int(k["proto"])
        out.append({
            "proto": proto_name(proto), "proto_num": proto,
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


# ---------------------------------------------------------------- ipcache and identities


def group_identities(prefixes: Mapping[str, int]) -> List[dict]:
    """``{"cidr": identity}`` -> one dict per identity: name, kind, prefix count, prefixes (sorted)."""
    reserved = reserved_names()
    by: Dict[int, List[str]] = {}
    for p, ident in prefixes.items():
        by.setdefault(ident, []).append(p)
    out = []
    for ident in sorted(by):
        ps = sorted(by[ident], key=prefix_sort_key)
        out.append({"identity": ident, "name": reserved.get(ident), "kind": identity_kind(ident),
                    "prefixes": len(ps), "cidrs": ps})
    return out


def identity_labels(identities: Iterable[Mapping], cidr_identities: Iterable[Mapping],
                    remote_identities: Iterable[Mapping] = (), cluster: Optional[str] = None) -> Dict[int, dict]:
    """id -> what the id stands for, from Identity, CIDRIdentity and RemoteIdentity objects (as the API
    serves them).

    Identity: ``{"kind": "Identity", "name", "namespace", "namespaceLabels", "podLabels", "cluster"}``
    (``cluster``: the local cluster's name when known, else None); RemoteIdentity: the same with
    ``"kind": "RemoteIdentity"`` and its remote cluster (``namespace`` is the remote namespace);
    CIDRIdentity: ``{"kind": "CIDRIdentity", "name", "cidr", "except"}``. Objects without an
    integer ``spec.id`` are skipped: the id is the only join with the maps. A local Identity wins
    an id a RemoteIdentity also holds, as in the agent.
    """
    out: Dict[int, dict] = {}
    for o in remote_identities:
        spec, m = o.get("spec") or {}, o.get("metadata") or {}
        if isinstance(spec.get("id"), int) and not isinstance(spec.get("id"), bool):
            out[spec["id"]] = {"kind": "RemoteIdentity", "name": m.get("name"), "namespace": spec.get("namespace"),
                               "namespaceLabels": dict(spec.get("namespaceLabels") or {}),
                               "podLabels": dict(spec.get("podLabels") or {}), "cluster": spec.get("cluster")}
    for o in identities:
        spec, m = o.get("spec") or {}, o.get("metadata") or {}
        if isinstance(spec.get("id"), int) and not isinstance(spec.get("id"), bool):
            out[spec["id"]] = {"kind": "Identity", "name": m.get("name"), "namespace": m.get("namespace"),
                               "namespaceLabels": dict(spec.get("namespaceLabels") or {}),
                               "podLabels": dict(spec.get("podLabels") or {}), "cluster": cluster}
    for o in cidr_identities:
        spec, m = o.get("spec") or {}, o.get("metadata") or {}
        if isinstance(spec.get("id"), int) and not isinstance(spec.get("id"), bool):
            out[spec["id"]] = {"kind": "CIDRIdentity", "name": m.get("name"), "cidr": spec.get("cidr"),
                               "except": list(spec.get("except") or [])}
    return out


def labels_text(labels: Optional[Mapping]) -> Optional[str]:
    """One line for a table: ``ns=web app=db,tier=be`` or ``cidr=10.0.0.0/8 except=10.1.0.0/16``."""
    if not labels:
        return None
    if labels.get("kind") == "CIDRIdentity":
        ex = labels.get("except") or []
        return f"cidr={labels.get('cidr')}" + (f" except={','.join(ex)}" if ex else "")
    from ..controllers.identity import CLUSTER_LABEL, NS_NAME_LABEL
    ns = (labels.get("namespaceLabels") or {}).get(NS_NAME_LABEL)
    pod = ",".join(f"{k}={v}" for k, v in sorted((labels.get("podLabels") or {}).items()) if k != CLUSTER_LABEL)
    remote = labels.get("kind") == "RemoteIdentity" and labels.get("cluster")
    return " ".join(x for x in (f"cluster={labels['cluster']}" if remote else None, f"ns={ns}" if ns else None,
                                pod or None) if x) or "(no labels)"


# ---------------------------------------------------------------- socket load balancer


def decode_lb(svc_keys, svc_vals, be_keys, be_vals) -> List[dict]:
    """mc_svc + mc_backends -> one dict per frontend, sorted by service id then frontend.

    Slot 0 of (addr, port, proto) is the master (backend count, flags, service
    id); slots 1..count hold backend ids, resolved through mc_backends. A slot
    whose backend id is missing from mc_backends is listed with ``addr`` None
    (the datapath would drop that choice: worth seeing).
    """
    flag_names = const_names("MC_SVC_F_")
    backends = {int(k["backend_id"]): v for k, v in zip(be_keys, be_vals)}
    masters, slots = {}, {}
    for k, v in zip(svc_keys, svc_vals):
        fe = (bytes(k["addr"]), int(k["port"]), int(k["proto"]), int(k["scope"]))
        if int(k["slot"]) == 0:
            masters[fe] = v
        else:
            slots.setdefault(fe, {})[int(k["slot"])] = int(v["backend_id"])
    out = []
    for fe, m in masters.items():
        addr, port, proto, scope = fe
        bes = []
        for slot in range(1, int(m["count"]) + 1):
            bid = slots.get(fe, {}).get(slot)
            b = backends.get(bid) if bid is not None else None
            bes.append({"slot": slot, "backend_id": bid,
                        "addr": str(from_unified(bytes(b["addr"]))) if b is not None else None,
                        "port": int(b["port"]) if b is not None else None})
        fl = int(m["flags"])
        a = str(from_unified(addr))
        out.append({"service_id": int(m["svc_id"]), "frontend": hostport(a, port) + "/" + proto_name(proto),
                    "addr": a, "port": port, "proto": proto_name(proto), "scope": scope,
                    "flags": [n for b_, n in sorted(flag_names.items()) if fl & b_],
                    "affinity_timeout_s": int(m["affinity_timeout"]), "backends": bes})
    out.sort(key=lambda r: (r["service_id"], r["proto"], r["port"], r["addr"]))
    return out
