# SPDX-License-Identifier: MIT OR Apache-2.0
"""The node's local endpoint map and ipcache, each reconciled to a desired state.

``mc_endpoints`` (host veth ifindex -> pod address, identity, netns cookie)
is how the tc programs know which pod a packet belongs to; ``mc_ipcache``
(LPM: prefix -> identity) is how they know the peer. Both are written only
here, through the node's one set of map handles (:class:`~meshcni.datapath.node.NodeMaps`),
so the ipcache's ``cache=True`` reconcile never diffs against a stale view.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..bpf import BpfMap
from ..bpf.typed import IPCacheMap
from ..cidr import unified_addr

EndpointRow = Tuple[int, str, int, int]  # (host ifindex, pod IP, identity, netns cookie)


class EndpointDatapath:
    def __init__(self, endpoints: BpfMap):
        self.map = endpoints

    def apply(self, rows: Iterable[EndpointRow]) -> Dict[str, int]:
        rows = list(rows)
        m = self.map
        k = np.zeros(len(rows), m.key_dtype)
        v = np.zeros(len(rows), m.value_dtype)
        for i, (ifindex, ip, ident, cookie) in enumerate(rows):
            k[i]["ifindex"] = ifindex
            v[i]["addr"] = np.frombuffer(unified_addr(ip), np.uint8)
            v[i]["identity"], v[i]["netns_cookie"] = ident, cookie
        r = m.reconcile(k, v)
        return {"endpoints": len(rows), "writes": r.writes}


class IPCacheDatapath:
    def __init__(self, ipcache: IPCacheMap):
        self.map = ipcache

    def apply(self, prefixes: Dict[str, int], dump: bool = False) -> Dict[str, int]:
        """Make the trie hold exactly ``{cidr: identity}``. Diffs against what it last wrote
        (this object is the map's only writer), or with ``dump`` against what the map holds."""
        r = self.map.reconcile_prefixes(prefixes, cache=not dump)
        return {"prefixes": len(prefixes), "writes": r.writes}

    def apply_delta(self, changes: Dict[str, Optional[int]]) -> Dict[str, int]:
        """Write ``{cidr: identity}`` and delete the cidrs given None; nothing else is read or written."""
        sets = {k: v for k, v in changes.items() if v is not None}
        gone = [k for k, v in changes.items() if v is None]
        if sets:
            k, v = self.map.records(list(sets), list(sets.values()))
            self.map.update(k, v)
        if gone:
            k, _ = self.map.records(gone, [0] * len(gone))
            self.map.delete(k, missing_ok=True)
        return {"written": len(sets), "deleted": len(gone)}
