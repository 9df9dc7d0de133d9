# SPDX-License-Identifier: MIT OR Apache-2.0
"""Hostile input for the API server (issue 15): every answer to a hostile request is a
4xx with a kube-style Status body (never a 5xx, never a hang), and the server keeps
serving — the next request, on the same connection unless it was announced closed, and on
a new one, still works.

A table of known-hostile requests, then hypothesis: valid objects of several kinds with one
field replaced by a value of another JSON type, every patch type with generated bodies,
and generated selectors, query parameters and Content-Types.
MESHCNI_FUZZ_API raises the number of generated requests (default 300).
"""
import http.client
import json
import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshcni.apiserver import APIServer

pytestmark = pytest.mark.pure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = int(os.environ.get("MESHCNI_FUZZ_API", "300"))
SEED = int(os.environ["MESHCNI_FUZZ_SEED"]) if os.environ.get("MESHCNI_FUZZ_SEED") else None
NS = "/api/v1/namespaces/default"
CM = NS + "/configmaps"
JSON = {"Content-Type": "application/json"}
PATCHES = ["application/json-patch+json", "application/merge-patch+json",
           "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server():
    with APIServer(crd_dir=os.path.join(REPO, "deploy", "crds")) as srv:
        host, port = srv.url.split("//", 1)[1].rsplit(":", 1)
        srv.addr = (host, int(port))
        c = http.client.HTTPConnection(*srv.addr, timeout=10)
        for body in ({"metadata": {"name": "x"}, "data": {"a": "b"}},):
            c.request("POST", CM, json.dumps(body), JSON)
            assert c.getresponse().read() and True
        c.close()
        yield srv


class Checker:
    def __init__(self, server):
        self.server = server
        self.conn = None
        self.codes = {}

    def _connect(self):
        self.conn = http.client.HTTPConnection(*self.server.addr, timeout=10)

    def request(self, method, path, body=None, headers=None):
        """One hostile request, then a plain one on the same connection (if it stays open)
        and one on a new connection."""
        if self.conn is None:
            self._connect()
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        t0 = time.monotonic()
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        took = time.monotonic() - t0
        where = f"{method} {path[:120]} {(body or b'')[:120]!r} {headers}"
        assert took < 5, f"{where}: {took:.1f}s"
        assert 400 <= r.status < 500, f"{where} -> {r.status} {data[:300]!r}"
        st_ = json.loads(data)
        assert st_.get("kind") == "Status" and st_.get("apiVersion") == "v1", (where, st_)
        assert st_.get("status") == "Failure" and st_.get("code") == r.status, (where, st_)
        assert st_.get("reason") and st_.get("message"), (where, st_)
        self.codes[r.status] = self.codes.get(r.status, 0) + 1
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self._connect()
        self.conn.request("GET", NS)
        r2 = self.conn.getresponse()
        assert r2.status == 200 and json.loads(r2.read())["metadata"]["name"] == "default", where
        fresh = http.client.HTTPConnection(*self.server.addr, timeout=10)
        fresh.request("GET", "/healthz")
        assert fresh.getresponse().status == 200, where
        fresh.close()
        return r.status, st_


# ------------------------------------------------------------------ a table of known shapes

DEEP = "[" * 100_000 + "]" * 100_000
OBJ_DEEP = '{"metadata":{"name":"deep"},"data":{"a":' + "[" * 900 + "]" * 900 + "}}"
TABLE = [
    # bodies
    ("POST", CM, DEEP, JSON),
    ("POST", CM, OBJ_DEEP, JSON),
    ("POST", CM, "a: " + "[" * 100_000, {"Content-Type": "application/yaml"}),
    ("POST", CM, '{"metadata":{"name":"' + "\udcff" + '"}}', JSON),             # invalid UTF-8
    ("POST", CM, b'\xff\xfe{"metadata":{}}', JSON),
    ("POST", CM, "[]", JSON), ("POST", CM, "null", JSON), ("POST", CM, '"s"', JSON),
    ("POST", CM, '{"metadata":[]}', JSON),
    ("POST", CM, '{"metadata":{"name":"' + "a" * 100_000 + '"}}', JSON),
    ("POST", CM, '{"metadata":{"name":"x1"}}', {"Content-Type": "text/plain"}),
    ("POST", CM, '{"metadata":{"name":"x1"}}', {"Content-Type": "application/vnd.kubernetes.protobuf"}),
    ("POST", CM, "", JSON),
    # selectors and query parameters
    ("GET", CM + "?labelSelector=a%20in%20(", None, None),
    ("GET", CM + "?labelSelector=%ff%fe", None, None),
    ("GET", CM + "?fieldSelector=spec.foo%3Dx", None, None),
    ("GET", CM + "?limit=-1", None, None),
    ("GET", CM + "?limit=abc", None, None),
    ("GET", CM + "?limit=99999999999999999999999", None, None),
    ("GET", CM + "?limit=1&continue=garbage", None, None),
    ("GET", CM + "?limit=1&continue=%00%ff", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=nan", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=inf", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=1e400", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=-1", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=x", None, None),
    ("GET", CM + "?watch=true&timeoutSeconds=0&resourceVersion=abc", None, None),
    ("GET", CM + "/" + "a" * 60_000, None, None),
    # patches
    ("PATCH", CM + "/x", '{"metadata":5}', {"Content-Type": PATCHES[1]}),
    ("PATCH", CM + "/x", '{"metadata":5}', {"Content-Type": PATCHES[2]}),
    ("PATCH", CM + "/x", '[{"op":"replace","path":"/metadata","value":5}]', {"Content-Type": PATCHES[0]}),
    ("PATCH", CM + "/x", '[{"op":"bogus"}]', {"Content-Type": PATCHES[0]}),
    ("PATCH", CM + "/x", "{}", {"Content-Type": PATCHES[0]}),
    ("PATCH", CM + "/x", "[1]", {"Content-Type": PATCHES[0]}),
    ("PATCH", CM + "/x", "5", {"Content-Type": PATCHES[1]}),
    ("PATCH", CM + "/x", '{"$patch":"delete"}', {"Content-Type": PATCHES[2]}),
    ("PATCH", CM + "/x", "garbage: [", {"Content-Type": PATCHES[3]}),
    ("PATCH", CM + "/x?fieldManager=t", "- 1", {"Content-Type": PATCHES[3]}),
    ("PATCH", CM + "/x", "{}", {"Content-Type": "text/plain"}),
    ("PATCH", CM + "/x", "{}", None),
    # delete options
    ("DELETE", CM + "/x", "[]", JSON),
    ("DELETE", CM + "/x", '{"preconditions":5}', JSON),
    ("DELETE", CM + "/x", '{"propagationPolicy":"bogus"}', JSON),
    ("DELETE", CM + "/x", '{"gracePeriodSeconds":"x"}', JSON),
    # wrong types where the server reads them
    ("POST", NS + "/services", '{"metadata":{"name":"s1"},"spec":{"ports":5,"clusterIP":5}}', JSON),
    ("POST", NS + "/services", '{"metadata":{"name":"s2"},"spec":{"type":"NodePort","ports":[{"port":1,"nodePort":[1]}]}}', JSON),
    ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", '{"metadata":{"name":"c"},"spec":5}', JSON),
    # methods
    ("HEAD", CM, None, None),
    ("OPTIONS", CM, None, None),
    ("FOO", CM, None, None),
]


@pytest.mark.parametrize("case", TABLE, ids=[f"{i}-{c[0]}" for i, c in enumerate(TABLE)])
def test_hostile_request_table(server, case):
    ch = Checker(server)
    method, path, body, headers = case
    if method == "HEAD":  # no body in the answer: check the status line only, then go on serving
        c = http.client.HTTPConnection(*server.addr, timeout=10)
        c.request("HEAD", path)
        r = c.getresponse()
        r.read()
        assert r.status == 405
        c.request("GET", NS)
        assert c.getresponse().status == 200
        return
    ch.request(method, path, body, headers)


def _raw(server, data: bytes) -> bytes:
    s = socket.create_connection(server.addr, timeout=10)
    try:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@pytest.mark.parametrize("data", [
    b"POST " + CM.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
    b"POST " + CM.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400000\r\n",
    b"POST " + CM.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST " + CM.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    b"GARBAGE\r\n\r\n",
])
def test_unframeable_requests_get_a_status_and_the_server_goes_on(server, data):
    """Bodies too large or unframeable, request lines too long: a 4xx Status (the
    connection is closed, since the stream position is lost), and the next client is served."""
    head = _raw(server, data)
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, head[:200]
    body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
    if body:
        assert json.loads(body)["kind"] == "Status"
    Checker(server)  # the server still answers
    c = http.client.HTTPConnection(*server.addr, timeout=10)
    c.request("GET", NS)
    assert c.getresponse().status == 200


# ------------------------------------------------------------------ generated

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), ch, max_size=4)),
                          max_leaves=12)

