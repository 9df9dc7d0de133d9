# SPDX-License-Identifier: MIT OR Apache-2.0
"""A small kubelet per simulated node: pods become namespaces, cgroups and processes.

For each Pod bound to the node it creates the pod's network namespace and a
cgroup v2 directory under the node's, calls the CNI plugins of the node's
conflist exactly as a container runtime would (:class:`meshcni.cni.runtime.Runtime`
in the node's namespace), starts the built-in server on the container ports
inside the pod (namespace + cgroup), and reports status.podIP(s), phase
Running and the Ready condition. A deleted Pod gets CNI DEL, its processes
killed, its namespace and cgroup removed.

The pod annotation ``sim.mesh-cni.dev/not-ready: "true"`` turns Ready off
(a failing readiness probe, for tests of endpoint conditions).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from ..cni.runtime import Attachment, PluginError, Runtime, load_conflist
from ..k8s.rest import get_json, send_json
from .controllers import NOT_READY_ANNOTATION, Loop
from .topology import Ledger, kill_cgroup, rm_cgroup, run, short

log = logging.getLogger("meshcni.sim.kubelet")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRecord:
    namespace: str
    name: str
    uid: str
    netns: str
    cgroup: str
    container_id: str
    ips: List[str]
    pid: int = 0

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


def pod_ports(pod: dict) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {"TCP": [], "UDP": []}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            proto = p.get("protocol", "TCP")
            # one listener per (port, protocol), however many containers name it
            if proto in out and isinstance(p.get("containerPort"), int) and p["containerPort"] not in out[proto]:
                out[proto].append(p["containerPort"])
    return out


def in_pod_argv(rec: PodRecord, argv: List[str]) -> List[str]:
    """argv run inside the pod: joined to its cgroup, then its network namespace."""
    script = 'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" -- "${@:3}"'
    return ["bash", "-c", script, "in-pod", rec.cgroup, rec.netns_path] + list(argv)


class Kubelet:
    def __init__(self, api, cluster: str, node: str, node_ip: str, node_netns: str, node_cgroup: str,
                 cni_dir: str, pods_dir: str, ledger: Ledger, workers: int = 4):
        self.api, self.cluster, self.node, self.node_ip = api, cluster, node, node_ip
        self.node_netns, self.node_cgroup = node_netns, node_cgroup
        self.cni_dir, self.pods_dir, self.ledger = cni_dir, pods_dir, ledger
        self.running: Dict[str, PodRecord] = {}
        self.failed: Dict[str, str] = {}
        self.busy: set = set()
        self.lock = threading.Lock()
        self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix=f"kubelet-{node}")
        self.loop = Loop(f"kubelet-{node}", api, [f"/api/v1/pods?fieldSelector=spec.nodeName={node}"],
                         self.sync, 3.0)
        os.makedirs(pods_dir, exist_ok=True)

    # -- CNI --

    def runtime(self) -> Runtime:
        conf_dir = os.path.join(self.cni_dir, "net.d")
        files = sorted(f for f in os.listdir(conf_dir) if f.endswith((".conflist", ".conf")))
        if not files:
            raise RuntimeError(f"node {self.node}: no CNI config in {conf_dir}")
        return Runtime(load_conflist(os.path.join(conf_dir, files[0])), [os.path.join(self.cni_dir, "bin")],
                       cache_dir=os.path.join(self.cni_dir, "cache"), node_netns=f"/run/netns/{self.node_netns}")

    # -- lifecycle --

    def start(self) -> "Kubelet":
        self.loop.start()
        self.loop.wake.set()
        return self

    def stop(self, delete_pods: bool = True) -> None:
        self.loop.stop()
        self.pool.shutdown(wait=True)
        if delete_pods:
            for k in list(self.running):
                self._teardown(k)

    def sync(self) -> None:
        pods = get_json(self.api, "/api/v1/pods", [("fieldSelector", f"spec.nodeName={self.node}")])["items"]
        want = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods
                if not p["metadata"].get("deletionTimestamp")}
        with self.lock:
            for k, p in want.items():
                rec = self.running.get(k)
                if rec is not None and rec.uid != p["metadata"].get("uid"):
                    self._submit(k, self._teardown, k)  # same name, new pod: replace
                elif rec is None and k not in self.busy:
                    self._submit(k, self._setup, p)
                elif rec is not None and k not in self.busy:
                    self._submit(k, self._report, p, rec)
            for k in list(self.running):
                if k not in want and k not in self.busy:
                    self._submit(k, self._teardown_and_finalize, k)

    def _submit(self, k, fn, *args):
        self.busy.add(k)

        def job():
            try:
                fn(*args)
            except Exception:
                log.exception("node %s: pod %s", self.node, k)
            finally:
                with self.lock:
                    self.busy.discard(k)
        self.pool.submit(job)

    def _setup(self, pod: dict) -> None:
        m = pod["metadata"]
        k = f"{m['namespace']}/{m['name']}"
        uid = m.get("uid", "")
        ident = short(f"{self.cluster}/{k}/{uid}", 10)
        rec = PodRecord(m["namespace"], m["name"], uid, f"mcsp-{ident}",
                        os.path.join(self.node_cgroup, f"pod-{ident}"), f"sim{ident}", [])
        try:
            run("ip", "netns", "add", rec.netns)
            self.ledger.add("netns", rec.netns)
            os.makedirs(rec.cgroup, exist_ok=True)
            self.ledger.add("cgroup", rec.cgroup)
            att = Attachment(rec.container_id, rec.netns_path, "eth0",
                             {"K8S_POD_NAMESPACE": m["namespace"], "K8S_POD_NAME": m["name"], "K8S_POD_UID": uid})
            result = self.runtime().add(att)
            rec.ips = [i["address"].split("/")[0] for i in result.get("ips", [])]
            ports = pod_ports(pod)
            argv = [sys.executable, "-s", "-m", "meshcni.sim.podserver", "--name", k]
            argv += [a for p in ports["TCP"] for a in ("--tcp", str(p))]
            argv += [a for p in ports["UDP"] for a in ("--udp", str(p))]
            if ports["TCP"] or ports["UDP"]:
                logf = open(os.path.join(self.pods_dir, f"{m['namespace']}_{m['name']}.log"), "ab")
                pr = subprocess.Popen(in_pod_argv(rec, argv), stdout=subprocess.PIPE, stderr=logf,
                                      start_new_session=True)
                logf.close()
                line = pr.stdout.readline().decode().strip()
                pr.stdout.close()
                if line != "ready":
                    raise RuntimeError(f"pod server did not start (said {line!r})")
                rec.pid = pr.pid
                self.ledger.add("pid", pr.pid)
            with self.lock:
                self.running[k] = rec
                self.failed.pop(k, None)
            self._write_record(rec)
            self._report(pod, rec)
            log.info("node %s: pod %s running at %s", self.node, k, ",".join(rec.ips))
        except Exception as e:
            msg = e.msg if isinstance(e, PluginError) else str(e)
            log.error("node %s: pod %s: setup failed: %s", self.node, k, msg)
            self._cleanup(rec, cni=True)
            self.failed[k] = msg
            self._status(m["namespace"], m["name"], {
                "phase": "Pending", "hostIP": self.node_ip,
                "conditions": [{"type": "PodScheduled", "status": "True"},
                               {"type": "Ready", "status": "False", "reason": "NetworkSetupFailed",
                                "message": msg[:500]}]})
            self._event(pod, "FailedCreatePodSandBox", msg[:500])
            self.loop.wake.set()  # retried on the next sync

    def _report(self, pod: dict, rec: PodRecord) -> None:
        ready = (pod["metadata"].get("annotations") or {}).get(NOT_READY_ANNOTATION) != "true"
        st = pod.get("status") or {}
        cond_ready = next((c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        want_ready = "True" if ready else "False"
        if st.get("phase") == "Running" and st.get("podIP") == (rec.ips[0] if rec.ips else None) \
                and cond_ready == want_ready:
            return
        t = now()
        self._status(rec.namespace, rec.name, {
            "phase": "Running", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": rec.ips[0] if rec.ips else None, "podIPs": [{"ip": ip} for ip in rec.ips],
            "startTime": st.get("startTime") or t,
            "conditions": [{"type": c, "status": "True", "lastTransitionTime": t}
                           for c in ("PodScheduled", "Initialized")] +
                          [{"type": c, "status": want_ready, "lastTransitionTime": t}
                           for c in ("ContainersReady", "Ready")],
            "containerStatuses": [{"name": c.get("name", "app"), "ready": ready, "restartCount": 0,
                                   "image": c.get("image", ""), "imageID": "", "started": True,
                                   "state": {"running": {"startedAt": t}}}
                                  for c in (pod.get("spec") or {}).get("containers") or []],
        })

    def _status(self, ns: str, name: str, status: dict) -> None:
        try:
            send_json(self.api, "PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status},
                      "application/merge-patch+json")
        except Exception as e:  # the pod may be gone meanwhile
            log.debug("status of %s/%s: %s", ns, name, e)

    def _event(self, pod: dict, reason: str, message: str) -> None:
        m = pod["metadata"]
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{m['name']}.", "namespace": m["namespace"]},
              "involvedObject": {"kind": "Pod", "namespace": m["namespace"], "name": m["name"],
                                 "uid": m.get("uid", ""), "apiVersion": "v1"},
              "reason": reason, "message": message, "type": "Warning",
              "source": {"component": "kubelet", "host": self.node},
              "firstTimestamp": now(), "lastTimestamp": now(), "count": 1}
        with contextlib.suppress(Exception):
            send_json(self.api, "POST", f"/api/v1/namespaces/{m['namespace']}/events", ev)

    def _teardown_and_finalize(self, k: str) -> None:
        self._teardown(k)

    def _teardown(self, k: str) -> None:
        with self.lock:
            rec = self.running.pop(k, None)
        if rec is not None:
            self._cleanup(rec, cni=True)
            log.info("node %s: pod %s removed", self.node, k)

    def _cleanup(self, rec: PodRecord, cni: bool) -> None:
        kill_cgroup(rec.cgroup)
        if rec.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, 9)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(rec.pid, 0)
            self.ledger.remove("pid", rec.pid)
        if cni:
            try:
                self.runtime().delete(Attachment(rec.container_id, rec.netns_path, "eth0"))
            except Exception as e:
                log.error("node %s: CNI DEL of %s/%s: %s", self.node, rec.namespace, rec.name, e)
        run("ip", "netns", "del", rec.netns, check=False)
        self.ledger.remove("netns", rec.netns)
        for _ in range(40):
            if rm_cgroup(rec.cgroup):
                break
            import time
            time.sleep(0.05)
        if not os.path.exists(rec.cgroup):
            self.ledger.remove("cgroup", rec.cgroup)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(rec.namespace, rec.name))

    def _record_path(self, ns: str, name: str) -> str:
        return os.path.join(self.pods_dir, f"{ns}_{name}.json")

    def _write_record(self, rec: PodRecord) -> None:
        path = self._record_path(rec.namespace, rec.name)
        with open(path + ".tmp", "w") as f:
            json.dump(dict(asdict(rec), node=self.node), f)
        os.rename(path + ".tmp", path)


def read_pod_record(pods_dir: str, ns: str, name: str) -> Optional[PodRecord]:
    try:
        with open(os.path.join(pods_dir, f"{ns}_{name}.json")) as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    d.pop("node", None)
    return PodRecord(**d)
