# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pods + Namespaces -> Identities, NetworkPolicy ipBlocks -> CIDRIdentities (pure functions).

An *identity* is the number the datapath matches policy on: one per unique
(namespace labels, pod labels) set, one per distinct ipBlock (cidr + except).
These functions decide; ``meshcni.controller`` does the API calls.

Rules that make ids stable and collision-free:

- names are derived from the content (:func:`identity_name`,
  :func:`cidr_identity_name`), so two controllers racing on one label set
  collide on the *name* (409 AlreadyExists) and the loser adopts;
- an existing managed object keeps its id forever (``spec.id`` is immutable);
- a new pod id starts at a hash-derived candidate (every cluster computes
  the same number for the same labels) and probes linearly past ids in use;
  CIDR ids are handed out lowest-free from 256;
- two managed objects with one id (a race between two label sets) are
  resolved deterministically: the older one (creationTimestamp, then name)
  keeps it, the other is deleted and its labels get a fresh id;
- objects without ``app.kubernetes.io/managed-by: meshcni-controller`` are
  hand-made: never adopted, left alone unless they collide with a managed
  allocation (or sit on a managed name, or are plainly wrong), and reported.

Plain dicts in, plain dicts out: ``create`` entries are complete object
bodies, ``delete`` entries are ``{"namespace", "name", "uid", "reason",
"immediate"}`` (``immediate`` False means "unused: delete after the grace").
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from ..cidr import ipblock_prefixes, parse_cidr
from .services import Problem

GROUP = "mesh-cni.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "meshcni-controller"
ID_LABEL = "mesh-cni.dev/id"
UNUSED_SINCE = "mesh-cni.dev/unused-since"
NS_NAME_LABEL = "kubernetes.io/metadata.name"

RESERVED_MAX = 255
CIDR_ID_MIN, CIDR_ID_MAX = 256, 15728639
# agent-local ids for sets of overlapping CIDR identities (ipcache.cidr_atoms); never stored in objects
ATOM_ID_MIN, ATOM_ID_MAX = 15728640, 16777215
# An Identity's id may be anything in POD_ID_MIN..POD_ID_MAX (the CRD's range), but new ones
# are allocated below 2^31 (POD_ALLOC_MAX), and remote clusters' label sets (RemoteIdentity,
# allocated by this cluster's controller) from 2^31 up, skipping ids older Identities hold
# there: the two allocators run independently and still never hand out one id twice.
POD_ID_MIN, POD_ID_MAX = 16777216, 4294967295
POD_ALLOC_MAX = 2147483647
REMOTE_ID_MIN, REMOTE_ID_MAX = 2147483648, 4294967295
# the cluster a pod lives in, as NetworkPolicy peers select it (see controllers/netpol.py)
CLUSTER_LABEL = "mesh-cni.dev/cluster"
CLUSTER_OWNER = "mesh-cni.dev/cluster-owner"

# labels that differ between replicas of one workload (or between rollouts of an unchanged
# template): keeping them would give every ReplicaSet generation, DaemonSet revision and
# StatefulSet replica its own identity and churn the policy maps on every rollout
UNSTABLE_LABELS = frozenset({"pod-template-hash", "controller-revision-hash", "pod-template-generation",
                             "statefulset.kubernetes.io/pod-name"})


class RangeExhausted(RuntimeError):
    """Every id of the range is in use."""


# ---------------------------------------------------------------- pod identities

def identity_labels(pod: Mapping, namespace_labels: Optional[Mapping]) -> Dict[str, Dict[str, str]]:
    """``{"namespaceLabels": {...}, "podLabels": {...}}`` of ``pod`` — the Identity's spec shape.

    Unstable labels are dropped; missing ``metadata.labels`` counts as none. The
    namespace's ``kubernetes.io/metadata.name`` is always present (the API server
    sets it; added here when a namespace lacks labels) so that identical pod labels
    in two namespaces never share an identity.
    """
    m = pod.get("metadata") or {}
    labels = m.get("labels") or {}
    pod_labels = {str(k): str(v) for k, v in labels.items() if k not in UNSTABLE_LABELS} \
        if isinstance(labels, Mapping) else {}
    ns_labels = {str(k): str(v) for k, v in (namespace_labels or {}).items()}
    if m.get("namespace"):
        ns_labels.setdefault(NS_NAME_LABEL, m["namespace"])
    return {"namespaceLabels": ns_labels, "podLabels": pod_labels}


