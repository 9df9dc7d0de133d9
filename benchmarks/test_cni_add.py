# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pod ADD (+ DEL) end to end, meshcni-cni beside the reference plugins, one run.

    python -m pytest benchmarks/test_cni_add.py --benchmark-only

Each round is what a runtime does for one pod: create a pod namespace, run the
conflist's ADD (plugins exec'd with env + stdin, inside a test-made node
namespace through nsenter), then DEL, then delete the namespace. Methods:

meshcni
    ``meshcni-cni`` standalone (veth, built-in IPAM, link-local next hop),
    the launcher ``meshcni cni install`` writes; datapath off.
meshcni+tc
    the same with the tc programs pinned on the node (datapath required):
    what an ADD costs on a node running the agent.
meshcni-pyroute2
    ``meshcni`` with ``MESHCNI_CNI_NETLINK=pyroute2``: ADD and DEL through
    pyroute2 as before the compiled core's netlink client, for comparison.
ptp
    Debian's reference ``ptp`` + ``host-local`` (Go binaries), the same job.
chained
    ``ptp`` + ``host-local`` then ``meshcni-cni`` chained (datapath required),
    as on Kind: the extra cost of meshcni in chained mode is chained - ptp.
noop
    the namespace create/delete and nsenter alone (a plugin that is ``true``):
    the floor every method pays.

Read the ratios to ``ptp`` in the same run (benchmarks/README.md); the
interpreter start and imports dominate meshcni's cost (``python -X importtime``
of the plugin is recorded in ``extra_info``).
"""
from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import uuid
from contextlib import ExitStack

import pytest

from meshcni import sandbox
from meshcni.cni.install import install
from meshcni.cni.runtime import Attachment, Runtime

pytestmark = pytest.mark.kernel

REF = "/usr/lib/cni"
ROUNDS = 30


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # an installed plugin runs from byte-compiled modules (wheels and Debian
    # packages compile at install); a checkout under PYTHONDONTWRITEBYTECODE=1
    # would recompile every edited module in every plugin process instead
    import meshcni
    pkg = os.path.dirname(meshcni.__file__)
    compileall.compile_dir(pkg, maxlevels=0, quiet=1)
    for sub in ("cni", "datapath"):  # all an ADD or DEL imports
        compileall.compile_dir(os.path.join(pkg, sub), quiet=1)
    tmp = tmp_path_factory.mktemp("cnibench")
    with ExitStack() as st:
        name = st.enter_context(sandbox.netns("mcbnode"))
        bpffs = st.enter_context(sandbox.private_bpffs())
        pin_root = os.path.join(bpffs, "meshcni")
        from meshcni.datapath.policy import PolicyProgram
        prog = st.enter_context(PolicyProgram(pin_root))
        prog.pin_programs(pin_root)
        bin_dir = str(tmp / "bin")
        install(bin_dir, str(tmp / "net.d"), subnets=["10.40.0.0/16"])
        noop = os.path.join(bin_dir, "noop")
        with open(noop, "w") as f:
            f.write('#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] && echo \'{"cniVersion":"1.0.0","ips":[]}\'\n'
                    'exit 0\n')
        os.chmod(noop, 0o755)
        # the compiled shim + a real agent local API serving from the node netns
        # (its server threads inherit the namespace of the thread that started it)
        from meshcni.agent.localapi import LocalAPI
        from meshcni.cni.install import shim_binary
        shim_bin, sock = str(tmp / "shimbin"), str(tmp / "agent.sock")
        if shim_binary():
            install(shim_bin, str(tmp / "shimnet.d"), subnets=["10.40.0.0/16"], shim=True, agent_socket=sock)
            api = LocalAPI(sock, status=dict).start(netns=f"/run/netns/{name}")
            st.callback(api.stop)
        yield {"name": name, "path": f"/run/netns/{name}", "tmp": tmp, "bin": bin_dir, "pin_root": pin_root,
               "shim_bin": shim_bin, "sock": sock}


def _plugins(node, method):
    tmp = node["tmp"]
    mesh = {"type": "meshcni-cni", "datapath": "off", "stateDir": str(tmp / "state"),
            "ipam": {"type": "meshcni", "subnet": "10.40.0.0/16", "dataDir": str(tmp / "ipam")}}
    ptp = {"type": "ptp", "ipMasq": False,
           "ipam": {"type": "host-local", "subnet": "10.41.0.0/16", "dataDir": str(tmp / "hl")}}
    chained = {"type": "meshcni-cni", "datapath": "required", "bpfRoot": node["pin_root"],
               "stateDir": str(tmp / "state")}
    return {
        "meshcni": [mesh],
        "meshcni-shim": [dict(mesh, agentSocket=node["sock"])],
        "meshcni+tc": [dict(mesh, datapath="required", bpfRoot=node["pin_root"])],
        "meshcni-pyroute2": [mesh],
        "ptp": [ptp],
        "chained": [ptp, chained],
        "noop": [{"type": "noop"}],
    }[method]


@pytest.mark.parametrize("method", ["noop", "ptp", "meshcni", "meshcni-shim", "meshcni+tc", "chained",
                                    "meshcni-pyroute2"])
def test_pod_add_del(benchmark, node, method):
    env = {"MESHCNI_CNI_NETLINK": "pyroute2"} if method == "meshcni-pyroute2" else {}
    if method == "meshcni-shim" and not os.path.exists(os.path.join(node["shim_bin"], "meshcni-cni")):
        pytest.skip("shim not built")
    bins = node["shim_bin"] if method == "meshcni-shim" else node["bin"]
    rt = Runtime({"cniVersion": "1.0.0", "name": "bench", "plugins": _plugins(node, method)},
                 [bins, REF], cache_dir=str(node["tmp"] / "cache"), node_netns=node["path"], extra_env=env)

    def one_pod():
        ns = f"mcbpod-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            att = Attachment(uuid.uuid4().hex[:12], f"/run/netns/{ns}", "eth0",
                             {"K8S_POD_NAMESPACE": "bench", "K8S_POD_NAME": "p"})
            rt.add(att)
            rt.delete(att)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=True)

    benchmark.pedantic(one_pod, rounds=ROUNDS, warmup_rounds=2)
    if method == "meshcni":
        # where the time goes: the biggest cumulative imports of one ADD process
        p = subprocess.run([sys.executable, "-X", "importtime", "-c",
                            "import meshcni.cni.plugin, meshcni.cni.link, meshcni._libbpf"],
                           capture_output=True, text=True)
        rows = []
        for line in p.stderr.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) == 3 and parts[1].isdigit():
                rows.append((int(parts[1]), parts[2]))
        benchmark.extra_info["top_imports_us"] = json.dumps(sorted(rows, reverse=True)[:6])
