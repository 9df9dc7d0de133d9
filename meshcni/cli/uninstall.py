# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni uninstall``: remove everything meshcni put on this node (see :mod:`meshcni.uninstall`)."""
from __future__ import annotations

import argparse
import os

from .output import Column, Table, add_output_args, emit

# the rows of the table, in the order uninstall_node does the work
_WHAT = (("cni", "CNI plugin and config"), ("cgroupLinks", "socket-LB cgroup links"),
         ("tcFilters", "tc filters"), ("routes", "routes (protocol 191)"), ("pins", "pins under --bpf-root"),
         ("state", "agent state"), ("ipam", "IPAM allocations"))


def add_uninstall(sub) -> None:
    from ..agent.cli import add_node_paths
    p = sub.add_parser(
        "uninstall", help="remove everything meshcni put on this node (idempotent)",
        description="Removes, in this order, the CNI plugin and meshcni's config (a chained config gets its "
        "original back), the socket-LB cgroup links pinned under --bpf-root (whichever cgroup they are on), "
        "meshcni's tc filters on every interface of this network namespace, routes of protocol 191, every "
        "pin under --bpf-root, and the agent's state and IPAM allocations. Run it on the node (the host's "
        "network namespace) with the agent's paths, after the agent stopped. Running pods keep their "
        "addresses but lose policy and Service translation. A second run removes nothing. The same as "
        "`meshcni agent --uninstall`.")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                   help="this node's name, for the log only (default $NODE_NAME)")
    add_node_paths(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_output_args(p)
    p.set_defaults(fn=cmd_uninstall)


def document(args) -> dict:
    from ..uninstall import uninstall_node
    return uninstall_node(bpf_root=args.bpf_root, cni_bin_dir=args.cni_bin_dir, cni_conf_dir=args.cni_conf_dir,
                          state_dir=args.state_dir, ipam_dir=args.ipam_dir, socket=args.socket)


def rows(done: dict) -> list:
    out = []
    for key, what in _WHAT:
        v = done[key]
        if key == "cni":
            n, detail = len(v["removed"]) + len(v["restored"]), ", ".join(
                [os.path.basename(x) for x in v["removed"]] + [f"{os.path.basename(x)} (restored)" for x in v["restored"]])
        elif key == "tcFilters":
            n, detail = sum(v.values()), ", ".join(f"{k}: {c}" for k, c in sorted(v.items()))
        else:
            n, detail = v, ""
        out.append({"what": what, "removed": n, "detail": detail})
    return out


def cmd_uninstall(args: argparse.Namespace) -> int:
    done = document(args)
    emit(args, done, Table([Column("WHAT", "what"), Column("REMOVED", "removed"), Column("DETAIL", "detail")],
                           rows(done)))
    return 0
