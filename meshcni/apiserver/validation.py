# SPDX-License-Identifier: MIT OR Apache-2.0
"""What a real kube-apiserver validates on the objects meshcni reads and writes.

The simulator's API server calls `validate(group, version, kind, obj, old)` on
create and update and answers 422 with the errors. Field paths and messages
follow apimachinery's `field.Error` so that clients (and the people reading
their logs) see what a real cluster would say; where kube's exact wording was
not worth reproducing, the message still names the rule.

Standard library only: this module is imported by the pure test tier and by
the API server, neither of which should need more than `ipaddress` and `re`.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass

__all__ = [
    "FieldError",
    "is_cidr",
    "is_config_key",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_iana_svc_name",
    "is_ip",
    "is_qualified_name",
    "is_valid_label_value",
    "validate",
    "validate_annotations",
    "validate_label_selector",
    "validate_labels",
    "validate_object_meta",
]

# apimachinery's error type names; the API server copies them into
# Status.details.causes[].reason.
INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"
TYPE_INVALID = "FieldValueTypeInvalid"

_REASON_TEXT = {
    INVALID: "Invalid value",
    REQUIRED: "Required value",
    NOT_SUPPORTED: "Unsupported value",
    DUPLICATE: "Duplicate value",
    TOO_LONG: "Too long",
    TOO_MANY: "Too many",
    FORBIDDEN: "Forbidden",
    TYPE_INVALID: "Invalid value",
}
# kube prints no value for these: the value is either absent or too big.
_NO_VALUE = {REQUIRED, FORBIDDEN, TOO_LONG}


def _go_value(value) -> str:
    """The value the way apimachinery prints it (%#v-ish: strings quoted)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 256 else text[:253] + "..."


@dataclass(frozen=True)
class FieldError:
    """One validation failure. `field` is a kube path: `spec.ports[0].port`."""

    field: str
    value: object
    reason: str
    message: str

    def kube_message(self) -> str:
        """The text kube puts in Status.message, e.g.
        `spec.clusterIP: Invalid value: "10.96.0.999": must be a valid IP address`."""
        body = _REASON_TEXT.get(self.reason, "Invalid value")
        if self.reason not in _NO_VALUE:
            body += ": " + _go_value(self.value)
        if self.message:
            body += ": " + self.message
        return f"{self.field}: {body}" if self.field else body


# ---- paths -----------------------------------------------------------------

def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _key(path: str, key: str) -> str:
    # field.Path.Key: kube writes map keys in brackets for core types
    # (`data[my-key]`); the CRD schema validator writes them dotted.
    return f"{path}[{key}]"


# ---- name and value predicates ---------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}\Z")
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_SUBDOMAIN}\Z")
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_RE = re.compile(rf"^{_DNS1035_LABEL}\Z")
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(rf"^{_QUALIFIED_NAME}\Z")
_LABEL_VALUE_RE = re.compile(rf"^({_QUALIFIED_NAME})?\Z")
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"
_CONFIG_KEY_RE = re.compile(rf"^{_CONFIG_KEY}\Z")
_IANA_SVC_NAME_RE = re.compile(r"^[-a-z0-9]+\Z")
_IANA_HAS_LETTER_RE = re.compile(r"[a-z]")

_LABEL_MAX = 63
_SUBDOMAIN_MAX = 253
_ANNOTATIONS_MAX_BYTES = 256 * 1024
_CONFIGMAP_MAX_BYTES = 1024 * 1024

_MSG_DNS1123_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    f"regex used for validation is '{_DNS1123_LABEL}')")
_MSG_DNS1123_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{_DNS1123_SUBDOMAIN}')")
_MSG_DNS1035_LABEL = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    f"'abc-123', regex used for validation is '{_DNS1035_LABEL}')")
_MSG_QUALIFIED_NAME = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{_QUALIFIED_NAME}')")
_MSG_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '({_QUALIFIED_NAME})?')")
_MSG_CONFIG_KEY = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    f"'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '{_CONFIG_KEY}')")
MSG_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
MSG_CIDR = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
MSG_PORT = "must be between 1 and 65535, inclusive"


def _max_len_msg(n: int) -> str:
    return f"must be no more than {n} characters"


def _dns1123_label_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > _LABEL_MAX:
        msgs.append(_max_len_msg(_LABEL_MAX))
    if not _DNS1123_LABEL_RE.match(s):
        msgs.append(_MSG_DNS1123_LABEL)
    return msgs


