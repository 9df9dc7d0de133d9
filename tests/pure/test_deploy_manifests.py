# SPDX-License-Identifier: MIT OR Apache-2.0
"""deploy/: every manifest is one a real cluster would accept, and the pieces
agree with each other and with the code.

- Built-in kinds against the Kubernetes JSON schemas (kubernetes-validate,
  strict: unknown fields are errors, as `kubectl apply --validate=strict`).
- meshcni CRs against deploy/crds' own openAPIV3Schemas, with the API
  server's validator; nothing may be pruned (an unknown field would vanish
  silently on a real cluster).
- kustomizations list exactly the files that exist; the agent's and the
  controller's args parse with their own argparse; RBAC rules name only
  resources, subresources and verbs the API serves; bindings, roles and
  ServiceAccounts line up; kind configs are what the Makefile relies on.
"""
from __future__ import annotations

import copy
import glob
import ipaddress
import os
import re

import pytest
import yaml

pytestmark = pytest.mark.pure

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (the [test] extra)")

from meshcni.apiserver import resources, schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
# The Kubernetes release the manifests target: kind's default node image
# (kind v0.30: v1.34) and one kubernetes-validate ships schemas for.
K8S_VERSION = "1.34"
SPDX = "# SPDX-License-Identifier: MIT OR Apache-2.0"
KUSTOMIZE = "kustomize.config.k8s.io/"
KIND_CONFIG = "kind.x-k8s.io/"
GROUP = "mesh-cni.dev"
# deploy/ is rendered from charts/meshcni into one release namespace (scripts/render-manifests.py)
AGENT_NS = CONTROLLER_NS = "meshcni-system"
SUBRESOURCE_VERBS = {"status": ("get", "patch", "update")}


def _rel(path):
    return os.path.relpath(path, DEPLOY)


