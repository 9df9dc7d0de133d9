# SPDX-License-Identifier: MIT OR Apache-2.0
"""Raw REST calls through a ``kubernetes.client.ApiClient``'s transport (auth, TLS, proxies as configured).

For what the typed API has no method for or would deserialise for nothing:
discovery-driven tools (``meshcni sim get/apply``), server-side apply with
YAML bodies, the simulator's kubelet and controllers. Bodies and answers are
plain dicts, as the informers cache them.
"""
from __future__ import annotations

import json


class APIStatusError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, the message the Status's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def rest(api, method: str, path: str, query=(), body=None, content_type: str = "application/json",
         timeout: float = 30, stream: bool = False):
    """One request: the answer's JSON as a dict ({} for an empty body), or the response itself with ``stream``."""
    _m, url, headers, data, _p = api.param_serialize(method, path, query_params=list(query),
                                                      header_params={"Accept": "application/json",
                                                                     "Content-Type": content_type},
                                                      auth_settings=["BearerToken"])
    if body is not None:
        # the transport JSON-encodes bodies itself when the type says json;
        # apply-patch+yaml must arrive as text (JSON is YAML)
        data = body if "json" in content_type else json.dumps(body)
    resp = api.call_api(method, url, header_params=headers, body=data, _request_timeout=timeout)
    if resp.status >= 300:
        raw = resp.read()
        try:
            msg = json.loads(raw).get("message") or resp.reason
        except (ValueError, AttributeError, TypeError):
            msg = (raw or b"").decode(errors="replace")[:300] or resp.reason
        raise APIStatusError(resp.status, msg)
    return resp if stream else (json.loads(resp.read()) if resp.read() else {})


def get_json(api, path: str, query=()) -> dict:
    return rest(api, "GET", path, query)


def send_json(api, method: str, path: str, body, content_type: str = "application/json", query=()) -> dict:
    return rest(api, method, path, query, body, content_type)