def _canonical(labels: Mapping) -> bytes:
    # sorted item lists, not a merged dict: a namespace label and a pod label with one key
    # must not hash like a single label; O(n log n) in the number of labels
    return json.dumps([sorted((labels.get("namespaceLabels") or {}).items()),
                       sorted((labels.get("podLabels") or {}).items())],
                      separators=(",", ":"), ensure_ascii=False).encode()


def _digest(labels: Mapping) -> bytes:
    return hashlib.sha256(_canonical(labels)).digest()


def identity_name(labels: Mapping) -> str:
    """The Identity's object name for ``labels`` (as from :func:`identity_labels`): ``id-`` + 16 hex."""
    return "id-" + _digest(labels).hex()[:16]


def candidate_id(labels: Mapping, lo: int = POD_ID_MIN, hi: int = POD_ALLOC_MAX) -> int:
    """The hash-derived first choice in [lo, hi] for ``labels``."""
    return lo + int.from_bytes(_digest(labels)[8:16], "big") % (hi - lo + 1)


def allocate_id(labels: Mapping, used: Set[int], lo: int = POD_ID_MIN, hi: int = POD_ALLOC_MAX) -> int:
    """An id in [lo, hi] not in ``used``: the hash candidate, probing upwards (wrapping) past used ids.

    ``used`` is only read. Raises :class:`RangeExhausted` when nothing is free.
    """
    size = hi - lo + 1
    i = candidate_id(labels, lo, hi)
    # bounded probe instead of counting ``used`` up front: that count per call would make a
    # burst of n allocations O(n^2)
    for _ in range(size):
        if i not in used:
            return i
        i = lo if i == hi else i + 1
    raise RangeExhausted(f"ids {lo}..{hi}: all {size} in use")


def is_managed(obj: Mapping) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == MANAGER


def _meta(obj: Mapping) -> Tuple[str, str]:
    m = obj.get("metadata") or {}
    return m.get("namespace", "") or "", m.get("name", "") or ""


def _id_of(obj: Mapping):
    i = (obj.get("spec") or {}).get("id")
    return i if isinstance(i, int) and not isinstance(i, bool) else None


def _age_key(obj: Mapping):
    # RFC 3339 timestamps in UTC compare as strings; the name breaks ties the same way everywhere
    m = obj.get("metadata") or {}
    return (m.get("creationTimestamp") or "", m.get("name") or "")


def _delete(obj: Mapping, reason: str, immediate: bool) -> dict:
    m = obj.get("metadata") or {}
    return {"namespace": m.get("namespace", ""), "name": m.get("name", ""), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "reason": reason, "immediate": immediate}


def identity_body(namespace: str, labels: Mapping, ident: int) -> dict:
    """A managed Identity object for ``labels`` in ``namespace`` with id ``ident``."""
    return {"apiVersion": API_VERSION, "kind": "Identity",
            "metadata": {"name": identity_name(labels), "namespace": namespace,
                         "labels": {MANAGED_BY: MANAGER, ID_LABEL: str(ident)}},
            "spec": {"id": ident, "namespaceLabels": dict(labels["namespaceLabels"]),
                     "podLabels": dict(labels["podLabels"])}}