def _yaml_files():
    out = []
    for dirpath, _, files in os.walk(DEPLOY):
        out += [os.path.join(dirpath, f) for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(out)


FILES = _yaml_files()
DOCS = {}  # path -> [doc, ...]
for _p in FILES:
    with open(_p, encoding="utf-8") as _f:
        DOCS[_p] = [d for d in yaml.safe_load_all(_f) if d is not None]


def _all_docs():
    for path, docs in DOCS.items():
        for i, d in enumerate(docs):
            yield path, i, d


def _is_k8s_object(d):
    api = str(d.get("apiVersion", ""))
    return not api.startswith((KUSTOMIZE, KIND_CONFIG))


def _find(kind, name=None, namespace=None):
    hits = [d for _, _, d in _all_docs() if d.get("kind") == kind and _is_k8s_object(d)
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]
    return hits


def _one(kind, name, namespace=None):
    hits = _find(kind, name, namespace)
    assert len(hits) == 1, f"expected one {kind} {namespace or ''}/{name} under deploy/, found {len(hits)}"
    return hits[0]


CRDS = schema.load_crds(os.path.join(DEPLOY, "crds"))
CR_TYPES = {(rt.group, rt.kind): rt for rt in map(resources.from_crd, CRDS)}
# (group, plural) -> ResourceType: what an RBAC rule may name
SERVED = {rt.key: rt for rt in list(resources.BUILTIN) + list(CR_TYPES.values())}
# kinds RBAC may reference that the simulator's API server does not serve
RBAC_EXTRA = {("rbac.authorization.k8s.io", p) for p in ("roles", "rolebindings", "clusterroles",
                                                         "clusterrolebindings")}

BUILTIN_DOCS = [(p, i, d) for p, i, d in _all_docs()
                if _is_k8s_object(d) and not str(d.get("apiVersion", "")).startswith(GROUP + "/")]
CR_DOCS = [(p, i, d) for p, i, d in _all_docs() if str(d.get("apiVersion", "")).startswith(GROUP + "/")]


def _id(item):
    p, i, d = item
    return f"{_rel(p)}[{i}]:{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"


def test_found_the_manifests():
    # guard against a glob that silently matches nothing
    assert len(FILES) >= 10 and BUILTIN_DOCS and CR_DOCS and len(CRDS) >= 4


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_every_file_has_the_license_header(path):
    with open(path, encoding="utf-8") as f:
        assert f.readline().rstrip("\n") == SPDX, f"{_rel(path)}: first line must be {SPDX!r}"


@pytest.mark.parametrize("item", BUILTIN_DOCS, ids=_id)
def test_builtin_kinds_match_the_kubernetes_schema(item):
    d = item[2]
    try:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(x) for x in e.path)
        pytest.fail(f"{_id(item)}: {where}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(f"{_id(item)}: {e.message}")


@pytest.mark.parametrize("item", CR_DOCS, ids=_id)
def test_custom_resources_match_their_crd(item):
    d = item[2]
    group, version = d["apiVersion"].split("/")
    rt = CR_TYPES.get((group, d["kind"]))
    assert rt is not None, f"{_id(item)}: no CRD in deploy/crds serves {d['kind']}"
    assert version in rt.served_versions, f"{_id(item)}: {d['apiVersion']} is not served"
    s = rt.schemas[version]
    errors = schema.validate(s, d)
    assert not errors, f"{_id(item)}: " + "; ".join(e.kube_message() for e in errors)
    pruned = schema.prune(s, copy.deepcopy(d))
    assert pruned == d, f"{_id(item)}: fields the CRD does not declare (a cluster would drop them)"
    meta = d["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", meta["name"])
    if not rt.namespaced:
        assert "namespace" not in meta, f"{_id(item)}: {d['kind']} is cluster-scoped; drop metadata.namespace"


# ---- kustomizations --------------------------------------------------------

KUSTOMIZATIONS = [p for p in FILES if os.path.basename(p) in ("kustomization.yaml", "kustomization.yml")]


def _kustomize_resources(path):
    """Files a kustomization includes, directories expanded through their own."""
    (k,) = DOCS[path]
    out = set()
    base = os.path.dirname(path)
    for r in k.get("resources") or ():
        full = os.path.normpath(os.path.join(base, r))
        assert os.path.exists(full), f"{_rel(path)}: lists {r}, which does not exist"
        if os.path.isdir(full):
            sub = os.path.join(full, "kustomization.yaml")
            assert os.path.exists(sub), f"{_rel(path)}: {r}/ has no kustomization.yaml"
            out |= _kustomize_resources(sub)
        else:
            out.add(full)
    return out


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_rel)
def test_kustomization_lists_what_exists(path):
    (k,) = DOCS[path]
    assert k["apiVersion"].startswith(KUSTOMIZE) and k["kind"] == "Kustomization"
    _kustomize_resources(path)  # every listed path exists
    if path != os.path.join(DEPLOY, "kustomization.yaml"):
        # a component directory: every manifest beside it is listed
        here = {p for p in FILES if os.path.dirname(p) == os.path.dirname(path) and p not in KUSTOMIZATIONS}
        listed = _kustomize_resources(path)
        assert here <= listed, f"{_rel(path)}: not listed: {sorted(map(_rel, here - listed))}"


def test_top_kustomization_installs_everything():
    """`kubectl apply -k deploy` = CRDs, RBAC, agent, controller: every manifest
    under deploy/ except kind's configs (and its per-cluster CRs) and the demo."""
    top = os.path.join(DEPLOY, "kustomization.yaml")
    listed = _kustomize_resources(top)
    excluded = (os.path.join(DEPLOY, "kind") + os.sep, os.path.join(DEPLOY, "examples") + os.sep)
    expected = {p for p in FILES if p not in KUSTOMIZATIONS and not p.startswith(excluded)}
    assert listed == expected, (f"missing: {sorted(map(_rel, expected - listed))}; "
                                f"extra: {sorted(map(_rel, listed - expected))}")
    kinds = {d["kind"] for p in listed for d in DOCS[p]}
    assert {"CustomResourceDefinition", "DaemonSet", "Deployment", "ClusterRole", "Role"} <= kinds


# ---- workloads -------------------------------------------------------------

def _parser():
    from meshcni.cli import build_parser
    return build_parser()


def _subcommands(parser):
    import argparse
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return set(a.choices)
    return set()