def _dns1123_subdomain_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > _SUBDOMAIN_MAX:
        msgs.append(_max_len_msg(_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.match(s):
        msgs.append(_MSG_DNS1123_SUBDOMAIN)
    return msgs


def _dns1035_label_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > _LABEL_MAX:
        msgs.append(_max_len_msg(_LABEL_MAX))
    if not _DNS1035_LABEL_RE.match(s):
        msgs.append(_MSG_DNS1035_LABEL)
    return msgs


def _qualified_name_msgs(s: str) -> list[str]:
    parts = s.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        msgs = ["prefix part " + m for m in _dns1123_subdomain_msgs(prefix)]
        if msgs:
            return msgs + _qualified_name_msgs(name)
    else:
        return ["a qualified name " + _MSG_QUALIFIED_NAME
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        return ["name part must be non-empty"]
    msgs = []
    if len(name) > _LABEL_MAX:
        msgs.append("name part " + _max_len_msg(_LABEL_MAX))
    if not _QUALIFIED_NAME_RE.match(name):
        msgs.append("name part " + _MSG_QUALIFIED_NAME)
    return msgs


def _label_value_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > _LABEL_MAX:
        msgs.append(_max_len_msg(_LABEL_MAX))
    if not _LABEL_VALUE_RE.match(s):
        msgs.append(_MSG_LABEL_VALUE)
    return msgs


def _iana_svc_name_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > 15:
        msgs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME_RE.match(s):
        msgs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in s:
        msgs.append("must not contain consecutive hyphens")
    if not _IANA_HAS_LETTER_RE.search(s):
        msgs.append("must contain at least one letter (a-z)")
    if s.startswith("-") or s.endswith("-"):
        msgs.append("must not begin or end with a hyphen")
    return msgs


def _config_key_msgs(s: str) -> list[str]:
    msgs = []
    if len(s) > _SUBDOMAIN_MAX:
        msgs.append(_max_len_msg(_SUBDOMAIN_MAX))
    if not _CONFIG_KEY_RE.match(s):
        msgs.append(_MSG_CONFIG_KEY)
    if s == ".":
        msgs.append("must not be '.'")
    elif s == "..":
        msgs.append("must not be '..'")
    elif s.startswith(".."):
        msgs.append("must not start with '..'")
    return msgs


def is_dns1123_label(s) -> bool:
    return isinstance(s, str) and not _dns1123_label_msgs(s)


def is_dns1123_subdomain(s) -> bool:
    return isinstance(s, str) and not _dns1123_subdomain_msgs(s)


def is_dns1035_label(s) -> bool:
    return isinstance(s, str) and not _dns1035_label_msgs(s)


def is_qualified_name(s) -> bool:
    return isinstance(s, str) and not _qualified_name_msgs(s)


def is_valid_label_value(s) -> bool:
    return isinstance(s, str) and not _label_value_msgs(s)


def is_iana_svc_name(s) -> bool:
    return isinstance(s, str) and not _iana_svc_name_msgs(s)


def is_config_key(s) -> bool:
    return isinstance(s, str) and not _config_key_msgs(s)


def _parse_ip(s):
    # ipaddress refuses leading zeros ("010.0.0.1") and zone ids, as kube's
    # strict parser does for new objects.
    if not isinstance(s, str) or "%" in s:
        return None
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def _parse_cidr(s):
    # Host bits may be set ("10.0.0.1/8"): kube's sloppy CIDR parse accepts
    # them and existing manifests rely on it. Callers use the network.
    if not isinstance(s, str) or "/" not in s:
        return None
    try:
        return ipaddress.ip_network(s, strict=False)
    except ValueError:
        return None


def is_ip(s) -> bool:
    """A single IPv4 or IPv6 address in canonical-enough text form."""
    return _parse_ip(s) is not None


def is_cidr(s) -> bool:
    """An IPv4 or IPv6 `address/prefix` (host bits allowed, like kube)."""
    return _parse_cidr(s) is not None


# ---- the error collector ---------------------------------------------------

class _Errors(list):
    """A list of FieldError with kube's constructors (field.Invalid, ...)."""

    def invalid(self, path, value, msg):
        self.append(FieldError(path, value, INVALID, msg))

    def required(self, path, msg=""):
        self.append(FieldError(path, "", REQUIRED, msg))

    def not_supported(self, path, value, supported):
        quoted = ", ".join(json.dumps(s) for s in supported)
        self.append(FieldError(path, value, NOT_SUPPORTED, f"supported values: {quoted}"))

    def duplicate(self, path, value):
        self.append(FieldError(path, value, DUPLICATE, ""))

    def forbidden(self, path, msg):
        self.append(FieldError(path, "", FORBIDDEN, msg))

    def too_long(self, path, value, limit):
        self.append(FieldError(path, value, TOO_LONG, f"must have at most {limit} bytes"))

    def too_many(self, path, count, limit):
        self.append(FieldError(path, count, TOO_MANY, f"must have at most {limit} items"))

    def type_invalid(self, path, value, typename):
        self.append(FieldError(path, value, TYPE_INVALID, f"must be of type {typename}"))

    def each(self, path, value, msgs):
        for m in msgs:
            self.invalid(path, value, m)

    # Typed getters: a wrong JSON type is reported once and then treated as
    # absent, so the rest of the validation never raises on odd input.
    def dict_at(self, parent: dict, name: str, path: str) -> dict | None:
        v = parent.get(name)
        if v is None:
            return None
        if not isinstance(v, dict):
            self.type_invalid(_child(path, name), v, "object")
            return None
        return v

    def list_at(self, parent: dict, name: str, path: str) -> list | None:
        v = parent.get(name)
        if v is None:
            return None
        if not isinstance(v, list):
            self.type_invalid(_child(path, name), v, "array")
            return None
        return v

    def str_at(self, parent: dict, name: str, path: str) -> str | None:
        v = parent.get(name)
        if v is None:
            return None
        if not isinstance(v, str):
            self.type_invalid(_child(path, name), v, "string")
            return None
        return v

    def int_at(self, parent: dict, name: str, path: str) -> int | None:
        v = parent.get(name)
        if v is None:
            return None
        if not _is_int(v):
            self.type_invalid(_child(path, name), v, "integer")
            return None
        return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _canon(v) -> str:
    """A hashable stand-in for a decoded JSON value of any shape."""
    return json.dumps(v, sort_keys=True, default=str)


def _items(errs: _Errors, seq, path):
    """(index path, item) for the dict items of a list; others are reported."""
    for i, item in enumerate(seq or ()):
        p = _index(path, i)
        if isinstance(item, dict):
            yield i, p, item
        else:
            errs.type_invalid(p, item, "object")


def _enum(errs: _Errors, path: str, value, allowed, required=False):
    if value is None or value == "":
        if required:
            errs.required(path)
        return
    if value not in allowed:
        errs.not_supported(path, value, sorted(allowed))


# ---- shared pieces ---------------------------------------------------------

def validate_labels(labels, path: str = "metadata.labels") -> list[FieldError]:
    """Label keys (qualified names) and values; one pass, linear in the count.

    kube reports every label problem on the labels field itself with the key
    or value as the bad value; so does this.
    """
    errs = _Errors()
    if labels is None:
        return errs
    if not isinstance(labels, dict):
        errs.type_invalid(path, labels, "object")
        return errs
    for k, v in labels.items():
        errs.each(path, k, _qualified_name_msgs(k) if isinstance(k, str) else ["must be a string"])
        if not isinstance(v, str):
            errs.type_invalid(path, v, "string")
        else:
            errs.each(path, v, _label_value_msgs(v))
    return errs


def validate_annotations(annotations, path: str = "metadata.annotations") -> list[FieldError]:
    """Annotation keys and the 256 KiB total (keys plus values) limit."""
    errs = _Errors()
    if annotations is None:
        return errs
    if not isinstance(annotations, dict):
        errs.type_invalid(path, annotations, "object")
        return errs
    total = 0
    for k, v in annotations.items():
        if not isinstance(k, str):
            errs.invalid(path, k, "must be a string")
            continue
        # kube lower-cases before the check: annotation keys may be mixed case.
        errs.each(path, k, _qualified_name_msgs(k.lower()))
        if not isinstance(v, str):
            errs.type_invalid(path, v, "string")
            continue
        total += len(k.encode()) + len(v.encode())
    if total > _ANNOTATIONS_MAX_BYTES:
        errs.too_long(path, "", _ANNOTATIONS_MAX_BYTES)
    return errs


_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(sel, path: str) -> list[FieldError]:
    """A metav1.LabelSelector: matchLabels and matchExpressions."""
    errs = _Errors()
    if sel is None:
        return errs
    if not isinstance(sel, dict):
        errs.type_invalid(path, sel, "object")
        return errs
    errs.extend(validate_labels(sel.get("matchLabels"), _child(path, "matchLabels")))
    exprs = errs.list_at(sel, "matchExpressions", path)
    for _, p, expr in _items(errs, exprs, _child(path, "matchExpressions")):
        op = expr.get("operator")
        values = expr.get("values")
        if values is not None and not isinstance(values, list):
            errs.type_invalid(_child(p, "values"), values, "array")
            values = None
        if op in ("In", "NotIn"):
            if not values:
                errs.required(_child(p, "values"),
                              "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(_child(p, "values"),
                               "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        elif not op:
            errs.required(_child(p, "operator"))
        else:
            errs.invalid(_child(p, "operator"), op, "not a valid selector operator")
        key = expr.get("key")
        if not key:
            errs.required(_child(p, "key"))
        elif isinstance(key, str):
            errs.each(_child(p, "key"), key, _qualified_name_msgs(key))
        else:
            errs.type_invalid(_child(p, "key"), key, "string")
        for j, v in enumerate(values or ()):
            if not isinstance(v, str):
                errs.type_invalid(_index(_child(p, "values"), j), v, "string")
            elif op in ("In", "NotIn"):
                errs.each(_index(_child(p, "values"), j), v, _label_value_msgs(v))
    return errs


def validate_object_meta(meta, *, namespaced: bool, name_rule: str = "subdomain",
                         path: str = "metadata") -> list[FieldError]:
    """ObjectMeta: name (or generateName), namespace, labels, annotations.

    name_rule: "subdomain" (most kinds), "label" (Namespace), "dns1035"
    (Service), or "path" (only '/' and '%' are refused, as for CRD objects
    and Nodes).
    """
    errs = _Errors()
    if not isinstance(meta, dict):
        if meta is None:
            errs.required(_child(path, "name"), "name or generateName is required")
        else:
            errs.type_invalid(path, meta, "object")
        return errs
    name = meta.get("name")
    generate = meta.get("generateName")
    checker = {"subdomain": _dns1123_subdomain_msgs, "label": _dns1123_label_msgs,
               "dns1035": _dns1035_label_msgs, "path": _path_segment_msgs}[name_rule]
    if name is None or name == "":
        if not generate:
            errs.required(_child(path, "name"), "name or generateName is required")
    elif not isinstance(name, str):
        errs.type_invalid(_child(path, "name"), name, "string")
    else:
        errs.each(_child(path, "name"), name, checker(name))
    if generate and isinstance(generate, str):
        # generateName gets a random suffix; as kube's prefix mode does, check
        # the prefix with a character appended ("pod." and "web-" are fine)
        trimmed = generate + "a"
        errs.each(_child(path, "generateName"), generate,
                  [m for m in checker(trimmed) if "no more than" not in m])
    ns = meta.get("namespace")
    if namespaced:
        if not ns:
            errs.required(_child(path, "namespace"))
        elif not isinstance(ns, str):
            errs.type_invalid(_child(path, "namespace"), ns, "string")
        else:
            errs.each(_child(path, "namespace"), ns, _dns1123_label_msgs(ns))
    elif ns:
        errs.forbidden(_child(path, "namespace"), "not allowed on this type")
    errs.extend(validate_labels(meta.get("labels"), _child(path, "labels")))
    errs.extend(validate_annotations(meta.get("annotations"), _child(path, "annotations")))
    for fld in ("generation", "deletionGracePeriodSeconds"):
        v = meta.get(fld)
        if v is not None and (not _is_int(v) or v < 0):
            errs.invalid(_child(path, fld), v, "must be greater than or equal to 0")
    return errs


def _path_segment_msgs(s: str) -> list[str]:
    if s in (".", ".."):
        return [f"may not be '{s}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in s]


def _validate_meta_update(new, old, errs: _Errors):
    nm, om = new.get("metadata") or {}, old.get("metadata") or {}
    if not isinstance(nm, dict) or not isinstance(om, dict):
        return
    for fld in ("name", "namespace", "uid"):
        if om.get(fld) and nm.get(fld) and nm.get(fld) != om.get(fld):
            errs.invalid(_child("metadata", fld), nm.get(fld), "field is immutable")


_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _port_num(errs: _Errors, path: str, value, *, lo: int = 1, required=False):
    if value is None:
        if required:
            errs.required(path)
        return
    if not _is_int(value):
        errs.type_invalid(path, value, "integer")
        return
    if not lo <= value <= 65535:
        errs.invalid(path, value, MSG_PORT if lo == 1 else f"must be between {lo} and 65535, inclusive")


def _app_protocol(errs: _Errors, path: str, port: dict):
    ap = port.get("appProtocol")
    if ap is None:
        return
    if not isinstance(ap, str):
        errs.type_invalid(_child(path, "appProtocol"), ap, "string")
    else:
        errs.each(_child(path, "appProtocol"), ap, _qualified_name_msgs(ap))


def _int_or_name_port(errs: _Errors, path: str, value):
    """An IntOrString port: a number 1..65535 or an IANA service name."""
    if isinstance(value, str):
        errs.each(path, value, _iana_svc_name_msgs(value))
    else:
        _port_num(errs, path, value)


def _ip_list(errs: _Errors, parent: dict, single: str, plural: str, path: str, *,
             item_key: str | None = None, max_items: int = 2):
    """A `podIP`/`podIPs` style pair: each a valid IP, at most one per family,
    the list's first entry equal to the single field when both are set."""
    one = errs.str_at(parent, single, path)
    if one and not is_ip(one):
        errs.invalid(_child(path, single), one, MSG_IP)
    many = errs.list_at(parent, plural, path) or []
    ppath = _child(path, plural)
    if len(many) > max_items:
        errs.too_many(ppath, len(many), max_items)
    families = set()
    for i, entry in enumerate(many):
        p = _index(ppath, i)
        ip = entry
        if item_key is not None:
            if not isinstance(entry, dict):
                errs.type_invalid(p, entry, "object")
                continue
            p = _child(p, item_key)
            ip = entry.get(item_key)
        addr = _parse_ip(ip)
        # The first entry mirrors the single field, already judged there.
        if addr is None and not (i == 0 and one and ip == one):
            errs.invalid(p, ip, MSG_IP)
        if addr is not None:
            if addr.version in families:
                errs.invalid(ppath, many, "may specify no more than one IP for each IP family")
            families.add(addr.version)
    if one and many:
        first = many[0].get(item_key) if item_key and isinstance(many[0], dict) else many[0]
        if first != one:
            errs.invalid(_index(ppath, 0) + (f".{item_key}" if item_key else ""), first,
                         f"must match `{single}` when `{single}` is specified")


# ---- Pod -------------------------------------------------------------------

def _validate_pod(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    spec = errs.dict_at(obj, "spec", "")
    if spec is None:
        errs.required("spec")
        spec = {}
    names = set()
    port_names = set()
    containers = errs.list_at(spec, "containers", "spec")
    if not containers:
        errs.required("spec.containers")
    for group in ("initContainers", "containers"):
        seq = containers if group == "containers" else errs.list_at(spec, group, "spec")
        for _, p, c in _items(errs, seq, _child("spec", group)):
            name = c.get("name")
            if not name:
                errs.required(_child(p, "name"))
            elif not isinstance(name, str):
                errs.type_invalid(_child(p, "name"), name, "string")
            else:
                errs.each(_child(p, "name"), name, _dns1123_label_msgs(name))
                if name in names:
                    errs.duplicate(_child(p, "name"), name)
                names.add(name)
            if not c.get("image"):
                errs.required(_child(p, "image"))
            ports = errs.list_at(c, "ports", p)
            for _, pp, port in _items(errs, ports, _child(p, "ports")):
                _port_num(errs, _child(pp, "containerPort"), port.get("containerPort"), required=True)
                if port.get("hostPort") not in (None, 0):
                    _port_num(errs, _child(pp, "hostPort"), port.get("hostPort"))
                _enum(errs, _child(pp, "protocol"), port.get("protocol"), _PROTOCOLS)
                pname = port.get("name")
                if pname:
                    if not isinstance(pname, str):
                        errs.type_invalid(_child(pp, "name"), pname, "string")
                    else:
                        errs.each(_child(pp, "name"), pname, _iana_svc_name_msgs(pname))
                        if pname in port_names:
                            errs.duplicate(_child(pp, "name"), pname)
                        port_names.add(pname)
                hip = port.get("hostIP")
                if hip and not is_ip(hip):
                    errs.invalid(_child(pp, "hostIP"), hip, MSG_IP)
    node = errs.str_at(spec, "nodeName", "spec")
    if node:
        errs.each("spec.nodeName", node, _dns1123_subdomain_msgs(node))
    for fld in ("restartPolicy",):
        _enum(errs, _child("spec", fld), spec.get(fld), ("Always", "OnFailure", "Never"))
    _enum(errs, "spec.dnsPolicy", spec.get("dnsPolicy"),
          ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"))
    status = errs.dict_at(obj, "status", "")
    if status:
        _ip_list(errs, status, "podIP", "podIPs", "status", item_key="ip")
        _ip_list(errs, status, "hostIP", "hostIPs", "status", item_key="ip")
        _enum(errs, "status.phase", status.get("phase"),
              ("Pending", "Running", "Succeeded", "Failed", "Unknown"))
    if old is not None:
        _validate_meta_update(obj, old, errs)
        old_node = (old.get("spec") or {}).get("nodeName")
        if old_node and node != old_node:
            errs.invalid("spec.nodeName", node, "field is immutable")


# ---- Service ---------------------------------------------------------------

_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def _validate_service(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True, name_rule="dns1035"))
    spec = errs.dict_at(obj, "spec", "")
    if spec is None:
        errs.required("spec")
        spec = {}
    stype = spec.get("type") or "ClusterIP"
    _enum(errs, "spec.type", spec.get("type"), _SERVICE_TYPES)
    external = stype == "ExternalName"

    cip = errs.str_at(spec, "clusterIP", "spec")
    cips = errs.list_at(spec, "clusterIPs", "spec") or []
    if external:
        if cip or cips:
            errs.forbidden("spec.clusterIPs" if cips else "spec.clusterIP",
                           "must be empty for ExternalName services")
        ename = errs.str_at(spec, "externalName", "spec")
        if not ename:
            errs.required("spec.externalName")
        else:
            # A trailing dot (fully qualified) is allowed; case is not significant.
            errs.each("spec.externalName", ename, _dns1123_subdomain_msgs(ename.lower().rstrip(".")))
    else:
        if cip and cip != "None" and not is_ip(cip):
            errs.invalid("spec.clusterIP", cip, MSG_IP)
        if len(cips) > 2:
            errs.too_many("spec.clusterIPs", len(cips), 2)
        # An empty clusterIP with clusterIPs set is kube's pre-normalization
        # form (the strategy copies clusterIPs[0] over it), not a conflict.
        if cip and cips and cips[0] != cip:
            errs.invalid("spec.clusterIPs[0]", cips[0], "must match `clusterIP` when `clusterIP` is specified")
        families: list = []   # aligned with clusterIPs; None where no family
        for i, ip in enumerate(cips):
            p = _index("spec.clusterIPs", i)
            families.append(None)
            if ip == "None":
                if i > 0 or len(cips) > 1:
                    errs.invalid(p, ip, "'None' must be the first and only value")
                continue
            addr = _parse_ip(ip)
            # clusterIPs[0] mirrors clusterIP, which is reported already.
            if addr is None and not (i == 0 and ip == cip):
                errs.invalid(p, ip, MSG_IP)
            if addr is not None:
                if addr.version in families:
                    errs.invalid("spec.clusterIPs", cips,
                                 "may specify no more than one IP for each IP family")
                families[i] = addr.version
        fams = errs.list_at(spec, "ipFamilies", "spec") or []
        if len(fams) > 2:
            errs.too_many("spec.ipFamilies", len(fams), 2)
        seen = set()
        for i, fam in enumerate(fams):
            p = _index("spec.ipFamilies", i)
            if fam not in ("IPv4", "IPv6"):
                errs.not_supported(p, fam, ["IPv4", "IPv6"])
                continue
            if fam in seen:
                errs.duplicate(p, fam)
            seen.add(fam)
            if i < len(families) and families[i] not in (None, 4 if fam == "IPv4" else 6):
                errs.invalid(p, fam, f"does not match IP family of `clusterIPs[{i}]`")
        _enum(errs, "spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"),
              ("SingleStack", "PreferDualStack", "RequireDualStack"))

    ports = errs.list_at(spec, "ports", "spec")
    if not ports and not external and cip != "None":
        errs.required("spec.ports")
    port_names = set()
    keys = set()
    for _, p, port in _items(errs, ports, "spec.ports"):
        name = port.get("name")
        if name:
            if not isinstance(name, str):
                errs.type_invalid(_child(p, "name"), name, "string")
            else:
                errs.each(_child(p, "name"), name, _dns1123_label_msgs(name))
                if name in port_names:
                    errs.duplicate(_child(p, "name"), name)
                port_names.add(name)
        elif len(ports) > 1:
            errs.required(_child(p, "name"))
        _port_num(errs, _child(p, "port"), port.get("port"), required=True)
        proto = port.get("protocol")
        _enum(errs, _child(p, "protocol"), proto, _PROTOCOLS)
        key = (port.get("port"), proto or "TCP")
        if _is_int(key[0]) and isinstance(key[1], str):
            if key in keys:
                errs.duplicate(p, {"port": key[0], "protocol": key[1]})
            keys.add(key)
        _app_protocol(errs, p, port)
        tp = port.get("targetPort")
        if tp is not None and tp != 0:
            _int_or_name_port(errs, _child(p, "targetPort"), tp)
        np_ = port.get("nodePort")
        if np_ not in (None, 0):
            if stype in ("ClusterIP", "ExternalName"):
                errs.forbidden(_child(p, "nodePort"), f"may not be used when `type` is '{stype}'")
            else:
                _port_num(errs, _child(p, "nodePort"), np_)

    errs.extend(validate_labels(spec.get("selector"), "spec.selector"))
    aff = spec.get("sessionAffinity")
    _enum(errs, "spec.sessionAffinity", aff, ("ClientIP", "None"))
    cfg = errs.dict_at(spec, "sessionAffinityConfig", "spec")
    if cfg:
        if aff != "ClientIP":
            errs.invalid("spec.sessionAffinityConfig", cfg,
                         f"must not be set when session affinity is {aff or 'None'}")
        client = errs.dict_at(cfg, "clientIP", "spec.sessionAffinityConfig") or {}
        t = client.get("timeoutSeconds")
        if t is not None and (not _is_int(t) or not 0 < t <= 86400):
            errs.invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", t,
                         "must be greater than 0 and less than 86400")
    for fld in ("externalTrafficPolicy", "internalTrafficPolicy"):
        _enum(errs, _child("spec", fld), spec.get(fld), ("Cluster", "Local"))
    for i, ip in enumerate(errs.list_at(spec, "externalIPs", "spec") or ()):
        if not is_ip(ip):
            errs.invalid(_index("spec.externalIPs", i), ip, MSG_IP)
    hc = spec.get("healthCheckNodePort")
    if hc not in (None, 0):
        if stype != "LoadBalancer" or spec.get("externalTrafficPolicy") != "Local":
            errs.invalid("spec.healthCheckNodePort", hc,
                         "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        else:
            _port_num(errs, "spec.healthCheckNodePort", hc)
    ranges = errs.list_at(spec, "loadBalancerSourceRanges", "spec") or ()
    if ranges and stype != "LoadBalancer":
        errs.forbidden("spec.loadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'")
    for i, r in enumerate(ranges):
        if not isinstance(r, str) or not is_cidr(r.strip()):
            errs.invalid(_index("spec.loadBalancerSourceRanges", i), r,
                         "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ")

    if old is not None:
        _validate_meta_update(obj, old, errs)
        ospec = old.get("spec") or {}
        old_ip = ospec.get("clusterIP")
        crossing = "ExternalName" in (ospec.get("type"), stype)
        # Setting an unset clusterIP is allocation, not mutation; the
        # ExternalName switch releases or acquires one, so it may change.
        if old_ip and not crossing and cip != old_ip:
            errs.invalid("spec.clusterIP", cip, "field is immutable")


# ---- EndpointSlice ---------------------------------------------------------

def _validate_endpointslice(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    atype = obj.get("addressType")
    _enum(errs, "addressType", atype, ("IPv4", "IPv6", "FQDN"), required=True)
    endpoints = errs.list_at(obj, "endpoints", "")
    if endpoints and len(endpoints) > 1000:
        errs.too_many("endpoints", len(endpoints), 1000)
    for _, p, ep in _items(errs, endpoints, "endpoints"):
        addrs = errs.list_at(ep, "addresses", p)
        ap = _child(p, "addresses")
        if not addrs:
            errs.required(ap, "must contain at least 1 address")
        elif len(addrs) > 100:
            errs.too_many(ap, len(addrs), 100)
        for j, a in enumerate(addrs or ()):
            _endpoint_address(errs, _index(ap, j), a, atype)
        for fld in ("nodeName",):
            v = errs.str_at(ep, fld, p)
            if v:
                errs.each(_child(p, fld), v, _dns1123_subdomain_msgs(v))
        h = errs.str_at(ep, "hostname", p)
        if h:
            errs.each(_child(p, "hostname"), h, _dns1123_label_msgs(h))
        cond = errs.dict_at(ep, "conditions", p) or {}
        for c in ("ready", "serving", "terminating"):
            v = cond.get(c)
            if v is not None and not isinstance(v, bool):
                errs.type_invalid(_child(_child(p, "conditions"), c), v, "boolean")
    ports = errs.list_at(obj, "ports", "")
    if ports and len(ports) > 20000:
        errs.too_many("ports", len(ports), 20000)
    names = set()
    for _, p, port in _items(errs, ports, "ports"):
        name = port.get("name") or ""
        if not isinstance(name, str):
            errs.type_invalid(_child(p, "name"), name, "string")
        else:
            if name:
                errs.each(_child(p, "name"), name, _dns1123_label_msgs(name))
            # Unnamed counts as a name: at most one unnamed port.
            if name in names:
                errs.duplicate(_child(p, "name"), name)
            names.add(name)
        # Port is optional (nil = all ports) and 0 is kube's "unset".
        _port_num(errs, _child(p, "port"), port.get("port"), lo=0)
        _enum(errs, _child(p, "protocol"), port.get("protocol"), _PROTOCOLS)
        _app_protocol(errs, p, port)
    if old is not None:
        _validate_meta_update(obj, old, errs)
        if old.get("addressType") and atype != old.get("addressType"):
            errs.invalid("addressType", atype, "field is immutable")


def _endpoint_address(errs: _Errors, path: str, a, atype):
    if not isinstance(a, str):
        errs.type_invalid(path, a, "string")
        return
    if atype == "FQDN":
        errs.each(path, a, _dns1123_subdomain_msgs(a))
        return
    addr = _parse_ip(a)
    want = {"IPv4": 4, "IPv6": 6}.get(atype) if isinstance(atype, str) else None
    if want is None:
        return   # the addressType error already says what is wrong
    if addr is None or addr.version != want:
        errs.invalid(path, a, f"must be a valid {atype} address")


# ---- Node ------------------------------------------------------------------

_NODE_ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _validate_node(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=False))
    spec = errs.dict_at(obj, "spec", "") or {}
    one = errs.str_at(spec, "podCIDR", "spec")
    if one and not is_cidr(one):
        errs.invalid("spec.podCIDR", one, MSG_CIDR)
    many = errs.list_at(spec, "podCIDRs", "spec") or []
    if len(many) > 2:
        errs.too_many("spec.podCIDRs", len(many), 2)
    fams = set()
    for i, c in enumerate(many):
        net = _parse_cidr(c)
        if net is None:
            if not (i == 0 and c == one):
                errs.invalid(_index("spec.podCIDRs", i), c, MSG_CIDR)
            continue
        if net.version in fams:
            errs.invalid("spec.podCIDRs", many, "may specify no more than one CIDR for each IP family")
        fams.add(net.version)
    if one and many and many[0] != one:
        errs.invalid("spec.podCIDRs[0]", many[0], "must match `podCIDR` when `podCIDR` is specified")
    seen = set()
    for _, p, t in _items(errs, errs.list_at(spec, "taints", "spec"), "spec.taints"):
        key = t.get("key")
        if not key:
            errs.required(_child(p, "key"))
        elif isinstance(key, str):
            errs.each(_child(p, "key"), key, _qualified_name_msgs(key))
        val = t.get("value")
        if isinstance(val, str) and val:
            errs.each(_child(p, "value"), val, _label_value_msgs(val))
        _enum(errs, _child(p, "effect"), t.get("effect"), _TAINT_EFFECTS, required=True)
        ident = _canon((key, t.get("effect")))
        if ident in seen:
            errs.duplicate(p, {"key": key, "effect": t.get("effect")})
        seen.add(ident)
    status = errs.dict_at(obj, "status", "") or {}
    for _, p, a in _items(errs, errs.list_at(status, "addresses", "status"), "status.addresses"):
        atype = a.get("type")
        _enum(errs, _child(p, "type"), atype, _NODE_ADDRESS_TYPES, required=True)
        addr = a.get("address")
        if not addr:
            errs.required(_child(p, "address"))
        elif atype in ("InternalIP", "ExternalIP") and not is_ip(addr):
            errs.invalid(_child(p, "address"), addr, MSG_IP)
    if old is not None:
        _validate_meta_update(obj, old, errs)
        ospec = old.get("spec") or {}
        # podCIDR is set once by the IPAM controller and never moved.
        if ospec.get("podCIDR") and one != ospec.get("podCIDR"):
            errs.forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to valid")


# ---- NetworkPolicy ---------------------------------------------------------

def _validate_networkpolicy(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    spec = errs.dict_at(obj, "spec", "")
    if spec is None:
        errs.required("spec")
        return
    if "podSelector" not in spec:
        errs.required("spec.podSelector", "may be empty ({}) to select every pod")
    else:
        errs.extend(validate_label_selector(spec.get("podSelector"), "spec.podSelector"))
    types = errs.list_at(spec, "policyTypes", "spec") or []
    if len(types) > 2:
        errs.invalid("spec.policyTypes", types, "may not specify more than two policyTypes")
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            errs.not_supported(_index("spec.policyTypes", i), t, ["Egress", "Ingress"])
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = errs.list_at(spec, direction, "spec")
        for _, rp, rule in _items(errs, rules, _child("spec", direction)):
            for _, pp, port in _items(errs, errs.list_at(rule, "ports", rp), _child(rp, "ports")):
                _np_port(errs, pp, port)
            peers = errs.list_at(rule, peers_key, rp)
            for _, pp, peer in _items(errs, peers, _child(rp, peers_key)):
                _np_peer(errs, pp, peer)
    if old is not None:
        _validate_meta_update(obj, old, errs)


def _np_port(errs: _Errors, path: str, port: dict):
    _enum(errs, _child(path, "protocol"), port.get("protocol"), _PROTOCOLS)
    p = port.get("port")
    if p is not None:
        _int_or_name_port(errs, _child(path, "port"), p)
    end = port.get("endPort")
    if end is None:
        return
    if p is None:
        errs.required(_child(path, "port"), "must be specified when an endPort is specified")
    elif isinstance(p, str):
        errs.invalid(_child(path, "endPort"), end, "may not be specified when `port` is non-numeric")
    elif _is_int(end) and _is_int(p) and end < p:
        errs.invalid(_child(path, "endPort"), end, "must be greater than or equal to `port`")
    _port_num(errs, _child(path, "endPort"), end)


def _np_peer(errs: _Errors, path: str, peer: dict):
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not kinds:
        errs.required(path, "must specify a peer")
        return
    if "ipBlock" in kinds and len(kinds) > 1:
        errs.forbidden(path, "may not specify more than 1 peer type")
    for k in ("podSelector", "namespaceSelector"):
        errs.extend(validate_label_selector(peer.get(k), _child(path, k)))
    block = errs.dict_at(peer, "ipBlock", path)
    if block is not None:
        _ip_block(errs, _child(path, "ipBlock"), block)


def _ip_block(errs: _Errors, path: str, block: dict, *, except_key: str = "except"):
    """cidr valid; every except entry a strict subset of it, same family."""
    cidr = block.get("cidr")
    if not cidr:
        errs.required(_child(path, "cidr"))
        return None
    net = _parse_cidr(cidr)
    if net is None:
        errs.invalid(_child(path, "cidr"), cidr, MSG_CIDR)
    excepts = errs.list_at(block, except_key, path) or []
    for i, e in enumerate(excepts):
        p = _index(_child(path, except_key), i)
        enet = _parse_cidr(e)
        if enet is None:
            errs.invalid(p, e, MSG_CIDR)
        elif net is not None and (enet.version != net.version or not enet.subnet_of(net)
                                  or enet.prefixlen <= net.prefixlen):
            errs.invalid(p, e, "must be a strict subset of `cidr`")
    return net


# ---- Lease, ConfigMap, Secret, Namespace ------------------------------------

_MICROTIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")


def _validate_lease(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    spec = errs.dict_at(obj, "spec", "") or {}
    errs.str_at(spec, "holderIdentity", "spec")
    d = spec.get("leaseDurationSeconds")
    if d is not None and (not _is_int(d) or d <= 0):
        errs.invalid("spec.leaseDurationSeconds", d, "must be greater than 0")
    t = spec.get("leaseTransitions")
    if t is not None and (not _is_int(t) or t < 0):
        errs.invalid("spec.leaseTransitions", t, "must be greater than or equal to 0")
    for fld in ("acquireTime", "renewTime"):
        v = spec.get(fld)
        if v is not None and not (isinstance(v, str) and _MICROTIME_RE.match(v)):
            errs.invalid(_child("spec", fld), v, "must be an RFC3339 time")
    if old is not None:
        _validate_meta_update(obj, old, errs)


def _data_keys(errs: _Errors, obj: dict, field: str, seen: set) -> int:
    data = errs.dict_at(obj, field, "")
    size = 0
    for k, v in (data or {}).items():
        p = _key(field, k)
        errs.each(p, k, _config_key_msgs(k))
        if k in seen:
            errs.invalid(p, k, "duplicate of key present in data")
        seen.add(k)
        size += len(k) + (len(v) if isinstance(v, str) else 0)
    return size


def _validate_configmap(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    seen: set = set()
    size = _data_keys(errs, obj, "data", seen) + _data_keys(errs, obj, "binaryData", seen)
    if size > _CONFIGMAP_MAX_BYTES:
        errs.too_long("", "", _CONFIGMAP_MAX_BYTES)
    if old is not None:
        _validate_meta_update(obj, old, errs)
        if old.get("immutable") is True and (obj.get("data") != old.get("data")
                                              or obj.get("binaryData") != old.get("binaryData")):
            errs.forbidden("data", "field is immutable when `immutable` is set")


def _validate_secret(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    seen: set = set()
    _data_keys(errs, obj, "data", seen)
    # stringData merges into data on write; its keys follow the same rule.
    _data_keys(errs, obj, "stringData", set())
    data = obj.get("data")
    for k, v in (data.items() if isinstance(data, dict) else ()):
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError):
            errs.invalid(_key("data", k), "<value omitted>", "must be base64-encoded")
    if old is not None:
        _validate_meta_update(obj, old, errs)
        if old.get("type") and obj.get("type") != old.get("type"):
            errs.invalid("type", obj.get("type"), "field is immutable")


def _validate_namespace(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=False, name_rule="label"))
    if old is not None:
        _validate_meta_update(obj, old, errs)


# ---- mesh-cni.dev ----------------------------------------------------------
# The CRD schemas (deploy/crds) carry types, ranges and formats; what a schema
# cannot say — label keys, CIDR containment — is checked here, as a
# validating webhook would.

def _validate_cluster(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=False))


def _validate_meshendpoint(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))


def _validate_identity(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=True))
    spec = errs.dict_at(obj, "spec", "") or {}
    for fld in ("namespaceLabels", "podLabels"):
        errs.extend(validate_labels(spec.get(fld), _child("spec", fld)))
    if old is not None:
        _validate_meta_update(obj, old, errs)
        # An identity number is baked into every node's policy maps.
        oid = (old.get("spec") or {}).get("id")
        if oid is not None and spec.get("id") != oid:
            errs.invalid("spec.id", spec.get("id"), "field is immutable")


def _validate_cidridentity(obj: dict, old, errs: _Errors):
    errs.extend(validate_object_meta(obj.get("metadata"), namespaced=False))
    spec = errs.dict_at(obj, "spec", "")
    if not spec:
        return
    net = _ip_block(errs, "spec", spec)
    prefixes = errs.list_at(spec, "cidrPrefixes", "spec")
    if net is None or not prefixes:
        return
    nets = []
    for i, c in enumerate(prefixes):
        p = _index("spec.cidrPrefixes", i)
        pn = _parse_cidr(c)
        if pn is None:
            errs.invalid(p, c, MSG_CIDR)
        elif pn.version != net.version or not pn.subnet_of(net):
            errs.invalid(p, c, "must be inside `cidr`")
        else:
            nets.append((i, pn))
    if len(nets) != len(prefixes):
        return
    raw = spec.get("except")
    excepts = [_parse_cidr(e) for e in (raw if isinstance(raw, list) else ())]
    excepts = [e for e in excepts if e is not None and e.version == net.version and e.subnet_of(net)]
    # cidrPrefixes is `cidr` minus `except` as disjoint prefixes: the policy
    # maps are programmed from it, so a prefix that overlaps an except (or a
    # hole in the cover) is a wrong verdict on the wire.
    for i, pn in nets:
        for e in excepts:
            if pn.overlaps(e):
                errs.invalid(_index("spec.cidrPrefixes", i), str(prefixes[i]),
                             f"overlaps except {e}")
    ordered = sorted(nets, key=lambda t: (int(t[1].network_address), t[1].prefixlen))
    end = -1
    for i, pn in ordered:
        if int(pn.network_address) <= end:
            errs.invalid(_index("spec.cidrPrefixes", i), str(prefixes[i]),
                         "overlaps another entry of cidrPrefixes")
        end = max(end, int(pn.broadcast_address))
    covered = sum(pn.num_addresses for _, pn in nets)
    covered += sum(e.num_addresses for e in ipaddress.collapse_addresses(excepts))
    if covered != net.num_addresses and not any(e.reason == INVALID and e.field.startswith("spec.cidrPrefixes")
                                                 for e in errs):
        errs.invalid("spec.cidrPrefixes", prefixes, "together with `except` must cover exactly `cidr`")


# ---- dispatch --------------------------------------------------------------

_VALIDATORS = {
    ("", "Pod"): _validate_pod,
    ("", "Service"): _validate_service,
    ("", "Node"): _validate_node,
    ("", "Namespace"): _validate_namespace,
    ("", "ConfigMap"): _validate_configmap,
    ("", "Secret"): _validate_secret,
    ("discovery.k8s.io", "EndpointSlice"): _validate_endpointslice,
    ("networking.k8s.io", "NetworkPolicy"): _validate_networkpolicy,
    ("coordination.k8s.io", "Lease"): _validate_lease,
    ("mesh-cni.dev", "Cluster"): _validate_cluster,
    ("mesh-cni.dev", "MeshEndpoint"): _validate_meshendpoint,
    ("mesh-cni.dev", "Identity"): _validate_identity,
    ("mesh-cni.dev", "CIDRIdentity"): _validate_cidridentity,
}


def validate(group: str, version: str, kind: str, obj: dict, old: dict | None = None) -> list[FieldError]:
    """Validate `obj` (decoded JSON) as kube would on create (`old` None) or
    update. `group` is "" for the core group. Kinds not listed here produce
    no errors: the server still stores them as given. The version is not
    consulted: every kind here has one served version whose rules apply.
    """
    del version
    fn = _VALIDATORS.get((group, kind))
    if fn is None:
        return []
    errs = _Errors()
    if not isinstance(obj, dict):
        errs.type_invalid("", obj, "object")
        return list(errs)
    fn(obj, old if isinstance(old, dict) else None, errs)
    return list(errs)
