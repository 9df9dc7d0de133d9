# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni agent`` flags (the DaemonSet passes these; the simulator passes the same)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from ..cli.parser import flag
from .uplink import add_flags as uplink_flags, options as uplink_options


def add_parser(sub) -> None:
    p = sub.add_parser("agent", help="the per-node agent (DaemonSet): datapath, CNI, node controllers",
                       description="Loads and pins the datapath, installs the CNI plugin (IPAM = the Node's "
                       "podCIDR), programs Services into the socket LB, serves a local API on a unix socket "
                       "and /healthz /readyz /metrics. Leaves the datapath in place on exit. Needs root "
                       "(CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN), a bpffs at --bpf-root, cgroup v2 at "
                       "--cgroup-root and an API server (--kubeconfig).")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig file (default $KUBECONFIG, else in-cluster config)")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (default $NODE_NAME)")
    add_node_paths(p)
    p.add_argument("--chained", action="store_true", help="chain after the node's existing CNI config")
    p.add_argument("--no-routes", dest="routes", action="store_false",
                   help="do not route other nodes' pod CIDRs (when e.g. kindnet already does)")
    shim = p.add_mutually_exclusive_group()
    shim.add_argument("--cni-shim", dest="cni_shim", action="store_true", default=None,
                      help="install the compiled CNI shim, which hands CNI calls to this agent over --socket "
                      "(falling back to the Python plugin when the agent cannot take them); default: on "
                      "when the shim was built")
    shim.add_argument("--no-cni-shim", dest="cni_shim", action="store_false",
                      help="install the Python plugin as meshcni-cni (every CNI call starts an interpreter)")
    fb = p.add_mutually_exclusive_group()
    fb.add_argument("--cni-fallback", dest="cni_fallback", action="store_true", default=True,
                    help="install the Python plugin beside the shim as its fallback (default; only useful where "
                    "this interpreter exists on the node itself, e.g. the simulator)")
    fb.add_argument("--no-cni-fallback", dest="cni_fallback", action="store_false",
                    help="no Python fallback on the node (an agent in a container: the image's Python is not the "
                    "node's); the shim answers by itself while the agent cannot")
    p.add_argument("--uninstall", action="store_true",
                   help="instead of running: remove everything meshcni put on this node (socket-LB links, tc "
                   "programs, pins under --bpf-root, routes, the CNI plugin and config, state) and exit; idempotent")
    p.add_argument("--cluster-name", default="default",
                   help="this cluster's name in the mesh: the mesh-cni.dev/cluster label of its pods in "
                   "NetworkPolicy (the controller's --cluster-name; default %(default)s)")
    p.add_argument("--pin-check-interval", type=float, default=10.0,
                   help="seconds between checks that every pin under --bpf-root still holds the agent's object "
                        "(deleted ones are pinned again; default %(default)s)")
    p.add_argument("--nodeport-addresses", metavar="CIDR,...", type=_cidrs, default=None,
                   help="NodePorts (and healthCheckNodePorts) answer only on this node's addresses inside these "
                   "CIDRs (the Node's InternalIP/ExternalIP addresses and the node's interface addresses); "
                   "default: every InternalIP/ExternalIP address of the Node object")
    p.add_argument("--service-resync", type=float, default=300.0, metavar="SECONDS",
                   help="seconds between full resyncs of the Service maps (recomputed from the caches, dumped, "
                   "repaired; counted in meshcni_service_resync_repaired_total); every change in between is "
                   "written incrementally (default %(default)s)")
    p.add_argument("--metrics-address", default="127.0.0.1:9962", help="HOST:PORT of /healthz /readyz /metrics")
    uplink_flags(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(fn=cmd_agent)


def _cidrs(text: str) -> list:
    import argparse
    import ipaddress
    out = []
    for c in (x.strip() for x in text.split(",")):
        if not c:
            continue
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{c!r} is not a CIDR") from None
        out.append(c)
    if not out:
        raise argparse.ArgumentTypeError("no CIDR given")
    return out


def add_node_paths(p) -> None:
    """The node paths the agent writes to; ``meshcni uninstall`` takes the same flags and defaults,
    so the DaemonSet's args for the one undo what the other did."""
    flag(p, "--bpf-root", "--root", default="/sys/fs/bpf/meshcni", metavar="DIR",
         help="pin root on a bpffs (default %(default)s)")
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup",
                   help="cgroup v2 directory whose processes (the pods) get the socket LB (default %(default)s)")
    flag(p, "--cni-bin-dir", "--bin-dir", default="/opt/cni/bin", metavar="DIR",
         help="where the CNI plugin is installed (default %(default)s)")
    flag(p, "--cni-conf-dir", "--conf-dir", default="/etc/cni/net.d", metavar="DIR",
         help="where the CNI network config is written (default %(default)s)")
    flag(p, "--socket", "--agent-socket", default="/var/run/meshcni/agent.sock", metavar="PATH",
         help="local API socket (default %(default)s)")
    p.add_argument("--state-dir", default="/var/run/meshcni", help="endpoint records, ids (default %(default)s)")
    flag(p, "--ipam-dir", "--data-dir", default="/var/lib/cni/meshcni", metavar="DIR",
                   help="IPAM allocations of the built-in IPAM; must survive reboots only as long as pods do "
                   "(default %(default)s)")


def cmd_agent(args) -> int:
    from .agent import Agent, AgentConfig
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.uninstall:  # the older spelling of `meshcni uninstall -o json`
        import json
        from ..cli.uninstall import document
        print(json.dumps(document(args), indent=2, sort_keys=True))
        return 0
    if not args.node_name:
        print("meshcni agent: --node-name (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    agent = Agent(AgentConfig(node_name=args.node_name, kubeconfig=args.kubeconfig, bpf_root=args.bpf_root,
                              cgroup_root=args.cgroup_root, cni_bin_dir=args.cni_bin_dir,
                              cni_conf_dir=args.cni_conf_dir, chained=args.chained, socket=args.socket,
                              state_dir=args.state_dir, ipam_dir=args.ipam_dir, routes=args.routes, cni_shim=args.cni_shim,
                              cni_fallback=args.cni_fallback, metrics_address=args.metrics_address,
                              pin_check_interval=args.pin_check_interval, cluster_name=args.cluster_name,
                              uplink=uplink_options(args), nodeport_addresses=args.nodeport_addresses,
                              service_resync=args.service_resync))
    try:
        agent.start()
    except Exception as e:
        logging.getLogger("meshcni.agent").exception("start failed: %s", e)
        agent.stop()
        return 1
    while not stop.wait(0.5):
        pass
    agent.stop()
    return 0