def _container(workload):
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def _check_workload(workload, subcommand):
    c = _container(workload)
    assert c["command"] == ["meshcni"], "the image's entrypoint is meshcni"
    args = c["args"]
    assert args[0] == subcommand
    # kubelet expands $(VAR) only for variables the container defines
    env = {e["name"] for e in c.get("env") or ()}
    for a in args:
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            assert var in env, f"{a}: $({var}) is not in the container's env"
    try:
        ns = _parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{workload['metadata']['name']}: `meshcni {' '.join(args)}` does not parse (exit {e.code})")
    # the probes and the port hit the address the process serves metrics on
    port = int(ns.metrics_address.rpartition(":")[2])
    assert {p["containerPort"] for p in c["ports"]} == {port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c[probe]["httpGet"]["port"]
        assert p == port or p == c["ports"][0]["name"], f"{probe} port {p} != {port}"
    assert ns.metrics_address.startswith("0.0.0.0:"), "probes come from the kubelet, not localhost"
    mounts = {m["name"] for m in c.get("volumeMounts") or ()}
    volumes = {v["name"] for v in workload["spec"]["template"]["spec"].get("volumes") or ()}
    assert mounts == volumes, f"mounts without volume: {mounts - volumes}; unused volumes: {volumes - mounts}"
    return ns


@pytest.mark.extension  # meshcni.agent.agent wires the datapath, which loads meshcni._libbpf
def test_agent_daemonset_args_parse():
    ds = _one("DaemonSet", "meshcni-agent", AGENT_NS)
    ns = _check_workload(ds, "agent")
    assert ns.node_name == "$(NODE_NAME)"
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "meshcni-agent"
    _one("ServiceAccount", "meshcni-agent", AGENT_NS)
    # it must run on a node whose startup taint it is there to remove
    from meshcni.agent.agent import STARTUP_TAINT
    tol = ds["spec"]["template"]["spec"]["tolerations"]
    assert any(t.get("operator") == "Exists" and "key" not in t for t in tol) or \
        any(t.get("key") == STARTUP_TAINT for t in tol)


def test_controller_deployment():
    dep = _one("Deployment", "meshcni-controller", CONTROLLER_NS)
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "meshcni-controller"
    _one("ServiceAccount", "meshcni-controller", CONTROLLER_NS)
    _one("Namespace", CONTROLLER_NS)
    c = _container(dep)
    assert "--leader-elect" in c["args"]
    # the Lease is looked for where the leader-election Role grants it
    assert "--lease-namespace=$(POD_NAMESPACE)" in c["args"]
    (pod_ns,) = [e for e in c["env"] if e["name"] == "POD_NAMESPACE"]
    assert pod_ns["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert not c.get("securityContext", {}).get("privileged"), "the controller only talks to the API"


def test_controller_deployment_args_parse():
    if "controller" not in _subcommands(_parser()):
        pytest.skip("`meshcni controller` is not in meshcni.cli.build_parser() yet")
    _check_workload(_one("Deployment", "meshcni-controller", CONTROLLER_NS), "controller")


# ---- RBAC ------------------------------------------------------------------

ROLES = [d for _, _, d in _all_docs() if d.get("kind") in ("ClusterRole", "Role")]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_rbac_rules_name_served_resources_and_verbs(role):
    check_rbac_rules(role)


def check_rbac_rules(role):
    """Every rule names a resource, subresource and verb the API serves (test_chart.py uses it too)."""
    name = f"{role['kind']} {role['metadata']['name']}"
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, f"{name}: meshcni needs no non-resource URLs"
        for group in rule["apiGroups"]:
            assert group != "*", f"{name}: no wildcard groups"
            for res in rule["resources"]:
                plural, _, sub = res.partition("/")
                rt = SERVED.get((group, plural))
                if rt is None:
                    assert (group, plural) in RBAC_EXTRA, f"{name}: {group or 'core'}/{plural}: no such resource"
                    continue
                for verb in rule["verbs"]:
                    assert verb != "*", f"{name}: no wildcard verbs"
                    if sub:
                        assert sub in SUBRESOURCE_VERBS and (sub != "status" or rt.status), \
                            f"{name}: {res}: no such subresource"
                        assert verb in SUBRESOURCE_VERBS[sub], f"{name}: {res} does not serve {verb}"
                    else:
                        assert verb in rt.verbs, f"{name}: {res} does not serve {verb}"
                if role["kind"] == "Role":
                    assert rt.namespaced, f"{name}: {res} is cluster-scoped; a Role cannot grant it"


def _granted(*roles):
    """{(group, resource): {verbs}} over the given roles."""
    out = {}
    for r in roles:
        for rule in r["rules"]:
            for g in rule["apiGroups"]:
                for res in rule["resources"]:
                    out.setdefault((g, res), set()).update(rule["verbs"])
    return out


def _bound_roles(sa_name, sa_ns):
    """The roles bound to a ServiceAccount: (ClusterRoles, {namespace: Roles})."""
    cluster, ns_roles = [], {}
    for b in _find("ClusterRoleBinding") + _find("RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa_name and s.get("namespace") == sa_ns
                   for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        if b["kind"] == "ClusterRoleBinding":
            assert ref["kind"] == "ClusterRole"
            cluster.append(_one("ClusterRole", ref["name"]))
        else:
            bns = b["metadata"]["namespace"]
            role = _one(ref["kind"], ref["name"], bns if ref["kind"] == "Role" else None)
            ns_roles.setdefault(bns, []).append(role)
    return cluster, ns_roles


def test_every_binding_refers_to_existing_role_and_serviceaccount():
    for b in _find("ClusterRoleBinding") + _find("RoleBinding"):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        _one(ref["kind"], ref["name"], ns)
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount"
            _one("ServiceAccount", s["name"], s["namespace"])


R, W = {"get", "list", "watch"}, {"create", "update", "patch", "delete"}


def test_agent_rbac_is_what_it_needs_and_no_more():
    cluster, ns_roles = _bound_roles("meshcni-agent", AGENT_NS)
    assert not ns_roles
    assert _granted(*cluster) == {
        ("", "nodes"): R | {"patch"},
        ("", "services"): R, ("", "pods"): R, ("", "namespaces"): R,
        ("discovery.k8s.io", "endpointslices"): R,
        ("networking.k8s.io", "networkpolicies"): R,
        (GROUP, "identities"): R, (GROUP, "cidridentities"): R, (GROUP, "meshendpoints"): R,
        # status.nodes of remote clusters become routes (issue 17)
        (GROUP, "clusters"): R,
        # remote pods' identities and addresses (issue 18)
        (GROUP, "remoteidentities"): R,
        # meshcni/k8s/events.py: create; a repeat (409) is read and its count patched
        ("", "events"): {"create", "get", "patch"},
    }
    assert not [k for k in _granted(*cluster) if k[1].startswith("secrets")], "agents never read Secrets"


def test_controller_rbac_is_what_it_needs_and_no_more():
    cluster, ns_roles = _bound_roles("meshcni-controller", CONTROLLER_NS)
    got = _granted(*cluster)
    assert ("", "secrets") not in got, "Secrets only in the controller's namespace"
    assert got == {
        ("", "pods"): R, ("", "namespaces"): R,
        ("networking.k8s.io", "networkpolicies"): R,
        # the mesh (issue 17): local Services get MeshEndpoints, Nodes' pod CIDRs the conflict check
        ("", "services"): {"list", "watch"}, ("", "nodes"): {"list", "watch"},
        (GROUP, "identities"): R | W, (GROUP, "cidridentities"): R | W,
        # the mesh (controller/clustermesh.py): informers list+watch; the finalizer is a patch of metadata
        (GROUP, "clusters"): {"list", "watch", "patch"}, (GROUP, "clusters/status"): {"patch"},
        (GROUP, "meshendpoints"): {"list", "watch", "create", "update", "delete"},
        (GROUP, "meshendpoints/status"): {"patch"},
        # remote pods' label sets (issue 18), written like MeshEndpoints
        (GROUP, "remoteidentities"): {"list", "watch", "create", "update", "delete"},
        ("", "events"): {"create", "get", "patch"},
    }
    assert set(ns_roles) == {CONTROLLER_NS}
    assert _granted(*ns_roles[CONTROLLER_NS]) == {
        ("", "secrets"): {"list", "watch"},
        # meshcni.k8s.leader: read, create, replace
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    }


def test_mesh_uses_exactly_what_the_remote_role_grants():
    # the remote informers of meshcni/controller/clustermesh.Remote, by the client methods they call
    import inspect
    from meshcni.controller import clustermesh
    src = inspect.getsource(clustermesh.Remote.__init__)
    assert {"list_service_for_all_namespaces", "list_endpoint_slice_for_all_namespaces", "list_namespace",
            "list_node", "list_pod_for_all_namespaces"} == set(re.findall(r"\.(list_\w+)", src))


# ---- kind ------------------------------------------------------------------

def _kind(name):
    (d,) = DOCS[os.path.join(DEPLOY, "kind", name)]
    assert d["apiVersion"] == "kind.x-k8s.io/v1alpha4" and d["kind"] == "Cluster"
    return d


@pytest.mark.extension  # meshcni.agent.agent wires the datapath, which loads meshcni._libbpf
@pytest.mark.parametrize("name", ["single.yaml", "east.yaml", "west.yaml"])
def test_kind_configs(name):
    from meshcni.agent.agent import STARTUP_TAINT
    d = _kind(name)
    net = d["networking"]
    assert net["disableDefaultCNI"] is True, "meshcni is the CNI"
    assert net["kubeProxyMode"] == "none", "the socket LB replaces kube-proxy"
    ipaddress.ip_network(net["podSubnet"])
    ipaddress.ip_network(net["serviceSubnet"])
    assert not ipaddress.ip_network(net["podSubnet"]).overlaps(ipaddress.ip_network(net["serviceSubnet"]))
    for node in d["nodes"]:
        patches = [yaml.safe_load(p) for p in node["kubeadmConfigPatches"]]
        (kubelet,) = [p for p in patches if p["kind"] == "KubeletConfiguration"]
        assert [t["key"] for t in kubelet["registerWithTaints"]] == [STARTUP_TAINT]


def test_multi_cluster_cidrs_do_not_overlap():
    east, west = _kind("east.yaml"), _kind("west.yaml")
    assert (east["name"], west["name"]) == ("east", "west")  # the Makefile's context names
    nets = [ipaddress.ip_network(c["networking"][k]) for c in (east, west) for k in ("podSubnet", "serviceSubnet")]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b), f"{a} overlaps {b}"


@pytest.mark.parametrize("local,remote", [("east", "west"), ("west", "east")])
def test_mesh_cluster_crs_name_the_makefile_secret(local, remote):
    (cr,) = DOCS[os.path.join(DEPLOY, "kind", "mesh", f"cluster-{remote}.yaml")]
    assert cr["kind"] == "Cluster" and cr["metadata"]["name"] == remote
    secret = cr["spec"]["secret"]
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        mk = f.read()
    # mesh_secret in the Makefile creates mesh-remote-$(2)-kubeconfig with key config
    assert secret == {"name": f"mesh-remote-{remote}-kubeconfig", "key": "config"}
    assert "mesh-remote-$(2)-kubeconfig" in mk and "--from-file=config=" in mk


def test_makefile_has_the_recipes():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        targets = set(re.findall(r"^([A-Za-z][-A-Za-z0-9_]*):", f.read(), re.MULTILINE))
    assert {"run-local", "kind-down", "multi-reset-cluster", "sim-up", "sim-down", "demo", "test"} <= targets


def test_kind_files_are_all_checked():
    """Everything under deploy/kind is a kind config or a Cluster CR checked above."""
    for p in glob.glob(os.path.join(DEPLOY, "kind", "**", "*.y*ml"), recursive=True):
        for d in DOCS[p]:
            assert d["apiVersion"].startswith(KIND_CONFIG) or d["apiVersion"].startswith(GROUP + "/"), _rel(p)


def test_kustomize_builds():
    """kubectl's own kustomize agrees: `kubectl apply -k deploy` renders every object once."""
    import shutil
    import subprocess
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH")
    out = subprocess.run([kubectl, "kustomize", DEPLOY], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rendered = sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
                      for d in yaml.safe_load_all(out.stdout) if d)
    listed = sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
                    for p in _kustomize_resources(os.path.join(DEPLOY, "kustomization.yaml")) for d in DOCS[p])
    assert rendered == listed
