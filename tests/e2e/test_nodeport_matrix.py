# SPDX-License-Identifier: MIT OR Apache-2.0
"""NodePort, externalIPs and LoadBalancer IPs in the simulator (issue 20): the matrix

    {NodePort, externalIP, LoadBalancer IP} x {TCP, UDP} x {backend local, remote}
      x {eTP Cluster, Local} x {client outside, in a pod, on the node}

plus iTP Local for ClusterIP, ClientIP affinity on a NodePort, healthCheckNodePort, and the Event of a
Service that cannot be served. One cluster for the module: 2 nodes, the backend ``be1`` on node1 (so a
client entering by or sitting on node1 has its backend local, node2 remote), client pods on both nodes,
and two external hosts on the underlay sending from documentation addresses (``ext1`` reaches the
external IPs through node1, ``ext2`` through node2). Each cell checks who answered and, where the
contract says so, the client address the backend saw (pods answer ``PEER`` with it).

In-pod and on-node clients are balanced by the socket LB at connect(); outside clients need the tc
program on the node's uplink (the datapath half of issue 20): those cells skip while it is not built.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
from kubernetes import client, config
from testutil import eventually, sim

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CL = "np"
EXT = {"ext1": "203.0.113.7", "ext2": "203.0.113.8"}
XIP = {"Cluster": "198.51.100.10", "Local": "198.51.100.11"}
LBIP = {"Cluster": "198.51.100.20", "Local": "198.51.100.21"}
PORTS = {"tcp": 80, "udp": 81}


def _uplink_built() -> bool:
    """The datapath's program for traffic from outside (NodePort/EXTERNAL frontends at scope EXT on the node's
    uplink) is in this tree: a BPF source other than the socket LB's that reads the EXTERNAL flag."""
    for f in glob.glob(os.path.join(REPO, "bpf", "**", "*.[ch]"), recursive=True):
        if f.endswith(("layout.h", "lb.h", "sock_lb.bpf.c")):
            continue
        with open(f, errors="replace") as fh:
            if "MC_SVC_F_EXTERNAL" in fh.read():
                return True
    return False


UPLINK = _uplink_built()
NEEDS_UPLINK = pytest.mark.skipif(not UPLINK, reason="outside clients need the tc program on the node's uplink "
                                  "(branch nodeport-dp, issue 20 datapath half), not in this tree yet")

PROBE = r'''
import json, socket, sys
out = {}
for t in json.loads(sys.argv[1]):
    try:
        if t["proto"] == "tcp":
            s = socket.create_connection((t["ip"], t["port"]), timeout=float(sys.argv[2]))
            s.settimeout(float(sys.argv[2]))
            f = s.makefile("rb")
            name = f.readline().decode().strip()
            s.sendall(b"PEER\n")
            peer = f.readline().decode().split()[1]
            s.close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(float(sys.argv[2]))
            s.sendto(b"PEER", (t["ip"], t["port"]))
            name, peer = s.recv(200).decode().split()
            s.close()
        out[t["id"]] = [name, peer]
    except (OSError, IndexError, ValueError) as e:
        out[t["id"]] = ["error", type(e).__name__]
print(json.dumps(out))
'''


def wait(pred, timeout=60.0, what="condition"):
    return eventually(pred, timeout, what, interval=0.5)


def pod(name, labels, node, serve=True):
    ports = [{"name": "tcp", "containerPort": 8080, "protocol": "TCP"},
             {"name": "udp", "containerPort": 8081, "protocol": "UDP"}] if serve else []
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "sim", "ports": ports}]}}


def service(name, selector, type="ClusterIP", **spec):
    return {"metadata": {"name": name}, "spec": dict({
        "type": type, "selector": selector,
        "ports": [{"name": "tcp", "port": PORTS["tcp"], "targetPort": "tcp", "protocol": "TCP"},
                  {"name": "udp", "port": PORTS["udp"], "targetPort": "udp", "protocol": "UDP"}]}, **spec)}


