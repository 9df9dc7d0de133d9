# SPDX-License-Identifier: MIT OR Apache-2.0
"""TCP connect rate through the socket LB vs the pod IP vs kube-proxy-style iptables.

    python -m pytest benchmarks/test_connect_rate.py --benchmark-json benchmarks/out/connect.json \
      && python benchmarks/report_connect.py benchmarks/out/connect.json

For S in (1, 1000, 10000) services, ``benchmarks/bin/connbench`` (built from
c_ref/connbench.c) connects ``CONNECTS`` times (connect + close with SO_LINGER 0)
to a backend, ``connbench --serve 127.0.0.2 8080``, an accept+close loop inside a
network namespace this test creates (only ``lo`` up). Methods:

direct
    connect to the backend address 127.0.0.2:8080; nothing attached to the cgroup.
socklb
    S services programmed with ``ServiceDatapath.apply`` (every one with the
    single backend 127.0.0.2:8080), ``SockLB`` attached to the client's cgroup;
    connect to the last service's address.
direct+lb
    as socklb, but connect to the backend address (the hook runs and misses):
    what a pod-IP connection pays once the LB is there.
iptables
    no BPF; in the netns only, a nat table shaped like kube-proxy's iptables mode
    (OUTPUT -> KUBE-SERVICES with S ``-d VIP -p tcp --dport P -j KUBE-SVC-x`` rules,
    KUBE-SVC-x -> KUBE-SEP-x -> ``DNAT --to-destination 127.0.0.2:8080``), loaded
    with one iptables-restore; connect to the LAST service of KUBE-SERVICES so
    the whole linear chain is walked on every new connection. The netns gets a
    route ``<doc range> dev lo src 127.0.0.1`` for the VIP ranges (a locally
    generated connect is routed before the OUTPUT hook; without a route it fails
    ENETUNREACH). Only this method's netns has it; nothing else does.

Services i = 0..S-1 get distinct (ip, port): ip = the i % 762-th host address (.1-.254) of
198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24 (documentation ranges), port
80 + i // 762.

Safety: BPF programs are attached only to a child of a private cgroup2 mount;
the client runs in that child and in the test-made netns; every iptables
command runs via ``ip netns exec NS``; all traffic is to loopback inside the
netns. Teardown (even on failure): server killed, links detached, child cgroup
removed, cgroup2 and bpffs unmounted, netns deleted.

Each benchmark is one subprocess per round; pytest-benchmark times the
subprocess wall time, ``extra_info["inprocess_seconds"]`` has connbench's own
CLOCK_MONOTONIC time of the N connects, which is what report_connect.py uses.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import statistics
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from meshcni import sandbox

pytestmark = pytest.mark.kernel

BENCH_DIR = Path(__file__).resolve().parent
C_SRC = BENCH_DIR / "c_ref" / "connbench.c"
BIN = BENCH_DIR / "bin" / "connbench"

BACKEND = ("127.0.0.2", 8080)
DOC_NETS = ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")
SERVICES = tuple(int(s) for s in os.environ.get("MESHCNI_BENCH_SERVICES", "1,1000,10000").split(","))
CONNECTS = int(os.environ.get("MESHCNI_BENCH_CONNECTS", "20000"))
ROUNDS = int(os.environ.get("MESHCNI_BENCH_CONNECT_ROUNDS", "7"))
WARMUP = 2000
# direct and socklb back to back: the VM's speed drifts over minutes
METHODS = ("direct", "socklb", "direct+lb", "iptables")

_ADDRS = [str(a) for net in DOC_NETS for a in ipaddress.ip_network(net).hosts()]


def service_addr(i: int):
    return _ADDRS[i % len(_ADDRS)], 80 + i // len(_ADDRS)


# ---------------------------------------------------------------- build

@pytest.fixture(scope="module")
def connbench_bin() -> Path:
    """Compile c_ref/connbench.c into benchmarks/bin/ (rebuilt every session)."""
    cc = shutil.which("gcc")
    if cc is None:
        pytest.fail("gcc not found: cannot build benchmarks/c_ref/connbench.c")
    BIN.parent.mkdir(parents=True, exist_ok=True)
    tmp = BIN.with_suffix(".tmp")
    cmd = [cc, "-Wall", "-O2", "-o", str(tmp), str(C_SRC)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"building connbench failed ({' '.join(cmd)}):\n{p.stderr}{p.stdout}", pytrace=False)
    os.replace(tmp, BIN)
    return BIN


# ---------------------------------------------------------------- environment

def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


def _private_bpffs(stack: ExitStack) -> str:
    return os.path.join(stack.enter_context(sandbox.private_bpffs("meshcni-bench-bpffs-")), "meshcni")


def _private_cgroup(stack: ExitStack) -> str:
    return stack.enter_context(sandbox.private_cgroup2_child("meshcni-bench-"))


def _netns(stack: ExitStack) -> str:
    return stack.enter_context(sandbox.netns("mcbench"))


def _server(stack: ExitStack, binary: Path, ns: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, str(binary), "--serve", BACKEND[0], str(BACKEND[1])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop():
        if p.poll() is None:
            p.terminate()
            try:
                p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
    stack.callback(stop)
    line = p.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"connbench --serve did not start: {line!r} {p.stderr.read() if p.poll() is not None else ''}")
    return p


def kube_proxy_rules(n: int) -> str:
    """iptables-restore input: the nat table of kube-proxy's iptables mode for n
    ClusterIP services, one endpoint each (127.0.0.2:8080)."""
    be = f"{BACKEND[0]}:{BACKEND[1]}"
    chains, svc_rules, per = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]"], [], []
    for i in range(n):
        ip, port = service_addr(i)
        svc, sep = f"KUBE-SVC-{i:012X}", f"KUBE-SEP-{i:012X}"
        chains += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        name = f"bench/svc-{i}:http"
        svc_rules.append(f'-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                         f"-m tcp --dport {port} -j {svc}")
        per.append(f'-A {svc} -m comment --comment "{name} -> {be}" -j {sep}')
        per.append(f'-A {sep} -s {BACKEND[0]}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
        per.append(f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {be}')
    return "\n".join(["*nat", *chains,
                      '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                      "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
                      *svc_rules, *per, "COMMIT", ""])


def _iptables(ns: str, n: int) -> None:
    """kube-proxy-shaped nat rules, inside ``ns`` only."""
    for net in DOC_NETS:
        run("ip", "-n", ns, "route", "add", net, "dev", "lo", "src", "127.0.0.1")
    run("ip", "netns", "exec", ns, "iptables-restore", input=kube_proxy_rules(n))
    out = run("ip", "netns", "exec", ns, "iptables-save", "-t", "nat").stdout
    assert out.count("-A KUBE-SERVICES ") == n, "KUBE-SERVICES does not hold one rule per service"


def _socklb(stack: ExitStack, cgroup: str, n: int) -> None:
    from meshcni.datapath import Backend, Frontend, Service, ServiceDatapath, SockLB

    pin_root = _private_bpffs(stack)
    dp = ServiceDatapath(pin_root)
    stack.callback(dp.close)
    dp.apply([Service(f"bench/svc-{i}", [Frontend(*service_addr(i), "tcp")], [Backend(*BACKEND)], i + 1)
              for i in range(n)])
    assert len(dp.maps.svc.dump()[0]) == 2 * n  # master + one slot per service
    lb = SockLB(pin_root)
    stack.callback(lb.close)
    lb.attach(cgroup)
    stack.callback(lb.detach, cgroup)


def client(binary: Path, cgroup: str, ns: str, ip: str, port: int, n: int) -> dict:
    """One connbench run, in ``cgroup`` (joined before exec) and in ``ns``."""
    script = 'echo $$ > "$1/cgroup.procs" && exec ip netns exec "$2" "$3" "$4" "$5" "$6"'
    p = subprocess.run(["sh", "-c", script, "sh", cgroup, ns, str(binary), ip, str(port), str(n)],
                       capture_output=True, text=True, timeout=120)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"connbench failed ({p.returncode}): {p.stdout}{p.stderr}") from None
    if p.returncode != 0 or r["connects"] != n:
        raise RuntimeError(f"connbench to {ip}:{port}: {r} ({os.strerror(r.get('first_errno') or 0)}) {p.stderr}")
    return r


# ---------------------------------------------------------------- benchmark

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("services", SERVICES)
def test_connect_rate(benchmark, connbench_bin, services, method):
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), mounts, network namespaces)")
    with ExitStack() as stack:
        cgroup = _private_cgroup(stack)
        ns = _netns(stack)
        server = _server(stack, connbench_bin, ns)
        target = BACKEND
        if method in ("socklb", "direct+lb"):
            _socklb(stack, cgroup, services)
        if method == "iptables":
            _iptables(ns, services)
        if method in ("socklb", "iptables"):
            target = service_addr(services - 1)  # the last service (end of KUBE-SERVICES)
        client(connbench_bin, cgroup, ns, *target, WARMUP)  # warm-up, not recorded

        inproc: list = []
        benchmark.group = f"connect-{services}"
        benchmark.extra_info.update(method=method, services=services, connects=CONNECTS,
                                    target=f"{target[0]}:{target[1]}")
        benchmark.pedantic(lambda: inproc.append(client(connbench_bin, cgroup, ns, *target, CONNECTS)["seconds"]),
                           rounds=ROUNDS, iterations=1)
        benchmark.extra_info.update(inprocess_seconds=inproc, inprocess_median=statistics.median(inproc),
                                    timed="subprocess wall time; inprocess_* is the connects alone")
        server.terminate()
        out, _ = server.communicate(timeout=10)
        accepted = json.loads(out.strip().splitlines()[-1])["accepted"]
        benchmark.extra_info["accepted"] = accepted
        # every connect reached the backend (a reset before accept may drop a few)
        assert accepted >= 0.99 * (WARMUP + ROUNDS * CONNECTS), accepted


@pytest.mark.parametrize("services", SERVICES)
def test_connect_paired(benchmark, connbench_bin, services):
    """direct and socklb interleaved in one environment, for a drift-free ratio.

    Two cgroup children, one with SockLB attached (S services programmed), one
    plain; same netns and backend. Each round runs both clients back to back
    (order alternating per round), so the per-round ratio
    t(direct) / t(socklb) = rate(socklb) / rate(direct) sees the same VM speed.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), mounts, network namespaces)")
    with ExitStack() as stack:
        plain = _private_cgroup(stack)
        lbcg = _private_cgroup(stack)
        ns = _netns(stack)
        server = _server(stack, connbench_bin, ns)
        _socklb(stack, lbcg, services)
        vip = service_addr(services - 1)
        runs = {"direct": (plain, BACKEND), "socklb": (lbcg, vip)}
        for cg, tgt in runs.values():
            client(connbench_bin, cg, ns, *tgt, WARMUP)
        times = {"direct": [], "socklb": []}
        k = [0]

        def pair():
            order = ("direct", "socklb") if k[0] % 2 == 0 else ("socklb", "direct")
            k[0] += 1
            for m in order:
                cg, tgt = runs[m]
                times[m].append(client(connbench_bin, cg, ns, *tgt, CONNECTS)["seconds"])

        benchmark.group = f"connect-{services}-paired"
        benchmark.extra_info.update(method="direct/socklb paired", paired=True, services=services,
                                    connects=CONNECTS, target=f"{vip[0]}:{vip[1]}")
        benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)
        ratios = [d / s for d, s in zip(times["direct"], times["socklb"])]
        benchmark.extra_info.update(direct_seconds=times["direct"], socklb_seconds=times["socklb"],
                                    ratios=ratios, ratio_median=statistics.median(ratios),
                                    timed="wall time of one direct + one socklb client run")
        server.terminate()
        out, _ = server.communicate(timeout=10)
        accepted = json.loads(out.strip().splitlines()[-1])["accepted"]
        benchmark.extra_info["accepted"] = accepted
        assert accepted >= 0.99 * (2 * WARMUP + 2 * ROUNDS * CONNECTS), accepted
