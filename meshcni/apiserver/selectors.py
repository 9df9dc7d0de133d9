# SPDX-License-Identifier: MIT OR Apache-2.0
"""Label and field selectors, parsed once per request and matched per object.

Grammar (as apimachinery's ``labels.Parse``)::

    requirement := key [ ("=" | "==" | "!=") value ]
                 | key ("in" | "notin") "(" value {"," value} ")"
                 | "!" key
    selector    := requirement {"," requirement}

Field selectors take only the equality forms, over a fixed set of paths.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import bad_request

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str            # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        v = labels.get(self.key)
        if self.op == "=":
            return present and v == self.values[0]
        if self.op == "!=":
            return not present or v != self.values[0]
        if self.op == "in":
            return present and v in self.values
        return not present or v not in self.values  # notin


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = Selector()


def _split_top(s: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


_SET = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ = re.compile(r"^\s*([^!=\s]+)\s*(==|=|!=)\s*(\S*)\s*$")


def _check_key(key: str, text: str):
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in selector "{text}"')


def _check_value(value: str, text: str):
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f'unable to parse requirement: invalid label value: "{value}" in selector "{text}"')


def parse_label_selector(text: str | None) -> Selector:
    """Parse a labelSelector; malformed input is a 400 naming the selector."""
    if not text or not text.strip():
        return EVERYTHING
    reqs = []
    for part in _split_top(text):
        if not part.strip():
            raise bad_request(f'unable to parse requirement: found \'\', expected: identifier in selector "{text}"')
        m = _SET.match(part)
        if m:
            key, op, vals = m.group(1), m.group(2), m.group(3)
            _check_key(key, text)
            values = tuple(v.strip() for v in vals.split(","))
            for v in values:
                _check_value(v, text)
            reqs.append(Requirement(key, op, values))
            continue
        m = _EQ.match(part)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3)
            _check_key(key, text)
            _check_value(value, text)
            reqs.append(Requirement(key, "=" if op in ("=", "==") else "!=", (value,)))
            continue
        p = part.strip()
        if p.startswith("!"):
            _check_key(p[1:].strip(), text)
            reqs.append(Requirement(p[1:].strip(), "!"))
            continue
        if re.search(r"[\s()=!]", p):
            raise bad_request(f'unable to parse requirement: invalid selector "{text}"')
        _check_key(p, text)
        reqs.append(Requirement(p, "exists"))
    return Selector(tuple(reqs))


# Field paths a real server accepts for every kind, plus the per-kind extras meshcni
# (and kubectl) use. Anything else is a 400, as kube answers "field label not supported".
_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_KIND_FIELDS = {
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName", "spec.hostNetwork"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Service": ("spec.clusterIP", "spec.type"),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str

    def matches(self, obj: dict) -> bool:
        got = field_value(obj, self.path)
        return (got != self.value) if self.negate else (got == self.value)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: dict) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def field_value(obj: dict, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, kind: str, crd: bool = False) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    allowed = set(_COMMON_FIELDS) | set(_KIND_FIELDS.get(kind, ()))
    reqs = []
    for part in text.split(","):
        m = re.match(r"^\s*([^!=\s]+)\s*(==|=|!=)\s*(\S*)\s*$", part)
        if not m:
            raise bad_request(f'invalid field selector "{text}": expected key=value, key==value or key!=value')
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: {path} (in fieldSelector "{text}")')
        reqs.append(FieldRequirement(path, op == "!=", value))
    return FieldSelector(tuple(reqs))
