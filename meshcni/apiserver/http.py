# SPDX-License-Identifier: MIT OR Apache-2.0
"""The HTTP side: Kubernetes REST paths, discovery, watch streams.

One :class:`Handler` per connection (ThreadingHTTPServer, HTTP/1.1
keep-alive). Requests are routed by path to the store's verbs; results and
errors are written as JSON exactly as kube-apiserver shapes them. Watch
responses are chunked streams of newline-delimited events, written by the
request's own thread, so a slow client only ever slows itself.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .. import fastjson
from . import resources as res
from .errors import (
    APIError,
    bad_request,
    expired,
    method_not_allowed,
    status_object,
    unsupported_media,
)
from .patch import APPLY, PATCH_TYPES
from .selectors import parse_field_selector, parse_label_selector

log = logging.getLogger("meshcni.apiserver")

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-meshcni", "gitCommit": "meshcni",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "python",
                "compiler": "cpython", "platform": "linux/amd64"}
DEFAULT_WATCH_TIMEOUT = 1800.0  # kube's --min-request-timeout
BATCH = 512                      # watch lines per chunk when catching up
MAX_BODY = 3 * 1024 * 1024       # kube-apiserver's MaxRequestBodyBytes
# No Kubernetes object nests this deep; the checks after decoding (copies, schema
# walks, merges) recurse per level, so a deeper body is refused at the door.
MAX_DEPTH = 100
MAX_INT64 = 2 ** 63 - 1
BODY_TYPES = ("application/json", "application/yaml", "")  # "": clients that send none mean JSON


class _TooLarge(Exception):
    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, store, bookmark_interval: float):
        super().__init__(addr, Handler)
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.stopping = False
        self.conns = set()

    def close_connections(self):
        import socket
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshcni-apiserver"
    server: Server

    # ------------------------------------------------------------ plumbing

    def setup(self):
        super().setup()
        # small request/response pairs on keep-alive connections: Nagle plus delayed ACK
        # would add 40 ms to every one of them
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.conns.add(self.connection)

    def finish(self):
        self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (request line too long, bad request line, unknown
        method, too many headers) as kube-style Status objects, not HTML. An unknown
        method is a 405, as kube-apiserver answers it."""
        if code == 501:
            code, reason, message = 405, "MethodNotAllowed", f"the server does not allow this method ({self.command})"
        else:
            reason = {400: "BadRequest", 414: "RequestURITooLong", 431: "RequestHeaderFieldsTooLarge"}.get(
                code, "BadRequest")
        if getattr(self, "request_version", "") in ("", "HTTP/0.9"):
            self.request_version = self.protocol_version  # (0.9 would get a body without a status line)
        self.close_connection = True
        try:
            self._send_json(code, status_object(code, reason, message or reason))
        except OSError:
            pass

    def do_HEAD(self):
        self.close_connection = True
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self._connection_header()
        self.end_headers()

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def log_message(self, fmt, *args):  # BaseHTTPRequestHandler's stderr logging -> logging
        log.debug("%s " + fmt, self.address_string(), *args)

    def log_request(self, code="-", size="-"):
        pass  # one line per request is written by _dispatch, with the duration

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        """The request body. A body that cannot be framed leaves the stream at an unknown
        position: the connection is then closed after the error (``Connection: close``)."""
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size < 0:
                        raise ValueError("negative chunk size")
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    if len(out) + size > MAX_BODY:
                        raise _TooLarge()
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            if n < 0:
                raise ValueError("negative Content-Length")
            if n > MAX_BODY:
                raise _TooLarge()
        except ValueError as e:
            self.close_connection = True
            raise bad_request(f"the request body cannot be read: {e}") from None
        except _TooLarge:
            self.close_connection = True
            raise APIError(413, "RequestEntityTooLarge",
                           f"the request body is larger than {MAX_BODY} bytes") from None
        return self.rfile.read(n) if n else b""

    def _connection_header(self):
        """``Connection: close`` whenever this response is the connection's last.

        Clients (the kubernetes client's urllib3 pool, client-go) put a connection
        back in their pool after a complete response and reuse it for the next
        request, POSTs included, which they never retry: closing a connection
        without announcing it breaks whichever request comes next on it.
        """
        if self.close_connection:
            self.send_header("Connection", "close")

    def _send_json(self, code: int, obj, extra_headers=()):
        data = fastjson.dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in extra_headers:
            self.send_header(k, v)
        self._connection_header()
        # headers and body in one write (end_headers would flush the headers alone)
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(data)
        self.flush_headers()
        self._code = code

    def _send_text(self, code: int, text: str):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self._connection_header()
        self.end_headers()
        self.wfile.write(data)
        self._code = code

    def _dispatch(self, method: str):
        t0 = time.monotonic()
        self._code = 0
        try:
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            body = self._read_body()  # always: an unread body would be parsed as the next request
            self._route(method, url.path, q, body)
        except APIError as e:
            self._send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # an unexpected bug must still answer, as a 500 Status
            log.exception("internal error serving %s %s", method, self.path)
            try:
                self._send_json(500, status_object(500, "InternalError", f"Internal error occurred: {e}"))
            except OSError:
                self.close_connection = True
        finally:
            log.debug("%s %s %s %.1fms %s", method, self.path, self._code, (time.monotonic() - t0) * 1e3,
                      self.headers.get("Content-Type", ""))

    # ------------------------------------------------------------ routing

    def _route(self, method, path, q, body):
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._send_json(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez",
                                                   "/readyz", "/version"]})
        head = parts[0]
        resource_path = (head == "api" and len(parts) > 2) or (head == "apis" and len(parts) > 3)
        if method != "GET" and not resource_path:
            raise method_not_allowed()
        if head in ("healthz", "readyz", "livez"):
            return self._send_text(200, "ok")
        if head == "version" and len(parts) == 1:
            return self._send_json(200, KUBE_VERSION)
        if head == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            doc = openapi_v3(self.server.store, parts[2:])
            if doc is None:
                raise _no_route()
            return self._send_json(200, doc)
        if head == "openapi":
            # no v2 document (it would have to be protobuf); kubectl uses v3 when present
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if head == "api":
            if len(parts) == 1:
                return self._send_json(200, self._api_versions())
            if parts[1] != "v1":
                raise _no_route()
            if len(parts) == 2:
                return self._send_json(200, self._resource_list("", "v1"))
            return self._resource(method, "", "v1", parts[2:], q, body)
        if head == "apis":
            if len(parts) == 1:
                return self._send_json(200, self._group_list())
            group = parts[1]
            if len(parts) == 2:
                g = self._group(group)
                if g is None:
                    raise _no_route()
                return self._send_json(200, g)
            version = parts[2]
            if len(parts) == 3:
                lst = self._resource_list(group, version)
                if not lst["resources"]:
                    raise _no_route()
                return self._send_json(200, lst)
            return self._resource(method, group, version, parts[3:], q, body)
        raise _no_route()

    # ------------------------------------------------------------ discovery

    def _api_versions(self):
        host, port = self.server.server_address[:2]
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host}:{port}"}]}

    def _groups(self):
        groups: dict[str, list[str]] = {}
        preferred: dict[str, str] = {}
        for rt in self.server.store.snapshot_types():
            if not rt.group:
                continue
            vs = groups.setdefault(rt.group, [])
            for v in rt.served_versions:
                if v not in vs:
                    vs.append(v)
            preferred.setdefault(rt.group, rt.version)
        order = {g: i for i, g in enumerate(res.PREFERRED_GROUP_ORDER)}
        for g in sorted(groups, key=lambda g: (order.get(g, len(order)), g)):
            vs = groups[g]
            pv = preferred[g]
            yield {"name": g,
                   "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                   "preferredVersion": {"groupVersion": f"{g}/{pv}", "version": pv}}

    def _group_list(self):
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(self._groups())}

    def _group(self, name):
        for g in self._groups():
            if g["name"] == name:
                return dict(g, kind="APIGroup", apiVersion="v1")
        return None

    def _resource_list(self, group, version):
        out = []
        for rt in sorted(self.server.store.snapshot_types(), key=lambda r: r.plural):
            if rt.group != group or version not in rt.served_versions:
                continue
            r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": list(rt.verbs)}
            if rt.short_names:
                r["shortNames"] = list(rt.short_names)
            if rt.categories:
                r["categories"] = list(rt.categories)
            out.append(r)
            if rt.status:
                out.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced,
                            "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}

    # ------------------------------------------------------------ resources

    def _resource(self, method, group, version, segs, q, body):
        store = self.server.store
        ns = ""
        rt = None
        if (segs[0] == "namespaces" and len(segs) >= 3 and segs[2] not in ("status", "finalize")):
            rt = store.resolve(group, version, segs[2])
            if rt is None or not rt.namespaced:
                raise _no_route()
            ns = segs[1]
            rest = segs[3:]
        else:
            rt = store.resolve(group, version, segs[0])
            if rt is None:
                raise _no_route()
            rest = segs[1:]
        if len(rest) > 2:
            raise _no_route()
        name = rest[0] if rest else None
        sub = rest[1] if len(rest) > 1 else None
        if sub is not None and not (sub == "status" and rt.status):
            raise _no_route()
        dry = q.get("dryRun") == "All"
        strict = q.get("fieldValidation") == "Strict"
        if name is None:
            return self._collection(method, rt, version, ns, q, body, dry, strict)
        if rt.namespaced and not ns:
            raise _no_route()
        if method == "GET":
            obj = store.get(rt, ns, name)
            if _wants_table(self.headers.get("Accept", "")):
                return self._send_json(200, _table(rt, [obj], q, None, ""))
            return self._send_json(200, _at_version(obj, rt, version))
        if method == "PUT":
            obj = store.update(rt, ns, name, _parse(body, self.headers.get("Content-Type", "")), sub, dry, strict)
            return self._send_json(200, _at_version(obj, rt, version))
        if method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype not in PATCH_TYPES:
                raise unsupported_media(ctype)
            if ctype == APPLY and not q.get("fieldManager"):
                raise bad_request("PATCH requests with apply content type require fieldManager")
            patch = _parse(body, ctype)
            obj, created = store.patch(rt, ns, name, ctype, patch, sub, dry,
                                       force=q.get("force") in ("true", "1"), strict=strict)
            return self._send_json(201 if created else 200, _at_version(obj, rt, version))
        if method == "DELETE":
            if sub:
                raise method_not_allowed()
            opts = _delete_options(_parse(body, "application/json")) if body.strip() else {}
            obj = store.delete(rt, ns, name, opts, dry)
            pending = obj["metadata"].get("deletionTimestamp") and obj["metadata"].get("finalizers")
            return self._send_json(202 if pending and not dry else 200, _at_version(obj, rt, version))
        raise method_not_allowed()

    def _collection(self, method, rt, version, ns, q, body, dry, strict):
        store = self.server.store
        if method == "GET":
            labels = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"), rt.kind, rt.crd)
            if q.get("watch") in ("true", "1", "True"):
                return self._watch(rt, version, ns, q, labels, fields)
            try:
                limit = int(q.get("limit") or 0)
            except ValueError:
                raise bad_request(f'invalid limit "{q.get("limit")}"') from None
            if not 0 <= limit <= MAX_INT64:
                raise bad_request(f'invalid limit "{q.get("limit")}": must be between 0 and {MAX_INT64}')
            items, rv, cont, remaining = store.list(rt, ns, labels, fields, limit, q.get("continue"))
            if _wants_table(self.headers.get("Accept", "")):
                return self._send_json(200, _table(rt, items, q, rv, cont))
            meta = {"resourceVersion": rv}
            if cont:
                meta["continue"] = cont
                meta["remainingItemCount"] = remaining
            want = rt.api_version(version)
            if want != rt.api_version():
                items = [_at_version(o, rt, version) for o in items]
            return self._send_json(200, {"kind": rt.list_kind, "apiVersion": want, "metadata": meta,
                                         "items": items})
        if method == "POST":
            if rt.namespaced and not ns:
                raise method_not_allowed("POST on a namespaced resource needs a namespace in the path")
            obj = store.create(rt, ns, _parse(body, self.headers.get("Content-Type", "")), dry, strict)
            return self._send_json(201, _at_version(obj, rt, version))
        if method == "DELETE":
            labels = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"), rt.kind, rt.crd)
            items = store.delete_collection(rt, ns, labels, fields, dry)
            return self._send_json(200, {"kind": rt.list_kind, "apiVersion": rt.api_version(version),
                                         "metadata": {"resourceVersion": str(store.rv)},
                                         "items": [_at_version(o, rt, version) for o in items]})
        raise method_not_allowed()

    # ------------------------------------------------------------ watch

    def _watch(self, rt, version, ns, q, labels, fields):
        store = self.server.store
        try:
            timeout = float(q.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds "{q.get("timeoutSeconds")}"') from None
        if not math.isfinite(timeout) or timeout < 0:
            # nan would never end the stream (every comparison with it is false), inf neither
            raise bad_request(f'invalid timeoutSeconds "{q.get("timeoutSeconds")}": must be a number of '
                              "seconds, 0 or more")
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
        initial = q.get("sendInitialEvents") in ("true", "1", "True")
        rv = q.get("resourceVersion")
        w = store.watch(rt, ns, "" if initial else rv, labels, fields)
        w.version = version
        if _wants_table(self.headers.get("Accept", "")):
            # kubectl get --watch: every event carries a one-row Table
            w.transform = lambda o: _table(rt, [o], q, None, "")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self._code = 200
        # A watch that ends with its terminating chunk leaves the connection reusable,
        # as kube-apiserver does: the client may send its next request (a relist, a
        # POST) on it at once. Only a broken stream or a stopping server closes it.
        try:
            if w.expired_message:
                self._chunk(_frame_error(expired(w.expired_message)))
            else:
                self._stream(w, rt, version, timeout, bookmarks, initial)
            self._chunk(b"")  # terminating chunk: a clean end of the stream
        except OSError:
            self.close_connection = True
            log.debug("watch %s: client went away", rt.describe())
        finally:
            w.close()
        if self.server.stopping:
            self.close_connection = True

    def _chunk(self, data: bytes):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _bookmark(self, rt, version, rv, initial_end=False) -> bytes:
        meta = {"resourceVersion": rv}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (json.dumps({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(version),
                                                            "metadata": meta}}) + "\n").encode()

    def _stream(self, w, rt, version, timeout, bookmarks, initial):
        store = self.server.store
        deadline = time.monotonic() + timeout
        interval = self.server.bookmark_interval
        batch = []
        for ev in w.backlog:
            line = w.translate(ev)
            if line is not None:
                batch.append(line)
                if len(batch) >= BATCH:
                    self._chunk(b"".join(batch))
                    batch = []
        w.backlog = []
        if batch:
            self._chunk(b"".join(batch))
        if initial and bookmarks:
            self._chunk(self._bookmark(rt, version, str(store.rv), initial_end=True))
        last_bookmark = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if self.server.stopping or w.closed:
                return
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(0.0, last_bookmark + interval - now))
            try:
                ev = w.queue.get(timeout=min(wait, 1.0))
            except queue.Empty:
                ev = None
                if bookmarks and time.monotonic() >= last_bookmark + interval:
                    rv = store.bookmark_rv(w)
                    if rv is not None:
                        self._chunk(self._bookmark(rt, version, rv))
                    last_bookmark = time.monotonic()
                continue
            if w.overflowed:
                self._chunk(_frame_error(expired("watch queue overflowed: the client fell too far behind; "
                                                 "relist and watch again")))
                return
            if ev is None:  # woken by stop or overflow
                continue
            lines = []
            line = w.translate(ev)
            if line is not None:
                lines.append(line)
            while len(lines) < BATCH:
                try:
                    ev = w.queue.get_nowait()
                except queue.Empty:
                    break
                if ev is None:
                    continue
                line = w.translate(ev)
                if line is not None:
                    lines.append(line)
            if lines:
                self._chunk(b"".join(lines))
        if bookmarks:
            rv = store.bookmark_rv(w)
            if rv is not None:
                self._chunk(self._bookmark(rt, version, rv))


