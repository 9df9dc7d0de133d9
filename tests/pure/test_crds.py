# SPDX-License-Identifier: MIT OR Apache-2.0
"""deploy/crds: real CustomResourceDefinitions that a cluster would accept,
and the seed README's example objects valid against them."""

import copy
import os
import re

import pytest
import yaml

from meshcni.apiserver import schema, validation

pytestmark = pytest.mark.pure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRD_DIR = os.path.join(ROOT, "deploy", "crds")
LAYOUT_H = os.path.join(ROOT, "bpf", "include", "meshcni", "layout.h")
GROUP = "mesh-cni.dev"
FILES = ["clusters.yaml", "meshendpoints.yaml", "identities.yaml", "cidridentities.yaml", "remoteidentities.yaml"]
KINDS = {"Cluster": "Cluster", "MeshEndpoint": "Namespaced",
         "Identity": "Namespaced", "CIDRIdentity": "Cluster", "RemoteIdentity": "Cluster"}

# The seed README's examples, verbatim except CIDRIdentity.cidrPrefixes: the
# README lists 10.0.0.0/8 minus 10.240.0.0/12; these are 10.0.0.0/8 minus
# 10.96.0.0/12, which is what its `except` says.
EXAMPLES = {
    "Cluster": """
apiVersion: mesh-cni.dev/v1alpha1
kind: Cluster
metadata:
  name: cluster2
spec:
  secret:
    name: mesh-remote-cluster2-kubeconfig
    key: config
""",
    "MeshEndpoint": """
apiVersion: mesh-cni.dev/v1alpha1
kind: MeshEndpoint
metadata:
  name: web-cluster2
  namespace: app
  labels:
    kubernetes.io/service-name: web
    mesh-cni.dev/cluster-owner: cluster2
spec:
  backend_port_mappings:
  - ip: 10.242.0.21
    service_port: 80
    backend_port: 8080
    protocol: TCP
""",
    "Identity": """
apiVersion: mesh-cni.dev/v1alpha1
kind: Identity
metadata:
  name: web-identity
  namespace: app
spec:
  id: 2599738693
  namespaceLabels:
    kubernetes.io/metadata.name: app
  podLabels:
    app: web
""",
    "CIDRIdentity": """
apiVersion: mesh-cni.dev/v1alpha1
kind: CIDRIdentity
metadata:
  name: cidr-10-0-0-0-8
spec:
  id: 30002
  cidr: 10.0.0.0/8
  except:
  - 10.96.0.0/12
  cidrPrefixes:
  - 10.0.0.0/10
  - 10.64.0.0/11
  - 10.112.0.0/12
  - 10.128.0.0/9
""",
}