def _resolve_managed(managed: List[dict], kind: str, lo: int, hi: int, problems: List[Problem]):
    """Split managed objects into id winners and losers (duplicate or out-of-range ids)."""
    by_id: Dict[int, List[dict]] = {}
    losers: List[Tuple[dict, str]] = []
    for o in managed:
        i = _id_of(o)
        if i is None or not lo <= i <= hi:
            ns, name = _meta(o)
            problems.append(Problem(kind, ns, name, "spec.id", f"{i!r} is not in {lo}..{hi}; re-allocating"))
            losers.append((o, "id-out-of-range"))
            continue
        by_id.setdefault(i, []).append(o)
    winners: Dict[int, dict] = {}
    for i, objs in by_id.items():
        objs.sort(key=_age_key)
        winners[i] = objs[0]
        for o in objs[1:]:
            ns, name = _meta(o)
            wns, wname = _meta(objs[0])
            problems.append(Problem(kind, ns, name, "spec.id",
                                    f"{i} is also the id of {kind} {wns + '/' if wns else ''}{wname} (older); "
                                    "re-allocating"))
            losers.append((o, "id-collision"))
    return winners, losers


def _handmade_problems(handmade: List[dict], kind: str, lo: int, hi: int, managed_ids: Set[int],
                       managed_names: Set[Tuple[str, str]], problems: List[Problem]) -> List[dict]:
    """Report hand-made objects; return those that must go because they sit on a managed name."""
    evict = []
    for o in handmade:
        ns, name = _meta(o)
        i = _id_of(o)
        if (ns, name) in managed_names:
            problems.append(Problem(kind, ns, name, "metadata.labels", f"hand-made (no {MANAGED_BY}={MANAGER}) "
                                    "on a name the controller derives; replaced by the managed object"))
            evict.append(_delete(o, "hand-made-on-managed-name", True))
        elif i is None or i <= RESERVED_MAX:
            problems.append(Problem(kind, ns, name, "spec.id", f"hand-made with reserved id {i!r}; not trusted"))
        elif not lo <= i <= hi:
            problems.append(Problem(kind, ns, name, "spec.id", f"hand-made with id {i} outside {lo}..{hi}; "
                                    "not trusted"))
        elif i in managed_ids:
            problems.append(Problem(kind, ns, name, "spec.id", f"hand-made with id {i}, which is allocated "
                                    "to a managed object; the managed allocation wins"))
        else:
            problems.append(Problem(kind, ns, name, "metadata.labels",
                                    f"hand-made (no {MANAGED_BY}={MANAGER}); left alone, not trusted"))
    return evict


def desired_identities(pods: Iterable[dict], namespaces: Iterable[dict], existing_identities: Iterable[dict]):
    """``(create, keep, delete_candidates, problems)`` for the cluster's pod identities.

    ``create``: Identity bodies to create (ids chosen, never one in use by any
    object, managed or not). ``keep``: existing managed Identities some pod uses.
    ``delete_candidates``: deletion dicts (see module doc) — unused managed
    Identities (``immediate`` False: the caller applies the grace) and losers
    of id collisions (``immediate`` True; their label set is in ``create`` again
    with a new id, so delete first). Pods in namespaces not (yet) known are
    skipped: their identity would be computed from the wrong namespace labels.
    """
    problems: List[Problem] = []
    ns_labels: Dict[str, Mapping] = {}
    for n in namespaces:
        m = n.get("metadata") or {}
        if m.get("name"):
            labels = m.get("labels")
            ns_labels[m["name"]] = labels if isinstance(labels, Mapping) else {}
    wanted: Dict[Tuple[str, str], dict] = {}
    for p in pods:
        m = p.get("metadata") or {}
        ns = m.get("namespace")
        if not ns or ns not in ns_labels:
            continue
        if m.get("labels") is not None and not isinstance(m.get("labels"), Mapping):
            problems.append(Problem("Pod", ns, m.get("name", "?"), "metadata.labels", "not a mapping"))
            continue
        labels = identity_labels(p, ns_labels[ns])
        wanted.setdefault((ns, identity_name(labels)), labels)

    existing = list(existing_identities)
    managed = [o for o in existing if is_managed(o)]
    handmade = [o for o in existing if not is_managed(o)]
    winners, losers = _resolve_managed(managed, "Identity", POD_ID_MIN, POD_ID_MAX, problems)
    loser_ids = {id(o) for o, _ in losers}
    by_name = {_meta(o): o for o in winners.values()}
    delete: List[dict] = [_delete(o, r, True) for o, r in losers]
    delete += _handmade_problems(handmade, "Identity", POD_ID_MIN, POD_ID_MAX, set(winners),
                                 set(by_name) | set(wanted), problems)
    # every id any object holds is off limits for new allocations, hand-made ones included:
    # not adopting a hand-made id is not the same as handing it out a second time
    used: Set[int] = {i for i in (_id_of(o) for o in existing) if i is not None}
    create, keep = [], []
    for key, labels in wanted.items():
        o = by_name.get(key)
        if o is not None:
            keep.append(o)
            continue
        try:
            ident = allocate_id(labels, used)
        except RangeExhausted as e:
            problems.append(Problem("Identity", key[0], key[1], "spec.id", str(e)))
            continue
        used.add(ident)
        create.append(identity_body(key[0], labels, ident))
    for key, o in by_name.items():
        if key not in wanted and id(o) not in loser_ids:
            delete.append(_delete(o, "unused", False))
    return create, keep, delete, problems