def ready(core, name):
    try:
        p = core.read_namespaced_pod(name, "default")
    except client.ApiException:
        return None
    return p if p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) else None


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = tmp_path_factory.mktemp("nproot")
    try:
        sim(root, "up", "--name", CL, "--nodes", "2")
        c = client.Configuration()
        config.load_kube_config(config_file=os.path.join(root, CL, "kubeconfig"), client_configuration=c)
        core = client.CoreV1Api(client.ApiClient(c))
        nodes = {n.metadata.name: next(a.address for a in n.status.addresses if a.type == "InternalIP")
                 for n in core.list_node().items}
        n1, n2 = f"{CL}-node1", f"{CL}-node2"
        for h, via in (("ext1", n1), ("ext2", n2)):
            sim(root, "host", "add", h, "--name", CL, "--ip", EXT[h])
            # the router in front of the cluster: external and LoadBalancer IPs go to one node
            # (src: the host sends from its documentation address, as the backend must see under eTP Local)
            sim(root, "exec", "--name", CL, f"host/{h}", "--", "ip", "route", "replace", "198.51.100.0/24", "via",
                nodes[via], "src", EXT[h])
        core.create_namespaced_pod("default", pod("be1", {"app": "be", "pair": "yes"}, n1))
        core.create_namespaced_pod("default", pod("be2", {"pair": "yes"}, n2))
        core.create_namespaced_pod("default", pod("c1", {"role": "client"}, n1, serve=False))
        core.create_namespaced_pod("default", pod("c2", {"role": "client"}, n2, serve=False))
        for etp in ("Cluster", "Local"):
            low = etp.lower()
            core.create_namespaced_service("default", service(f"np-{low}", {"app": "be"}, "NodePort",
                                                              externalTrafficPolicy=etp))
            core.create_namespaced_service("default", service(f"xip-{low}", {"app": "be"}, externalIPs=[XIP[etp]],
                                                              externalTrafficPolicy=etp))
            core.create_namespaced_service("default", service(f"lb-{low}", {"app": "be"}, "LoadBalancer",
                                                              externalTrafficPolicy=etp))
            core.patch_namespaced_service_status(f"lb-{low}", "default",
                                                 {"status": {"loadBalancer": {"ingress": [{"ip": LBIP[etp]}]}}})
        for name in ("be1", "be2", "c1", "c2"):
            wait(lambda n=name: ready(core, n), what=f"pod {name}")
        yield {"root": root, "core": core, "nodes": nodes, "n1": n1, "n2": n2,
               "pods": {p: core.read_namespaced_pod(p, "default").status.pod_ip for p in ("c1", "c2")}}
    finally:
        hosts = json.loads(sim(root, "host", "list", "--name", CL, "-o", "json", check=False).stdout or "[]")
        sim(root, "down", "--all", check=False)
        left = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        assert not {h["netns"] for h in hosts} & left, "sim down left an external host's namespace"


def probe(root, where, targets, timeout=1.5):
    p = sim(root, "exec", "--name", CL, where, "--", sys.executable, "-c", PROBE, json.dumps(targets), str(timeout))
    return json.loads(p.stdout)


def node_port(core, svc, proto):
    s = core.read_namespaced_service(svc, "default")
    return next(p.node_port for p in s.spec.ports if p.protocol == proto.upper())


