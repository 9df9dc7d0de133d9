# SPDX-License-Identifier: MIT OR Apache-2.0
"""Typed views of the meshcni maps, and the set of them under one pin root.

``MeshMaps(root)`` opens (or creates, or migrates) every map of the table in
bpf/include/meshcni/maps.h under ``root``; each attribute is a ``BpfMap``
whose dtypes come from layout.h. The ipcache gets CIDR-level helpers.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np

from .. import cidr
from ..layout import map_specs
from .maps import BpfMap, ReconcileResult
from .pin import DEFAULT_ROOT, MigrationSet, open_or_create
from .._closing import Closing


class IPCacheMap(BpfMap):
    """``mc_ipcache``: LPM trie from unified address/prefix to identity."""

    def records(self, prefixes: Iterable[Any], identities: Sequence[int],
                flags: Optional[Sequence[int]] = None):
        """Keys and values for CIDR strings (or networks) and their identities."""
        prefixes = list(prefixes)
        if len(prefixes) != len(identities):
            raise ValueError(f"map {self.name}: {len(prefixes)} prefixes but {len(identities)} identities")
        plen, addr = cidr.lpm_keys(prefixes)
        keys = np.zeros(len(prefixes), self.key_dtype)
        keys["prefixlen"] = plen
        keys["addr"] = addr
        vals = np.zeros(len(prefixes), self.value_dtype)
        vals["identity"] = identities
        if flags is not None:
            vals["flags"] = flags
        return keys, vals

    def insert_prefixes(self, prefixes: Iterable[Any], identities: Sequence[int]) -> int:
        keys, vals = self.records(prefixes, identities)
        return self.update(keys, vals).written

    def reconcile_prefixes(self, mapping: Dict[Any, int], cache: bool = False) -> ReconcileResult:
        keys, vals = self.records(list(mapping), list(mapping.values()))
        return self.reconcile(keys, vals, cache=cache)

    def lookup_ip(self, ip: Any) -> Optional[int]:
        """Identity of the longest stored prefix covering ``ip``, or None."""
        key = np.zeros(1, self.key_dtype)
        key["prefixlen"] = 128
        key["addr"][0] = np.frombuffer(cidr.unified_addr(ip), np.uint8)
        vals, found = self.lookup(key)
        return int(vals["identity"][0]) if found[0] else None

    def prefixes(self) -> Dict[str, int]:
        """Everything stored, as {"cidr": identity}."""
        keys, vals = self.dump()
        return {str(cidr.from_lpm_key(int(k["prefixlen"]), bytes(k["addr"]))): int(v["identity"])
                for k, v in zip(keys, vals)}


MAP_CLASSES = {"mc_ipcache": IPCacheMap}


class MeshMaps(Closing):
    """All meshcni maps pinned under ``root`` (default /sys/fs/bpf/meshcni).

    Layout changes since the pins were made are migrated; pass a
    ``MigrationSet`` to keep them pending until a program load succeeded.
    ``capacities`` ({"mc_svc": 4096, ...}) overrides the max_entries of the
    header's table for those maps (a small node, a test of full maps); a
    program object loaded later against the pins wants the header's sizes.
    """

    def __init__(self, root: str = DEFAULT_ROOT, migrations: Optional[MigrationSet] = None,
                 capacities: Optional[Dict[str, int]] = None):
        self.root = root
        self.maps: Dict[str, BpfMap] = {}
        specs = map_specs()
        unknown = sorted(set(capacities or ()) - set(specs))
        if unknown:
            raise ValueError(f"capacities: no meshcni map {', '.join(unknown)} (have: {', '.join(sorted(specs))})")
        try:
            for name, spec in specs.items():
                if capacities and name in capacities:
                    spec = spec.with_(max_entries=int(capacities[name]))
                self.maps[name] = open_or_create(spec, root, migrations=migrations,
                                                 map_class=MAP_CLASSES.get(name, BpfMap))
        except BaseException:
            self.close()
            raise

    def __getattr__(self, name: str) -> BpfMap:
        maps = self.__dict__.get("maps", {})
        for key in (name, f"mc_{name}"):
            if key in maps:
                return maps[key]
        raise AttributeError(f"no meshcni map {name!r} (have: {', '.join(sorted(maps))})")

    def map(self, name: str) -> BpfMap:
        """The shared handle on map ``name`` (``mc_...``): owned by this object, closed by its close()."""
        return self.maps[name]

    def close(self) -> None:
        for m in self.maps.values():
            m.close()