def openapi_v3(store, parts):
    """A minimal OpenAPI v3: enough for kubectl to see that every kind's PATCH takes
    ``fieldValidation`` (so it leaves validation to this server instead of downloading
    schemas). ``parts`` is the path after /openapi/v3: empty for the index, else a GV."""
    types = store.snapshot_types()
    gvs = {}
    for rt in types:
        for v in rt.served_versions:
            gvs.setdefault(f"apis/{rt.group}/{v}" if rt.group else "api/v1", []).append((rt, v))
    if not parts:
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_gv_hash(rts)}"}
                          for gv, rts in sorted(gvs.items())}}
    gv = "/".join(parts)
    if gv not in gvs:
        return None
    paths = {}
    for rt, v in gvs[gv]:
        base = f"/{gv}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"/{gv}/{rt.plural}"
        gvk = {"group": rt.group, "version": v, "kind": rt.kind}
        params = [{"name": p, "in": "query", "schema": {"type": "string"}}
                  for p in ("dryRun", "fieldManager", "fieldValidation", "force")]
        op = {"operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
              "x-kubernetes-group-version-kind": gvk, "parameters": params,
              "responses": {"200": {"description": "OK"}}}
        paths[base + "/{name}"] = {"patch": op}
        if rt.status:
            paths[base + "/{name}/status"] = {"patch": dict(op, operationId=f"patch{rt.kind}Status")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}


