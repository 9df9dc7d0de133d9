# SPDX-License-Identifier: MIT OR Apache-2.0
"""charts/meshcni, rendered and linted by Helm's own engine (Helm v4's Go SDK
through helm-python-sdk; no helm binary), for the default values and each
documented preset:

- `helm lint --strict` finds nothing; every rendered built-in object matches
  the Kubernetes 1.34 schema (kubernetes-validate, strict), every Cluster
  object its CRD; RBAC names only served resources and verbs;
- the agent's and the controller's args parse with their own parsers, the
  probes and ports agree with --metrics-address, host paths follow the preset;
- values.schema.json makes a wrong value fail at render (each case below),
  and the chart's own `fail`s catch what a schema cannot;
- deploy/ is exactly a fresh render (scripts/render-manifests.py);
- the Makefile's --set values are ones the chart takes.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.pure

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the [test] extra)")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from meshcni.apiserver import schema  # noqa: E402

from test_deploy_manifests import (CR_TYPES, K8S_VERSION, _check_workload, _parser,  # noqa: E402
                                   check_rbac_rules)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "meshcni")
NS = "meshcni-system"
helm.disable_logging()

_spec = importlib.util.spec_from_file_location("render_manifests", os.path.join(ROOT, "scripts", "render-manifests.py"))
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)

K3S_BIN, K3S_CONF = "/var/lib/rancher/k3s/data/cni", "/var/lib/rancher/k3s/agent/etc/cni/net.d"
PRESETS = {
    "default": {},
    "kind": {"cni": {"preset": "kind"}, "k8sServiceHost": "172.18.0.2", "k8sServicePort": 6443,
             "image": {"tag": "dev"}},
    "k3s": {"cni": {"preset": "k3s"}, "k8sServiceHost": "192.168.1.10"},
    "kubeadm": {"cni": {"preset": "kubeadm"}, "k8sServiceHost": "cp.example.internal", "k8sServicePort": "6443"},
    "custom-dirs": {"cni": {"preset": "custom", "binDir": "/usr/libexec/cni", "confDir": "/etc/kubernetes/cni/net.d"}},
    "chained": {"cni": {"mode": "chained"}, "agent": {"nodeRoutes": False}},
    "upstream-clusterURL": {"agent": {"clusterURL": "https://[fd00::2]:6443"}},
    "multi-cluster": {"clusterMesh": {"enabled": True, "clusterName": "east", "staleGracePeriodSeconds": 120,
                                      "serviceCIDRs": ["10.97.0.0/16", "fd00:97::/108"],
                                      "clusters": [{"name": "west", "secretName": "mesh-remote-west-kubeconfig"}]}},
    "metrics": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
                "logLevel": "debug", "controller": {"replicas": 3, "logLevel": "warning"}},
    "single-controller": {"controller": {"replicas": 1}, "metrics": {"service": {"enabled": False},
                                                                      "scrapeAnnotations": False}},
    "uninstall": {"uninstall": True},
}


def render(values, namespace=NS):
    with helm.Chart.load(CHART) as c:
        out = c.render(values, name="meshcni", namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs, out


def one(docs, kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} rendered"
    return hits[0]


def test_lint_is_clean():
    for name, values in PRESETS.items():
        rep = helm.lint(CHART, values, strict=True, namespace=NS, kube_version=f"v{K8S_VERSION}.0")
        bad = [m for m in rep["messages"] if m["severity"] >= 2] + rep["errors"]
        assert not bad, f"{name}: {bad}"


def test_the_crds_are_deploy_crds():
    """crds/ is a symlink to deploy/crds (one source); its kustomization is ignored, not a CRD."""
    assert os.path.realpath(os.path.join(CHART, "crds")) == os.path.join(ROOT, "deploy", "crds")
    with helm.Chart.load(CHART) as c:
        crds = {os.path.basename(x["filename"] if "filename" in x else x["name"]) for x in c.crds}
    on_disk = {f for f in os.listdir(os.path.join(ROOT, "deploy", "crds")) if f != "kustomization.yaml"}
    assert crds == on_disk and len(crds) >= 4


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_rendered_object_is_valid(preset):
    docs, _ = render(PRESETS[preset])
    assert docs
    for d in docs:
        where = f"{preset}: {d['kind']}/{d['metadata']['name']}"
        group = d["apiVersion"].split("/")[0]
        if group == "mesh-cni.dev":
            rt = CR_TYPES[(group, d["kind"])]
            errors = schema.validate(rt.schemas[d["apiVersion"].split("/")[1]], d)
            assert not errors, f"{where}: " + "; ".join(e.kube_message() for e in errors)
            assert schema.prune(rt.schemas["v1alpha1"], copy.deepcopy(d)) == d, f"{where}: fields the CRD drops"
            continue
        if group == "monitoring.coreos.com":
            continue  # the Prometheus Operator's CRD; checked by test_service_monitor_selects_the_metrics_services
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        if d["kind"] in ("ClusterRole", "Role"):
            check_rbac_rules(d)
        if d["metadata"].get("namespace") is not None or d["kind"] in ("ServiceAccount", "Deployment", "DaemonSet"):
            assert d["metadata"]["namespace"] == NS, f"{where}: everything namespaced lives in the release namespace"


def _env(container):
    return {e["name"]: e.get("value") for e in container.get("env") or ()}


def _host_paths(ds):
    return {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if p != "uninstall"))
def test_workloads_parse_and_follow_the_values(preset):
    values = PRESETS[preset]
    docs, _ = render(values)
    ds = one(docs, "DaemonSet", "meshcni-agent")
    ns = _check_workload(ds, "agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"} and pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default", "cluster DNS is unreachable until the agent has wired the node"
    assert [c["name"] for c in pod["initContainers"]] == ["mount-bpffs", "check-cgroup-v2"]
    assert ns.cni_shim is True and ns.cni_fallback is False, "nothing on the host may need the image's Python"
    assert ns.chained == (values.get("cni", {}).get("mode") == "chained")
    assert ns.routes == values.get("agent", {}).get("nodeRoutes", True)
    assert ns.metrics_address == "0.0.0.0:29610" and ns.log_level == values.get("logLevel", "info")
    paths = _host_paths(ds)
    cni = values.get("cni", {})
    want = {"k3s": (K3S_BIN, K3S_CONF)}.get(cni.get("preset"), (cni.get("binDir", "/opt/cni/bin"),
                                                                 cni.get("confDir", "/etc/cni/net.d")))
    assert (paths["cni-bin"], paths["cni-conf"]) == want
    # the API server without kube-proxy: k8sServiceHost/Port or upstream's agent.clusterURL
    env = _env(ds["spec"]["template"]["spec"]["containers"][0])
    if "k8sServiceHost" in values:
        assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == \
            (values["k8sServiceHost"], str(values.get("k8sServicePort", 6443)))
    elif values.get("agent", {}).get("clusterURL"):
        assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("fd00::2", "6443")
    else:
        assert "KUBERNETES_SERVICE_HOST" not in env

    dep = one(docs, "Deployment", "meshcni-controller")
    ctl = dep["spec"]["template"]["spec"]["containers"][0]
    assert _env(ctl).get("KUBERNETES_SERVICE_HOST") == env.get("KUBERNETES_SERVICE_HOST")
    replicas = values.get("controller", {}).get("replicas", 2)
    assert dep["spec"]["replicas"] == replicas
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert len(pdbs) == (1 if replicas > 1 else 0)
    if pdbs:
        assert pdbs[0]["spec"]["selector"] == dep["spec"]["selector"]
    mesh = values.get("clusterMesh", {})
    if mesh.get("enabled") and "--cluster-name" not in _parser()._subparsers._group_actions[0].choices[
            "controller"].format_help():
        pytest.skip("the controller's multi-cluster flags (CONTRACT.md, branch mesh-ctl) are not merged yet")
    cns = _check_workload(dep, "controller")
    assert cns.metrics_address == "0.0.0.0:29611" and cns.leader_elect is True
    if mesh.get("enabled"):
        assert (cns.cluster_name, cns.mesh_stale_grace) == (mesh["clusterName"], mesh["staleGracePeriodSeconds"])
        assert [str(c) for c in cns.service_cidr] == mesh["serviceCIDRs"]
        assert "--namespace=$(POD_NAMESPACE)" in ctl["args"]
    else:
        assert not [a for a in ctl["args"] if a.startswith(("--cluster-name", "--mesh-stale-grace"))]


def test_a_cluster_may_carry_its_own_grace_period():
    rt = CR_TYPES[("mesh-cni.dev", "Cluster")]
    if "staleGracePeriodSeconds" not in rt.schemas["v1alpha1"]["properties"]["spec"].get("properties", {}):
        pytest.skip("Cluster.spec.staleGracePeriodSeconds comes with the CRD of branch mesh-ctl (CONTRACT.md)")
    values = copy.deepcopy(PRESETS["multi-cluster"])
    values["clusterMesh"]["clusters"][0]["staleGracePeriodSeconds"] = 60
    docs, _ = render(values)
    cl = one(docs, "Cluster", "west")
    assert cl["spec"] == {"secret": {"name": "mesh-remote-west-kubeconfig", "key": "config"},
                          "staleGracePeriodSeconds": 60}
    assert not schema.validate(rt.schemas["v1alpha1"], cl)


def test_remote_mesh_reader_is_read_only_and_only_with_the_mesh():
    docs, _ = render(PRESETS["multi-cluster"])
    one(docs, "ServiceAccount", "meshcni-clustermesh-remote")
    binding = one(docs, "ClusterRoleBinding", "meshcni-clustermesh-remote")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meshcni-clustermesh-remote", "namespace": NS}]
    granted = {(g, r): set(rule["verbs"]) for rule in one(docs, "ClusterRole", "meshcni-clustermesh-remote")["rules"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    # exactly what meshcni.controller.clustermesh.Remote's five informers list and watch
    assert granted == {("", "services"): {"list", "watch"}, ("", "namespaces"): {"list", "watch"},
                       ("", "nodes"): {"list", "watch"}, ("", "pods"): {"list", "watch"},
                       ("discovery.k8s.io", "endpointslices"): {"list", "watch"}}
    docs, _ = render({})
    assert not [d for d in docs if d["metadata"]["name"] == "meshcni-clustermesh-remote"]


def test_metrics_services_and_annotations():
    docs, _ = render(PRESETS["metrics"])
    for comp, port in (("agent", 29610), ("controller", 29611)):
        svc = one(docs, "Service", f"meshcni-{comp}-metrics")
        kind = "DaemonSet" if comp == "agent" else "Deployment"
        wl = one(docs, kind, f"meshcni-{comp}")
        tmpl = wl["spec"]["template"]
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["ports"][0]["port"] == port
        assert svc["spec"]["selector"].items() <= tmpl["metadata"]["labels"].items()
        assert tmpl["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                   "prometheus.io/path": "/metrics"}
    docs, _ = render(PRESETS["single-controller"])
    assert not [d for d in docs if d["kind"] == "Service"]
    assert "annotations" not in one(docs, "Deployment", "meshcni-controller")["spec"]["template"]["metadata"]


def test_service_monitor_selects_the_metrics_services():
    docs, _ = render(PRESETS["metrics"])
    sm = one(docs, "ServiceMonitor", "meshcni")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"]["release"] == "prometheus"
    sel = sm["spec"]["selector"]["matchLabels"]
    picked = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"
              and sel.items() <= d["metadata"]["labels"].items()]
    assert sorted(picked) == ["meshcni-agent-metrics", "meshcni-controller-metrics"]
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"metrics"}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}


def test_uninstall_mode_cleans_every_node_then_idles():
    docs, _ = render(PRESETS["uninstall"])
    ds = one(docs, "DaemonSet", "meshcni-agent")
    pod = ds["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["mount-bpffs", "check-cgroup-v2", "uninstall"]
    args = init["uninstall"]["args"]
    ns = _parser().parse_args(args)
    assert args[0] == "uninstall" and ns.fn.__module__ == "meshcni.cli.uninstall" and ns.node_name == "$(NODE_NAME)"
    # the same container paths as the agent it undoes
    _, default = render({})
    agent_args = yaml.safe_load(default["meshcni/templates/agent/daemonset.yaml"])[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    same = ("--bpf-root", "--cgroup-root", "--cni-bin-dir", "--cni-conf-dir", "--socket", "--state-dir",
            "--ipam-dir")
    assert [a for a in args if a.startswith(same)] == [a for a in agent_args if a.startswith(same)]
    mounts = {m["name"] for m in init["uninstall"]["volumeMounts"]}
    assert mounts == {v["name"] for v in pod["volumes"]}
    (main,) = pod["containers"]
    assert main["command"] == ["sleep", "infinity"] and "ports" not in main
    assert not [d for d in docs if d["kind"] == "Service"]  # nothing to scrape


BAD_VALUES = [
    ({"cni": {"preset": "minikube"}}, "/cni/preset"),
    ({"cni": {"mode": "overlay"}}, "/cni/mode"),
    ({"cni": {"binDir": "opt/cni/bin"}}, "/cni/binDir"),
    ({"agent": {"metricsPort": 70000}}, "/agent/metricsPort"),
    ({"agent": {"clusterURL": "172.18.0.2:6443"}}, "/agent/clusterURL"),
    ({"agent": {"logLevel": "verbose"}}, "/agent/logLevel"),
    ({"agnet": {"logLevel": "debug"}}, "additional properties 'agnet'"),
    ({"k8sServicePort": "https"}, "/k8sServicePort"),
    ({"k8sServiceHost": "https://172.18.0.2"}, "/k8sServiceHost"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"ipam": {"mode": "cluster-pool"}}, "/ipam/mode"),
    ({"controller": {"replicas": "two"}}, "/controller/replicas"),
    ({"clusterMesh": {"clusterName": "East_1"}}, "/clusterMesh/clusterName"),
    ({"clusterMesh": {"serviceCIDRs": ["10.96.0.0"]}}, "/clusterMesh/serviceCIDRs/0"),
    ({"clusterMesh": {"clusters": [{"name": "west"}]}}, "secretName"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_a_wrong_value_fails_at_render(values, where):
    with helm.Chart.load(CHART) as c:
        with pytest.raises(helm.HelmValuesError) as ei:
            c.render(values, name="meshcni", namespace=NS)
    assert where in str(ei.value), str(ei.value)


BAD_COMBINATIONS = [
    ({"k8sServiceHost": "10.0.0.1", "agent": {"clusterURL": "https://10.0.0.1:6443"}}, NS,
     "set the API server once"),
    ({"cni": {"preset": "custom", "binDir": "/opt/cni/bin"}}, NS, "cni.preset=custom needs both"),
    ({"clusterMesh": {"enabled": True}}, "kube-system", "install meshcni into its own namespace"),
    ({"clusterMesh": {"enabled": True, "clusterName": "east",
                      "clusters": [{"name": "east", "secretName": "s"}]}}, NS, "this cluster's own name"),
    ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, NS,
     "serviceMonitor.enabled needs metrics.service.enabled"),
]


@pytest.mark.parametrize("values,namespace,msg", BAD_COMBINATIONS, ids=[m for _, _, m in BAD_COMBINATIONS])
def test_the_chart_refuses_what_a_schema_cannot_express(values, namespace, msg):
    with helm.Chart.load(CHART) as c:
        with pytest.raises(helm.HelmError) as ei:
            c.render(values, name="meshcni", namespace=namespace)
    assert msg in str(ei.value), str(ei.value)


def test_deploy_is_a_fresh_render():
    """deploy/ (outside crds, kind, examples) is what scripts/render-manifests.py writes, byte for byte."""
    want, have = render_manifests.manifests(), render_manifests.current()
    changed = render_manifests.diff(want, have)
    assert not changed, ("deploy/ differs from the chart; run `.venv/bin/python scripts/render-manifests.py`: "
                         + ", ".join(changed))
    with open(os.path.join(ROOT, "deploy", "kustomization.yaml")) as f:
        assert yaml.safe_load(f)["resources"][0] == "crds"


def test_the_cgroup_check_refuses_cgroup_v1_with_a_clear_message(tmp_path):
    """The init container's own script (rendered), run here against a cgroup2 mount and a plain directory."""
    docs, _ = render({})
    init = {c["name"]: c for c in one(docs, "DaemonSet", "meshcni-agent")["spec"]["template"]["spec"]["initContainers"]}
    script = init["check-cgroup-v2"]["command"][2]
    mount = init["check-cgroup-v2"]["volumeMounts"][0]["mountPath"]
    assert init["check-cgroup-v2"]["command"][:2] == ["sh", "-ec"]

    def run(path):
        return subprocess.run(["sh", "-ec", script.replace(mount, str(path))], capture_output=True, text=True)

    p = run(tmp_path)
    assert p.returncode == 1 and "meshcni needs cgroup v2" in p.stderr and "not cgroup2fs" in p.stderr
    fs = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
    if fs == "cgroup2fs":  # this machine's own cgroup v2 (CI's is)
        assert run("/sys/fs/cgroup").returncode == 0


