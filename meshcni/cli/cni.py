# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni cni install | uninstall``: put the CNI plugin and its network config on a node.

Flag names are the agent's (``--cni-bin-dir``, ``--cni-conf-dir``,
``--socket``, ``--ipam-dir``) since they name the same settings; the
shorter spellings of the first version stay accepted.
"""
from __future__ import annotations

import json
import sys

from .parser import flag


def cmd_cni_install(args):
    from ..cni.install import InstallError, install
    try:
        done = install(args.cni_bin_dir, args.cni_conf_dir, chained=args.chained, name=args.name,
                       datapath=args.datapath, bpf_root=args.bpf_root, state_dir=args.state_dir,
                       agent_socket=args.socket, log_file=args.log_file, mtu=args.mtu,
                       subnets=args.subnet, data_dir=args.ipam_dir)
    except InstallError as e:
        print(f"meshcni cni install: {e}", file=sys.stderr)
        return 1
    print(json.dumps(done, indent=2))
    return 0


def cmd_cni_uninstall(args):
    from ..cni.install import uninstall
    print(json.dumps(uninstall(args.cni_bin_dir, args.cni_conf_dir), indent=2))
    return 0


def _dirs(x):
    flag(x, "--cni-bin-dir", "--bin-dir", dest="cni_bin_dir", metavar="DIR", default="/opt/cni/bin",
         help="CNI plugin directory (default %(default)s)")
    flag(x, "--cni-conf-dir", "--conf-dir", dest="cni_conf_dir", metavar="DIR", default="/etc/cni/net.d",
         help="CNI config directory (default %(default)s)")


def add_cni(sub) -> None:
    cni = sub.add_parser("cni", help="install the CNI plugin and its network config on a node (needs root)",
                         description="Writes files only (the plugin launcher into --cni-bin-dir, the network config "
                         "into --cni-conf-dir); needs write access there, usually root. The agent does this itself "
                         "on start; these commands are for nodes without it.")
    s = cni.add_subparsers(dest="cni_cmd", required=True, metavar="COMMAND")
    x = s.add_parser("install", help="copy the plugin launcher and write (or chain into) the config",
                     description="Standalone (--subnet): writes 05-meshcni.conflist with the built-in IPAM. "
                     "Chained (--chained): appends meshcni to the first existing config, after e.g. "
                     "ptp + host-local. Idempotent; files are replaced atomically. Needs write access to both "
                     "directories (root on a node).")
    _dirs(x)
    x.add_argument("--chained", action="store_true", help="append to the first existing conflist")
    x.add_argument("--subnet", action="append", metavar="CIDR",
                   help="pod CIDR to allocate from (repeat for dual stack); standalone only")
    x.add_argument("--name", default="meshcni", help="network name of a standalone config (default %(default)s)")
    x.add_argument("--datapath", choices=("auto", "required", "off"), default="auto",
                   help="auto: attach tc programs when the agent has pinned them; required: refuse pods "
                   "until it has; off (default %(default)s)")
    flag(x, "--bpf-root", "--root", dest="bpf_root", metavar="DIR",
         help="pin root of the agent (default /sys/fs/bpf/meshcni)")
    x.add_argument("--state-dir", metavar="DIR", help="endpoint records (default /var/run/meshcni)")
    flag(x, "--ipam-dir", "--data-dir", dest="ipam_dir", metavar="DIR",
         help="IPAM allocations (default /var/lib/cni/meshcni)")
    flag(x, "--socket", "--agent-socket", dest="socket", metavar="PATH",
         help="the agent's local API socket; ADDs wait for it")
    x.add_argument("--log-file", metavar="PATH", help="the plugin appends one line per call here")
    x.add_argument("--mtu", type=int, help="pod interface MTU (default 1500)")
    x.set_defaults(fn=cmd_cni_install)
    x = s.add_parser("uninstall", help="remove the launcher and meshcni's config or chain entry",
                     description="Removes meshcni's launcher from --cni-bin-dir and its config (or its entry in a "
                     "chained config) from --cni-conf-dir. Needs write access there (root on a node).")
    _dirs(x)
    x.set_defaults(fn=cmd_cni_uninstall)