def _gv_hash(rts) -> str:
    import hashlib
    return hashlib.sha256(repr(sorted((r.kind, v, r.status) for r, v in rts)).encode()).hexdigest()[:16].upper()


def _frame_error(err: APIError) -> bytes:
    return (json.dumps({"type": "ERROR", "object": err.status()}) + "\n").encode()


def _no_route() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource")


def _parse(body: bytes, ctype: str):
    if "protobuf" in ctype or "cbor" in ctype:
        # typed kubectl generators (kubectl create configmap/namespace/secret) send protobuf
        raise unsupported_media(ctype.split(";")[0], "application/json, application/yaml (this server "
                                "does not speak protobuf)")
    base = ctype.split(";")[0].strip().lower()
    if base not in BODY_TYPES and base not in PATCH_TYPES:
        raise unsupported_media(base, "application/json, application/yaml")
    if not body.strip():
        raise bad_request("the request body is empty")
    try:
        if "yaml" in base:
            import yaml
            try:
                out = yaml.safe_load(body)
            except yaml.YAMLError as e:
                raise bad_request(f"error decoding YAML: {e}") from None
        else:
            try:
                out = json.loads(body, parse_constant=_no_constant)
            except ValueError as e:
                raise bad_request(f"error decoding JSON: {e}") from None
    except RecursionError:
        raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    if _depth_over(out, MAX_DEPTH):
        raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels")
    return out