def _load(name):
    with open(os.path.join(CRD_DIR, name), encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


@pytest.fixture(scope="module")
def crds():
    return {c["spec"]["names"]["kind"]: c for c in schema.load_crds(CRD_DIR)}


def _schema_of(crd):
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return version["schema"]["openAPIV3Schema"]


def _admit(crd, obj):
    """What kube-apiserver does with a custom object: prune, default,
    validate against the schema, then the meshcni semantic checks."""
    s = _schema_of(crd)
    obj = schema.apply_defaults(s, schema.prune(s, obj))
    group, _, version = obj["apiVersion"].partition("/")
    return obj, schema.validate(s, obj) + validation.validate(group, version, obj["kind"], obj)


# ---- the files -------------------------------------------------------------

@pytest.mark.parametrize("name", FILES + ["kustomization.yaml"])
def test_file_has_spdx_header(name):
    with open(os.path.join(CRD_DIR, name), encoding="utf-8") as f:
        assert f.readline().strip() == "# SPDX-License-Identifier: MIT OR Apache-2.0"


def test_kustomization_lists_every_crd_file():
    (kust,) = _load("kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(FILES)
    on_disk = {f for f in os.listdir(CRD_DIR) if f.endswith((".yaml", ".yml"))}
    assert on_disk - {"kustomization.yaml"} == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_is_a_valid_v1_crd(name):
    (crd,) = _load(name)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    names = spec["names"]
    assert spec["group"] == GROUP
    assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}"
    assert name == names["plural"] + ".yaml"
    for k in ("plural", "singular", "kind", "listKind"):
        assert names[k], k
    assert names["plural"] == names["plural"].lower() and names["singular"] == names["singular"].lower()
    assert names["listKind"] == names["kind"] + "List"
    assert names["categories"] == ["meshcni"]
    assert names["shortNames"] and all(re.fullmatch(r"[a-z][a-z0-9]*", s) for s in names["shortNames"])
    assert spec["scope"] == KINDS[names["kind"]]
    versions = spec["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    assert sum(1 for v in versions if v["storage"]) == 1
    assert all(v["served"] is True for v in versions)
    for v in versions:
        s = v["schema"]["openAPIV3Schema"]
        assert s["type"] == "object"
        assert schema.check_structural(s) == []
        cols = v.get("additionalPrinterColumns") or []
        assert cols, "every kind gets printer columns"
        assert cols[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        for c in cols:
            assert c["type"] in ("integer", "number", "string", "boolean", "date")
            assert c["jsonPath"].startswith(".") and c["name"]
        assert len({c["name"] for c in cols}) == len(cols)


def test_every_key_is_a_crd_api_field(crds):
    # The kubernetes client's models are generated from kube's OpenAPI: a
    # misspelt or invented key (additionalPrinterColumn, x-kubernetes-listType)
    # does not survive the round trip, and a missing required one raises.
    client = pytest.importorskip("kubernetes.client")
    api = client.ApiClient()
    for kind, crd in crds.items():
        model = api._ApiClient__deserialize(copy.deepcopy(crd), "V1CustomResourceDefinition")
        assert api.sanitize_for_serialization(model) == crd, kind
    broken = copy.deepcopy(crds["Cluster"])
    del broken["spec"]["names"]["plural"]
    with pytest.raises(ValueError, match="plural"):
        api._ApiClient__deserialize(broken, "V1CustomResourceDefinition")


def test_status_subresource_only_where_there_is_status(crds):
    for kind, crd in crds.items():
        (v,) = crd["spec"]["versions"]
        has_status = "status" in _schema_of(crd)["properties"]
        assert ("status" in (v.get("subresources") or {})) == has_status, kind
    assert "status" in _schema_of(crds["Cluster"])["properties"]


def test_cluster_conditions_are_metav1_conditions(crds):
    cond = _schema_of(crds["Cluster"])["properties"]["status"]["properties"]["conditions"]
    assert cond["x-kubernetes-list-type"] == "map"
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    item = cond["items"]
    assert set(item["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert item["properties"]["observedGeneration"]["format"] == "int64"


def test_every_field_of_the_examples_is_declared(crds):
    # Pruning must not drop anything the README shows: the schema has
    # exactly the upstream fields.
    for kind, text in EXAMPLES.items():
        obj = yaml.safe_load(text)
        s = _schema_of(crds[kind])
        assert schema.prune(s, obj) == obj, kind


def test_load_crds_sorted_and_complete(crds):
    names = [c["metadata"]["name"] for c in schema.load_crds(CRD_DIR)]
    assert names == sorted(names) and len(names) == 5
    assert set(crds) == set(KINDS)


# ---- identity ranges -------------------------------------------------------

def _reserved_ids():
    with open(LAYOUT_H, encoding="utf-8") as f:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (MC_ID_\w+) (\d+)", f.read())}


def test_identity_ranges_are_disjoint_and_clear_of_reserved(crds):
    pod = _schema_of(crds["Identity"])["properties"]["spec"]["properties"]["id"]
    cidr = _schema_of(crds["CIDRIdentity"])["properties"]["spec"]["properties"]["id"]
    reserved = _reserved_ids()
    assert {"MC_ID_HOST", "MC_ID_WORLD", "MC_ID_REMOTE_NODE"} <= set(reserved)
    assert max(reserved.values()) < 256 == cidr["minimum"]
    # between them the agent-local CIDR atoms (controllers/ipcache.cidr_atoms)
    from meshcni.controllers.identity import ATOM_ID_MAX, ATOM_ID_MIN, CIDR_ID_MAX
    assert cidr["maximum"] == CIDR_ID_MAX and cidr["maximum"] + 1 == ATOM_ID_MIN
    assert ATOM_ID_MAX + 1 == pod["minimum"] == 1 << 24
    assert pod["maximum"] == (1 << 32) - 1   # the datapath's identity is a __u32
    for s in (pod, cidr):
        assert s["format"] == "int64"   # u32 does not fit an int32
        assert "256-15728639" in s["description"] and "16777216-4294967295" in s["description"]


@pytest.mark.parametrize("kind,ident,ok", [
    ("Identity", 16777216, True), ("Identity", 4294967295, True),
    ("Identity", 16777215, False), ("Identity", 4294967296, False), ("Identity", 2, False),
    ("CIDRIdentity", 256, True), ("CIDRIdentity", 15728639, True), ("CIDRIdentity", 15728640, False),
    ("CIDRIdentity", 255, False), ("CIDRIdentity", 6, False), ("CIDRIdentity", 16777216, False),
])
def test_identity_id_bounds(crds, kind, ident, ok):
    obj = yaml.safe_load(EXAMPLES[kind])
    obj["spec"]["id"] = ident
    _, errs = _admit(crds[kind], obj)
    if ok:
        assert errs == []
    else:
        assert [(e.field, e.reason) for e in errs] == [("spec.id", "FieldValueInvalid")]


# ---- examples --------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_seed_examples_are_valid(crds, kind):
    obj, errs = _admit(crds[kind], yaml.safe_load(EXAMPLES[kind]))
    assert errs == []
    assert obj["kind"] == kind


def test_readme_cidr_prefixes_as_printed_are_caught(crds):
    # The schema cannot know set arithmetic; the semantic check does.
    obj = yaml.safe_load(EXAMPLES["CIDRIdentity"])
    obj["spec"]["cidrPrefixes"] = ["10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "10.224.0.0/12"]
    _, errs = _admit(crds["CIDRIdentity"], obj)
    assert errs and all(e.field.startswith("spec.cidrPrefixes") for e in errs)
    assert ("spec.cidrPrefixes[0]", "FieldValueInvalid") in [(e.field, e.reason) for e in errs]


def test_defaults_fill_protocol_and_label_maps(crds):
    me = yaml.safe_load(EXAMPLES["MeshEndpoint"])
    del me["spec"]["backend_port_mappings"][0]["protocol"]
    obj, errs = _admit(crds["MeshEndpoint"], me)
    assert errs == []
    assert obj["spec"]["backend_port_mappings"][0]["protocol"] == "TCP"
    ident = yaml.safe_load(EXAMPLES["Identity"])
    ident["spec"] = {"id": 16777300}
    obj, errs = _admit(crds["Identity"], ident)
    assert errs == [] and obj["spec"] == {"id": 16777300, "namespaceLabels": {}, "podLabels": {}}


def test_cluster_secret_key_defaults_to_config(crds):
    obj = yaml.safe_load(EXAMPLES["Cluster"])
    del obj["spec"]["secret"]["key"]
    pruned, errs = _admit(crds["Cluster"], obj)
    assert errs == [] and pruned["spec"]["secret"]["key"] == "config"
    assert "staleGracePeriodSeconds" not in pruned["spec"]  # no default: the controller's flag decides


def test_cluster_and_meshendpoint_status_fields(crds):
    obj = yaml.safe_load(EXAMPLES["Cluster"])
    obj["spec"]["staleGracePeriodSeconds"] = 30
    obj["status"] = {"observedGeneration": 2, "conditions": [_COND], "meshedServices": 3, "remoteEndpoints": 30,
                     "lastSyncTime": "2026-01-02T03:04:05Z",
                     "nodes": [{"name": "n1", "addresses": ["172.18.0.3", "fc00::3"],
                                "podCIDRs": ["10.245.0.0/24", "fd00:245::/64"]}]}
    pruned, errs = _admit(crds["Cluster"], copy.deepcopy(obj))
    assert errs == [] and pruned == obj
    cols = [c["name"] for c in crds["Cluster"]["spec"]["versions"][0]["additionalPrinterColumns"]
            if not c.get("priority")]
    assert cols == ["Ready", "Services", "Endpoints", "Last-Sync", "Age"]
    mep = yaml.safe_load(EXAMPLES["MeshEndpoint"])
    mep["status"] = {"stale": True, "staleSince": "2026-01-02T03:04:05Z"}
    pruned, errs = _admit(crds["MeshEndpoint"], copy.deepcopy(mep))
    assert errs == [] and pruned["status"] == mep["status"]
    assert "status" in crds["MeshEndpoint"]["spec"]["versions"][0]["subresources"]


def test_unknown_fields_are_pruned(crds):
    obj = yaml.safe_load(EXAMPLES["Cluster"])
    obj["spec"]["secret"]["namespace"] = "elsewhere"
    obj["spec"]["extra"] = 1
    obj["status"] = {"conditions": [], "phase": "Ready"}
    pruned, errs = _admit(crds["Cluster"], obj)
    assert errs == []
    assert pruned["spec"] == {"secret": {"name": "mesh-remote-cluster2-kubeconfig", "key": "config"}}
    assert pruned["status"] == {"conditions": []}
    assert pruned["metadata"] == {"name": "cluster2"}


def _set(obj, dotted, value):
    parts = re.findall(r"[^.\[\]]+", dotted)
    cur = obj
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if value is _DELETE:
        if isinstance(cur, list):
            del cur[int(last)]
        else:
            del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


_DELETE = object()
_COND = {"type": "Ready", "status": "True", "reason": "Connected", "message": "",
         "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1}

BROKEN = [
    # kind, field to change, new value, expected (field, reason)
    ("Cluster", "spec.secret", _DELETE, ("spec.secret", "FieldValueRequired")),
    ("Cluster", "spec.staleGracePeriodSeconds", -1, ("spec.staleGracePeriodSeconds", "FieldValueInvalid")),
    ("Cluster", "spec.staleGracePeriodSeconds", "300", ("spec.staleGracePeriodSeconds", "FieldValueTypeInvalid")),
    ("Cluster", "status", {"nodes": [{"name": "n", "addresses": ["nope"], "podCIDRs": []}]},
     ("status.nodes[0].addresses[0]", "FieldValueInvalid")),
    ("Cluster", "status", {"nodes": [{"name": "n", "addresses": [], "podCIDRs": ["10.0.0.0/33"]}]},
     ("status.nodes[0].podCIDRs[0]", "FieldValueInvalid")),
    ("Cluster", "status", {"meshedServices": -1}, ("status.meshedServices", "FieldValueInvalid")),
    ("Cluster", "status", {"lastSyncTime": "now"}, ("status.lastSyncTime", "FieldValueInvalid")),
    ("Cluster", "spec.secret.name", "Not_A_Name", ("spec.secret.name", "FieldValueInvalid")),
    ("Cluster", "spec.secret.key", "a/b", ("spec.secret.key", "FieldValueInvalid")),
    ("Cluster", "spec.secret.name", 7, ("spec.secret.name", "FieldValueTypeInvalid")),
    ("Cluster", "spec", _DELETE, ("spec", "FieldValueRequired")),
    ("Cluster", "status", {"conditions": [dict(_COND, status="Maybe")]},
     ("status.conditions[0].status", "FieldValueNotSupported")),
    ("Cluster", "status", {"conditions": [_COND, dict(_COND, reason="Again")]},
     ("status.conditions[1]", "FieldValueDuplicate")),
    ("Cluster", "status", {"conditions": [dict(_COND, lastTransitionTime="yesterday")]},
     ("status.conditions[0].lastTransitionTime", "FieldValueInvalid")),
    ("Cluster", "status", {"conditions": [dict(_COND, reason="")]},
     ("status.conditions[0].reason", "FieldValueInvalid")),
    ("Cluster", "status", {"conditions": [{k: v for k, v in _COND.items() if k != "message"}]},
     ("status.conditions[0].message", "FieldValueRequired")),
    ("Cluster", "status", {"conditions": [dict(_COND, observedGeneration=-1)]},
     ("status.conditions[0].observedGeneration", "FieldValueInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].ip", "not-an-ip",
     ("spec.backend_port_mappings[0].ip", "FieldValueInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].ip", "10.242.0.0/16",
     ("spec.backend_port_mappings[0].ip", "FieldValueInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].service_port", 0,
     ("spec.backend_port_mappings[0].service_port", "FieldValueInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].backend_port", 70000,
     ("spec.backend_port_mappings[0].backend_port", "FieldValueInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].backend_port", "8080",
     ("spec.backend_port_mappings[0].backend_port", "FieldValueTypeInvalid")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].protocol", "ICMP",
     ("spec.backend_port_mappings[0].protocol", "FieldValueNotSupported")),
    ("MeshEndpoint", "spec.backend_port_mappings[0].ip", _DELETE,
     ("spec.backend_port_mappings[0].ip", "FieldValueRequired")),
    ("MeshEndpoint", "spec.backend_port_mappings[1]",
     {"ip": "10.242.0.21", "service_port": 80, "backend_port": 9090, "protocol": "TCP"},
     ("spec.backend_port_mappings[1]", "FieldValueDuplicate")),
    ("MeshEndpoint", "spec.backend_port_mappings", {"ip": "10.242.0.21"},
     ("spec.backend_port_mappings", "FieldValueTypeInvalid")),
    ("Identity", "spec.id", _DELETE, ("spec.id", "FieldValueRequired")),
    ("Identity", "spec.id", "2599738693", ("spec.id", "FieldValueTypeInvalid")),
    ("Identity", "spec.id", 0, ("spec.id", "FieldValueInvalid")),
    ("Identity", "spec.podLabels.app", "x" * 64, ("spec.podLabels.app", "FieldValueTooLong")),
    ("Identity", "spec.podLabels.app", "-web", ("spec.podLabels.app", "FieldValueInvalid")),
    ("Identity", "spec.podLabels.app", 3, ("spec.podLabels.app", "FieldValueTypeInvalid")),
    ("Identity", "spec.namespaceLabels", ["app"], ("spec.namespaceLabels", "FieldValueTypeInvalid")),
    ("Identity", "metadata.namespace", _DELETE, ("metadata.namespace", "FieldValueRequired")),
    ("CIDRIdentity", "spec.cidr", "10.0.0.0/33", ("spec.cidr", "FieldValueInvalid")),
    ("CIDRIdentity", "spec.cidr", "10.0.0.0", ("spec.cidr", "FieldValueInvalid")),
    ("CIDRIdentity", "spec.cidr", _DELETE, ("spec.cidr", "FieldValueRequired")),
    ("CIDRIdentity", "spec.except[0]", "bogus", ("spec.except[0]", "FieldValueInvalid")),
    ("CIDRIdentity", "spec.cidrPrefixes[3]", "10.0.0.0/10", ("spec.cidrPrefixes[3]", "FieldValueDuplicate")),
    ("CIDRIdentity", "spec.id", 3.5, ("spec.id", "FieldValueTypeInvalid")),
]


@pytest.mark.parametrize("kind,where,value,expected", BROKEN,
                         ids=[f"{k}-{w}-{i}" for i, (k, w, _, _) in enumerate(BROKEN)])
def test_broken_variants_name_the_field(crds, kind, where, value, expected):
    obj = yaml.safe_load(EXAMPLES[kind])
    if where.endswith("[1]") and kind == "MeshEndpoint":
        obj["spec"]["backend_port_mappings"].append(value)
    else:
        _set(obj, where, value if value is _DELETE else copy.deepcopy(value))
    _, errs = _admit(crds[kind], obj)
    assert expected in [(e.field, e.reason) for e in errs], [e.kube_message() for e in errs]


def test_cidr_identity_except_outside_cidr(crds):
    obj = yaml.safe_load(EXAMPLES["CIDRIdentity"])
    obj["spec"]["except"] = ["192.168.0.0/16"]
    obj["spec"]["cidrPrefixes"] = []
    _, errs = _admit(crds["CIDRIdentity"], obj)
    assert [(e.field, e.reason) for e in errs] == [("spec.except[0]", "FieldValueInvalid")]
    assert "strict subset" in errs[0].message


def test_ipv6_cidr_identity(crds):
    obj = yaml.safe_load(EXAMPLES["CIDRIdentity"])
    obj["spec"] = {"id": 300, "cidr": "2001:db8::/32", "except": ["2001:db8:8000::/33"],
                   "cidrPrefixes": ["2001:db8::/33"]}
    _, errs = _admit(crds["CIDRIdentity"], obj)
    assert errs == []


def _subpaths(obj, prefix=""):
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, item in items:
        if isinstance(k, str) and "." in k:
            continue   # a label key: _set cannot address it (labels have their own tests)
        p = f"{prefix}[{k}]" if isinstance(obj, list) else (f"{prefix}.{k}" if prefix else k)
        yield p
        yield from _subpaths(item, p)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_odd_values_anywhere_give_errors_not_exceptions(crds, kind):
    base = yaml.safe_load(EXAMPLES[kind])
    for where in _subpaths(base):
        if where in ("apiVersion", "kind"):
            continue
        for odd in (None, 7, "x", [], {}, [None], {"a": [1]}, True, 1.5):
            obj = copy.deepcopy(base)
            _set(obj, where, odd)
            _, errs = _admit(crds[kind], obj)
            for e in errs:
                assert e.field and e.kube_message()