# ---------------------------------------------------------------- CIDR identities

def _norm_block(ipblock) -> Tuple[str, List[str], List[str]]:
    """(cidr, sorted except, prefixes) of an ipBlock, normalised; ValueError naming the field."""
    with warnings.catch_warnings():
        # host bits set is normalised (kube does the same); the warning is for interactive use
        warnings.simplefilter("ignore")
        prefixes = ipblock_prefixes(ipblock)
        cidr = str(parse_cidr(ipblock["cidr"]))
        excepts = sorted({str(parse_cidr(e)) for e in (ipblock.get("except") or [])},
                         key=lambda s: (parse_cidr(s).version, int(parse_cidr(s).network_address),
                                        parse_cidr(s).prefixlen))
    return cidr, excepts, prefixes


def cidr_identity_name(cidr: str, excepts: Iterable[str] = ()) -> str:
    """``cidr-10-0-0-0-8`` (as in the upstream example), plus a hash of the excepts when there are any."""
    base = "cidr-" + cidr.lower().replace(".", "-").replace(":", "-").replace("/", "-")
    ex = sorted(excepts)
    if not ex:
        return base
    return base + "-x" + hashlib.sha256(",".join(ex).encode()).hexdigest()[:12]


def cidr_identity_body(cidr: str, excepts: List[str], prefixes: List[str], ident: int) -> dict:
    spec = {"id": ident, "cidr": cidr, "cidrPrefixes": list(prefixes)}
    if excepts:
        spec["except"] = list(excepts)
    return {"apiVersion": API_VERSION, "kind": "CIDRIdentity",
            "metadata": {"name": cidr_identity_name(cidr, excepts),
                         "labels": {MANAGED_BY: MANAGER, ID_LABEL: str(ident)}},
            "spec": spec}


def policy_ipblocks(policies: Iterable[dict], problems: List[Problem]) -> Dict[str, Tuple[str, List[str], List[str]]]:
    """name -> (cidr, except, prefixes) of every valid ipBlock peer; malformed peers are reported and skipped."""
    out: Dict[str, Tuple[str, List[str], List[str]]] = {}
    for pol in policies:
        m = pol.get("metadata") or {}
        ns, name = m.get("namespace", ""), m.get("name", "?")
        spec = pol.get("spec") or {}
        if not isinstance(spec, Mapping):
            problems.append(Problem("NetworkPolicy", ns, name, "spec", "not an object"))
            continue
        for direction, peers_field in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(spec.get(direction) or []):
                if not isinstance(rule, Mapping):
                    continue
                for j, peer in enumerate(rule.get(peers_field) or []):
                    if not isinstance(peer, Mapping) or "ipBlock" not in peer:
                        continue
                    where = f"spec.{direction}[{i}].{peers_field}[{j}].ipBlock"
                    try:
                        cidr, excepts, prefixes = _norm_block(peer["ipBlock"])
                    except (ValueError, TypeError, KeyError) as e:
                        problems.append(Problem("NetworkPolicy", ns, name, where, str(e)))
                        continue
                    out.setdefault(cidr_identity_name(cidr, excepts), (cidr, excepts, prefixes))
    return out