def _no_constant(name: str):
    # NaN and Infinity are not JSON (kube-apiserver refuses them too); a stored NaN could not be
    # written back out as the same value
    raise ValueError(f"{name} is not a JSON number")


def _depth_over(obj, limit: int) -> bool:
    """Does obj nest lists/objects deeper than limit? (iterative: no recursion to exhaust)"""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            children = o.values()
        elif isinstance(o, list):
            children = o
        else:
            if type(o) is float and not math.isfinite(o):  # YAML's .nan / .inf
                raise bad_request(f"error decoding YAML: {o} is not a JSON number")
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list, float)))
    return False


PROPAGATION = ("Orphan", "Background", "Foreground")


def _delete_options(opts):
    """DeleteOptions as a body: the fields the store reads, with their types checked."""
    if not isinstance(opts, dict):
        raise bad_request("DeleteOptions must be an object")
    pre = opts.get("preconditions")
    if pre is not None and not (isinstance(pre, dict) and all(
            isinstance(pre.get(k), (str, type(None))) for k in ("uid", "resourceVersion"))):
        raise bad_request("DeleteOptions.preconditions must be an object of uid and resourceVersion strings")
    pp = opts.get("propagationPolicy")
    if pp is not None and pp not in PROPAGATION:
        raise bad_request(f'DeleteOptions.propagationPolicy "{pp}" must be one of {", ".join(PROPAGATION)}')
    g = opts.get("gracePeriodSeconds")
    if g is not None and (isinstance(g, bool) or not isinstance(g, int)):
        raise bad_request(f"DeleteOptions.gracePeriodSeconds must be an integer (got {g!r})")
    return opts


