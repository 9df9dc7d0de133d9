# SPDX-License-Identifier: MIT OR Apache-2.0
"""Kubernetes NetworkPolicy (networking.k8s.io/v1) -> identity policy, a pure function.

:func:`compile_policies` turns the informers' plain dicts into the
:class:`~meshcni.controllers.model.PolicyEntry` rows and enforced
``(identity, direction)`` pairs that :func:`meshcni.datapath.policy.build_policy`
loads. ``peer`` is the *remote* side as the tc programs see it: for INGRESS
the source's identity, for EGRESS the destination's; the port is always the
destination port, so a rule's ports are the ports of whoever *receives* the
connection. Replies are admitted by conntrack, so no reverse entries.

Semantics follow the API reference; the decisions that are ours:

- Pods map to identities with :func:`~meshcni.controllers.ipcache.pod_identity`
  (managed Identities only). A pod without an Identity yet, a hostNetwork pod
  (its traffic carries the node's identity) and a Succeeded/Failed pod are
  neither selected nor peers. Selectors match the pod's own labels; an
  identity is isolated when any of its pods is selected, which only differs
  from per-pod isolation for selectors on the labels identities drop
  (``pod-template-hash`` & co.).
- Host traffic: every isolated (identity, direction) gets an explicit allow
  for peer 1 (the local host), any protocol and port, as Cilium's default
  allow-localhost does, so kubelet probes and node-local agents keep working.
  Remote nodes (6) get nothing implicit: they are allowed only by a policy.
- ``policyTypes`` absent (or empty): Ingress, plus Egress when ``spec.egress``
  has at least one rule -- the API server's defaulting
  (``len(spec.egress) != 0``), so ``egress: []`` alone isolates nothing.
  Rules of a direction not in ``policyTypes`` are ignored, as upstream.
- Named ports are resolved against the container ports (containers and init
  containers) of the receiving pods: the selected pods for ingress, the peer
  pods for egress (every pod for a rule without ``to``); one entry per
  (identity, resolved number). Egress to an ipBlock with a named port
  matches nothing: there is no pod to resolve it against. Pods of one
  identity exposing one name on different numbers get all of them
  (identities are per label set).
- An ipBlock peer is the managed CIDRIdentity named
  :func:`~meshcni.controllers.identity.cidr_identity_name`; one the controller
  has not created yet is skipped (fail closed, no problem: it is transient).
- Bad input is reported as a :class:`Problem` and only the broken part is
  skipped. Skipping a peer or port narrows the rule (fail closed); a rule
  whose every listed peer or port was bad allows nothing, never "all". A bad
  ``spec.podSelector`` skips the whole policy: there is nothing to apply it to.
- Overlapping ipBlocks: an ipBlock peer admits its CIDR identity and every
  atom (:func:`~meshcni.controllers.ipcache.cidr_atoms`) it is part of, so an
  address inside several ipBlocks matches each of them.
- Meshed clusters: every pod's labels include ``mesh-cni.dev/cluster`` (the local
  cluster's name, the agent's ``--cluster-name``, for local pods; the remote
  cluster's for the pods of a RemoteIdentity; a label a pod sets itself is
  overwritten). A peer whose ``podSelector`` has no term on that key matches
  local pods only; with one (matchLabels or any matchExpressions operator) it
  matches local and remote pods by that term, in the namespaces its
  ``namespaceSelector`` matches by the remote namespaces' own labels (the same
  namespace name without one). Policies select (apply to) local pods only.
  Remote pods have no container ports here: named ports match none of them.
- Size: entries are a set (multiple rules and policies are a union), an
  "any peer" rule is one entry per selected identity, and an (identity,
  direction) with an allow-everything entry keeps only that one.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .model import EGRESS, INGRESS, PolicyEntry
from .identity import CLUSTER_LABEL, NS_NAME_LABEL, _norm_block, cidr_identity_name, is_managed
from .ipcache import ID_HOST, CidrAtoms, cidr_atoms, identity_index, pod_identity, remote_groups
from .services import Problem

KIND = "NetworkPolicy"
PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
_OPS = ("In", "NotIn", "Exists", "DoesNotExist")
# IANA_SVC_NAME, as the API validates a named port: lowercase alphanumerics and '-', at
# least one letter, no leading/trailing or doubled '-', at most 15 characters
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")

Key = Tuple[int, int, Optional[int], Optional[int], object]  # PolicyEntry fields minus action/rule


@dataclass
class CompiledPolicy:
    entries: List[PolicyEntry]
    enforced: Set[Tuple[int, int]]
    problems: List[Problem]
    stats: dict = field(default_factory=dict)


class _Bad(Exception):
    """A malformed part of one policy: (field, message)."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where, self.message = where, message