def cells(c, client_kind):
    """Every cell of the matrix for one kind of client: (where the client runs, target, expected backend or
    None for no answer, expected peer address or None for unchecked)."""
    core, nodes, n1, n2 = c["core"], c["nodes"], c["n1"], c["n2"]
    out = []
    for side, entry in (("local", n1), ("remote", n2)):
        where = {"outside": f"host/{'ext1' if side == 'local' else 'ext2'}",
                 "pod": f"default/{'c1' if side == 'local' else 'c2'}",
                 "node": f"node/{entry}"}[client_kind]
        client_ip = {"outside": EXT["ext1" if side == "local" else "ext2"],
                     "pod": c["pods"]["c1" if side == "local" else "c2"], "node": None}[client_kind]
        for etp in ("Cluster", "Local"):
            low = etp.lower()
            for proto in ("tcp", "udp"):
                targets = [("nodeport", nodes[entry], node_port(core, f"np-{low}", proto)),
                           ("externalip", XIP[etp], PORTS[proto]), ("lbip", LBIP[etp], PORTS[proto])]
                if client_kind != "outside":  # any node's address reaches a NodePort from inside (wildcard)
                    other = n2 if entry == n1 else n1
                    targets.append(("nodeport-other-node", nodes[other], node_port(core, f"np-{low}", proto)))
                for kind, ip, port in targets:
                    drop = client_kind == "outside" and etp == "Local" and side == "remote"
                    peer = None
                    if client_kind == "pod":
                        peer = client_ip  # the socket LB never rewrites the source
                    elif client_kind == "outside" and not drop:
                        # eTP Local and a local backend: the client's own address; a remote one: SNAT to the node
                        peer = client_ip if (etp == "Local" or side == "local") else nodes[entry]
                    out.append({"id": f"{kind}/{proto}/backend-{side}/eTP-{etp}/{client_kind}", "where": where,
                                "proto": proto, "ip": ip, "port": port,
                                "want": None if drop else "default/be1", "peer": peer})
    return out


def run_matrix(c, client_kind):
    want = cells(c, client_kind)
    by_where = {}
    for cell in want:
        by_where.setdefault(cell["where"], []).append(cell)

    def bad():
        got = {}
        for where, cs in by_where.items():
            got.update(probe(c["root"], where, [{k: x[k] for k in ("id", "proto", "ip", "port")} for x in cs]))
        wrong = []
        for cell in want:
            name, peer = got[cell["id"]]
            if cell["want"] is None:
                if name != "error":
                    wrong.append(f"{cell['id']}: answered by {name}, expected no answer")
            elif name != cell["want"]:
                wrong.append(f"{cell['id']}: {cell['ip']}:{cell['port']} -> {name} {peer}, expected {cell['want']}")
            elif cell["peer"] and peer != cell["peer"]:
                wrong.append(f"{cell['id']}: backend saw {peer}, expected {cell['peer']}")
        return wrong

    last = []

    def ok():
        last[:] = bad()
        return not last

    try:
        wait(ok, timeout=90, what=f"{client_kind} cells")
    except AssertionError:
        raise AssertionError(f"{len(last)} of {len(want)} {client_kind} cells wrong:\n" + "\n".join(last)) from None
    return len(want)


def test_matrix_client_in_a_pod(cl):
    assert run_matrix(cl, "pod") == 32


def test_matrix_client_on_the_node(cl):
    assert run_matrix(cl, "node") == 32


@NEEDS_UPLINK
def test_matrix_client_outside(cl):
    assert run_matrix(cl, "outside") == 24


def test_internal_traffic_policy_local_for_clusterip(cl):
    core, root = cl["core"], cl["root"]
    core.create_namespaced_service("default", service("itp", {"pair": "yes"}, internalTrafficPolicy="Local"))
    ip = core.read_namespaced_service("itp", "default").spec.cluster_ip
    for where, mine in (("default/c1", "default/be1"), ("default/c2", "default/be2"),
                        (f"node/{cl['n1']}", "default/be1")):
        targets = [{"id": f"{proto}{i}", "proto": proto, "ip": ip, "port": PORTS[proto]}
                   for proto in ("tcp", "udp") for i in range(6)]
        wait(lambda: {v[0] for v in probe(root, where, targets).values()} == {mine},
             what=f"iTP Local from {where}: only {mine}")


