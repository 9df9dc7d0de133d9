# SPDX-License-Identifier: MIT OR Apache-2.0
"""The datapath: BPF programs attached to the node, and the desired state they serve.

Names load on first use so that light modules (``tcpins``, used by the CNI
plugin once per pod) do not pay for numpy and the object loader.
"""
_LAZY = {
    **dict.fromkeys(("Backend", "Frontend", "Service", "ServiceDatapath", "ServiceError",
                     "ServiceTables", "build_tables", "maglev_table"), "services"),
    **dict.fromkeys(("CTGC", "DropEvent", "DropEvents", "PolicyDatapath", "PolicyEntry",
                     "PolicyProgram", "build_policy", "ct_gc"), "policy"),
    "SockLB": "socklb",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'meshcni.datapath' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


__all__ = sorted(_LAZY)
