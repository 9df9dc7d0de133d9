# SPDX-License-Identifier: MIT OR Apache-2.0
"""Informer transforms: keep only the fields a controller reads (client-go's SetTransform).

A Pod as the API serves it is 2-3 KB of JSON and ~16 KiB as Python dicts;
the agent reads a dozen fields of it. :func:`trim_pod` keeps those (and
interns the strings that repeat across pods: label keys and values, node
names, protocols), which is what makes a per-pod budget of a few KiB
possible. Values are copied as they are, garbage included, so the
controllers still see -- and report -- a bad ``status.podIP``.
"""
from __future__ import annotations

import sys
from typing import Any

_META = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "generateName")
_PORT = ("name", "containerPort", "protocol")


def _i(v: Any) -> Any:
    return sys.intern(v) if type(v) is str else v


def _ports(containers) -> list:
    if not isinstance(containers, list):
        return []
    out = []
    for c in containers:
        ports = c.get("ports") if isinstance(c, dict) else None
        if not ports:
            continue
        if not isinstance(ports, list):
            out.append({"ports": ports})
            continue
        out.append({"ports": [{k: _i(p[k]) for k in _PORT if k in p} if isinstance(p, dict) else p
                              for p in ports]})
    return out


def trim_pod(pod: dict) -> dict:
    """The fields of a Pod the agent's controllers use: identity labels, node, ports, IPs, phase."""
    if not isinstance(pod, dict):
        return pod
    meta = pod.get("metadata")
    out: dict = {"metadata": _meta(meta, "mesh-cni.dev/")}
    if isinstance(meta, dict) and "creationTimestamp" in meta:  # policy ranks: older workloads first
        out["metadata"]["creationTimestamp"] = meta["creationTimestamp"]
    spec = pod.get("spec")
    if isinstance(spec, dict):
        sp = {}
        if "nodeName" in spec:
            sp["nodeName"] = _i(spec["nodeName"])
        if spec.get("hostNetwork"):
            sp["hostNetwork"] = spec["hostNetwork"]
        for f in ("containers", "initContainers"):
            cs = _ports(spec.get(f))
            if cs:
                sp[f] = cs
        out["spec"] = sp
    elif spec is not None:
        out["spec"] = spec
    st = pod.get("status")
    if isinstance(st, dict):
        s = {k: _i(st[k]) for k in ("phase", "podIP") if k in st}
        if "podIPs" in st:
            ips = st["podIPs"]
            s["podIPs"] = [{"ip": x.get("ip")} if isinstance(x, dict) else x for x in ips] \
                if isinstance(ips, list) else ips
        out["status"] = s
    elif st is not None:
        out["status"] = st
    return out


def _meta(m, annotations_prefix: str = "") -> dict:
    m = m if isinstance(m, dict) else {}
    meta = {k: m[k] for k in _META if k in m}
    if "namespace" in meta:
        meta["namespace"] = _i(meta["namespace"])
    labels = m.get("labels")
    if isinstance(labels, dict):
        meta["labels"] = {_i(k): _i(v) for k, v in labels.items()}
    elif labels is not None:
        meta["labels"] = labels
    ann = m.get("annotations")
    if annotations_prefix and isinstance(ann, dict):
        keep = {k: v for k, v in ann.items() if isinstance(k, str) and k.startswith(annotations_prefix)}
        if keep:
            meta["annotations"] = keep
    return meta


_SVC_SPEC = ("type", "clusterIP", "clusterIPs", "ports", "sessionAffinity", "sessionAffinityConfig",
             "ipFamilies", "externalName", "internalTrafficPolicy", "externalTrafficPolicy", "externalIPs",
             "loadBalancerSourceRanges", "healthCheckNodePort", "allocateLoadBalancerNodePorts")


def trim_service(svc: dict) -> dict:
    """A Service as the agent's Services controller reads it (its mesh-cni.dev/ annotations kept)."""
    if not isinstance(svc, dict):
        return svc
    meta = svc.get("metadata")
    out: dict = {"metadata": _meta(meta, "mesh-cni.dev/")}
    if isinstance(meta, dict) and "creationTimestamp" in meta:  # the older of two Services keeps a nodePort
        out["metadata"]["creationTimestamp"] = meta["creationTimestamp"]
    if "spec" in svc:
        spec = svc["spec"]
        out["spec"] = {k: spec[k] for k in _SVC_SPEC if k in spec} if isinstance(spec, dict) else spec
    st = svc.get("status")
    lb = st.get("loadBalancer") if isinstance(st, dict) else None
    ingress = lb.get("ingress") if isinstance(lb, dict) else None
    if ingress:  # LoadBalancer ingress IPs are frontends; the rest of status is not read
        out["status"] = {"loadBalancer": {"ingress": ingress}}
    return out


def trim_endpointslice(es: dict) -> dict:
    """An EndpointSlice without targetRefs, hints, zones, managedFields: addresses, conditions, ports."""
    if not isinstance(es, dict):
        return es
    out: dict = {"metadata": _meta(es.get("metadata"))}
    for k in ("addressType", "ports"):
        if k in es:
            out[k] = es[k]
    eps = es.get("endpoints")
    if isinstance(eps, list):
        out["endpoints"] = [{k: e[k] for k in ("addresses", "conditions", "nodeName") if k in e}
                            if isinstance(e, dict) else e for e in eps]
    elif eps is not None:
        out["endpoints"] = eps
    return out


__all__ = ["trim_pod", "trim_service", "trim_endpointslice"]