def _at_version(obj, rt, version):
    want = rt.api_version(version)
    if obj.get("apiVersion") == want or obj.get("kind") == "Status":
        return obj
    return dict(obj, apiVersion=want)


# ------------------------------------------------------------ server-side printing (kubectl get)

def _wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return "<unknown>"
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


_STEP = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def _jsonpath(obj, path: str):
    """The subset of kubectl JSONPath printer columns use: fields, [N], [?(@.f=="v")]."""
    cur = obj
    pos = 0
    path = path.strip()
    while pos < len(path) and cur is not None:
        m = _STEP.match(path, pos)
        if not m:
            return None
        pos = m.end()
        field, index, fkey, fval = m.groups()
        if field is not None:
            cur = cur.get(field) if isinstance(cur, dict) else None
        elif index is not None:
            i = int(index)
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        else:
            cur = next((x for x in cur if isinstance(x, dict) and str(_jsonpath(x, "." + fkey)) == fval), None) \
                if isinstance(cur, list) else None
    return cur


def _columns(rt):
    col = lambda n, t="string", f="", p=0: {"name": n, "type": t, "format": f, "description": n, "priority": p}
    if rt.key == ("", "pods"):
        return ([col("Name", f="name"), col("Status"), col("IP", p=1), col("Node", p=1), col("Age")],
                lambda o: [(o.get("status") or {}).get("phase", ""), (o.get("status") or {}).get("podIP", "<none>"),
                           (o.get("spec") or {}).get("nodeName", "<none>")])
    if rt.key == ("", "services"):
        def svc(o):
            s = o.get("spec") or {}
            ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                             f"{p.get('protocol', 'TCP')}" for p in s.get("ports") or ())
            return [s.get("type", ""), s.get("clusterIP", ""), "<none>", ports or "<none>"]
        return ([col("Name", f="name"), col("Type"), col("Cluster-IP"), col("External-IP"), col("Port(s)"),
                 col("Age")], svc)
    if rt.crd:
        pcs = [c for c in rt.printer_columns.get(rt.version, ()) if c.get("jsonPath") != ".metadata.creationTimestamp"]
        defs = [col("Name", f="name")] + [col(c.get("name", ""), c.get("type", "string"), c.get("format", ""),
                                              c.get("priority", 0)) for c in pcs] + [col("Age")]

        def cr(o):
            out = []
            for c in pcs:
                v = _jsonpath(o, c.get("jsonPath", ""))
                out.append("<none>" if v is None else (v if isinstance(v, (int, float, bool)) and
                                                          not isinstance(v, bool) else str(v)))
            return out
        return defs, cr
    return [col("Name", f="name"), col("Age")], lambda o: []


def _table(rt, items, q, rv, cont):
    defs, extra = _columns(rt)
    include = q.get("includeObject", "Metadata")
    rows = []
    for o in items:
        m = o.get("metadata") or {}
        cells = [m.get("name", "")] + extra(o) + [_age(m.get("creationTimestamp"))]
        row = {"cells": cells}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m}
        rows.append(row)
    meta = {}
    if rv is not None:
        meta["resourceVersion"] = rv
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": defs, "rows": rows}
