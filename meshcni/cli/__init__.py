# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni: the command line, in command groups the way cilium-dbg has them.

This node, from the agent's local API (--socket):
  meshcni status [--verbose]           readiness, informers, reconciles; --verbose adds versions,
                                       datapath attachment and API server reachability
  meshcni service list                 Services the agent programmed (frontends, backends)
  meshcni endpoint list                pods on this node
  meshcni identity list                identities in the ipcache, with labels (agent or API server)

The pinned maps, read directly (--bpf-root; needs root, no agent):
  meshcni bpf lb list                  frontends and backends in mc_svc / mc_backends
  meshcni bpf ipcache list | lookup IP prefix -> identity
  meshcni bpf policy list              mc_policy rows and mc_enforce flags, decoded
  meshcni bpf ct list [--all]          conntrack entries
  meshcni bpf maps list | create | dump NAME
  meshcni bpf drops [--follow]         drop counters by reason
  meshcni monitor                      live drop events with pod names

Processes and tools:
  meshcni agent | controller | apiserver | sim ... | cni install ... | demo | version
  meshcni uninstall [-o json]           remove everything meshcni put on this node (agent's paths)

Every list takes -o table|wide|json|yaml and --no-headers; json and yaml
print a document with the same keys on every run, for scripts.

Older spellings, kept as aliases: meshcni maps ..., meshcni ipcache ...,
meshcni policy list, meshcni conntrack list and meshcni drops (now under
meshcni bpf); --root for --bpf-root, --agent-socket for --socket,
--bin-dir/--conf-dir for --cni-bin-dir/--cni-conf-dir, --data-dir for
--ipam-dir.

Exit codes: 0 ok, 1 operational error (the message on stderr names the map,
pin or socket), 2 usage error.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .parser import Parser


def build_parser() -> argparse.ArgumentParser:
    from ..agent.cli import add_parser as add_agent
    from ..apiserver.cli import add_parser as add_apiserver
    from ..controller.cli import add_parser as add_controller
    from ..sim.cli import add_parser as add_sim
    from .bpf import add_bpf, add_monitor
    from .cni import add_cni
    from .demo import add_demo
    from .node import add_node
    from .uninstall import add_uninstall

    head, rest = __doc__.split("\n\n", 1)
    p = Parser(prog="meshcni", description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="log level of the command (default %(default)s; -v: debug)")
    p.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="debug",
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_node(sub)
    add_bpf(sub)
    add_monitor(sub)
    add_agent(sub)
    add_controller(sub)
    add_apiserver(sub)
    add_sim(sub)
    add_cni(sub)
    add_demo(sub)
    add_uninstall(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..errors import BpfError, PartialFailureError
    try:
        return args.fn(args)
    except (BpfError, PartialFailureError, FileNotFoundError, ValueError) as e:
        print(f"meshcni: {e}", file=sys.stderr)
        return 1
