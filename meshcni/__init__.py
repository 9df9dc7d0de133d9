# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni: an eBPF CNI for Kubernetes, in Python with a compiled core.

The public library surface is small and re-exported here:

- :mod:`meshcni.bpf`   maps (bulk update/delete/lookup/dump/reconcile), pins,
  BPF object loading;
- :mod:`meshcni.layout` numpy dtypes and map specs from the one layout header;
- :mod:`meshcni.cidr`  CIDR and ipBlock arithmetic, LPM keys;
- :mod:`meshcni.errors`.

Heavy modules (the compiled extensions) load on first use, so importing the
package stays cheap for the CNI plugin.
"""
__version__ = "0.1.0"

_LAZY = {
    "BpfMap": "meshcni.bpf", "BpfObject": "meshcni.bpf", "open_or_create": "meshcni.bpf",
    "MeshMaps": "meshcni.bpf", "map_specs": "meshcni.layout",
    "PartialFailureError": "meshcni.errors", "MapFullError": "meshcni.errors",
    "BpfError": "meshcni.errors",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'meshcni' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(mod), name)


__all__ = sorted(_LAZY) + ["__version__"]
