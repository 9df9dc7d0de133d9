# SPDX-License-Identifier: MIT OR Apache-2.0
"""The BPF layer: maps, pins, objects. The only code that talks to bpf()."""
from .loader import BpfObject, LoadError, object_path, objects_dir
from .maps import ANY, EXIST, NOEXIST, BpfMap, BulkResult, MapInfo, ReconcileResult, map_info, rows
from .pin import DEFAULT_ROOT, Migration, MigrationSet, ensure_root, mount_bpffs, open_or_create
from .typed import IPCacheMap, MeshMaps

__all__ = [
    "ANY", "EXIST", "NOEXIST", "BpfMap", "BpfObject", "IPCacheMap", "MeshMaps", "BulkResult", "DEFAULT_ROOT", "LoadError",
    "MapInfo", "Migration", "MigrationSet", "ReconcileResult", "ensure_root", "map_info",
    "mount_bpffs", "object_path", "objects_dir", "open_or_create", "rows",
]
