# SPDX-License-Identifier: MIT OR Apache-2.0
"""The socket load balancer with real sockets.

Safety: programs are attached only to a child cgroup of a private cgroup2
mount; every client runs in that cgroup *and* in a network namespace the test
created, with only `lo` up, so an un-rewritten connect to the service ranges
(198.51.100.0/24, 2001:db8::/32, documentation addresses) is unroutable and
can never leave the machine. Backends listen on loopback in the same netns.
"""
import json
import os
import subprocess
import sys

import pytest

from meshcni.datapath import Backend, Frontend, Service, ServiceDatapath, SockLB
from meshcni.datapath.socklb import query

pytestmark = pytest.mark.kernel
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "lbprobe.py")
SVC4, SVC6 = "198.51.100.10", "2001:db8::10"
BACKENDS4 = [("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)]
BACKENDS6 = [("::1", 9101), ("::1", 9102), ("::1", 9103)]
CHI2_DF2_P001 = 13.816


@pytest.fixture
def cgroup(cgroup2_child):
    return cgroup2_child


@pytest.fixture
def lb(sock_lb):
    return sock_lb


@pytest.fixture
def dp(pin_root):
    d = ServiceDatapath(pin_root)
    yield d
    d.close()


@pytest.fixture
def client_ns(netns):
    def make():
        ns = netns("mclb")
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        return ns
    return make


def _cmd(cgroup, ns, backends, ops):
    cfg = json.dumps({"backends": backends, "ops": ops})
    script = 'echo $$ > "$1/cgroup.procs" && exec ip netns exec "$2" "$3" "$4" "$5"'
    return ["sh", "-c", script, "sh", cgroup, ns, sys.executable, HELPER, cfg]


def probe(cgroup, ns, backends, ops):
    p = subprocess.run(_cmd(cgroup, ns, backends, ops), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def probe_many(cgroup, nss, backends, ops):
    procs = [subprocess.Popen(_cmd(cgroup, ns, backends, ops), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ns in nss]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=60)
        assert p.returncode == 0, se
        out.append(json.loads(so))
    return out


def svc(name, ip, port, backends, svc_id, proto="tcp", **kw):
    return Service(name, [Frontend(ip, port, proto)], [Backend(*b) for b in backends], svc_id, **kw)


def test_tcp_and_udp_reach_a_backend_as_the_service_address(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/tcp", SVC4, 80, BACKENDS4, 1), svc("t/udp", SVC4, 53, BACKENDS4, 2, "udp")])
    t, u = probe(cgroup, client_ns(), BACKENDS4, [
        {"op": "tcp", "ip": SVC4, "port": 80, "n": 20},
        {"op": "udp", "ip": SVC4, "port": 53, "n": 10}])
    assert t["errors"] == [] and len(t["hits"]) == 20 and min(t["hits"]) >= 0
    # getpeername on the connected socket: the service, never the backend
    assert t["peers"] == [[SVC4, 80]] * 20
    assert u["errors"] == [] and min(u["hits"]) >= 0
    # recvfrom: the reply appears to come from the service address
    assert u["srcs"] == [[SVC4, 53]] * 10


def test_random_spread_passes_chi_square(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/tcp", SVC4, 80, BACKENDS4, 1)])
    (t,) = probe(cgroup, client_ns(), BACKENDS4, [{"op": "tcp", "ip": SVC4, "port": 80, "n": 600}])
    assert t["errors"] == [] and len(t["hits"]) == 600
    counts = [t["hits"].count(i) for i in range(3)]
    chi2 = sum((c - 200) ** 2 / 200 for c in counts)
    assert chi2 < CHI2_DF2_P001, counts


def test_zero_backends_refuse(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/none", SVC4, 80, [], 1), svc("t/none-udp", SVC4, 53, [], 2, "udp")])
    t, u = probe(cgroup, client_ns(), BACKENDS4, [
        {"op": "tcp", "ip": SVC4, "port": 80, "n": 3},
        {"op": "udp", "ip": SVC4, "port": 53, "n": 3}])
    assert t["errors"] == ["ECONNREFUSED"] * 3
    assert len(u["errors"]) == 3 and set(u["errors"]) <= {"ECONNREFUSED", "EPERM"}


def test_attach_twice_is_a_noop_and_detach_restores_plain_sockets(pin_root, dp, cgroup, client_ns):
    dp.apply([svc("t/tcp", SVC4, 80, BACKENDS4, 1)])
    s = SockLB(pin_root)
    try:
        first = s.attach(cgroup)
        assert set(first.values()) == {"attached"} and len(first) == 8
        types = [s.attach_type(p) for p in s.programs]
        before = {t: query(cgroup, t) for t in types}
        assert all(len(ids) == 1 for ids in before.values())
        # a second agent (new object, same pins) attaching again changes nothing
        s2 = SockLB(pin_root)
        try:
            second = s2.attach(cgroup)
            assert set(second.values()) == {"updated"}  # same code, new program: atomic swap
            assert set(s2.attach(cgroup).values()) == {"kept"}
            assert all(len(query(cgroup, t)) == 1 for t in types)
        finally:
            s2.close()
        ns = client_ns()
        (t,) = probe(cgroup, ns, BACKENDS4, [{"op": "tcp", "ip": SVC4, "port": 80, "n": 3}])
        assert t["errors"] == []
        assert s.detach(cgroup) == 8
        assert all(query(cgroup, t) == [] for t in types)
        assert os.listdir(os.path.join(pin_root, "links")) == []
        # plain behaviour again: the service range is unroutable in the netns
        (t,) = probe(cgroup, ns, BACKENDS4, [{"op": "tcp", "ip": SVC4, "port": 80, "n": 1}])
        assert t["errors"] == ["ENETUNREACH"]
    finally:
        s.detach(cgroup)
        s.close()


def test_ipv6_tcp_udp_and_getpeername(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/tcp6", SVC6, 80, BACKENDS6, 1), svc("t/udp6", SVC6, 53, BACKENDS6, 2, "udp"),
              svc("t/none6", "2001:db8::11", 80, [], 3)])
    t, u, z = probe(cgroup, client_ns(), BACKENDS6, [
        {"op": "tcp", "ip": SVC6, "port": 80, "n": 30},
        {"op": "udp", "ip": SVC6, "port": 53, "n": 5},
        {"op": "tcp", "ip": "2001:db8::11", "port": 80, "n": 1}])
    assert t["errors"] == [] and len(set(t["hits"])) >= 2 and min(t["hits"]) >= 0
    assert t["peers"] == [[SVC6, 80]] * 30
    assert u["errors"] == [] and u["srcs"] == [[SVC6, 53]] * 5
    assert z["errors"] == ["ECONNREFUSED"]


def test_affinity_holds_until_timeout(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/sticky", SVC4, 80, BACKENDS4, 1, affinity_timeout=2)])
    nss = [client_ns() for _ in range(10)]
    ops = [{"op": "tcp", "ip": SVC4, "port": 80, "n": 15},
           {"op": "sleep", "s": 0.5},
           {"op": "tcp", "ip": SVC4, "port": 80, "n": 15},
           {"op": "sleep", "s": 2.6},
           {"op": "tcp", "ip": SVC4, "port": 80, "n": 15}]
    res = probe_many(cgroup, nss, BACKENDS4, ops)
    changed = 0
    for r in res:
        a, b, c = r[0]["hits"], r[2]["hits"], r[4]["hits"]
        assert len(set(a + b)) == 1, (a, b)  # one backend while the session lives
        assert len(set(c)) == 1, c  # a new session is sticky again
        changed += c[0] != a[0]
    # after the timeout each client chose afresh (random: 2/3 move); P(<=1 of 10 moved) < 1e-3
    assert changed >= 2
    # and 10 clients did not all land on one backend, so the stickiness is per client
    assert len({r[0]["hits"][0] for r in res}) >= 2


def test_maglev_moves_only_clients_of_a_removed_backend(lb, dp, cgroup, client_ns):
    dp.apply([svc("t/mg", SVC4, 80, BACKENDS4, 1, maglev=True)])
    nss = [client_ns() for _ in range(40)]
    ops = [{"op": "tcp", "ip": SVC4, "port": 80, "n": 3}]
    before = []
    for r in probe_many(cgroup, nss, BACKENDS4, ops):
        assert len(set(r[0]["hits"])) == 1 and r[0]["hits"][0] >= 0  # consistent per client
        before.append(r[0]["hits"][0])
    assert len(set(before)) == 3
    dp.apply([svc("t/mg", SVC4, 80, [BACKENDS4[0], BACKENDS4[2]], 1, maglev=True)])
    after = [r[0]["hits"][0] for r in probe_many(cgroup, nss, BACKENDS4, ops)]
    assert 1 not in after
    # a removal refills only the removed backend's slots (maglev_table's
    # previous=): no client of a surviving backend moves
    assert all(a == b for b, a in zip(before, after) if b != 1), (before, after)


def test_backend_ids_of_removed_backends_are_forgotten(dp):
    """Under endpoint churn the id table stays proportional to the live backends."""
    for r in range(12):
        svc = Service(name="churn", frontends=[Frontend("10.96.7.1", 80, "tcp")], svc_id=1,
                      backends=[Backend(f"10.{r}.{i // 256}.{i % 256}", 8080) for i in range(300)])
        res = dp.apply([svc])
        assert len(dp.maps.backends) == 300
        assert res["backend_ids_known"] <= 2 * 300 + 1024
    assert len(dp._ids) < 12 * 300  # pruned, not one id per backend ever seen
    ids = {b for b in dp._ids.values()}
    assert len(ids) == len(dp._ids)  # never two backends on one id
    k, _ = dp.maps.backends.dump()
    assert set(k["backend_id"].tolist()) <= ids
