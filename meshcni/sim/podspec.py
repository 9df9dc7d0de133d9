# SPDX-License-Identifier: MIT OR Apache-2.0
"""A container of a rendered pod spec as a process on a simulated node (what kubelet would run).

The container's volume mounts are resolved through the pod's volumes: a
``hostPath`` becomes the simulated node's directory for that host path (the
node's bpffs, cgroup, CNI directories, ...), an ``emptyDir`` a fresh directory
under ``scratch``. Then its env (``value``, or ``fieldRef`` from ``fields``)
and its args (``$(VAR)`` expanded from that env as kubelet does, every
``--flag=PATH`` under a mount path moved onto the directory behind it).
Anything the simulator cannot give a process -- a hostPath with no node
directory, a volume or env source it does not know -- is a :class:`SimError`
naming the container and the field, so a chart change that a real node would
see differently fails here too instead of running against the host.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

from .topology import SimError

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _under(path: str, table: Dict[str, str]) -> str | None:
    """``path`` moved from the longest key of ``table`` it is under onto that key's value."""
    for src in sorted(table, key=len, reverse=True):
        if path == src or path.startswith(src.rstrip("/") + "/"):
            return table[src] + path[len(src.rstrip("/")):]
    return None


def mounts(pod_spec: dict, container: dict, host_dirs: Dict[str, str], scratch: str) -> Dict[str, str]:
    """{mountPath: directory on the simulated node} of the container's volume mounts."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or ()}
    out = {}
    for m in container.get("volumeMounts") or ():
        where = f"container {container['name']}: volumeMount {m['name']} ({m['mountPath']})"
        v = volumes.get(m["name"])
        if v is None:
            raise SimError(f"{where}: the pod has no volume of that name")
        if "hostPath" in v:
            host = v["hostPath"]["path"]
            node = _under(host, host_dirs)
            if node is None:
                raise SimError(f"{where}: hostPath {host} has no directory on a simulated node (it maps "
                               f"{', '.join(sorted(host_dirs))}); add it to Cluster.host_dirs")
        elif "emptyDir" in v:
            node = os.path.join(scratch, m["name"])
            os.makedirs(node, exist_ok=True)
        else:
            raise SimError(f"{where}: volume type {sorted(set(v) - {'name'})} is not simulated")
        out[m["mountPath"]] = node
    return out


def process(pod_spec: dict, container: dict, host_dirs: Dict[str, str], fields: Dict[str, str],
            scratch: str) -> Tuple[List[str], Dict[str, str]]:
    """(args, env) of ``container`` as a process on the node: paths mapped, ``$(VAR)`` expanded."""
    paths = mounts(pod_spec, container, host_dirs, scratch)
    mapped = lambda v: (_under(v, paths) if v.startswith("/") else None) or v  # noqa: E731
    seen: Dict[str, str] = {}  # as the container sees it: what $(VAR) expands to, before mapping
    for e in container.get("env") or ():
        where = f"container {container['name']}: env {e['name']}"
        if "value" in e:
            seen[e["name"]] = e["value"]
        elif "fieldRef" in (e.get("valueFrom") or {}):
            f = e["valueFrom"]["fieldRef"]["fieldPath"]
            if f not in fields:
                raise SimError(f"{where}: fieldRef {f} is not simulated (only {', '.join(sorted(fields))})")
            seen[e["name"]] = fields[f]
        else:
            raise SimError(f"{where}: valueFrom {sorted(e.get('valueFrom') or {})} is not simulated")
    args = []
    for a in container.get("args") or ():
        a = _VAR.sub(lambda m: seen.get(m.group(1), m.group(0)), a)
        flag, eq, val = a.partition("=")
        args.append(f"{flag}={mapped(val)}" if eq else mapped(a))
    return args, {k: mapped(v) for k, v in seen.items()}
