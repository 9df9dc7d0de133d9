# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni controller`` flags (the Deployment passes these)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def add_parser(sub) -> None:
    from .controller import default_identity
    p = sub.add_parser("controller", help="the cluster-wide controller (Deployment): identities, multi-cluster mesh",
                       description="Allocates an Identity per unique (namespace labels, pod labels) set and a "
                       "CIDRIdentity per NetworkPolicy ipBlock, garbage-collects unused ones after --gc-grace, "
                       "reports hand-made ones; mirrors the remote clusters named by Cluster objects into MeshEndpoints "
                       "and Cluster status; one active replica via a Lease. Serves /healthz /readyz /metrics. "
                       "Needs the API server (--kubeconfig), no root.")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig file (default $KUBECONFIG, else in-cluster config)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="campaign for the Lease and act only while holding it (default on)")
    p.add_argument("--lease-namespace", default="kube-system", help="namespace of the Lease (default %(default)s)")
    p.add_argument("--lease-name", default="meshcni-controller", help="name of the Lease (default %(default)s)")
    # kube-controller-manager's --leader-elect-* flags, with client-go's defaults
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS",
                   help="how long a Lease holds without renewal before another replica may take it "
                   "(default %(default)s)")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                   help="the leader gives up (stops acting) when it could not renew for this long; "
                   "below the lease duration (default %(default)s)")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between attempts to acquire or renew (default %(default)s)")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or default_identity(),
                   help="holder identity in the Lease (default $POD_NAME, else hostname-pid)")
    p.add_argument("--metrics-address", default="127.0.0.1:9963", help="HOST:PORT of /healthz /readyz /metrics")
    p.add_argument("--gc-grace", type=float, default=300.0,
                   help="seconds an Identity may stay unused before it is deleted (default %(default)s)")
    p.add_argument("--cluster-name", default="default",
                   help="this cluster's name in the mesh: a Cluster of that name is ignored (default %(default)s)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "meshcni-system",
                   help="the controller's namespace, where the remote clusters' kubeconfig Secrets live "
                   "(default $POD_NAMESPACE, else meshcni-system)")
    p.add_argument("--mesh-stale-grace", type=float, default=300.0,
                   help="seconds a remote cluster's MeshEndpoints and routes are kept (marked stale) after its API "
                   "server became unreachable; a Cluster's spec.staleGracePeriodSeconds overrides (default %(default)s)")
    p.add_argument("--service-cidr", action="append", default=[], type=_cidr, metavar="CIDR",
                   help="a local Service CIDR (repeatable): remote pod CIDRs overlapping it are a CIDRConflict")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(fn=cmd_controller)


def _cidr(s: str) -> str:
    import ipaddress
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--service-cidr {s!r}: {e}") from None


def cmd_controller(args) -> int:
    from .controller import Controller, ControllerConfig
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.gc_grace < 0:
        print("meshcni controller: --gc-grace must be >= 0 seconds", file=sys.stderr)
        return 2
    if args.mesh_stale_grace < 0:
        print("meshcni controller: --mesh-stale-grace must be >= 0 seconds", file=sys.stderr)
        return 2
    if not 0 < args.leader_elect_retry_period < args.leader_elect_renew_deadline < args.leader_elect_lease_duration:
        print("meshcni controller: want 0 < --leader-elect-retry-period < --leader-elect-renew-deadline < "
              "--leader-elect-lease-duration", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    ctl = Controller(ControllerConfig(kubeconfig=args.kubeconfig, leader_elect=args.leader_elect,
                                      lease_namespace=args.lease_namespace, lease_name=args.lease_name,
                                      identity=args.identity, metrics_address=args.metrics_address,
                                      gc_grace=args.gc_grace, cluster_name=args.cluster_name,
                                      namespace=args.namespace, mesh_stale_grace=args.mesh_stale_grace,
                                      service_cidrs=tuple(args.service_cidr),
                                      lease_duration=args.leader_elect_lease_duration,
                                      renew_deadline=args.leader_elect_renew_deadline,
                                      retry_period=args.leader_elect_retry_period))
    try:
        ctl.start()
    except Exception as e:
        logging.getLogger("meshcni.controller").exception("start failed: %s", e)
        ctl.stop()
        return 1
    while not stop.wait(0.5):
        pass
    ctl.stop()
    return 0