class _Group:
    """Pods of one namespace with one label set: they share an identity (and a selection)."""
    __slots__ = ("ns", "labels", "ident", "named", "cluster")

    def __init__(self, ns: str, labels: Dict[str, str], ident: int, cluster: Optional[str] = None):
        self.ns, self.labels, self.ident = ns, labels, ident
        self.cluster = cluster  # None: a local group; else the remote cluster's name
        self.named: Dict[Tuple[str, int], Set[int]] = {}  # (port name, proto) -> numbers


# ---------------------------------------------------------------- selectors

Reqs = Tuple[Tuple[str, str, frozenset], ...]  # (key, operator, values); () matches everything


def _parse_selector(sel, where: str) -> Reqs:
    if sel is None:
        return ()
    if not isinstance(sel, Mapping):
        raise _Bad(where, "not an object")
    reqs = []
    ml = sel.get("matchLabels") or {}
    if not isinstance(ml, Mapping):
        raise _Bad(f"{where}.matchLabels", "not an object")
    for k, v in ml.items():
        if not isinstance(v, str):
            raise _Bad(f"{where}.matchLabels.{k}", f"value {v!r} is not a string")
        reqs.append((str(k), "In", frozenset((v,))))
    me = sel.get("matchExpressions") or []
    if not isinstance(me, list):
        raise _Bad(f"{where}.matchExpressions", "not a list")
    for i, e in enumerate(me):
        w = f"{where}.matchExpressions[{i}]"
        if not isinstance(e, Mapping) or not isinstance(e.get("key"), str) or not e["key"]:
            raise _Bad(w, "needs a key")
        op, vals = e.get("operator"), e.get("values")
        if op not in _OPS:
            raise _Bad(f"{w}.operator", f"{op!r} is not one of {', '.join(_OPS)}")
        if vals is not None and (not isinstance(vals, list) or not all(isinstance(v, str) for v in vals)):
            raise _Bad(f"{w}.values", "not a list of strings")
        # the API's own validation: In/NotIn need values, Exists/DoesNotExist take none
        if op in ("In", "NotIn") and not vals:
            raise _Bad(f"{w}.values", f"operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and vals:
            raise _Bad(f"{w}.values", f"operator {op} takes no values")
        reqs.append((e["key"], op, frozenset(vals or ())))
    # a canonical order makes equal selectors share one cache slot
    return tuple(sorted(set(reqs), key=lambda r: (r[0], r[1], sorted(r[2]))))


def _matches(reqs: Reqs, labels: Mapping[str, str]) -> bool:
    for key, op, vals in reqs:
        if op == "In":
            if labels.get(key) not in vals:
                return False
        elif op == "NotIn":
            if key in labels and labels[key] in vals:
                return False
        elif op == "Exists":
            if key not in labels:
                return False
        elif key in labels:  # DoesNotExist
            return False
    return True


# ---------------------------------------------------------------- ports

def _parse_ports(ports, where: str, problems: List[Problem], ns: str, name: str):
    """(numeric [(proto, port|range|None)], named [(name, proto)]) or None for "all ports"."""
    if not ports:  # empty or missing: every port and protocol
        return None
    numeric: List[Tuple[int, object]] = []
    named: List[Tuple[str, int]] = []
    if not isinstance(ports, list):
        problems.append(Problem(KIND, ns, name, where, "not a list"))
        return numeric, named
    for k, p in enumerate(ports):
        w = f"{where}[{k}]"
        try:
            if not isinstance(p, Mapping):
                raise _Bad(w, "not an object")
            proto_name = p.get("protocol") or "TCP"
            if proto_name not in PROTOCOLS:
                raise _Bad(f"{w}.protocol", f"{proto_name!r} is not TCP, UDP or SCTP")
            proto = PROTOCOLS[proto_name]
            port, end = p.get("port"), p.get("endPort")
            if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
                raise _Bad(f"{w}.endPort", f"{end!r} is not a number")
            if port is None:
                if end is not None:
                    raise _Bad(f"{w}.endPort", "needs a numeric port")
                numeric.append((proto, None))
            elif isinstance(port, int) and not isinstance(port, bool):
                if not 1 <= port <= 65535:
                    raise _Bad(f"{w}.port", f"{port} is not in 1..65535")
                if end is None or end == port:
                    numeric.append((proto, port))
                elif not port < end <= 65535:
                    raise _Bad(f"{w}.endPort", f"{end} is not in {port}..65535")
                else:
                    numeric.append((proto, (port, end)))
            elif isinstance(port, str) and len(port) <= 15 and _PORT_NAME.match(port):
                if end is not None:
                    raise _Bad(f"{w}.endPort", "needs a numeric port, not a named one")
                named.append((port, proto))
            else:
                raise _Bad(f"{w}.port", f"{port!r} is neither a port number nor a port name")
        except _Bad as e:
            problems.append(Problem(KIND, ns, name, e.where, e.message))
    return numeric, named


def _container_ports(pod: Mapping):
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for cp in (c.get("ports") or []) if isinstance(c, Mapping) else []:
            if not isinstance(cp, Mapping):
                continue
            n, num = cp.get("name"), cp.get("containerPort")
            proto = PROTOCOLS.get(cp.get("protocol") or "TCP")
            if n and isinstance(num, int) and not isinstance(num, bool) and proto and 1 <= num <= 65535:
                yield n, proto, num


# ---------------------------------------------------------------- the compiler

class _Cluster:
    """Pods grouped by (namespace, labels), with memoised selections (policies repeat selectors)."""

    def __init__(self, pods, namespaces, identities, remote=(), cluster_name: str = "default"):
        namespaces = list(namespaces)
        ns_labels, ids = identity_index(namespaces, identities)
        self.groups_by_ns: Dict[str, List[_Group]] = {}
        # the API server puts kubernetes.io/metadata.name on every namespace; informer data from
        # before that (or a test) may lack it, and namespaceSelectors on it must still match
        self.ns_sel_labels = {n: {**(l or {}), NS_NAME_LABEL: n} for n, l in ns_labels.items()}
        by_key: Dict[tuple, Optional[_Group]] = {}
        for p in pods:
            m, st, spec = p.get("metadata") or {}, p.get("status") or {}, p.get("spec") or {}
            if type(st) is not dict or type(spec) is not dict:
                continue  # malformed: reported by the ipcache, which has no IP for it either
            if st.get("phase") in ("Succeeded", "Failed") or spec.get("hostNetwork"):
                continue
            labels = m.get("labels") or {}
            if not isinstance(labels, Mapping):
                continue
            ns = m.get("namespace", "") or ""
            key = (ns, frozenset(labels.items()))
            if key not in by_key:
                ident = pod_identity(p, ns_labels, ids)
                g = _Group(ns, {**labels, CLUSTER_LABEL: cluster_name}, ident) if ident is not None else None
                by_key[key] = g
                if g is not None:
                    self.groups_by_ns.setdefault(ns, []).append(g)
            g = by_key[key]
            if g is None:
                continue  # no Identity yet: cannot be enforced or matched
            for n, proto, num in _container_ports(p):
                g.named.setdefault((n, proto), set()).add(num)
        self._sel: Dict[tuple, Tuple[_Group, ...]] = {}
        self._nss: Dict[Reqs, List[str]] = {}
        # remote pods (RemoteIdentities), by (cluster, namespace), with their namespaces' labels
        self.remote_by_ns: Dict[Tuple[str, str], List[_Group]] = {}
        self.remote_ns_labels: Dict[Tuple[str, str], Dict[str, str]] = {}
        for r in remote:
            k = (r.cluster, r.namespace)
            self.remote_by_ns.setdefault(k, []).append(
                _Group(r.namespace, {**r.labels, CLUSTER_LABEL: r.cluster}, r.ident, r.cluster))
            self.remote_ns_labels[k] = {**r.namespace_labels, NS_NAME_LABEL: r.namespace}
        self._rnss: Dict[Reqs, List[Tuple[str, str]]] = {}

    def all_groups(self) -> List[_Group]:
        return [g for gs in self.groups_by_ns.values() for g in gs]

    def namespaces_matching(self, reqs: Reqs) -> List[str]:
        out = self._nss.get(reqs)
        if out is None:
            out = self._nss[reqs] = [n for n in self.groups_by_ns
                                     if _matches(reqs, self.ns_sel_labels.get(n) or {NS_NAME_LABEL: n})]
        return out

    def remote_namespaces_matching(self, reqs: Reqs) -> List[Tuple[str, str]]:
        out = self._rnss.get(reqs)
        if out is None:
            out = self._rnss[reqs] = [k for k in self.remote_by_ns if _matches(reqs, self.remote_ns_labels[k])]
        return out

    def select(self, ns: str, pod_reqs: Reqs, ns_reqs: Optional[Reqs], peer: bool = False) -> Tuple[_Group, ...]:
        """Groups matching ``pod_reqs`` in ``ns`` (``ns_reqs`` None) or in the namespaces ``ns_reqs`` matches.

        Local groups only, unless ``peer`` and ``pod_reqs`` has a term on ``mesh-cni.dev/cluster``:
        then remote groups too, in the remote namespaces of that name (or matching ``ns_reqs``).
        """
        remote = peer and any(r[0] == CLUSTER_LABEL for r in pod_reqs)
        key = (ns if ns_reqs is None else None, pod_reqs, ns_reqs, remote)
        out = self._sel.get(key)
        if out is None:
            nss = [ns] if ns_reqs is None else self.namespaces_matching(ns_reqs)
            out = tuple(g for n in nss for g in self.groups_by_ns.get(n, ()) if _matches(pod_reqs, g.labels))
            if remote:
                rnss = [k for k in self.remote_by_ns if k[1] == ns] if ns_reqs is None \
                    else self.remote_namespaces_matching(ns_reqs)
                out += tuple(g for k in rnss for g in self.remote_by_ns[k] if _matches(pod_reqs, g.labels))
            self._sel[key] = out
        return out


@functools.lru_cache(maxsize=1 << 14)
def _block_cached(cidr: str, has_except: bool, excepts: Tuple[str, ...]) -> Tuple[str, Tuple[str, ...]]:
    c, ex, _ = _norm_block({"cidr": cidr, "except": list(excepts)} if has_except else {"cidr": cidr})
    return c, tuple(ex)


def _block(ipb) -> Tuple[str, List[str]]:
    """(cidr, excepts) of an ipBlock, normalised (:func:`_norm_block`; ValueError etc. on bad input).
    Memoised for the usual shape: policies repeat ipBlocks, and the incremental compiler compiles one
    policy many times."""
    if isinstance(ipb, Mapping) and isinstance(ipb.get("cidr"), str) and set(ipb) <= {"cidr", "except"}:
        ex = ipb.get("except")
        if ex is None or (isinstance(ex, list) and all(isinstance(e, str) for e in ex)):
            c, exs = _block_cached(ipb["cidr"], "except" in ipb and ex is not None, tuple(ex or ()))
            return c, list(exs)
    c, ex, _ = _norm_block(ipb)
    return c, ex


def _peers(raw, where: str, ns: str, cluster: _Cluster, cidr_ids: Dict[str, int], atoms: CidrAtoms,
           problems: List[Problem], name: str):
    """[(peer ids, peer groups or None)]; None ids = any peer. Bad peers are reported and dropped."""
    if raw is None or raw == []:
        return [(None, None)]
    if not isinstance(raw, list):
        problems.append(Problem(KIND, ns, name, where, "not a list"))
        return []
    out = []
    for j, peer in enumerate(raw):
        w = f"{where}[{j}]"
        try:
            if not isinstance(peer, Mapping):
                raise _Bad(w, "not an object")
            ipb, ps, nss = peer.get("ipBlock"), peer.get("podSelector"), peer.get("namespaceSelector")
            if ipb is not None:
                if ps is not None or nss is not None:
                    raise _Bad(w, "ipBlock cannot be combined with podSelector/namespaceSelector")
                try:
                    cidr, excepts = _block(ipb)
                except (ValueError, TypeError, KeyError) as e:
                    raise _Bad(f"{w}.ipBlock", str(e)) from None
                ident = cidr_ids.get(cidr_identity_name(cidr, excepts))
                if ident is not None:  # not created yet: skip quietly, the controller is on it
                    # with the atoms of overlapping ipBlocks this one is part of (see ipcache)
                    out.append((atoms.ids_for(ident), None))
                continue
            if ps is None and nss is None:
                raise _Bad(w, "needs podSelector, namespaceSelector or ipBlock")
            pod_reqs = _parse_selector(ps, f"{w}.podSelector")
            ns_reqs = None if nss is None else _parse_selector(nss, f"{w}.namespaceSelector")
            groups = cluster.select(ns, pod_reqs, ns_reqs, peer=True)
            out.append(({g.ident for g in groups}, groups))
        except _Bad as e:
            problems.append(Problem(KIND, ns, name, e.where, e.message))
    return out


def _policy_types(spec: Mapping, ns: str, name: str, problems: List[Problem]) -> List[int]:
    types = spec.get("policyTypes")
    if not types:
        # the API server's defaulting: Ingress always, Egress only with at least one egress rule
        return [INGRESS] + ([EGRESS] if spec.get("egress") else [])
    if not isinstance(types, list):
        problems.append(Problem(KIND, ns, name, "spec.policyTypes", "not a list"))
        return [INGRESS]  # the one direction every policy isolates; fail closed there
    out = []
    for i, t in enumerate(types):
        if t == "Ingress":
            out.append(INGRESS)
        elif t == "Egress":
            out.append(EGRESS)
        else:
            problems.append(Problem(KIND, ns, name, f"spec.policyTypes[{i}]", f"{t!r} is not Ingress or Egress"))
    # nothing valid left: isolate ingress, as for a policyTypes that is not a list (fail closed)
    return sorted(set(out)) or [INGRESS]


def _compile_one(pol: Mapping, cluster: _Cluster, cidr_ids: Dict[str, int], atoms: CidrAtoms,
                 problems: List[Problem], enforced: Set[Tuple[int, int]]) -> Optional[Set[Key]]:
    m = pol.get("metadata") or {}
    ns, name = m.get("namespace", "") or "", m.get("name", "?") or "?"
    spec = pol.get("spec")
    if not isinstance(spec, Mapping):
        problems.append(Problem(KIND, ns, name, "spec", "missing" if spec is None else "not an object"))
        return None
    if not ns:
        problems.append(Problem(KIND, ns, name, "metadata.namespace", "missing"))
        return None
    try:
        selected = cluster.select(ns, _parse_selector(spec.get("podSelector"), "spec.podSelector"), None)
    except _Bad as e:
        problems.append(Problem(KIND, ns, name, e.where, e.message))
        return None
    sel_ids = {g.ident for g in selected}
    mine: Set[Key] = set()
    for d in _policy_types(spec, ns, name, problems):
        enforced.update((i, d) for i in sel_ids)
        dname, pfield = ("ingress", "from") if d == INGRESS else ("egress", "to")
        rules = spec.get(dname) or []
        if not isinstance(rules, list):
            problems.append(Problem(KIND, ns, name, f"spec.{dname}", "not a list"))
            continue
        if not sel_ids:
            continue  # still validated below? no: nothing to apply it to, and problems repeat on every pod
        for i, rule in enumerate(rules):
            w = f"spec.{dname}[{i}]"
            if not isinstance(rule, Mapping):
                problems.append(Problem(KIND, ns, name, w, "not an object"))
                continue
            ports = _parse_ports(rule.get("ports"), f"{w}.ports", problems, ns, name)
            peers = _peers(rule.get(pfield), f"{w}.{pfield}", ns, cluster, cidr_ids, atoms, problems, name)
            numeric, named = ports if ports is not None else ([(None, None)], [])
            for peer_ids, peer_groups in peers:
                for p in (peer_ids if peer_ids is not None else (None,)):
                    for ident in sel_ids:
                        for proto, port in numeric:
                            mine.add((ident, d, p, proto, port))
                if not named:
                    continue
                if d == INGRESS:
                    # the selected pods receive the connection: their container ports name the number
                    for g in selected:
                        for pname, proto in named:
                            for num in g.named.get((pname, proto), ()):
                                for p in (peer_ids if peer_ids is not None else (None,)):
                                    mine.add((g.ident, d, p, proto, num))
                elif peer_groups is not None or peer_ids is None:
                    # the destination pods receive it (for "any peer": every pod); an ipBlock
                    # destination has no container ports, so a named port there matches nothing
                    for g in (peer_groups if peer_groups is not None else cluster.all_groups()):
                        for pname, proto in named:
                            for num in g.named.get((pname, proto), ()):
                                for ident in sel_ids:
                                    mine.add((ident, d, g.ident, proto, num))
    return mine


def _sort_key(k: Key):
    ident, d, peer, proto, port = k
    lo, hi = (-1, -1) if port is None else (port, port) if isinstance(port, int) else port
    return (ident, d, -1 if peer is None else peer, -1 if proto is None else proto, lo, hi)


PRIORITY_ANNOTATION = "mesh-cni.dev/policy-priority"
FAIL_CLOSED_FIELD = "networkPolicy"   # the Problem field of a pod whose policy failed closed
DEFAULT_RANK = (0, "~")               # an identity with no pod in the cache: priority 0, youngest


@dataclass
class PolicyRanks:
    """Which (identity, direction) groups keep their policy when mc_policy is too small.

    ``rank``: identity -> (-priority, oldest creationTimestamp of its pods), so
    sorting ascending takes the highest ``mesh-cni.dev/policy-priority`` first
    and, within a priority, the identity whose oldest pod is oldest (a new
    workload never pushes an established one out); ``pods``: identity -> the
    (namespace, name) of its pods, for the Events of a group that fails closed.
    """
    rank: Dict[int, Tuple[int, str]]
    pods: Dict[int, List[Tuple[str, str]]]
    problems: List[Problem]


def policy_ranks(pods: Iterable[dict], namespaces: Iterable[dict], identities: Iterable[dict]) -> PolicyRanks:
    """Pods -> :class:`PolicyRanks` (pure). An annotation that is not an integer counts as 0
    and is reported naming the pod and the annotation."""
    ns_labels, ids = identity_index(namespaces, identities)
    rank: Dict[int, Tuple[int, str]] = {}
    members: Dict[int, List[Tuple[str, str]]] = {}
    problems: List[Problem] = []
    for p in pods:
        m = p.get("metadata") or {}
        ident = pod_identity(p, ns_labels, ids)
        if ident is None:
            continue
        ns, name = m.get("namespace", ""), m.get("name", "")
        prio = 0
        raw = (m.get("annotations") or {}).get(PRIORITY_ANNOTATION)
        if raw is not None:
            try:
                prio = int(str(raw).strip())
                if not -(2 ** 31) <= prio < 2 ** 31:
                    raise ValueError
            except ValueError:
                prio = 0
                problems.append(Problem("Pod", ns, name, f"metadata.annotations[{PRIORITY_ANNOTATION}]",
                                        f'"{raw}" is not a 32-bit integer; priority 0 used'))
        created = m.get("creationTimestamp")
        created = created if isinstance(created, str) and created else DEFAULT_RANK[1]
        old = rank.get(ident)
        rank[ident] = (min(old[0], -prio), min(old[1], created)) if old else (-prio, created)
        members.setdefault(ident, []).append((ns, name))
    for v in members.values():
        v.sort()
    return PolicyRanks(rank, members, problems)


def fail_closed_problems(closed: Iterable[Tuple[int, int]], ranks: PolicyRanks, capacity: int) -> List[Problem]:
    """One Problem per pod and direction whose policy failed closed (sent as Events)."""
    out = []
    for ident, d in closed:
        way = "ingress: only its node may reach it" if d == INGRESS else "egress: it may reach only its node"
        for ns, name in ranks.pods.get(ident, ()):
            out.append(Problem("Pod", ns, name, FAIL_CLOSED_FIELD,
                               f"its NetworkPolicy does not fit mc_policy ({capacity} rows): {way} "
                               f"(identity {ident}; raise {PRIORITY_ANNOTATION} to keep it)"))
    return out


def compile_policies(policies: Iterable[dict], pods: Iterable[dict], namespaces: Iterable[dict],
                     identities: Iterable[dict], cidr_identities: Iterable[dict], *,
                     remote_identities: Iterable[dict] = (), clusters: Iterable[dict] = (),
                     cluster_name: str = "default") -> CompiledPolicy:
    """All NetworkPolicies -> :class:`CompiledPolicy` (see the module doc for the semantics).

    ``stats``: ``per_policy`` ("ns/name" -> entries that policy contributes,
    before the union), ``per_identity`` (id -> final entries, host allows
    included), ``entries``, ``enforced``, ``policies`` (compiled), ``problems``.
    """
    problems: List[Problem] = []
    # remote groups' problems are the ipcache reconciler's to report (it reads the same objects)
    identities = list(identities)
    remote, _ = remote_groups(remote_identities, clusters, identity_index((), identities)[1].values())
    cluster = _Cluster(pods, namespaces, identities, remote, cluster_name)
    cidr_identities = list(cidr_identities)
    atoms = cidr_atoms(cidr_identities)
    cidr_ids: Dict[str, int] = {}
    for c in cidr_identities:
        i = (c.get("spec") or {}).get("id")
        if is_managed(c) and isinstance(i, int) and not isinstance(i, bool):
            cidr_ids[(c.get("metadata") or {}).get("name", "")] = i
    enforced: Set[Tuple[int, int]] = set()
    keys: Set[Key] = set()
    per_policy: Dict[str, int] = {}
    for pol in policies:
        mine = _compile_one(pol, cluster, cidr_ids, atoms, problems, enforced)
        if mine is None:
            continue
        m = pol.get("metadata") or {}
        per_policy[f"{m.get('namespace', '')}/{m.get('name', '?')}"] = len(mine)
        keys |= mine
    # only isolated directions need allows: an entry for an unisolated one is never consulted
    keys = {k for k in keys if (k[0], k[1]) in enforced}
    keys.update((i, d, ID_HOST, None, None) for i, d in enforced)
    allow_all = {(k[0], k[1]) for k in keys if k[2] is None and k[3] is None}
    keys = {k for k in keys if (k[0], k[1]) not in allow_all or (k[2] is None and k[3] is None)}
    entries = [PolicyEntry(i, d, peer, proto, port) for i, d, peer, proto, port in sorted(keys, key=_sort_key)]
    per_identity: Dict[int, int] = {}
    for e in entries:
        per_identity[e.identity] = per_identity.get(e.identity, 0) + 1
    stats = {"per_policy": per_policy, "per_identity": per_identity, "entries": len(entries),
             "enforced": len(enforced), "policies": len(per_policy), "problems": len(problems)}
    return CompiledPolicy(entries, enforced, problems, stats)


__all__ = ["CompiledPolicy", "compile_policies", "PROTOCOLS", "PolicyRanks", "policy_ranks",
           "fail_closed_problems", "PRIORITY_ANNOTATION", "FAIL_CLOSED_FIELD"]

_ = ipaddress  # noqa: F401  (kept for type hints in callers' docs; no runtime use)