def test_session_affinity_client_ip_on_a_nodeport(cl):
    core, root, nodes = cl["core"], cl["root"], cl["nodes"]
    core.create_namespaced_service("default", service("aff", {"pair": "yes"}, "NodePort",
                                                      sessionAffinity="ClientIP"))
    port = node_port(core, "aff", "tcp")
    targets = [{"id": str(i), "proto": "tcp", "ip": nodes[cl["n1"]], "port": port} for i in range(12)]
    plain = [{"id": str(i), "proto": "tcp", "ip": nodes[cl["n1"]], "port": node_port(core, "np-cluster", "tcp")}
             for i in range(2)]
    # both backends are in (without affinity a dozen connections would see both), and one client sticks to one
    wait(lambda: all(v[0] != "error" for v in probe(root, "default/c2", targets + plain).values()),
         what="affinity Service programmed")
    for where in ("default/c1", "default/c2"):
        seen = {v[0] for v in probe(root, where, targets).values()}
        assert len(seen) == 1 and seen <= {"default/be1", "default/be2"}, (where, seen)
    if UPLINK:
        seen = {v[0] for v in probe(root, "host/ext1", targets).values()}
        assert len(seen) == 1 and seen <= {"default/be1", "default/be2"}, seen


def test_health_check_node_port_answers_per_node(cl):
    core, root, nodes = cl["core"], cl["root"], cl["nodes"]
    hc = core.read_namespaced_service("lb-local", "default").spec.health_check_node_port
    assert hc
    code = ("import json,sys,urllib.request,urllib.error\n"
            "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=3); print(r.status, r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code, e.read().decode())\n"
            "except OSError as e:\n print(0, json.dumps({'error': str(e)}))\n")

    def get(node):
        out = sim(root, "exec", "--name", CL, "host/ext1", "--", sys.executable, "-c", code,
                  f"http://{nodes[node]}:{hc}/healthz").stdout.split(" ", 1)
        return int(out[0]), json.loads(out[1])

    # node1 has the backend: 200; node2 has none: 503, so a load balancer sends nothing there
    assert wait(lambda: get(cl["n1"])[0] == 200, what="node1 healthz 200") and True
    assert get(cl["n1"])[1] == {"service": {"namespace": "default", "name": "lb-local"}, "localEndpoints": 1,
                                "serviceProxyHealthy": True}
    code2, body2 = wait(lambda: (lambda r: r if r[0] == 503 else None)(get(cl["n2"])), what="node2 healthz 503")
    assert body2["localEndpoints"] == 0


def test_a_service_that_cannot_be_served_gets_an_event(cl):
    core = cl["core"]
    core.create_namespaced_service("default", service("dup-a", {"app": "be"}, externalIPs=["198.51.100.99"]))
    core.create_namespaced_service("default", service("dup-b", {"app": "be"}, externalIPs=["198.51.100.99"]))

    def event():
        evs = core.list_namespaced_event("default").items
        return [e for e in evs if e.reason == "FrontendConflict" and e.involved_object.name in ("dup-a", "dup-b")]

    (e, *_) = wait(event, what="FrontendConflict Event")
    assert e.involved_object.kind == "Service" and "already used by" in e.message


def test_external_hosts_are_listed_and_deleted(cl):
    root = cl["root"]
    hosts = json.loads(sim(root, "host", "list", "--name", CL, "-o", "json").stdout)
    assert [(h["name"], h["extra"], h["present"]) for h in hosts] == [("ext1", EXT["ext1"], True),
                                                                       ("ext2", EXT["ext2"], True)]
    sim(root, "host", "add", "tmp", "--name", CL)
    tmp = next(h for h in json.loads(sim(root, "host", "list", "--name", CL, "-o", "json").stdout)
               if h["name"] == "tmp")
    assert tmp["ip"].startswith("172.30.254.") and tmp["ip"] not in {h["ip"] for h in hosts}
    # it reaches a node over the underlay (the agent's healthCheckNodePort listener answers there)
    hc = cl["core"].read_namespaced_service("lb-local", "default").spec.health_check_node_port
    connect = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()"
    assert sim(root, "exec", "--name", CL, "host/tmp", "--", sys.executable, "-c", connect, cl["nodes"][cl["n1"]],
               str(hc), check=False).returncode == 0
    assert "already exists" in sim(root, "host", "add", "tmp", "--name", CL, check=False).stderr
    sim(root, "host", "del", "tmp", "--name", CL)
    assert tmp["netns"] not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert sim(root, "host", "del", "tmp", "--name", CL, check=False).returncode == 1