def desired_cidr_identities(policies: Iterable[dict], existing: Iterable[dict]):
    """``(create, keep, delete, problems)`` for CIDRIdentities; ``keep`` is ``[(obj, patch or None)]``.

    ``patch`` is a spec merge patch when a managed object's ``cidrPrefixes``
    drifted from what :func:`meshcni.cidr.ipblock_prefixes` computes. Every
    ``delete`` entry is immediate: an ipBlock no policy names is not in any
    policy map, so its id is not matched on the wire any more.
    """
    problems: List[Problem] = []
    wanted = policy_ipblocks(policies, problems)
    existing = list(existing)
    managed = [o for o in existing if is_managed(o)]
    handmade = [o for o in existing if not is_managed(o)]
    winners, losers = _resolve_managed(managed, "CIDRIdentity", CIDR_ID_MIN, CIDR_ID_MAX, problems)
    loser_ids = {id(o) for o, _ in losers}
    by_name = {_meta(o)[1]: o for o in winners.values()}
    delete = [_delete(o, r, True) for o, r in losers]
    delete += _handmade_problems(handmade, "CIDRIdentity", CIDR_ID_MIN, CIDR_ID_MAX, set(winners),
                                 {("", n) for n in set(by_name) | set(wanted)}, problems)
    evicted = {d["name"] for d in delete if d["reason"] == "hand-made-on-managed-name"}
    for o in handmade:
        _, name = _meta(o)
        if name in evicted:
            continue
        spec = o.get("spec") or {}
        try:
            _, _, right = _norm_block({"cidr": spec.get("cidr"), "except": spec.get("except")})
        except (ValueError, TypeError, KeyError) as e:
            problems.append(Problem("CIDRIdentity", "", name, "spec.cidr", f"hand-made and invalid: {e}"))
            continue
        have = spec.get("cidrPrefixes") or []
        if set(map(str, have)) != set(right):
            problems.append(Problem("CIDRIdentity", "", name, "spec.cidrPrefixes",
                                    f"hand-made with {sorted(map(str, have))}, but cidr minus except is "
                                    f"{sorted(right)}; not trusted"))
    used: Set[int] = {i for i in (_id_of(o) for o in existing) if i is not None}
    create, keep = [], []
    nxt = CIDR_ID_MIN
    for name in sorted(wanted):
        cidr, excepts, prefixes = wanted[name]
        o = by_name.get(name)
        if o is not None:
            have = (o.get("spec") or {}).get("cidrPrefixes") or []
            patch = None if set(have) == set(prefixes) else {"spec": {"cidrPrefixes": prefixes}}
            keep.append((o, patch))
            continue
        while nxt in used and nxt <= CIDR_ID_MAX:
            nxt += 1
        if nxt > CIDR_ID_MAX:
            problems.append(Problem("CIDRIdentity", "", name, "spec.id",
                                    f"ids {CIDR_ID_MIN}..{CIDR_ID_MAX}: all in use"))
            continue
        used.add(nxt)
        create.append(cidr_identity_body(cidr, excepts, prefixes, nxt))
    for name, o in by_name.items():
        if name not in wanted and id(o) not in loser_ids:
            delete.append(_delete(o, "unused", True))
    return create, keep, delete, problems


# ---------------------------------------------------------------- remote identities (meshed clusters)
#
# One RemoteIdentity (cluster-scoped) per (remote cluster, namespace, pod label set), carrying
# the label sets and the addresses of the remote pods holding it: the objects scale with the
# label sets, not with the pods. Its id is allocated here, by the cluster that uses it, from
# REMOTE_ID_MIN..REMOTE_ID_MAX: the datapath resolves a peer's identity from its address in
# the local ipcache, never from the packet, so an id only has to mean the same thing to this
# cluster's agents, and no mesh-wide numbering (cluster ids to configure and keep unique) is
# needed. The namespace's labels are content, not part of the name: a remote namespace relabel
# replaces objects in place (same id, no ipcache gap) instead of deleting and re-creating them.

REMOTE_KIND = "RemoteIdentity"
REMOTE_PLURAL = "remoteidentities"


