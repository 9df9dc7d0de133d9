# SPDX-License-Identifier: MIT OR Apache-2.0
"""The controller's leader SIGKILLed in the middle of a burst of new label sets (issue 15 fault table).

Two ``meshcni controller`` processes (the CLI, leader election on, short
lease timings) against the in-process API server. 500 pods, each with a
label set nobody has used, are created by 4 writers; when a third of them
are in, the leader is SIGKILLed (no clean shutdown, its Lease is left to
expire). The other replica must take over and finish: every label set gets
exactly one Identity, and no two Identities ever share an id — checked on
every list taken during the run, not only at the end.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from meshcni.apiserver import APIServer
from meshcni.controllers import identity as idm
from meshcni.k8s import api_client
from testutil import eventually

pytestmark = pytest.mark.pure

SETS = int(os.environ.get("MESHCNI_FAILOVER_SETS", "500"))
NS = "burst"
LEASE = ("--leader-elect-lease-duration=2", "--leader-elect-renew-deadline=1.5", "--leader-elect-retry-period=0.2")


def replica(kc, name, log):
    return subprocess.Popen([sys.executable, "-m", "meshcni.cli", "controller", f"--kubeconfig={kc}",
                             f"--identity={name}", "--lease-namespace=default", "--metrics-address=127.0.0.1:0",
                             "--gc-grace=300", *LEASE], stdout=log, stderr=subprocess.STDOUT)


def holder(coord):
    try:
        return coord.read_namespaced_lease("meshcni-controller", "default").spec.holder_identity
    except client.ApiException:
        return None


def test_leader_killed_mid_burst_second_replica_finishes(tmp_path):
    with APIServer(crd_dir="deploy/crds", bookmark_interval=0.2) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kc"))
        api = api_client(kc)
        core, custom, coord = client.CoreV1Api(api), client.CustomObjectsApi(api), client.CoordinationV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("ctl-a", "ctl-b")}
        procs = {"ctl-a": replica(kc, "ctl-a", logs["ctl-a"])}
        try:
            eventually(lambda: holder(coord) == "ctl-a", 30, "ctl-a leading", interval=0.05)
            procs["ctl-b"] = replica(kc, "ctl-b", logs["ctl-b"])
            time.sleep(1.0)  # ctl-b is up and campaigning
            dup_seen, lists = [], [0]
            stop = threading.Event()

            def watch_ids():
                # every list during the run: no id on two Identities, ever
                while not stop.is_set():
                    items = custom.list_namespaced_custom_object(idm.GROUP, idm.VERSION, NS, "identities")["items"]
                    ids = [o["spec"]["id"] for o in items]
                    if len(ids) != len(set(ids)):
                        dup_seen.append(sorted(i for i in set(ids) if ids.count(i) > 1))
                    lists[0] += 1
                    time.sleep(0.05)
            w = threading.Thread(target=watch_ids)
            w.start()
            created = [0]
            killed = {}

            def make(i):
                core.create_namespaced_pod(NS, {"metadata": {"name": f"p{i}", "labels": {"set": f"s{i}"}},
                                                "spec": {"containers": [{"name": "c", "image": "x"}]}})
                created[0] += 1
                if created[0] >= SETS // 3 and not killed:
                    killed["at"], killed["wall"] = time.monotonic(), time.time()
                    killed["n"] = created[0]
                    procs["ctl-a"].send_signal(signal.SIGKILL)  # no clean shutdown: the Lease must expire
            t0 = time.monotonic()
            with ThreadPoolExecutor(4) as ex:
                list(ex.map(make, range(SETS)))
            burst = time.monotonic() - t0
            assert procs["ctl-a"].wait(10) == -signal.SIGKILL
            eventually(lambda: holder(coord) == "ctl-b", 30, "ctl-b took the lease", interval=0.05)
            # from the Lease itself: when ctl-b wrote its acquireTime (the poll above starts after the burst)
            took_over = coord.read_namespaced_lease("meshcni-controller", "default").spec.acquire_time.timestamp() \
                - killed["wall"]

            def complete():
                items = custom.list_namespaced_custom_object(idm.GROUP, idm.VERSION, NS, "identities")["items"]
                return items if len([o for o in items if idm.is_managed(o)]) >= SETS else None
            eventually(complete, 120, f"{SETS} Identities", interval=0.2)
            done = time.monotonic() - killed["at"]
            time.sleep(1.0)  # anything still in flight lands
            stop.set()
            w.join(10)
            items = custom.list_namespaced_custom_object(idm.GROUP, idm.VERSION, NS, "identities")["items"]
            managed = [o for o in items if idm.is_managed(o)]
            sets = [o["spec"]["podLabels"].get("set") for o in managed]
            ids = [o["spec"]["id"] for o in managed]
            print(f"{SETS} label sets; leader SIGKILLed after {killed['n']} pods ({burst:.1f} s burst); "
                  f"ctl-b acquired the Lease {took_over:.1f} s after the kill, all {len(managed)} Identities "
                  f"{done:.1f} s after it; {lists[0]} lists, duplicate ids seen: {len(dup_seen)}")
            assert len(items) == len(managed) == SETS
            assert sorted(sets) == sorted(f"s{i}" for i in range(SETS))  # every set exactly once
            assert len(set(ids)) == SETS and not dup_seen, dup_seen[:3]
            assert procs["ctl-b"].poll() is None
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
            for f in logs.values():
                f.close()