def _makefile_sets():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        mk = f.read()
    sets = [x for x in re.findall(r"--set(?:-string)?\s+(\S+)", mk) if re.match(r"[A-Za-z][\w.]*=", x)]
    assert sets, "the Makefile installs with the chart's values (--set)"
    return mk, sets


def test_the_makefile_installs_with_chart_values():
    mk, sets = _makefile_sets()
    assert "charts/meshcni" in mk and "set env" not in mk, "kind recipes use the chart, not kubectl set env"
    values = {}
    assert "uninstall=true" in sets  # `make uninstall`: the cleanup mode, rendered on its own below
    render({"uninstall": True})
    for s in (x for x in sets if x != "uninstall=true"):
        # make and shell expansions stand for a value the recipe computes
        s = re.sub(r"\$\$\([^)]*\)|\$\([^)]*\)", "X", shlex.split(s)[0])
        key = s.split("=", 1)[0]
        sample = {"k8sServiceHost": "172.18.0.2", "image.tag": "dev", "image.repository": "ghcr.io/x/y",
                  "clusterMesh.clusterName": "east", "clusterMesh.serviceCIDRs": "{10.97.0.0/16}"}.get(key)
        s = f"{key}={sample}" if sample else s
        merged = helm.parse_set_string(s)
        _merge(values, merged)
    docs, _ = render(values)  # the schema accepts every key the Makefile sets
    env = _env(one(docs, "DaemonSet", "meshcni-agent")["spec"]["template"]["spec"]["containers"][0])
    assert env["KUBERNETES_SERVICE_HOST"] == "172.18.0.2"


def _merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