BASE = {
    "/api/v1/namespaces/default/configmaps": {"metadata": {"name": "f", "labels": {"a": "b"}}, "data": {"k": "v"}},
    "/api/v1/namespaces/default/services": {"metadata": {"name": "f"}, "spec": {
        "type": "NodePort", "selector": {"a": "b"}, "ports": [{"name": "h", "port": 80, "targetPort": 8080,
                                                               "protocol": "TCP", "nodePort": 30080}]}},
    "/api/v1/namespaces/default/pods": {"metadata": {"name": "f"}, "spec": {
        "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "h"}]}]}},
    "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies": {"metadata": {"name": "f"}, "spec": {
        "podSelector": {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "In",
                                                                          "values": ["v"]}]},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": 80, "endPort": 90, "protocol": "TCP"}]}]}},
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices": {"metadata": {"name": "f"},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"port": 80, "protocol": "TCP"}]},
    "/apis/mesh-cni.dev/v1alpha1/clusters": {"metadata": {"name": "f"},
                                             "spec": {"secret": {"name": "s", "key": "config"}}},
    "/apis/mesh-cni.dev/v1alpha1/namespaces/default/meshendpoints": {"metadata": {"name": "f"}, "spec": {
        "backend_port_mappings": [{"ip": "10.0.0.1", "service_port": 80, "backend_port": 8080,
                                   "protocol": "TCP"}]}},
    "/api/v1/namespaces": {"metadata": {"name": "f", "labels": {"a": "b"}}},
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": {"metadata": {"name": "fs.x.io"}, "spec": {
        "group": "x.io", "scope": "Namespaced", "names": {"plural": "fs", "kind": "F"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object"}}}]}},
}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


@st.composite
def broken_object(draw):
    """A valid object with one field (or the whole of a subtree) replaced by another value."""
    coll = draw(st.sampled_from(sorted(BASE)))
    base = BASE[coll]
    paths = [p for p in _paths(base) if p and p[0] != "metadata" or p[:2] == ("metadata", "labels")
             or p == ("metadata",)]
    path = draw(st.sampled_from(paths))
    return coll, _replace(base, path, draw(json_value))


def _status_or_created(ch, method, path, body, headers):
    """A generated body may be valid: then it is created (and deleted again); anything else is a
    4xx Status. Never a 5xx."""
    if ch.conn is None:
        ch._connect()
    ch.conn.request(method, path, body=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
                    headers=headers or {})
    r = ch.conn.getresponse()
    data = r.read()
    assert r.status < 500, f"{method} {path} {body!r:.300} -> {r.status} {data[:300]!r}"
    if r.status >= 400:
        st_ = json.loads(data)
        assert st_["kind"] == "Status" and st_["code"] == r.status, (path, body, st_)
    if r.getheader("Connection", "").lower() == "close":
        ch.conn.close()
        ch._connect()
    ch.codes[r.status] = ch.codes.get(r.status, 0) + 1
    return r.status, data


STATS = {}


def _settings(n):
    return settings(max_examples=n, deadline=None, database=None, derandomize=SEED is None,
                    suppress_health_check=list(HealthCheck))


def test_generated_bodies_with_wrong_types(server):
    ch = Checker(server)

    @_settings(EXAMPLES)
    @given(broken_object())
    def run(case):
        coll, obj = case
        status, data = _status_or_created(ch, "POST", coll, json.dumps(obj), JSON)
        if status in (200, 201):
            name = json.loads(data)["metadata"]["name"]
            assert _status_or_created(ch, "DELETE", f"{coll}/{name}", None, None)[0] in (200, 202)

    run()
    STATS["bodies"] = dict(ch.codes)
    assert ch.codes.get(201, 0) + sum(v for k, v in ch.codes.items() if 400 <= k < 500) >= EXAMPLES * 0.9


def test_generated_patches_of_every_type(server):
    ch = Checker(server)

    @_settings(EXAMPLES)
    @given(st.sampled_from(PATCHES), json_value, st.sampled_from(sorted(BASE)))
    def run(ctype, patch, coll):
        base = BASE[coll]
        name = base["metadata"]["name"]
        ch.conn or ch._connect()
        # the object to patch exists (created fresh, so one patch cannot spoil the next)
        _status_or_created(ch, "DELETE", f"{coll}/{name}", None, None)
        _status_or_created(ch, "POST", coll, json.dumps(base), JSON)
        if isinstance(patch, list) and ctype == PATCHES[0]:
            body = json.dumps(patch)
        elif ctype == PATCHES[3]:
            body = json.dumps(dict(base, **patch) if isinstance(patch, dict) else patch)
        else:
            body = json.dumps(patch)
        q = "?fieldManager=fuzz" if ctype == PATCHES[3] else ""
        _status_or_created(ch, "PATCH", f"{coll}/{name}{q}", body, {"Content-Type": ctype})

    run()
    STATS["patches"] = dict(ch.codes)


def test_generated_query_parameters(server):
    ch = Checker(server)
    keys = ["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "timeoutSeconds",
            "watch", "resourceVersionMatch", "allowWatchBookmarks", "sendInitialEvents"]

    @_settings(EXAMPLES)
    @given(st.dictionaries(st.sampled_from(keys), st.one_of(
        st.text(max_size=30), st.sampled_from(["-1", "0", "nan", "inf", "-inf", "1e400", "1.5", "true",
                                               "99999999999999999999", "a in (", "!", "a,,b", "=="])),
        max_size=4), st.sampled_from(sorted(BASE)))
    def run(params, coll):
        from urllib.parse import urlencode
        if params.get("watch") in ("true", "1", "True"):
            params["timeoutSeconds"] = "0"  # a valid watch would run: end it at once
        _status_or_created(ch, "GET", coll + "?" + urlencode(params), None, None)

    run()
    STATS["query"] = dict(ch.codes)


def test_zz_report():
    if os.environ.get("MESHCNI_FUZZ_REPORT_DIR") and STATS:
        with open(os.path.join(os.environ["MESHCNI_FUZZ_REPORT_DIR"], "apiserver.json"), "w") as f:
            json.dump({"examples_per_kind": EXAMPLES, "codes": STATS}, f, indent=1)
