# SPDX-License-Identifier: MIT OR Apache-2.0
"""Keep-alive: a connection the server does not announce as closing must serve the next request.

The kubernetes client (urllib3) and client-go return a connection to their
pool after every complete response and send the next request on it — a POST
too, which neither retries. A server that closes such a connection without
``Connection: close`` breaks that next request ("Remote end closed connection
without response"): that was a CI flake after watches that ended by timeout.
"""
import http.client
import json
import random
import threading
import time

import pytest
from kubernetes import client, config, watch

from meshcni.apiserver import APIServer

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def server():
    with APIServer(history=200000, bookmark_interval=0.2) as srv:
        yield srv


def _conn(server) -> http.client.HTTPConnection:
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _call(c, method, path, body=None):
    data = None if body is None else json.dumps(body)
    c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    return r.status, r.getheader("Connection"), r.read()


CM = "/api/v1/namespaces/default/configmaps"


@pytest.mark.parametrize("first", [
    ("GET", CM + "?watch=true&timeoutSeconds=0", None),                       # watch ended by its timeout
    ("GET", CM + "?watch=true&timeoutSeconds=1&allowWatchBookmarks=true", None),
    ("GET", CM + "?watch=true&resourceVersion=999999999", None),              # 410 Expired in the stream
    ("GET", CM + "/missing", None),                                           # 404
    ("POST", CM, {"metadata": {"name": "Bad_Name"}}),                         # 422
    ("GET", "/api/v1/nope", None),                                            # no route
    ("DELETE", CM + "/missing", None),
    ("GET", "/version", None),
    ("GET", "/healthz", None),
])
def test_next_request_on_the_same_connection(server, first):
    c = _conn(server)
    try:
        status, conn_hdr, _ = _call(c, *first)
        assert conn_hdr != "close", f"{first[0]} {first[1]} -> {status} closed the connection"
        name = f"ka-{random.getrandbits(40):x}"
        status, _, body = _call(c, "POST", CM, {"metadata": {"name": name}})  # never retried by clients
        assert status == 201, body
        status, _, _ = _call(c, "DELETE", f"{CM}/{name}")
        assert status == 200
    finally:
        c.close()


def test_unframeable_body_is_answered_and_announced_closed(server):
    c = _conn(server)
    try:
        c.putrequest("POST", CM)
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        c.send(b"zz\r\n{}\r\n0\r\n\r\n")
        r = c.getresponse()
        assert r.status == 400
        assert r.getheader("Connection") == "close"
        st = json.loads(r.read())
        assert st["kind"] == "Status" and st["reason"] == "BadRequest"
    finally:
        c.close()
    c = _conn(server)  # and the server keeps serving
    try:
        assert _call(c, "GET", "/version")[0] == 200
    finally:
        c.close()


def test_oversize_body_is_refused_with_413(server):
    c = _conn(server)
    try:
        c.putrequest("POST", CM)
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(64 * 1024 * 1024))
        c.endheaders()
        r = c.getresponse()
        assert r.status == 413
        assert r.getheader("Connection") == "close"
        assert json.loads(r.read())["reason"] == "RequestEntityTooLarge"
    finally:
        c.close()
    c = _conn(server)
    try:
        assert _call(c, "GET", "/version")[0] == 200
    finally:
        c.close()


def test_stress_many_clients_with_idle_gaps_and_watches(server, tmp_path):
    """Several clients, 20,000+ requests on pooled connections, idle gaps of up to 1.2 s,
    watches that end by their timeout between the requests: not one connection error."""
    kc = tmp_path / "kubeconfig"
    server.write_kubeconfig(str(kc))
    errors, counts = [], []
    lock = threading.Lock()

    def raw_client(i: int, n: int):
        rnd = random.Random(i)
        c = _conn(server)
        done = 0
        try:
            for j in range(n):
                name = f"raw{i}-{j}"
                if j % 500 == 250:
                    time.sleep(rnd.uniform(0.2, 1.2))  # idle gap on a pooled connection
                if j % 1000 == 10:
                    _call(c, "GET", CM + "?watch=true&timeoutSeconds=0")
                    done += 1
                st, _, body = _call(c, "POST", CM, {"metadata": {"name": name}, "data": {"j": str(j)}})
                assert st == 201, body
                st, _, _ = _call(c, "GET", f"{CM}/{name}")
                assert st == 200
                st, _, _ = _call(c, "DELETE", f"{CM}/{name}")
                assert st == 200
                done += 3
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            with lock:
                errors.append(f"raw client {i}: {type(e).__name__}: {e}")
        finally:
            c.close()
            with lock:
                counts.append(done)

    def kube_client(i: int, n: int):
        rnd = random.Random(100 + i)
        api = config.new_client_from_config(config_file=str(kc))
        core = client.CoreV1Api(api)
        done = 0
        try:
            for j in range(n):
                if j % 100 == 50:
                    # a watch that ends by its timeout, then the next request reuses the connection
                    for _ in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                                  timeout_seconds=1, label_selector="none=none"):
                        pass
                    done += 1
                if j % 150 == 75:
                    time.sleep(rnd.uniform(0.2, 1.2))
                name = f"kube{i}-{j}"
                core.create_namespaced_config_map("default", {"metadata": {"name": name}})
                core.patch_namespaced_config_map(name, "default", {"data": {"k": "v"}})
                core.delete_namespaced_config_map(name, "default")
                done += 3
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"kube client {i}: {type(e).__name__}: {e}")
        finally:
            api.close()
            with lock:
                counts.append(done)

    threads = [threading.Thread(target=raw_client, args=(i, 1700)) for i in range(3)]
    threads += [threading.Thread(target=kube_client, args=(i, 500)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, "\n".join(errors)
    assert sum(counts) >= 18_000, counts
