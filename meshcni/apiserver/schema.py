# SPDX-License-Identifier: MIT OR Apache-2.0
"""Structural OpenAPI v3 schemas, the subset CustomResourceDefinitions use.

The simulator's API server keeps a CRD's `openAPIV3Schema` and, for every
custom object it is given, runs what kube-apiserver runs: `prune` (drop
fields the schema does not declare), `apply_defaults`, then `validate`. The
error paths and texts follow kube's (`spec.port: Invalid value: 70000:
spec.port in body should be less than or equal to 65535`), so a client sees
the same 422 a real cluster would give it.

`check_structural` reports why a schema would be refused by a real cluster
(a node without a type, uniqueItems, metadata restricted beyond name...).
"""
from __future__ import annotations

import copy
import functools
import glob
import ipaddress
import json
import os
import re
import uuid

import yaml

from .validation import FieldError

__all__ = ["FieldError", "apply_defaults", "check_structural", "load_crds", "prune", "validate"]

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_INT_OR_STRING = "x-kubernetes-int-or-string"
_EMBEDDED = "x-kubernetes-embedded-resource"


# ---- formats ---------------------------------------------------------------

_DATE_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\Z")
_MAC_RE = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}\Z")
_BYTE_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def _ok_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


def _ok_ipv6(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
        return True
    except ValueError:
        return False


def _ok_cidr(s: str) -> bool:
    # kube's "cidr" format is Go's net.ParseCIDR: host bits may be set.
    if "/" not in s:
        return False
    try:
        ipaddress.ip_network(s, strict=False)
        return True
    except ValueError:
        return False


def _ok_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
        return True
    except ValueError:
        return False


_STRING_FORMATS = {
    "ipv4": _ok_ipv4,
    "ipv6": _ok_ipv6,
    "cidr": _ok_cidr,
    "date-time": lambda s: bool(_DATE_TIME_RE.match(s)),
    "date": lambda s: bool(_DATE_RE.match(s)),
    "hostname": lambda s: bool(_HOSTNAME_RE.match(s)),
    "mac": lambda s: bool(_MAC_RE.match(s)),
    "uuid": _ok_uuid,
    "byte": lambda s: bool(_BYTE_RE.match(s)),
}
_INT_FORMATS = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


# ---- helpers ---------------------------------------------------------------

def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _where(path: str) -> str:
    return path or "body"


def _is_int(v) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def _type_ok(t: str, v) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return _is_int(v)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    return True   # an unknown type name is the schema's fault, not the object's


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "integer" if _is_int(v) else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _canon(v) -> str:
    """A hashable identity for JSON equality that keeps 1, 1.0 equal and
    true distinct from 1 (Python's == would merge them)."""
    def norm(x):
        if isinstance(x, bool) or x is None or isinstance(x, str):
            return x
        if isinstance(x, (int, float)):
            return int(x) if _is_int(x) else x
        if isinstance(x, list):
            return [norm(i) for i in x]
        if isinstance(x, dict):
            return {str(k): norm(i) for k, i in x.items()}
        return str(x)
    return json.dumps(norm(v), sort_keys=True)


def _show(v) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return _canon(v)


@functools.lru_cache(maxsize=512)
def _pattern(p: str):
    return re.compile(_go_anchors(p))


def _go_anchors(p: str) -> str:
    """CRD patterns are RE2: `$` is the end of the text. Python's `$` also
    matches before a final newline, which would let "name\\n" through."""
    out, in_class, escaped = [], False, False
    for ch in p:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            continue
        out.append(ch)
    return "".join(out)


def _err(path, value, reason, message) -> FieldError:
    return FieldError(path, value, reason, message)


# ---- validate --------------------------------------------------------------

def validate(schema: dict, obj, path: str = "") -> list[FieldError]:
    """Errors of `obj` against a structural schema; empty when valid.

    `path` is the field path of `obj` itself ("" for a whole object). Map
    keys are joined with '.', list indexes as `[i]`, as kube's CRD
    validation writes them. Unknown fields are not errors (pruning drops
    them) unless `additionalProperties: false` says so.
    """
    errors: list[FieldError] = []
    _validate(schema or {}, obj, path, errors)
    return errors


def _validate(s: dict, v, path: str, out: list):
    if v is None:
        if not s.get("nullable") and (s.get("type") or s.get(_INT_OR_STRING)):
            want = "integer-or-string" if s.get(_INT_OR_STRING) else s["type"]
            out.append(_err(path, "null", "FieldValueTypeInvalid",
                            f'{_where(path)} in body must be of type {want}: "null"'))
        return
    if s.get(_INT_OR_STRING) and not (isinstance(v, str) or _is_int(v)):
        out.append(_err(path, v, "FieldValueTypeInvalid",
                        f'{_where(path)} in body must be of type integer-or-string: "{_json_type(v)}"'))
        return
    t = s.get("type")
    if t and not _type_ok(t, v):
        out.append(_err(path, v, "FieldValueTypeInvalid",
                        f'{_where(path)} in body must be of type {t}: "{_json_type(v)}"'))
        return

    if "enum" in s and s["enum"] is not None:
        allowed = s["enum"]
        if _canon(v) not in {_canon(a) for a in allowed}:
            out.append(_err(path, v, "FieldValueNotSupported",
                            "supported values: " + ", ".join(_show(a) for a in allowed)))

    if isinstance(v, str):
        _validate_string(s, v, path, out)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        _validate_number(s, v, path, out)
    elif isinstance(v, list):
        _validate_array(s, v, path, out)
    elif isinstance(v, dict):
        _validate_object(s, v, path, out)

    _validate_junctors(s, v, path, out)


def _validate_string(s: dict, v: str, path: str, out: list):
    fmt = s.get("format")
    check = _STRING_FORMATS.get(fmt) if fmt else None
    if check is not None and not check(v):
        out.append(_err(path, v, "FieldValueInvalid",
                        f'{_where(path)} in body must be of type {fmt}: "{v}"'))
    n = len(v)   # kube counts runes, as Python counts code points
    if "maxLength" in s and n > s["maxLength"]:
        out.append(_err(path, v, "FieldValueTooLong", f"may not be more than {s['maxLength']} characters"))
    if "minLength" in s and n < s["minLength"]:
        out.append(_err(path, v, "FieldValueInvalid",
                        f"{_where(path)} in body should be at least {s['minLength']} chars long"))
    if "pattern" in s:
        try:
            rx = _pattern(s["pattern"])
        except re.error:
            rx = None
        # JSON Schema patterns are unanchored, like Go's MatchString.
        if rx is not None and not rx.search(v):
            out.append(_err(path, v, "FieldValueInvalid",
                            f"{_where(path)} in body should match '{s['pattern']}'"))


def _validate_number(s: dict, v, path: str, out: list):
    fmt = s.get("format")
    if fmt in _INT_FORMATS and _is_int(v):
        lo, hi = _INT_FORMATS[fmt]
        if not lo <= v <= hi:
            out.append(_err(path, v, "FieldValueInvalid", f"{_where(path)} in body must be of type {fmt}: {v}"))
    w = _where(path)
    mx, mn = s.get("maximum"), s.get("minimum")
    ex_max, ex_min = s.get("exclusiveMaximum"), s.get("exclusiveMinimum")
    # OpenAPI v3.0 (what CRDs use) has boolean exclusive*; a number there is
    # the JSON Schema 2019 spelling of the bound itself.
    if isinstance(ex_max, (int, float)) and not isinstance(ex_max, bool):
        mx, ex_max = ex_max, True
    if isinstance(ex_min, (int, float)) and not isinstance(ex_min, bool):
        mn, ex_min = ex_min, True
    if mx is not None:
        if ex_max and v >= mx:
            out.append(_err(path, v, "FieldValueInvalid", f"{w} in body should be less than {mx}"))
        elif not ex_max and v > mx:
            out.append(_err(path, v, "FieldValueInvalid", f"{w} in body should be less than or equal to {mx}"))
    if mn is not None:
        if ex_min and v <= mn:
            out.append(_err(path, v, "FieldValueInvalid", f"{w} in body should be greater than {mn}"))
        elif not ex_min and v < mn:
            out.append(_err(path, v, "FieldValueInvalid", f"{w} in body should be greater than or equal to {mn}"))
    mult = s.get("multipleOf")
    if mult and (v / mult) != int(v / mult):
        out.append(_err(path, v, "FieldValueInvalid", f"{w} in body should be a multiple of {mult}"))


def _validate_array(s: dict, v: list, path: str, out: list):
    w = _where(path)
    if "maxItems" in s and len(v) > s["maxItems"]:
        out.append(_err(path, len(v), "FieldValueTooMany", f"must have at most {s['maxItems']} items"))
    if "minItems" in s and len(v) < s["minItems"]:
        out.append(_err(path, len(v), "FieldValueInvalid", f"{w} in body should have at least {s['minItems']} items"))
    items = s.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            _validate(items, item, _index(path, i), out)
    list_type = s.get("x-kubernetes-list-type")
    if s.get("uniqueItems") or list_type == "set":
        seen = set()
        for i, item in enumerate(v):
            key = _canon(item)
            if key in seen:
                out.append(_err(_index(path, i), item, "FieldValueDuplicate", ""))
            seen.add(key)
    elif list_type == "map":
        keys = s.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                continue
            ident = {k: item.get(k) for k in keys}
            key = _canon(ident)
            if key in seen:
                out.append(_err(_index(path, i), ident, "FieldValueDuplicate", ""))
            seen.add(key)


def _validate_object(s: dict, v: dict, path: str, out: list):
    props = s.get("properties") or {}
    for name in s.get("required") or ():
        if name not in v:
            out.append(_err(_child(path, name), "", "FieldValueRequired", ""))
    n = len(v)
    if "maxProperties" in s and n > s["maxProperties"]:
        out.append(_err(path, n, "FieldValueTooMany", f"must have at most {s['maxProperties']} items"))
    if "minProperties" in s and n < s["minProperties"]:
        out.append(_err(path, n, "FieldValueInvalid",
                        f"{_where(path)} in body should have at least {s['minProperties']} properties"))
    addl = s.get("additionalProperties")
    is_root = path == ""
    for k, item in v.items():
        k = str(k)
        sub = props.get(k)
        p = _child(path, k)
        if sub is not None:
            _validate(sub, item, p, out)
        elif isinstance(addl, dict):
            _validate(addl, item, p, out)
        elif addl is False and not (is_root and k in _ROOT_KEEP) and not (s.get(_EMBEDDED) and k in _ROOT_KEEP):
            out.append(_err(p, "", "FieldValueForbidden", "field not declared in schema"))


def _validate_junctors(s: dict, v, path: str, out: list):
    for sub in s.get("allOf") or ():
        _validate(sub, v, path, out)
    any_of = s.get("anyOf")
    if any_of and not any(not validate(sub, v, path) for sub in any_of):
        out.append(_err(path, v, "FieldValueInvalid",
                        f"{_where(path)} in body must validate at least one schema (anyOf)"))
    one_of = s.get("oneOf")
    if one_of:
        passing = sum(1 for sub in one_of if not validate(sub, v, path))
        if passing != 1:
            out.append(_err(path, v, "FieldValueInvalid", f"{_where(path)} in body must validate one and "
                            "only one schema (oneOf)"))
    nt = s.get("not")
    if isinstance(nt, dict) and not validate(nt, v, path):
        out.append(_err(path, v, "FieldValueInvalid", f"{_where(path)} in body must not validate the schema (not)"))


# ---- defaults --------------------------------------------------------------

def apply_defaults(schema: dict, obj):
    """A deep copy of `obj` with every absent field that has a schema
    `default:` filled in, top-down (a default's own nested defaults apply).

    As in kube, a `null` for a non-nullable field that has a default is
    replaced by the default.
    """
    return _default(schema or {}, copy.deepcopy(obj))


def _default(s: dict, v):
    if isinstance(v, dict):
        props = s.get("properties") or {}
        for name, sub in props.items():
            if "default" in sub and (name not in v or (v[name] is None and not sub.get("nullable"))):
                v[name] = copy.deepcopy(sub["default"])
        for k in list(v):
            sub = props.get(k)
            if sub is None and isinstance(s.get("additionalProperties"), dict):
                sub = s["additionalProperties"]
            if sub is not None:
                v[k] = _default(sub, v[k])
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        v = [_default(s["items"], item) for item in v]
    return v


# ---- pruning ---------------------------------------------------------------

def prune(schema: dict, obj):
    """A deep copy of `obj` without the fields the schema does not declare.

    `x-kubernetes-preserve-unknown-fields: true` keeps a node's unknown
    fields (declared ones are still pruned inside). The root, and any
    `x-kubernetes-embedded-resource`, keep apiVersion, kind and metadata.
    Like kube, a `null` for a non-nullable field without a default is
    dropped, so that `required` then reports it as missing.
    """
    return _prune(schema or {}, obj, root=True)


def _prune(s: dict, v, root: bool = False):
    if isinstance(v, dict):
        if s.get(_INT_OR_STRING):
            return copy.deepcopy(v)   # wrong type: left for validate to report
        props = s.get("properties") or {}
        addl = s.get("additionalProperties")
        preserve = bool(s.get(_PRESERVE))
        keep_meta = root or bool(s.get(_EMBEDDED))
        out = {}
        for k, item in v.items():
            sub = props.get(k)
            if keep_meta and k in _ROOT_KEEP:
                # ObjectMeta is the server's, never the CRD schema's to prune.
                out[k] = copy.deepcopy(item)
            elif sub is not None:
                if item is None and not sub.get("nullable") and "default" not in sub:
                    continue
                out[k] = _prune(sub, item)
            elif isinstance(addl, dict):
                out[k] = _prune(addl, item)
            elif preserve or addl is True:
                out[k] = copy.deepcopy(item)
        return out
    if isinstance(v, list):
        items = s.get("items")
        if isinstance(items, dict):
            return [_prune(items, item) for item in v]
        return copy.deepcopy(v)
    return v


# ---- structural check ------------------------------------------------------

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# What a junctor branch may not carry in a structural schema: types and
# shape live on the spine only, branches add value validations.
_JUNCTOR_FORBIDDEN = ("type", "default", "description", "nullable", "additionalProperties",
                      _PRESERVE, _EMBEDDED, _INT_OR_STRING, "x-kubernetes-list-type")


def check_structural(schema: dict) -> list[str]:
    """Why a real cluster would refuse `schema` as a CRD version's
    openAPIV3Schema; empty when it is structural. Each message starts with
    the schema path (`.spec.properties.port`)."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return ["openAPIV3Schema: must be an object"]
    if schema.get("type") != "object":
        problems.append("openAPIV3Schema.type: must be object")
    _check_node(schema, "openAPIV3Schema", problems, root=True)
    meta = (schema.get("properties") or {}).get("metadata")
    if meta is not None:
        extra = set(meta) - {"type", "properties", "description"}
        mprops = set(meta.get("properties") or {})
        if meta.get("type", "object") != "object" or extra or mprops - {"name", "generateName"}:
            problems.append("openAPIV3Schema.properties.metadata: only restrictions on name and "
                            "generateName are allowed")
    return problems


def _check_node(s, path: str, problems: list, root: bool = False):
    if not isinstance(s, dict):
        problems.append(f"{path}: must be a schema object")
        return
    t = s.get("type")
    if s.get(_INT_OR_STRING):
        if t:
            problems.append(f"{path}.type: must be empty when x-kubernetes-int-or-string is true")
    elif not t and not s.get(_PRESERVE):
        problems.append(f"{path}.type: Required value: must not be empty for specified object fields")
    if t and t not in ("object", "array", "string", "integer", "number", "boolean"):
        problems.append(f"{path}.type: unsupported type {t!r}")
    if s.get("uniqueItems"):
        problems.append(f"{path}.uniqueItems: cannot be set to true since the runtime complexity "
                        "becomes quadratic (use x-kubernetes-list-type: set)")
    if "$ref" in s:
        problems.append(f"{path}.$ref: must not be set")
    if s.get("properties") and "additionalProperties" in s:
        problems.append(f"{path}: additionalProperties and properties are mutual exclusive")
    if t == "array" and not isinstance(s.get("items"), dict):
        problems.append(f"{path}.items: Required value: must be specified for arrays")
    lt = s.get("x-kubernetes-list-type")
    if lt is not None:
        if t != "array":
            problems.append(f"{path}.x-kubernetes-list-type: only allowed on arrays")
        elif lt not in ("atomic", "set", "map"):
            problems.append(f"{path}.x-kubernetes-list-type: unsupported value {lt!r}")
        items = s.get("items") or {}
        if lt == "set" and items.get("type") in ("object", "array"):
            problems.append(f"{path}.items: set items must be scalars")
        if lt == "map":
            keys = s.get("x-kubernetes-list-map-keys") or []
            if not keys:
                problems.append(f"{path}.x-kubernetes-list-map-keys: Required value")
            iprops = items.get("properties") or {}
            for k in keys:
                sub = iprops.get(k)
                if sub is None:
                    problems.append(f"{path}.x-kubernetes-list-map-keys: {k!r} is not a property of items")
                elif k not in (items.get("required") or ()) and "default" not in sub:
                    problems.append(f"{path}.x-kubernetes-list-map-keys: {k!r} must be required or defaulted")
    elif "x-kubernetes-list-map-keys" in s:
        problems.append(f"{path}.x-kubernetes-list-map-keys: only with x-kubernetes-list-type: map")
    if "default" in s and not root:
        bad = validate(s, s["default"])
        if bad:
            problems.append(f"{path}.default: does not validate: {bad[0].message or bad[0].reason}")
    for name, sub in (s.get("properties") or {}).items():
        _check_node(sub, f"{path}.properties.{name}", problems)
    if isinstance(s.get("additionalProperties"), dict):
        _check_node(s["additionalProperties"], f"{path}.additionalProperties", problems)
    if "items" in s:
        _check_node(s["items"], f"{path}.items", problems)
    for j in _JUNCTORS:
        branches = s.get(j)
        if branches is None:
            continue
        for i, b in enumerate(branches if isinstance(branches, list) else [branches]):
            _check_junctor(b, f"{path}.{j}[{i}]", problems, int_or_string=bool(s.get(_INT_OR_STRING)))


def _check_junctor(b, path: str, problems: list, int_or_string: bool):
    if not isinstance(b, dict):
        problems.append(f"{path}: must be a schema object")
        return
    for k in _JUNCTOR_FORBIDDEN:
        # The int-or-string idiom `anyOf: [{type: integer}, {type: string}]`
        # is the one allowed use of type in a branch.
        if k in b and not (k == "type" and int_or_string and b[k] in ("integer", "string")):
            problems.append(f"{path}.{k}: must not be set inside a junctor")
    for name, sub in (b.get("properties") or {}).items():
        _check_junctor(sub, f"{path}.properties.{name}", problems, False)
    if isinstance(b.get("items"), dict):
        _check_junctor(b["items"], f"{path}.items", problems, False)


# ---- loading ---------------------------------------------------------------

def load_crds(directory: str) -> list[dict]:
    """Every CustomResourceDefinition document in the *.yaml / *.yml files
    of `directory` (not recursive; multi-document files fine), sorted by
    metadata.name. Other documents (a kustomization.yaml) are skipped.
    Raises ValueError naming the file when one is not valid YAML."""
    files = sorted(set(glob.glob(os.path.join(directory, "*.yaml")))
                   | set(glob.glob(os.path.join(directory, "*.yml"))))
    crds = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                docs = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return sorted(crds, key=lambda d: str((d.get("metadata") or {}).get("name", "")))
