# SPDX-License-Identifier: MIT OR Apache-2.0
"""kubectl against the API server, and the ``meshcni apiserver`` command."""
import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from meshcni.apiserver import APIServer, serve
from meshcni.apiserver.cli import add_parser

pytestmark = pytest.mark.pure

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
KUBECTL = shutil.which("kubectl")


def kubectl_minor():
    """kubectl's client minor version (Debian 12's kubernetes-client is 1.20)."""
    out = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True).stdout
    try:
        return int("".join(ch for ch in json.loads(out)["clientVersion"]["minor"] if ch.isdigit()))
    except (ValueError, KeyError):
        return 0

MANIFEST = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: mesh-cni.dev/v1alpha1
kind: Cluster
metadata:
  name: east
spec:
  secret: {name: east-kubeconfig, key: kubeconfig}
"""


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_smoke_any_version(tmp_path):
    """get and apply -f with whatever kubectl the machine has (Debian's 1.20 included).

    kubectl < 1.27 validates against the protobuf OpenAPI v2 document, which this
    server does not publish: it needs --validate=false (the server validates anyway)."""
    with APIServer(crd_dir=str(CRDS)) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECACHEDIR": str(tmp_path / "cache")}
        extra = ["--validate=false"] if kubectl_minor() < 27 else []

        def kubectl(*args):
            r = subprocess.run([KUBECTL, "--kubeconfig", kc, *args], capture_output=True, text=True, env=env,
                               timeout=60)
            assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
            return r.stdout
        assert "No resources found" in kubectl("get", "pods", "-A") + "No resources found"
        manifest = tmp_path / "objs.yaml"
        manifest.write_text(MANIFEST)
        out = kubectl("apply", *extra, "-f", str(manifest))
        assert "service/web created" in out and "cluster.mesh-cni.dev/east created" in out
        assert "east" in kubectl("get", "clusters")
        assert "web" in kubectl("get", "services")
        manifest.write_text(MANIFEST.replace("8080", "9090"))
        assert "service/web configured" in kubectl("apply", *extra, "-f", str(manifest))
        assert json.loads(kubectl("get", "svc", "web", "-o", "json"))["spec"]["ports"][0]["targetPort"] == 9090


@pytest.mark.skipif(KUBECTL is None or kubectl_minor() < 27, reason="needs kubectl >= 1.27 (server-side validation)")
def test_kubectl_get_apply_get(tmp_path):
    with APIServer(crd_dir=str(CRDS)) as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECACHEDIR": str(tmp_path / "cache")}

        def kubectl(*args, ok=True):
            r = subprocess.run([KUBECTL, "--kubeconfig", kc, *args], check=False, capture_output=True, text=True,
                               timeout=60, env=env)
            if ok:
                assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
            return r

        client.CoreV1Api(config.new_client_from_config(config_file=kc)).create_namespaced_pod(
            "kube-system", {"metadata": {"name": "meshcni-agent-x"},
                            "spec": {"containers": [{"name": "a", "image": "meshcni"}]}})
        out = kubectl("get", "pods", "-A").stdout
        assert "kube-system" in out and "meshcni-agent-x" in out and "Pending" in out
        manifest = tmp_path / "objs.yaml"
        manifest.write_text(MANIFEST)
        out = kubectl("apply", "-f", str(manifest)).stdout
        assert "service/web created" in out and "cluster.mesh-cni.dev/east created" in out
        out = kubectl("get", "clusters").stdout
        assert out.split("\n")[0].split() == ["NAME", "READY", "SERVICES", "ENDPOINTS", "LAST-SYNC", "AGE"]
        assert out.split("\n")[1].split()[:2] == ["east", "<none>"]
        client.CustomObjectsApi(config.new_client_from_config(config_file=kc)).patch_cluster_custom_object_status(
            "mesh-cni.dev", "v1alpha1", "clusters", "east", {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "Connected", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}], "meshedServices": 2, "remoteEndpoints": 7}})
        out = kubectl("get", "clusters", "-o", "wide").stdout  # printer columns with JSONPath filters
        assert out.split("\n")[1].split()[:8] == ["east", "True", "2", "7", "<none>", "Connected", "east-kubeconfig",
                                                   "kubeconfig"]
        # kubectl asks for fieldValidation=Strict: a typo is refused, naming the field
        bad = tmp_path / "bad.yaml"
        bad.write_text(MANIFEST.split("---\n")[1].replace("spec:\n", "spec:\n  secrett: {name: x}\n"))
        r = kubectl("apply", "-f", str(bad), ok=False)
        assert r.returncode != 0 and 'unknown field "spec.secrett"' in r.stderr
        # a second apply with a change goes through kubectl's three-way patch
        manifest.write_text(MANIFEST.replace("8080", "9090"))
        out = kubectl("apply", "-f", str(manifest)).stdout
        assert "service/web configured" in out
        svc = json.loads(kubectl("get", "svc", "web", "-o", "json").stdout)
        assert svc["spec"]["ports"][0]["targetPort"] == 9090
        assert svc["spec"]["clusterIP"].startswith("10.96.")
        assert "web" in kubectl("get", "services").stdout
        out = kubectl("get", "mcl", "east", "-o", "jsonpath={.spec.secret.name}").stdout
        assert out == "east-kubeconfig"
        assert 'service "web" deleted' in kubectl("delete", "svc", "web").stdout
        r = kubectl("get", "svc", "web", ok=False)
        assert r.returncode != 0 and "NotFound" in r.stderr


def test_cli_parser_and_serve(tmp_path):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = p.parse_args(["apiserver", "--listen", "127.0.0.1:0", "--crds", str(CRDS), "--data",
                         str(tmp_path / "d.json"), "--kubeconfig", str(tmp_path / "kc"), "--history", "50"])
    assert args.listen == ("127.0.0.1", 0) and args.crds == [str(CRDS)] and args.history == 50
    assert callable(args.fn)
    with pytest.raises(SystemExit):
        p.parse_args(["apiserver", "--listen", "nope"])
    # serve() in the foreground until stopped, kubeconfig written, snapshot on exit
    stop = threading.Event()
    rc = []
    t = threading.Thread(target=lambda: rc.append(serve("127.0.0.1", 0, crd_dir=[str(CRDS)],
                                                        data_file=str(tmp_path / "d.json"),
                                                        kubeconfig=str(tmp_path / "kc"), stop_event=stop)))
    t.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "kc").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    api = config.new_client_from_config(config_file=str(tmp_path / "kc"))
    assert "mesh-cni.dev" in {g.name for g in client.ApisApi(api).get_api_versions().groups}
    stop.set()
    t.join(10)
    assert rc == [0] and json.loads((tmp_path / "d.json").read_text())["resourceVersion"] > 0


def test_cli_sigterm_snapshots(tmp_path):
    code = ("import sys; from meshcni.apiserver.cli import add_parser; import argparse;"
            "p = argparse.ArgumentParser(); s = p.add_subparsers(dest='cmd'); add_parser(s);"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.fn(a))")
    data, kc = tmp_path / "d.json", tmp_path / "kc"
    proc = subprocess.Popen([sys.executable, "-c", code, "apiserver", "--listen", "127.0.0.1:0",
                             "--data", str(data), "--kubeconfig", str(kc)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads(data.read_text())["resourceVersion"] >= 4


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_get_watch_prints_table_rows(tmp_path):
    with APIServer() as srv:
        kc = srv.write_kubeconfig(str(tmp_path / "kubeconfig"))
        core = client.CoreV1Api(config.new_client_from_config(config_file=kc))
        core.create_namespaced_service("default", {"metadata": {"name": "first"}, "spec": {"ports": [{"port": 53}]}})
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECACHEDIR": str(tmp_path / "cache")}
        proc = subprocess.Popen([KUBECTL, "--kubeconfig", kc, "get", "svc", "-w"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout.readline().split()[:3] == ["NAME", "TYPE", "CLUSTER-IP"]
            assert proc.stdout.readline().split()[0] == "first"
            core.create_namespaced_service("default", {"metadata": {"name": "second"},
                                                       "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
            row = proc.stdout.readline().split()
            assert row[:2] == ["second", "NodePort"] and row[4].startswith("80:3")
        finally:
            proc.kill()
            proc.communicate()
