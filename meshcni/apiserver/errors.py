# SPDX-License-Identifier: MIT OR Apache-2.0
"""API errors as Kubernetes ``Status`` objects.

Every failure the server answers with goes through :class:`APIError`, so
clients (the python client's ``ApiException.body``, kubectl's messages) see
exactly the shape a real kube-apiserver sends.
"""
from __future__ import annotations


class APIError(Exception):
    """A request failure: HTTP code, Kubernetes reason, message, details."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict | None = None,
                  status: str = "Failure") -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status,
           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def success_status(rt, name: str) -> dict:
    out = status_object(200, "", "", None, status="Success")
    del out["message"]
    del out["reason"]
    out["details"] = {"name": name, "group": rt.group, "kind": rt.plural}
    return out


def _details(rt, name):
    d = {"name": name, "kind": rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt, name: str) -> APIError:
    return APIError(404, "NotFound", f'{rt.describe()} "{name}" not found', _details(rt, name))


def namespace_not_found(ns: str) -> APIError:
    return APIError(404, "NotFound", f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"})


def already_exists(rt, name: str) -> APIError:
    return APIError(409, "AlreadyExists", f'{rt.describe()} "{name}" already exists',
                    _details(rt, name))


def conflict(rt, name: str) -> APIError:
    return APIError(409, "Conflict",
                    f'Operation cannot be fulfilled on {rt.describe()} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    _details(rt, name))


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def expired(message: str) -> APIError:
    return APIError(410, "Expired", message)


def unsupported_media(ctype: str, accepted: str = "application/json-patch+json, application/merge-patch+json, "
                      "application/apply-patch+yaml, application/strategic-merge-patch+json") -> APIError:
    return APIError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format - accepted media types include: '
                    f'{accepted} (got "{ctype}")')


def invalid(rt, name: str, errors) -> APIError:
    """422 Invalid from a list of FieldError (validation.py's shape)."""
    causes = []
    parts = []
    for e in errors:
        if hasattr(e, "kube_message"):
            full = e.kube_message()
            body = full[len(e.field) + 2:] if e.field and full.startswith(e.field + ": ") else full
        else:
            body = _cause_message(e)
            full = f"{e.field}: {body}" if e.field else body
        causes.append({"reason": e.reason, "message": body, "field": e.field})
        parts.append(full)
    details = _details(rt, name)
    details["kind"] = rt.kind
    details["causes"] = causes
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return APIError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {summary}', details)


_REASON_TEXT = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueTooLong": "Too long",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTypeInvalid": "Invalid value",
}


def _fmt_value(v) -> str:
    import json
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return str(v)
    return "\"" + json.dumps(v, sort_keys=True)[:200].replace('"', "'") + "\""


def _cause_message(e) -> str:
    # Matches the apimachinery field.Error text, e.g.
    #   Invalid value: "10.96.0.999": must be a valid IP address
    #   Required value: must be specified
    head = _REASON_TEXT.get(e.reason, "Invalid value")
    if e.reason in ("FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong") or (
            e.value is None and e.reason != "FieldValueInvalid"):
        return f"{head}: {e.message}" if e.message else head
    return f"{head}: {_fmt_value(e.value)}: {e.message}" if e.message else f"{head}: {_fmt_value(e.value)}"


def forbidden(message: str, rt=None, name: str = "") -> APIError:
    return APIError(403, "Forbidden", message, _details(rt, name) if rt else None)
