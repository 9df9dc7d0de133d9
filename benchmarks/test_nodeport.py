# SPDX-License-Identifier: MIT OR Apache-2.0
"""NodePort from outside the cluster: meshcni's uplink program vs kube-proxy's rules vs direct.

    flock /tmp/meshcni-e2e.lock .venv/bin/python -m pytest benchmarks/test_nodeport.py \
        --benchmark-json benchmarks/out/nodeport.json && \
    .venv/bin/python benchmarks/report_nodeport.py benchmarks/out/nodeport.json

Topology (tests/kernel/helpers/uplinktopo.py, all test namespaces): an
external host, node1 with pod1 (10.1.1.5), node2 with pod2 (10.1.2.7), one
underlay bridge. The external host also gets routes to both pod CIDRs, for
the "direct" method only to use.

Connection rate (``benchmarks/bin/connbench``: connect + RST-close in a loop,
timed in-process) from the external host to node1's NodePort 30000, backend
``connbench --serve`` on pod1:8080 (a backend on the receiving node), with S
Services programmed (S-1 ClusterIP Services plus the NodePort one):

direct
    to 10.1.1.5:8080, forwarded by node1; nothing attached.
meshcni
    bpf/nodeport.bpf.c on node1's eth0 (NodePortDatapath), S-1 ClusterIP rows
    (ServiceDatapath) + the NodePort row; DNAT only (a local backend).
iptables
    kube-proxy's iptables-mode nat table in node1's netns: PREROUTING ->
    KUBE-SERVICES with S-1 ClusterIP rules, then ``-m addrtype --dst-type
    LOCAL -j KUBE-NODEPORTS``; KUBE-NODEPORTS -> KUBE-EXT-x (mark for
    masquerade, eTP Cluster) -> KUBE-SVC-x -> KUBE-SEP-x (DNAT); KUBE-POSTROUTING
    masquerades marked packets (--random-fully), as kube-proxy writes them.
nftables
    kube-proxy's nftables-mode table (``table ip kube-proxy``): the
    ``service-ips`` and ``service-nodeports`` verdict maps, a chain per
    service, external and endpoint, ``mark-for-masquerade`` and ``masquerading``.

Throughput (iperf3, one TCP stream, ``IPERF_SECONDS`` s) from the external
host to pod2 (a backend on another node): direct to 10.1.2.7:5201 vs through
node1's NodePort 30201 with meshcni (DNAT + SNAT + redirect on node1's uplink).

Safety: every rule, program and address lives in the test namespaces; the
namespaces, programs and mounts go on teardown, also on failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

BENCH_DIR = Path(__file__).resolve().parent
HELPERS = BENCH_DIR.parent / "tests" / "kernel" / "helpers"
sys.path.insert(0, str(HELPERS))
sys.path.insert(0, str(BENCH_DIR))

from test_connect_rate import client as connbench_client, connbench_bin, service_addr  # noqa: E402,F401
from uplinktopo import NODE1, NODE2, POD1, POD1_CIDR, POD2, PODS_CIDR, Topology, ipn  # noqa: E402

SERVICES = tuple(int(s) for s in os.environ.get("MESHCNI_BENCH_NODEPORT_SERVICES", "1,10000").split(","))
CONNECTS = int(os.environ.get("MESHCNI_BENCH_NODEPORT_CONNECTS", "5000"))
ROUNDS = int(os.environ.get("MESHCNI_BENCH_NODEPORT_ROUNDS", "5"))
IPERF_SECONDS = float(os.environ.get("MESHCNI_BENCH_IPERF_SECONDS", "3"))
WARMUP = 500
NODEPORT, BACKEND_PORT = 30000, 8080
METHODS = ("direct", "meshcni", "iptables", "nftables")


def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


@contextlib.contextmanager
def cluster():
    with contextlib.ExitStack() as stack:
        topo = Topology(stack)
        ipn(topo.ext, "route", "add", POD1_CIDR, "via", NODE1)
        ipn(topo.ext, "route", "add", "10.1.2.0/24", "via", NODE2)
        topo.stack = stack
        yield topo


def _meshcni(topo, services: int, backend=(POD1, BACKEND_PORT), nodeport=NODEPORT) -> None:
    from meshcni import sandbox
    from meshcni.bpf import MeshMaps
    from meshcni.datapath import Backend, Frontend, Service, ServiceDatapath
    from meshcni.datapath.nodeport import Device, NodePortDatapath, UplinkConfig
    from svcrows import write_frontend

    stack = topo.stack
    pin_root = os.path.join(stack.enter_context(sandbox.private_bpffs("meshcni-bench-bpffs-")), "meshcni")
    maps = MeshMaps(pin_root)
    stack.callback(maps.close)
    if services > 1:
        sd = ServiceDatapath(maps)
        sd.apply([Service(f"bench/svc-{i}", [Frontend(*service_addr(i), "tcp")], [Backend(POD1, BACKEND_PORT)],
                          i + 1) for i in range(services - 1)])
    write_frontend(maps, NODE1, nodeport, "tcp", services + 1, [backend], flags=("nodeport",),
                   first_id=10 ** 6)
    np_ = NodePortDatapath(pin_root, maps, netns=topo.node1)
    stack.callback(np_.close)
    np_.apply(UplinkConfig(devices=[Device("eth0", NODE1)], local_pod_cidrs=[POD1_CIDR], pod_cidrs=[PODS_CIDR]))
    stack.callback(np_.remove)


def iptables_rules(services: int) -> str:
    """kube-proxy iptables mode, nat table: S-1 ClusterIP services and one NodePort service."""
    be = f"{POD1}:{BACKEND_PORT}"
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
              ":KUBE-MARK-MASQ - [0:0]"]
    svc_rules, per = [], []
    for i in range(services):
        svc, sep, ext = f"KUBE-SVC-{i:012X}", f"KUBE-SEP-{i:012X}", f"KUBE-EXT-{i:012X}"
        name = f"bench/svc-{i}:http"
        chains += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        if i < services - 1:
            ip, port = service_addr(i)
            svc_rules.append(f'-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                             f"-m tcp --dport {port} -j {svc}")
        else:
            chains.append(f":{ext} - [0:0]")
            per.append(f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {NODEPORT} -j {ext}')
            per.append(f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                       f"-j KUBE-MARK-MASQ")
            per.append(f"-A {ext} -j {svc}")
        per.append(f'-A {svc} -m comment --comment "{name} -> {be}" -j {sep}')
        per.append(f'-A {sep} -s {POD1}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
        per.append(f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {be}')
    return "\n".join([
        "*nat", *chains,
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        *svc_rules,
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" '
        "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        *per, "COMMIT", ""])


def nft_rules(services: int) -> str:
    """kube-proxy nftables mode (its table shape, verdict maps): S-1 ClusterIP and one NodePort service."""
    lines = ["table ip kube-proxy {",
             "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
             "  map service-nodeports { type inet_proto . inet_service : verdict ; }",
             "  chain mark-for-masquerade { meta mark set meta mark or 0x4000 ; }",
             "  chain masquerading { meta mark & 0x4000 == 0 return ; "
             "meta mark set meta mark xor 0x4000 ; masquerade fully-random ; }",
             "  chain services { ip daddr . meta l4proto . th dport vmap @service-ips ; "
             "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports ; }",
             "  chain nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; jump services ; }",
             "  chain nat-output { type nat hook output priority -100 ; policy accept ; jump services ; }",
             "  chain nat-postrouting { type nat hook postrouting priority srcnat ; policy accept ; "
             "jump masquerading ; }"]
    elems, nodeports = [], []
    for i in range(services):
        svc, ep = f"service-{i:08X}-bench/svc-{i}/tcp/http", f"endpoint-{i:08X}-bench/svc-{i}/tcp/http__{POD1}/8080"
        lines.append(f'  chain {svc} {{ numgen random mod 1 vmap {{ 0 : goto {ep} }} ; }}')
        lines.append(f"  chain {ep} {{ ip saddr {POD1} jump mark-for-masquerade ; "
                     f"meta l4proto tcp dnat to {POD1}:{BACKEND_PORT} ; }}")
        if i < services - 1:
            ip, port = service_addr(i)
            elems.append(f"{ip} . tcp . {port} : goto {svc}")
        else:
            ext = f"external-{i:08X}-bench/svc-{i}/tcp/http"
            lines.append(f"  chain {ext} {{ jump mark-for-masquerade ; goto {svc} ; }}")
            nodeports.append(f"tcp . {NODEPORT} : goto {ext}")
    lines.append("}")
    if elems:
        lines.append("add element ip kube-proxy service-ips { " + ", ".join(elems) + " }")
    lines.append("add element ip kube-proxy service-nodeports { " + ", ".join(nodeports) + " }")
    return "\n".join(lines) + "\n"


def _iptables(topo, services: int) -> None:
    run("ip", "netns", "exec", topo.node1, "iptables-restore", input=iptables_rules(services))
    out = run("ip", "netns", "exec", topo.node1, "iptables-save", "-t", "nat").stdout
    assert out.count("-A KUBE-SERVICES -d ") == services - 1


def _nftables(topo, services: int) -> None:
    if shutil.which("nft") is None:
        pytest.fail("nft not found: apt-get install nftables (scripts/setup-machine.sh installs it)")
    run("ip", "netns", "exec", topo.node1, "nft", "-f", "-", input=nft_rules(services))


def _server(topo, binary, ns, ip, port):
    p = subprocess.Popen(["ip", "netns", "exec", ns, str(binary), "--serve", ip, str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop():
        if p.poll() is None:
            p.kill()
            p.communicate()
    topo.stack.callback(stop)
    assert p.stdout.readline().strip() == "ready"
    return p


def _client(binary, ns, ip, port, n):
    """connbench in ``ns`` (no cgroup: nothing is attached to one here)."""
    p = subprocess.run(["ip", "netns", "exec", ns, str(binary), ip, str(port), str(n)],
                       capture_output=True, text=True, timeout=300)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if p.returncode != 0 or r["connects"] != n:
        raise RuntimeError(f"connbench to {ip}:{port}: {r} ({os.strerror(r.get('first_errno') or 0)}) {p.stderr}")
    return r


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("services", SERVICES)
def test_nodeport_connect_rate(benchmark, connbench_bin, services, method):
    with cluster() as topo:
        _server(topo, connbench_bin, topo.pod1, POD1, BACKEND_PORT)
        target = (NODE1, NODEPORT)
        if method == "direct":
            target = (POD1, BACKEND_PORT)
        elif method == "meshcni":
            _meshcni(topo, services)
        elif method == "iptables":
            _iptables(topo, services)
        else:
            _nftables(topo, services)
        _client(connbench_bin, topo.ext, *target, WARMUP)
        inproc = []
        benchmark.group = f"nodeport-connect-{services}"
        benchmark.extra_info.update(method=method, services=services, connects=CONNECTS,
                                    target=f"{target[0]}:{target[1]}")
        benchmark.pedantic(lambda: inproc.append(_client(connbench_bin, topo.ext, *target, CONNECTS)["seconds"]),
                           rounds=ROUNDS, iterations=1)
        med = statistics.median(inproc)
        benchmark.extra_info.update(inprocess_seconds=inproc, inprocess_median=med,
                                    connects_per_second=CONNECTS / med)


def _iperf(ns, ip, port, seconds) -> float:
    p = subprocess.run(["ip", "netns", "exec", ns, "iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J"],
                       capture_output=True, text=True, timeout=seconds + 30)
    if p.returncode != 0:
        raise RuntimeError(f"iperf3 to {ip}:{port}: {p.stdout[-500:]} {p.stderr}")
    return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"]


@pytest.mark.parametrize("method", ("direct", "meshcni"))
def test_nodeport_throughput_remote_backend(benchmark, method):
    if shutil.which("iperf3") is None:
        pytest.fail("iperf3 not found: apt-get install iperf3 (scripts/setup-machine.sh installs it)")
    with cluster() as topo:
        srv = subprocess.Popen(["ip", "netns", "exec", topo.pod2, "iperf3", "-s", "-B", POD2, "-p", "5201"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        topo.stack.callback(lambda: (srv.kill(), srv.wait()))
        target = (POD2, 5201)
        if method == "meshcni":
            _meshcni(topo, 1, backend=(POD2, 5201), nodeport=30201)
            target = (NODE1, 30201)
        import time
        time.sleep(0.5)  # the server's listen
        rates = []
        benchmark.group = "nodeport-throughput"
        benchmark.extra_info.update(method=method, seconds=IPERF_SECONDS, target=f"{target[0]}:{target[1]}")
        benchmark.pedantic(lambda: rates.append(_iperf(topo.ext, *target, IPERF_SECONDS)), rounds=3, iterations=1)
        benchmark.extra_info.update(bits_per_second=rates, gbit_median=statistics.median(rates) / 1e9)
