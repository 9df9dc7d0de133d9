# SPDX-License-Identifier: MIT OR Apache-2.0
"""The four patch types a kube-apiserver accepts, over plain JSON values.

All functions are pure: they return a new document and never modify their
inputs (stored objects are shared, immutable values; see store.py).
"""
from __future__ import annotations

import copy

from .errors import APIError, bad_request

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, STRATEGIC, JSON_PATCH, APPLY)


# ---------------------------------------------------------------- RFC 7386

def merge_patch(target, patch):
    """JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---------------------------------------------------------------- strategic merge

# List fields merged element-wise by a key, as the Go types' patchMergeKey tags say.
# The key depends on the parent for "ports": a Service port merges by port, a
# container port by containerPort; the merge key is chosen by which one the items carry.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "taints": "key",
    "ownerReferences": "uid",
    "addresses": "type",        # node status addresses
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
_PORT_KEYS = ("port", "containerPort")
# Primitive lists with patchStrategy=merge: treated as sets, union on patch.
SET_LISTS = {"finalizers"}


def _merge_key_for(field: str, items: list) -> str | None:
    if field == "ports":
        for k in _PORT_KEYS:
            if any(isinstance(i, dict) and k in i for i in items):
                return k
        return None
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target, patch):
    """Strategic merge patch for the fields meshcni and kubectl touch.

    Supports ``$patch: replace|delete`` in maps and list items,
    ``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>`` (order
    is applied where possible), ``$retainKeys`` (keys not listed are dropped).
    """
    return _smp_map(target if isinstance(target, dict) else {}, patch)


def _smp_map(target: dict, patch: dict) -> dict | None:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch: expected an object")
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target)
    retain = patch.get("$retainKeys")
    deletes = {}
    orders = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            deletes[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if v is None:
            out.pop(k, None)
            continue
        cur = out.get(k)
        if isinstance(v, dict):
            merged = _smp_map(cur if isinstance(cur, dict) else {}, v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _smp_list(k, cur if isinstance(cur, list) else [], v)
        else:
            out[k] = v
    for field, values in deletes.items():
        if isinstance(out.get(field), list):
            out[field] = [x for x in out[field] if x not in values]
    for field, order in orders.items():
        if isinstance(out.get(field), list) and isinstance(order, list):
            out[field] = _apply_order(field, out[field], order)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(field: str, cur: list, patch: list) -> list:
    if field in SET_LISTS and all(not isinstance(x, (dict, list)) for x in patch):
        out = list(cur)
        for x in patch:
            if x not in out:
                out.append(x)
        return out
    key = _merge_key_for(field, patch + cur)
    if key is None or not all(isinstance(x, dict) for x in patch):
        if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
            return [copy.deepcopy({k: v for k, v in x.items() if k != "$patch"})
                    for x in patch if not (isinstance(x, dict) and x.get("$patch") == "replace")]
        return copy.deepcopy(patch)
    if any(x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if x.get("$patch") != "replace"]
    out = list(cur)
    for item in patch:
        if key not in item:
            raise bad_request(f"strategic merge patch: {field} item {item!r} has no merge key {key!r}")
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_smp_map({}, item))
        else:
            out[idx] = _smp_map(out[idx], item)
    return out


def _apply_order(field: str, items: list, order: list) -> list:
    if not items or not order:
        return items
    if all(not isinstance(x, dict) for x in order):
        rank = {v: i for i, v in enumerate(order)}
        return sorted(items, key=lambda x: rank.get(x, len(rank))) if all(
            not isinstance(x, (dict, list)) for x in items) else items
    key = _merge_key_for(field, order + items)
    if key is None:
        return items
    rank = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
    try:
        return sorted(items, key=lambda x: rank.get(x.get(key), len(rank)))
    except (AttributeError, TypeError):
        return items


# ---------------------------------------------------------------- RFC 6902

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f'json patch: path "{path}" must start with "/"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise APIError(422, "Invalid", f'json patch: "{token}" in path "{path}" is not an array index')
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise APIError(422, "Invalid", f'json patch: index {i} out of range in path "{path}"')
    return i


def _walk(doc, tokens: list[str], path: str):
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise APIError(422, "Invalid", f'json patch: path "{path}" does not exist')
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, path, False)]
        else:
            raise APIError(422, "Invalid", f'json patch: path "{path}" does not exist')
    return cur


def _get(doc, path):
    return _walk(doc, _pointer(path), path)


def _add(doc, path, value):
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, True), value)
    else:
        raise APIError(422, "Invalid", f'json patch: cannot add at "{path}"')
    return doc


def _remove(doc, path):
    tokens = _pointer(path)
    if not tokens:
        raise APIError(422, "Invalid", "json patch: cannot remove the whole document")
    parent = _walk(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise APIError(422, "Invalid", f'json patch: path "{path}" does not exist')
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path, False))
    raise APIError(422, "Invalid", f'json patch: path "{path}" does not exist')


def json_patch(target, ops):
    """RFC 6902: add, remove, replace, move, copy, test; all-or-nothing."""
    if not isinstance(ops, list):
        raise bad_request("json patch: the body must be an array of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"json patch: malformed operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise APIError(422, "Invalid", f'json patch: test failed at "{path}"')
        else:
            raise bad_request(f'json patch: unknown operation "{kind}"')
    return doc


def apply_patch(content_type: str, target, body):
    """Dispatch on the request's Content-Type (server-side apply merges strategically)."""
    if content_type == MERGE:
        return merge_patch(target, body)
    if content_type in (STRATEGIC, APPLY):
        return strategic_merge_patch(target, body)
    if content_type == JSON_PATCH:
        return json_patch(target, body)
    from .errors import unsupported_media
    raise unsupported_media(content_type)
