# SPDX-License-Identifier: MIT OR Apache-2.0
"""From a NetworkPolicy change to enforcement on real packets, in the simulator.

A two-node simulated cluster with agents; pod x/a on node 1 sends UDP
probes to pod y/b on node 2 every few milliseconds from a worker inside the
pod, which reports (CLOCK_MONOTONIC, shared by every namespace) when the
answers stop or start again. Measured, side by side in one run:

- ``create``: POST a NetworkPolicy isolating y/b -> the first unanswered probe;
- ``delete``: DELETE it -> the first answered probe;
- ``watch`` (the baseline, the floor any controller has): POST a
  NetworkPolicy -> a watch opened beforehand by this process sees it.

The ratio enforcement / watch says how much the agent (informer, compile,
map writes) adds on top of the API round trip. Run:

    python -m pytest benchmarks/test_policy_enforcement.py --benchmark-only
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest
from kubernetes import client, config, watch

from meshcni.sim.kubelet import in_pod_argv, read_pod_record

pytestmark = pytest.mark.e2e

# inside x/a: "deny"/"allow" -> probe y/b until the state flips, print the monotonic time of the flip
WORKER = r"""
import json, socket, sys, time
dst = (sys.argv[1], 80)
port = 20000
def probe():
    global port
    port = 20000 if port >= 60000 else port + 1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port)); s.connect(dst); s.settimeout(0.01)
    t = time.monotonic()
    try:
        s.send(b"p"); s.recv(64); return t, True
    except OSError:
        return t, False
    finally:
        s.close()
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    want_answer = line.strip() == "allow"
    misses, first = 0, None
    while True:
        t, ok = probe()
        if ok == want_answer and want_answer:
            print(json.dumps(t), flush=True); break
        if not want_answer:
            if ok:
                misses, first = 0, None
            else:
                first = first if first is not None else t
                misses += 1
                if misses >= 3:  # three in a row: dropped, not a slow answer
                    print(json.dumps(first), flush=True); break
"""

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "isolate-b", "namespace": "y"},
          "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}}


def sim(root, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "meshcni.cli", "sim", "--state-root", str(root), *args],
                       capture_output=True, text=True, timeout=240)
    if check and p.returncode:
        raise AssertionError(f"sim {' '.join(args)}: {p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("enforce")
    worker = None
    try:
        sim(root, "up", "--name", "pe", "--nodes", "2")
        c = client.Configuration()
        config.load_kube_config(config_file=os.path.join(root, "pe", "kubeconfig"), client_configuration=c)
        api = client.ApiClient(c)
        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        for ns, pod, node in (("x", "a", "pe-node1"), ("y", "b", "pe-node2")):
            core.create_namespace({"metadata": {"name": ns, "labels": {"ns": ns}}})
            core.create_namespaced_pod(ns, {"metadata": {"name": pod, "labels": {"pod": pod}}, "spec": {
                "nodeName": node, "containers": [{"name": "app", "image": "sim", "ports": [
                    {"containerPort": 80, "protocol": "UDP"}]}]}})
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pods = [core.read_namespaced_pod(p, ns) for ns, p in (("x", "a"), ("y", "b"))]
            if all(p.status.phase == "Running" and p.status.pod_ip for p in pods):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("pods did not start")
        rec = read_pod_record(os.path.join(str(root), "pe", "pods"), "x", "a")
        worker = subprocess.Popen(in_pod_argv(rec, [sys.executable, "-c", WORKER, pods[1].status.pod_ip]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(worker.stdout.readline()) == "ready"

        def ask(what):
            worker.stdin.write(what + "\n")
            worker.stdin.flush()
            return json.loads(worker.stdout.readline())
        ask("allow")  # the path works before anything is measured
        yield net, ask
    finally:
        if worker is not None:
            worker.kill()
            worker.wait(5)
        sim(root, "down", "--all", check=False)


def test_policy_create_to_enforced(benchmark, cluster):
    net, ask = cluster

    def once():
        t0 = time.monotonic()
        net.create_namespaced_network_policy("y", dict(POLICY))
        return ask("deny") - t0

    def cleanup():
        try:
            net.delete_namespaced_network_policy("isolate-b", "y")
        except client.ApiException:
            pass
        ask("allow")
    lat = []
    benchmark.pedantic(lambda: lat.append(once()), setup=cleanup, rounds=15, iterations=1)
    cleanup()
    # the timed call also waits for two more unanswered probes (20 ms) to be sure; the flip
    # itself is the first unanswered probe
    benchmark.extra_info["flip_median_ms"] = round(1000 * sorted(lat)[len(lat) // 2], 1)


def test_policy_delete_to_lifted(benchmark, cluster):
    net, ask = cluster

    def setup():
        net.create_namespaced_network_policy("y", dict(POLICY))
        ask("deny")

    lat = []

    def once():
        t0 = time.monotonic()
        net.delete_namespaced_network_policy("isolate-b", "y")
        lat.append(ask("allow") - t0)
    benchmark.pedantic(once, setup=setup, rounds=15, iterations=1)
    benchmark.extra_info["flip_median_ms"] = round(1000 * sorted(lat)[len(lat) // 2], 1)


def test_baseline_watch_sees_the_change(benchmark, cluster):
    net, _ = cluster
    seen: "queue.Queue[str]" = queue.Queue()
    w = watch.Watch()

    def follow():
        try:
            for ev in w.stream(net.list_namespaced_network_policy, "y", timeout_seconds=120):
                seen.put(ev["type"])
        except Exception:  # the stream ends with the cluster
            pass
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.5)

    def setup():
        try:
            net.delete_namespaced_network_policy("isolate-b", "y")
        except client.ApiException:
            pass
        time.sleep(0.05)
        while not seen.empty():
            seen.get()

    def once():
        net.create_namespaced_network_policy("y", dict(POLICY))
        while seen.get(timeout=10) != "ADDED":
            pass
    benchmark.pedantic(once, setup=setup, rounds=15, iterations=1)
    setup()
    w.stop()
