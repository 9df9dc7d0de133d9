# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni.apiserver.schema: the structural OpenAPI v3 subset CRDs use."""

import os

import pytest

from meshcni.apiserver import schema
from meshcni.apiserver.validation import FieldError

pytestmark = pytest.mark.pure

S = {"type": "string"}
I = {"type": "integer"}


def _obj(**props):
    return {"type": "object", "properties": props}


def _errs(sch, obj, path=""):
    return [(e.field, e.reason) for e in schema.validate(sch, obj, path)]


def _one(sch, obj):
    errs = schema.validate(sch, obj)
    assert len(errs) == 1, [e.kube_message() for e in errs]
    return errs[0]


# ---- validate: table of (schema, value, expected [(field, reason)]) --------

SPEC = _obj(spec=_obj(
    port={"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
    protocol={"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
    ip={"type": "string", "format": "ipv4"},
    ip6={"type": "string", "format": "ipv6"},
    cidrPrefixes={"type": "array", "items": {"type": "string", "format": "cidr"}},
    labels={"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
    name={"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
    ratio={"type": "number", "minimum": 0, "exclusiveMinimum": True,
           "maximum": 1, "exclusiveMaximum": True},
    enabled={"type": "boolean"},
    when={"type": "string", "format": "date-time"},
    opaque={"type": "string", "format": "something-new"},
    target={"x-kubernetes-int-or-string": True},
    maybe={"type": "string", "nullable": True},
    tags={"type": "array", "items": S, "x-kubernetes-list-type": "set", "maxItems": 3, "minItems": 1},
    n32={"type": "integer", "format": "int32"},
    n64={"type": "integer", "format": "int64"},
    free={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
))

CASES = [
    ({"port": 80}, []),
    ({"port": 0}, [("spec.port", "FieldValueInvalid")]),
    ({"port": 70000}, [("spec.port", "FieldValueInvalid")]),
    ({"port": "80"}, [("spec.port", "FieldValueTypeInvalid")]),
    ({"port": True}, [("spec.port", "FieldValueTypeInvalid")]),
    ({"port": 80.0}, []),
    ({"port": 80.5}, [("spec.port", "FieldValueTypeInvalid")]),
    ({"protocol": "ICMP"}, [("spec.protocol", "FieldValueNotSupported")]),
    ({"protocol": "UDP"}, []),
    ({"ip": "10.96.0.999"}, [("spec.ip", "FieldValueInvalid")]),
    ({"ip": "::1"}, [("spec.ip", "FieldValueInvalid")]),
    ({"ip6": "2001:db8::1"}, []),
    ({"ip6": "10.0.0.1"}, [("spec.ip6", "FieldValueInvalid")]),
    ({"cidrPrefixes": ["10.0.0.0/10", "2001:db8::/32", "nope"]}, [("spec.cidrPrefixes[2]", "FieldValueInvalid")]),
    ({"cidrPrefixes": ["10.0.0.1/8"]}, []),   # host bits: Go's ParseCIDR accepts them
    ({"cidrPrefixes": "10.0.0.0/8"}, [("spec.cidrPrefixes", "FieldValueTypeInvalid")]),
    ({"labels": {"app": "web", "tier": "long"}}, [("spec.labels.tier", "FieldValueTooLong")]),
    ({"labels": {"app": 1}}, [("spec.labels.app", "FieldValueTypeInvalid")]),
    ({"name": ""}, [("spec.name", "FieldValueInvalid")] * 2),   # minLength and pattern
    ({"name": "abcdef"}, [("spec.name", "FieldValueTooLong")]),
    ({"name": "ab1"}, [("spec.name", "FieldValueInvalid")]),
    ({"ratio": 0.5}, []),
    ({"ratio": 0}, [("spec.ratio", "FieldValueInvalid")]),
    ({"ratio": 1}, [("spec.ratio", "FieldValueInvalid")]),
    ({"enabled": "true"}, [("spec.enabled", "FieldValueTypeInvalid")]),
    ({"when": "2026-01-02T03:04:05.123Z"}, []),
    ({"when": "2026-01-02T03:04:05+02:00"}, []),
    ({"when": "2026-01-02"}, [("spec.when", "FieldValueInvalid")]),
    ({"opaque": "anything"}, []),
    ({"target": 8080}, []),
    ({"target": "http"}, []),
    ({"target": 1.5}, [("spec.target", "FieldValueTypeInvalid")]),
    ({"target": None}, [("spec.target", "FieldValueTypeInvalid")]),
    ({"maybe": None}, []),
    ({"name": None}, [("spec.name", "FieldValueTypeInvalid")]),
    ({"tags": ["a", "b", "a"]}, [("spec.tags[2]", "FieldValueDuplicate")]),
    ({"tags": ["a", "b", "c", "d"]}, [("spec.tags", "FieldValueTooMany")]),
    ({"tags": []}, [("spec.tags", "FieldValueInvalid")]),
    ({"n32": 2**31}, [("spec.n32", "FieldValueInvalid")]),
    ({"n32": -(2**31)}, []),
    ({"n64": 2**63}, [("spec.n64", "FieldValueInvalid")]),
    ({"free": {"anything": [1, {"x": None}]}}, []),
    ({"undeclared": "ignored: pruning drops it"}, []),
]


@pytest.mark.parametrize("spec,expected", CASES, ids=[str(c[0])[:40] for c in CASES])
def test_validate_table(spec, expected):
    assert _errs(SPEC, {"spec": spec}) == expected


def test_messages_match_kube():
    port = _one(SPEC, {"spec": {"port": 70000}})
    assert port.kube_message() == (
        "spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535")
    proto = _one(SPEC, {"spec": {"protocol": "ICMP"}})
    assert proto.kube_message() == 'spec.protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'
    low = _one(SPEC, {"spec": {"port": 0}})
    assert low.message == "spec.port in body should be greater than or equal to 1"
    typ = _one(SPEC, {"spec": {"port": "80"}})
    assert typ.message == 'spec.port in body must be of type integer: "string"'
    fmt = _one(SPEC, {"spec": {"ip": "10.96.0.999"}})
    assert fmt.kube_message() == ('spec.ip: Invalid value: "10.96.0.999": spec.ip in body must be of '
                                  'type ipv4: "10.96.0.999"')
    pat = _one(SPEC, {"spec": {"name": "ab1"}})
    assert pat.message == "spec.name in body should match '^[a-z]+$'"
    req = _one(_obj(spec={"type": "object", "required": ["id"], "properties": {"id": I}}), {"spec": {}})
    assert req.kube_message() == "spec.id: Required value"
    assert isinstance(req, FieldError)


def test_required_and_nested_paths():
    sch = _obj(spec={"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["a"], "properties": {"a": I}}}}})
    assert _errs(sch, {"spec": {}}) == [("spec.items", "FieldValueRequired")]
    assert _errs(sch, {"spec": {"items": [{"a": 1}, {}, {"a": "x"}]}}) == [
        ("spec.items[1].a", "FieldValueRequired"), ("spec.items[2].a", "FieldValueTypeInvalid")]
    # An explicit base path, as the API server passes for a subresource.
    assert _errs({"type": "integer", "maximum": 1}, 2, "status.count") == [("status.count", "FieldValueInvalid")]


def test_list_map_keys_duplicate():
    sch = {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["ip", "port"],
           "items": _obj(ip=S, port=I, weight=I)}
    ok = [{"ip": "a", "port": 1}, {"ip": "a", "port": 2}, {"ip": "b", "port": 1}]
    assert schema.validate(sch, ok, "spec.backends") == []
    errs = schema.validate(sch, ok + [{"ip": "a", "port": 2, "weight": 5}], "spec.backends")
    assert [(e.field, e.reason, e.value) for e in errs] == [
        ("spec.backends[3]", "FieldValueDuplicate", {"ip": "a", "port": 2})]


def test_set_equality_is_json_equality():
    sch = {"type": "array", "x-kubernetes-list-type": "set", "items": {}}
    assert schema.validate(sch, [1, True, "1"]) == []
    assert _errs(sch, [1, 1.0]) == [("[1]", "FieldValueDuplicate")]
    assert _errs({"type": "array", "uniqueItems": True, "items": {}}, [{"a": 1}, {"a": 1}]) == [
        ("[1]", "FieldValueDuplicate")]


def test_enum_does_not_confuse_bool_and_int():
    sch = {"enum": [1, 2]}
    assert schema.validate(sch, 1) == []
    assert _errs(sch, True) == [("", "FieldValueNotSupported")]


def test_additional_properties_false_forbids():
    sch = {"type": "object", "properties": {"a": I}, "additionalProperties": False}
    assert _errs(sch, {"a": 1, "b": 2}) == [("b", "FieldValueForbidden")]
    assert _errs(sch, {"apiVersion": "v1", "kind": "X", "metadata": {}}) == []


@pytest.mark.parametrize("junctor,value,ok", [
    ({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}, "10.0.0.1", True),
    ({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}, "::1", True),
    ({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}, "x", False),
    ({"oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]}, "ab", False),
    ({"oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]}, "ac", True),
    ({"allOf": [{"minLength": 2}, {"maxLength": 3}]}, "abcd", False),
    ({"allOf": [{"minLength": 2}, {"maxLength": 3}]}, "abc", True),
    ({"not": {"enum": ["forbidden"]}}, "forbidden", False),
    ({"not": {"enum": ["forbidden"]}}, "fine", True),
])
def test_junctors(junctor, value, ok):
    sch = _obj(v=dict(junctor, type="string"))
    errs = _errs(sch, {"v": value})
    assert (errs == []) == ok
    assert all(f == "v" for f, _ in errs)


# ---- defaults --------------------------------------------------------------

def test_apply_defaults_deep_and_new_object():
    sch = _obj(spec=_obj(
        protocol={"type": "string", "default": "TCP"},
        opts={"type": "object", "default": {}, "properties": {"retries": {"type": "integer", "default": 3}}},
        ports={"type": "array", "items": _obj(protocol={"type": "string", "default": "TCP"})},
        labels={"type": "object", "additionalProperties": _obj(x={"type": "integer", "default": 1})},
        nothing=S,
    ))
    obj = {"spec": {"ports": [{}, {"protocol": "UDP"}], "labels": {"a": {}}, "opts": None}}
    out = schema.apply_defaults(sch, obj)
    assert out == {"spec": {"protocol": "TCP", "opts": {"retries": 3},
                            "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}], "labels": {"a": {"x": 1}}}}
    assert obj == {"spec": {"ports": [{}, {"protocol": "UDP"}], "labels": {"a": {}}, "opts": None}}
    out["spec"]["opts"]["retries"] = 9
    assert sch["properties"]["spec"]["properties"]["opts"]["default"] == {}


def test_defaults_keep_explicit_null_when_nullable():
    sch = _obj(a={"type": "string", "nullable": True, "default": "x"})
    assert schema.apply_defaults(sch, {"a": None}) == {"a": None}
    assert schema.apply_defaults(sch, {}) == {"a": "x"}


# ---- prune -----------------------------------------------------------------

def test_prune_drops_unknown_keeps_root_meta():
    sch = _obj(apiVersion=S, kind=S, metadata={"type": "object"},
               spec=_obj(a=I, free={"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                    "properties": {"known": _obj(k=I)}},
                         m={"type": "object", "additionalProperties": _obj(v=I)},
                         lst={"type": "array", "items": _obj(v=I)},
                         emb={"type": "object", "x-kubernetes-embedded-resource": True,
                              "properties": {"spec": _obj(z=I)}}))
    obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
           "status": {"gone": True},
           "spec": {"a": 1, "b": 2,
                    "free": {"anything": {"deep": 1}, "known": {"k": 1, "drop": 2}},
                    "m": {"x": {"v": 1, "w": 2}},
                    "lst": [{"v": 1, "w": 2}],
                    "emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                            "spec": {"z": 1, "y": 2}, "other": 1}}}
    out = schema.prune(sch, obj)
    assert out == {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
                   "spec": {"a": 1,
                            "free": {"anything": {"deep": 1}, "known": {"k": 1}},
                            "m": {"x": {"v": 1}},
                            "lst": [{"v": 1}],
                            "emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                    "spec": {"z": 1}}}}
    assert obj["spec"]["b"] == 2   # the input is not touched


def test_prune_drops_non_nullable_nulls_so_required_reports_them():
    sch = _obj(spec={"type": "object", "required": ["a"], "properties": {"a": S, "b": dict(S, nullable=True)}})
    out = schema.prune(sch, {"spec": {"a": None, "b": None}})
    assert out == {"spec": {"b": None}}
    assert _errs(sch, out) == [("spec.a", "FieldValueRequired")]


def test_prune_leaves_wrong_types_for_validate():
    sch = _obj(spec=_obj(a=I))
    out = schema.prune(sch, {"spec": "oops"})
    assert out == {"spec": "oops"}
    assert _errs(sch, out) == [("spec", "FieldValueTypeInvalid")]


# ---- structural check ------------------------------------------------------

@pytest.mark.parametrize("bad,needle", [
    (_obj(spec={"properties": {"a": I}}), "properties.spec.type"),
    (_obj(spec={"type": "array", "items": {}}), "items.type"),
    (_obj(spec={"type": "array", "items": S, "uniqueItems": True}), "uniqueItems"),
    (_obj(spec={"type": "object", "properties": {"a": I}, "additionalProperties": S}), "mutual exclusive"),
    (_obj(metadata=_obj(labels={"type": "object"})), "metadata"),
    (_obj(spec={"type": "string", "anyOf": [{"type": "string"}]}), "anyOf[0].type"),
    (_obj(t={"type": "string", "x-kubernetes-int-or-string": True}), "int-or-string"),
    (_obj(l={"type": "array", "items": _obj(k=S), "x-kubernetes-list-type": "map",
             "x-kubernetes-list-map-keys": ["k"]}), "must be required or defaulted"),
    (_obj(p={"type": "integer", "maximum": 5, "default": 9}), "default"),
    ({"type": "array", "items": S}, "must be object"),
])
def test_check_structural_refuses(bad, needle):
    problems = schema.check_structural(bad)
    assert any(needle in p for p in problems), problems


def test_check_structural_accepts_idioms():
    good = _obj(
        metadata=_obj(name={"type": "string", "maxLength": 63}),
        port={"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        free={"x-kubernetes-preserve-unknown-fields": True},
        ip={"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        l={"type": "array", "items": _obj(k=dict(S, default="x")), "x-kubernetes-list-type": "map",
           "x-kubernetes-list-map-keys": ["k"]},
    )
    assert schema.check_structural(good) == []


# ---- load_crds -------------------------------------------------------------

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {name}
spec:
  group: example.com
"""


def test_load_crds_multi_doc_sorted_skips_others(tmp_path):
    (tmp_path / "a.yaml").write_text(CRD.format(name="zeds.example.com") + "---\n"
                                     + CRD.format(name="bees.example.com") + "---\n")
    (tmp_path / "b.yml").write_text(CRD.format(name="ants.example.com"))
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nresources: [a.yaml]\n")
    (tmp_path / "notes.txt").write_text(": not yaml [")
    names = [c["metadata"]["name"] for c in schema.load_crds(str(tmp_path))]
    assert names == ["ants.example.com", "bees.example.com", "zeds.example.com"]


def test_load_crds_bad_yaml_names_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("kind: CustomResourceDefinition\n  - : : [\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        schema.load_crds(str(tmp_path))


def test_load_crds_empty_dir(tmp_path):
    assert schema.load_crds(str(tmp_path)) == []
    assert schema.load_crds(os.path.join(str(tmp_path), "missing")) == []


def test_pattern_dollar_is_end_of_text_like_re2():
    sch = {"type": "string", "pattern": "^[a-z$]+$"}
    assert schema.validate(sch, "ab$") == []
    assert _errs(sch, "ab\n") == [("", "FieldValueInvalid")]
    assert schema.validate({"type": "string", "pattern": r"^a\$"}, "a$") == []