def remote_identity_name(cluster: str, namespace: str, pod_labels: Mapping) -> str:
    """``<cluster>-<16 hex>`` of (namespace, pod labels)."""
    raw = json.dumps([namespace, sorted(pod_labels.items())], separators=(",", ":"), ensure_ascii=False)
    return f"{cluster}-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def remote_pod_labels(pod: Mapping, cluster: str) -> Dict[str, str]:
    """The remote pod's labels as policies here see them: unstable ones dropped, and
    ``mesh-cni.dev/cluster`` set to the cluster it lives in (a label the pod carries
    itself is overwritten: a remote pod must never pass for a local one)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    out = {str(k): str(v) for k, v in labels.items() if k not in UNSTABLE_LABELS} if isinstance(labels, Mapping) else {}
    out[CLUSTER_LABEL] = cluster
    return out


@functools.lru_cache(maxsize=1 << 16)
def _canon_ip(s: str) -> Optional[str]:
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return None


def _pod_ips(pod: Mapping) -> List[str]:
    st = pod.get("status") or {}
    raw = [x.get("ip") for x in st.get("podIPs") or [] if isinstance(x, Mapping)] or \
        ([st["podIP"]] if st.get("podIP") else [])
    return [str(x) for x in raw if x]


def desired_remote_identities(cluster: str, pods: Iterable[dict], namespaces: Iterable[dict]
                              ) -> Tuple[Dict[str, dict], List[Problem]]:
    """name -> RemoteIdentity spec without ``id`` (``cluster, namespace, namespaceLabels, podLabels,
    pods: [{name, ips}]``) for the remote cluster's running pods with an address.

    Skipped, as for local identities: hostNetwork pods (their address is the node's),
    finished pods (their address may be someone else's already), pods of a namespace
    not listed yet; a pod address that is not an IP is reported (a remote object's
    problem: ``Problem.kind`` Pod, reported on the Cluster by the caller).
    """
    problems: List[Problem] = []
    ns_labels: Dict[str, Dict[str, str]] = {}
    for n in namespaces:
        m = n.get("metadata") or {}
        if m.get("name"):
            lb = m.get("labels")
            ns_labels[m["name"]] = {str(k): str(v) for k, v in (lb if isinstance(lb, Mapping) else {}).items()}
            ns_labels[m["name"]].setdefault(NS_NAME_LABEL, m["name"])
    out: Dict[str, dict] = {}
    # pods of one label set share a name: hash it once per (namespace, labels), not once per pod
    groups: Dict[tuple, dict] = {}
    for p in pods:
        m, st = p.get("metadata") or {}, p.get("status") or {}
        ns = m.get("namespace")
        if not ns or ns not in ns_labels or st.get("phase") in ("Succeeded", "Failed") \
                or (p.get("spec") or {}).get("hostNetwork"):
            continue
        ips = []
        for i, s in enumerate(_pod_ips(p)):
            canon = _canon_ip(s)
            if canon is None:
                problems.append(Problem("Pod", ns, m.get("name", "?"), f"status.podIPs[{i}]",
                                        f'"{s}" is not an IP address'))
            else:
                ips.append(canon)
        if not ips:
            continue
        raw = m.get("labels")
        gkey = (ns, frozenset(raw.items()) if isinstance(raw, Mapping) else frozenset())
        spec = groups.get(gkey)
        if spec is None:
            labels = remote_pod_labels(p, cluster)
            name = remote_identity_name(cluster, ns, labels)
            spec = out.get(name)
            if spec is None:
                spec = out[name] = {"cluster": cluster, "namespace": ns, "namespaceLabels": dict(ns_labels[ns]),
                                    "podLabels": labels, "pods": []}
            groups[gkey] = spec
        spec["pods"].append({"name": m.get("name", ""), "ips": ips})
    for spec in out.values():
        spec["pods"].sort(key=lambda d: d["name"])
    return out, problems


def remote_identity_body(name: str, spec: Mapping, ident: int) -> dict:
    return {"apiVersion": API_VERSION, "kind": REMOTE_KIND,
            "metadata": {"name": name, "labels": {MANAGED_BY: MANAGER, CLUSTER_OWNER: spec["cluster"],
                                                  ID_LABEL: str(ident)}},
            "spec": {**spec, "id": ident}}


@dataclass
class RemoteIdentityPlan:
    create: List[dict] = field(default_factory=list)
    replace: List[Tuple[dict, dict]] = field(default_factory=list)   # (current, new body)
    delete: List[dict] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.create) + len(self.replace) + len(self.delete)


def remote_id_winners(objs: Iterable[dict]) -> Dict[int, dict]:
    """id -> the managed RemoteIdentity keeping it: of two holding one id (two controllers
    during a leader change), the older (creationTimestamp, then name), as for Identities."""
    win: Dict[int, dict] = {}
    for o in objs:
        i = _id_of(o)
        if i is None or not REMOTE_ID_MIN <= i <= REMOTE_ID_MAX or not is_managed(o):
            continue
        if i not in win or _age_key(o) < _age_key(win[i]):
            win[i] = o
    return win


def plan_remote_identities(cluster: str, desired: Mapping[str, dict], existing: Iterable[dict],
                           all_remote: Iterable[dict], local_ids: Iterable[int] = ()) -> RemoteIdentityPlan:
    """What to write so that cluster ``cluster``'s RemoteIdentities are ``desired``.

    ``existing``: the objects labelled for this cluster; ``all_remote``: every
    RemoteIdentity (all clusters), whose ids are off limits, as are ``local_ids`` (the
    Identities': one made before the ranges were split may hold a remote-range id). An object keeps its id
    for as long as its label set exists; a changed address list or namespace label set
    is a replace; an object losing an id clash is deleted and its label set created
    again with a new id. Hand-made objects are reported and never touched.
    """
    plan = RemoteIdentityPlan()
    all_remote = list(all_remote)
    winners = remote_id_winners(all_remote)
    local_ids = set(local_ids)
    for i in local_ids:
        winners.pop(i, None)  # a local Identity holding the id wins it
    used: Set[int] = {i for i in (_id_of(o) for o in all_remote) if i is not None} | local_ids
    have: Dict[str, dict] = {}
    for o in existing:
        _, name = _meta(o)
        if not is_managed(o):
            plan.problems.append(Problem(REMOTE_KIND, "", name, "metadata.labels",
                                         f"hand-made (no {MANAGED_BY}={MANAGER}); left alone, not trusted"))
            continue
        if ((o.get("metadata") or {}).get("labels") or {}).get(CLUSTER_OWNER) != cluster:
            continue
        i = _id_of(o)
        if i is None or winners.get(i) is not o:
            why = "id-out-of-range" if i is None or not REMOTE_ID_MIN <= i <= REMOTE_ID_MAX else "id-collision"
            plan.problems.append(Problem(REMOTE_KIND, "", name, "spec.id",
                                         f"{i!r}: {why}; re-allocating"))
            plan.delete.append(o)
            continue
        have[name] = o
    # a label set whose object lost its id (deleted above) has no entry in ``have``: created again below
    for name in sorted(desired):
        spec = desired[name]
        cur = have.get(name)
        if cur is not None:
            i = _id_of(cur)
            body = remote_identity_body(name, spec, i)
            if cur.get("spec") != body["spec"] or (cur["metadata"].get("labels") or {}) != body["metadata"]["labels"]:
                plan.replace.append((cur, body))
            continue
        try:
            # the hash candidate of (cluster, namespace, pod labels), in the identity hash's shape
            seed = {"namespaceLabels": {"cluster": cluster, "namespace": spec["namespace"]},
                    "podLabels": spec["podLabels"]}
            i = allocate_id(seed, used, REMOTE_ID_MIN, REMOTE_ID_MAX)
        except RangeExhausted as e:
            plan.problems.append(Problem(REMOTE_KIND, "", name, "spec.id", str(e)))
            continue
        used.add(i)
        plan.create.append(remote_identity_body(name, spec, i))
    for name, o in have.items():
        if name not in desired:
            plan.delete.append(o)
    return plan
