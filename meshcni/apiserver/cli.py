# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni apiserver``: run the Kubernetes-compatible API server in the foreground.

    meshcni apiserver [--listen 127.0.0.1:6443] [--crds DIR]... [--data FILE]
                      [--write-kubeconfig PATH] [--history N] [--service-cidr CIDR]

Serves plain HTTP on --listen and keeps everything in memory; needs no root.
Stops on SIGINT/SIGTERM, writing the snapshot to --data first.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..cli.parser import flag

log = logging.getLogger("meshcni.apiserver")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:6443")
    return (host.strip("[]") or "127.0.0.1", int(port))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``apiserver`` on ``subparsers`` (from ``add_subparsers``); sets ``fn``."""
    p = subparsers.add_parser("apiserver", help="run a Kubernetes-compatible API server (plain HTTP)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 6443), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:6443; port 0 picks a free one)")
    p.add_argument("--crds", action="append", default=[], metavar="DIR",
                   help="directory of CustomResourceDefinition YAML files to serve (repeatable)")
    p.add_argument("--data", metavar="FILE", help="JSON snapshot: loaded at start if present, written on exit")
    # every other command reads --kubeconfig; this one writes it, so it gets its own name
    flag(p, "--write-kubeconfig", "--kubeconfig", dest="kubeconfig", metavar="PATH",
         help="write a kubeconfig pointing at this server")
    p.add_argument("--history", type=int, default=1000, metavar="N",
                   help="watch events kept for resumption; older versions get 410 Gone (default 1000)")
    flag(p, "--service-cidr", "--service-cluster-ip-range", dest="service_cidr", default="10.96.0.0/12", metavar="CIDR",
                   help="ClusterIPs are allocated from here (default %(default)s)")
    p.add_argument("--service-node-port-range", default="30000-32767", metavar="LOW-HIGH", type=_port_range,
                   help="nodePorts and healthCheckNodePorts are allocated from here, and one asked for outside it "
                   "is refused (422; inclusive, default %(default)s)")
    p.set_defaults(fn=cmd_apiserver)
    return p


def _port_range(text: str) -> str:
    import argparse
    from .admission import parse_port_range
    try:
        parse_port_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_apiserver(args) -> int:
    from .server import serve
    host, port = args.listen
    try:
        return serve(host, port, crd_dir=args.crds or None, data_file=args.data,
                     kubeconfig=args.kubeconfig, history=args.history,
                     service_cidr=args.service_cidr, node_port_range=args.service_node_port_range)
    except OSError as e:
        print(f"meshcni apiserver: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a CRD directory with a file that is not YAML, a bad snapshot
        print(f"meshcni apiserver: {e}", file=sys.stderr)
        return 1
