# SPDX-License-Identifier: MIT OR Apache-2.0
"""The datapath: BPF programs attached to the node, and the desired state they serve."""
from .services import Backend, Frontend, Service, ServiceDatapath, ServiceError, ServiceTables, build_tables, maglev_table
from .policy import CTGC, DropEvent, DropEvents, PolicyDatapath, PolicyEntry, PolicyProgram, build_policy, ct_gc
from .socklb import SockLB

__all__ = ["Backend", "Frontend", "Service", "ServiceDatapath", "ServiceError", "ServiceTables",
           "SockLB", "build_tables", "maglev_table",
           "CTGC", "DropEvent", "DropEvents", "PolicyDatapath", "PolicyEntry", "PolicyProgram", "build_policy",
           "ct_gc"]
