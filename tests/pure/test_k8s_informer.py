# SPDX-License-Identifier: MIT OR Apache-2.0
"""The informer against the real in-process API server (port 0), through the official client.

Connection failures are produced by a small TCP proxy between the client and
the server, so a test can drop every connection or silently swallow what the
server sends (a stalled informer that misses events) at a chosen moment.
"""
import socket
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from meshcni.apiserver import APIServer, write_kubeconfig
from meshcni.k8s import Informer, api_client, label_index
from testutil import eventually

pytestmark = pytest.mark.pure

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
FAST = (0.05, 0.3)  # reconnect backoff for tests, seconds


def until(cond, timeout=5.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.01)


class Proxy:
    """TCP forwarder to 127.0.0.1:``port``; ``blackhole`` discards server-to-client bytes."""

    def __init__(self, port):
        self.upstream = port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.blackhole = False
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, True), daemon=True).start()

    def _pump(self, src, dst, downstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if downstream and self.blackhole:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self):
        """Cut every open connection (both sides see a reset/EOF)."""
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.lsock.close()
        self.drop()


class Recorder:
    """Handlers that log ("ADDED"|"MODIFIED"|"DELETED", name) in call order."""

    def __init__(self, informer):
        self.events = []
        informer.add_handler(self.add, self.update, self.delete)

    def add(self, o):
        self.events.append(("ADDED", o["metadata"]["name"]))

    def update(self, old, new):
        self.events.append(("MODIFIED", new["metadata"]["name"]))

    def delete(self, o):
        self.events.append(("DELETED", o["metadata"]["name"]))


def pod(name, labels=None, node=None):
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


@pytest.fixture(scope="module")
def server():
    with APIServer(crd_dir=str(CRDS), history=10000, bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    return api_client(server.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "kubeconfig")))


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def ns(core, request):
    name = "inf-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def informers():
    started = []
    yield started.append
    for inf in started:
        inf.stop()


def test_initial_list_then_events_in_order(core, ns, informers):
    for i in range(3):
        core.create_namespaced_pod(ns, pod(f"p{i}"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    assert sorted(rec.events) == [("ADDED", "p0"), ("ADDED", "p1"), ("ADDED", "p2")]
    assert sorted(inf.keys()) == [f"{ns}/p0", f"{ns}/p1", f"{ns}/p2"]
    rec.events.clear()
    core.create_namespaced_pod(ns, pod("p3"))
    core.patch_namespaced_pod("p1", ns, {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_pod("p2", ns)
    until(lambda: len(rec.events) >= 3, what="three events")
    assert rec.events == [("ADDED", "p3"), ("MODIFIED", "p1"), ("DELETED", "p2")]
    assert inf.get(f"{ns}/p1")["metadata"]["labels"] == {"x": "1"}
    assert inf.get(f"{ns}/p2") is None
    assert inf.relists == 0 and inf.events == 3


def test_resume_after_watch_timeout_misses_nothing(core, ns, informers):
    # timeoutSeconds=1: the server ends the watch every second while pods are written
    inf = Informer(core.list_namespaced_pod, namespace=ns, watch_timeout=1, backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    want = []
    t_end = time.monotonic() + 2.6
    i = 0
    while time.monotonic() < t_end:
        core.create_namespaced_pod(ns, pod(f"p{i}"))
        want.append(("ADDED", f"p{i}"))
        if i % 3 == 2:
            core.delete_namespaced_pod(f"p{i - 1}", ns)
            want.append(("DELETED", f"p{i - 1}"))
        i += 1
        time.sleep(0.02)
    until(lambda: len(rec.events) >= len(want), what=f"{len(want)} events")
    assert rec.events == want
    assert inf.watch_restarts >= 2
    assert inf.relists == 0


def test_dropped_connection_resumes_without_relist(server, tmp_path, informers):
    proxy = Proxy(int(server.url.rsplit(":", 1)[1]))
    try:
        api = api_client(write_kubeconfig(str(tmp_path / "kc"), f"http://127.0.0.1:{proxy.port}"))
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "inf-drop"}})
        inf = Informer(core.list_namespaced_pod, namespace="inf-drop", backoff=FAST)
        rec = Recorder(inf)
        informers(inf.start())
        assert inf.wait_for_sync(5)
        for i in range(5):
            core.create_namespaced_pod("inf-drop", pod(f"a{i}"))
            proxy.drop()  # both the watch and the client's pooled connection
        until(lambda: len(rec.events) >= 5, what="five adds")
        assert rec.events == [("ADDED", f"a{i}") for i in range(5)]
        assert inf.watch_restarts >= 1
        assert inf.relists == 0  # the history still held the watch's resourceVersion
    finally:
        proxy.close()


def test_410_relists_and_reports_vanished_objects(tmp_path, informers):
    with APIServer(crd_dir=str(CRDS), history=5, bookmark_interval=0.2) as srv:
        proxy = Proxy(int(srv.url.rsplit(":", 1)[1]))
        direct = client.CoreV1Api(api_client(srv.write_kubeconfig(str(tmp_path / "direct"))))
        core = client.CoreV1Api(api_client(write_kubeconfig(str(tmp_path / "kc"),
                                                            f"http://127.0.0.1:{proxy.port}")))
        direct.create_namespace({"metadata": {"name": "gone"}})
        for i in range(10):
            direct.create_namespaced_pod("gone", pod(f"keep{i}"))
        inf = Informer(core.list_namespaced_pod, namespace="gone", backoff=FAST)
        rec = Recorder(inf)
        informers(inf.start())
        assert inf.wait_for_sync(5)
        rec.events.clear()
        # stall: the informer's connection stays open but hears nothing, bookmarks included,
        # while far more than the 5-event history happens
        proxy.blackhole = True
        for i in range(5):
            direct.delete_namespaced_pod(f"keep{i}", "gone")
        for i in range(20):
            direct.create_namespaced_pod("gone", pod(f"new{i}"))
        direct.patch_namespaced_pod("keep5", "gone", {"metadata": {"labels": {"v": "2"}}})
        proxy.drop()
        proxy.blackhole = False
        until(lambda: inf.relists >= 1 and len(rec.events) >= 26, what="relist")
        assert sorted(e for e in rec.events if e[0] == "DELETED") == [("DELETED", f"keep{i}") for i in range(5)]
        assert sorted(e[1] for e in rec.events if e[0] == "ADDED") == sorted(f"new{i}" for i in range(20))
        assert [e for e in rec.events if e[0] == "MODIFIED"] == [("MODIFIED", "keep5")]
        # deletions first: a controller sees an object vanish before anything reuses its name
        assert all(e[0] == "DELETED" for e in rec.events[:5])
        names = sorted(p.metadata.name for p in direct.list_namespaced_pod("gone").items)
        assert sorted(k.split("/")[1] for k in inf.keys()) == names
        assert inf.get("gone/keep5")["metadata"]["labels"] == {"v": "2"}
        # and it watches again afterwards
        direct.create_namespaced_pod("gone", pod("after"))
        until(lambda: ("ADDED", "after") in rec.events, what="event after relist")
        proxy.close()


def test_410_after_a_stalled_handler_overflows_the_server(tmp_path, informers):
    # a handler that blocks stops the informer reading; the server's per-watch queue (10 events)
    # overflows once the socket buffers are full, and the stream ends with ERROR 410
    with APIServer(history=5, watch_queue=10, bookmark_interval=0.2) as srv:
        core = client.CoreV1Api(api_client(srv.write_kubeconfig(str(tmp_path / "kc"))))
        core.create_namespace({"metadata": {"name": "stall"}})
        inf = Informer(core.list_namespaced_config_map, namespace="stall", backoff=FAST)
        gate = threading.Event()
        live = {}

        def on_add(o):
            if o["metadata"]["name"] == "block":
                gate.wait(10)
            live[o["metadata"]["name"]] = o

        inf.add_handler(on_add, lambda old, new: live.__setitem__(new["metadata"]["name"], new),
                        lambda o: live.pop(o["metadata"]["name"]))
        informers(inf.start())
        assert inf.wait_for_sync(5)
        core.create_namespaced_config_map("stall", {"metadata": {"name": "block"}})
        big = "x" * 400_000  # several of these fill the loopback socket buffers
        for i in range(60):
            core.create_namespaced_config_map("stall", {"metadata": {"name": f"big{i}"}, "data": {"d": big}})
        for i in range(0, 60, 2):
            core.delete_namespaced_config_map(f"big{i}", "stall")
        gate.set()
        until(lambda: inf.relists >= 1, timeout=10, what="relist after overflow")
        want = sorted(c.metadata.name for c in core.list_namespaced_config_map("stall").items)
        until(lambda: sorted(live) == want, what="handlers converge on the server's state")
        assert sorted(k.split("/")[1] for k in inf.keys()) == want


def test_indexes(core, ns, informers):
    inf = Informer(core.list_pod_for_all_namespaces, field_selector=f"metadata.namespace={ns}",
                   indexers={"app": label_index("app")}, backoff=FAST)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    core.create_namespaced_pod(ns, pod("w1", {"app": "web"}, node="n1"))
    core.create_namespaced_pod(ns, pod("w2", {"app": "web"}, node="n2"))
    core.create_namespaced_pod(ns, pod("d1", {"app": "db"}, node="n1"))
    core.create_namespaced_pod(ns, pod("x"))
    until(lambda: len(inf) == 4, what="four pods")

    def names(idx, v):
        return sorted(o["metadata"]["name"] for o in inf.by_index(idx, v))

    assert names("namespace", ns) == ["d1", "w1", "w2", "x"]
    assert names("node", "n1") == ["d1", "w1"]
    assert names("app", "web") == ["w1", "w2"]
    assert names("app", "nope") == []
    core.patch_namespaced_pod("w2", ns, {"metadata": {"labels": {"app": "db"}}})
    until(lambda: names("app", "db") == ["d1", "w2"], what="re-indexed label")
    assert names("app", "web") == ["w1"]
    core.delete_namespaced_pod("d1", ns)
    until(lambda: names("node", "n1") == ["w1"], what="index entry removed")
    assert sorted(inf.index_values("app")) == ["db", "web"]
    with pytest.raises(KeyError):
        inf.by_index("missing", "x")


def test_selectors_filter_and_transitions(core, ns, informers):
    core.create_namespaced_pod(ns, pod("web-n1", {"app": "web"}, node="n1"))
    core.create_namespaced_pod(ns, pod("web-n2", {"app": "web"}, node="n2"))
    core.create_namespaced_pod(ns, pod("db-n1", {"app": "db"}, node="n1"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, label_selector="app=web",
                   field_selector="spec.nodeName=n1", backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    assert inf.keys() == [f"{ns}/web-n1"]
    rec.events.clear()
    core.patch_namespaced_pod("db-n1", ns, {"metadata": {"labels": {"app": "web"}}})   # enters
    core.patch_namespaced_pod("web-n1", ns, {"metadata": {"labels": {"app": "db"}}})   # leaves
    until(lambda: len(rec.events) >= 2, what="selector transitions")
    assert rec.events == [("ADDED", "db-n1"), ("DELETED", "web-n1")]
    assert inf.keys() == [f"{ns}/db-n1"]


def test_paged_list(core, ns, informers):
    for i in range(7):
        core.create_namespaced_pod(ns, pod(f"p{i}"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, page_size=3, backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    assert sorted(rec.events) == sorted(("ADDED", f"p{i}") for i in range(7))
    core.create_namespaced_pod(ns, pod("p7"))
    until(lambda: ("ADDED", "p7") in rec.events, what="watch after a paged list")


def test_api_client_sources(tmp_path, monkeypatch, server):
    with pytest.raises(FileNotFoundError, match="no-such"):
        api_client(str(tmp_path / "no-such"))
    monkeypatch.setenv("KUBECONFIG", server.write_kubeconfig(str(tmp_path / "env-kc")))
    api = api_client()
    assert api.configuration.host == server.url
    assert client.CoreV1Api(api).list_namespace().items is not None
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError, match="no Kubernetes configuration"):
        api_client()


def test_custom_resources(api, informers):
    co = client.CustomObjectsApi(api)
    inf = Informer(co.list_cluster_custom_object, "mesh-cni.dev", "v1alpha1", "clusters", backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    co.create_cluster_custom_object("mesh-cni.dev", "v1alpha1", "clusters",
                                    {"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Cluster",
                                     "metadata": {"name": "east"},
                                     "spec": {"secret": {"name": "east-kc", "key": "config"}}})
    until(lambda: rec.events == [("ADDED", "east")], what="Cluster add")
    assert inf.get("east")["kind"] == "Cluster"  # cluster-scoped: the key is the bare name


def test_handler_added_late_gets_the_cache(core, ns, informers):
    core.create_namespaced_pod(ns, pod("early"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, backoff=FAST)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    rec = Recorder(inf)
    assert rec.events == [("ADDED", "early")]


def test_resync_redelivers_cache(core, ns, informers):
    core.create_namespaced_pod(ns, pod("r"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, resync=0.3, backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    until(lambda: rec.events.count(("MODIFIED", "r")) >= 2, what="two resyncs")


def test_stop_is_prompt(tmp_path):
    # no bookmarks for a minute: only aborting the connection can end the blocked read
    with APIServer(bookmark_interval=60) as srv:
        core = client.CoreV1Api(api_client(srv.write_kubeconfig(str(tmp_path / "kc"))))
        inf = Informer(core.list_namespaced_pod, namespace="default", watch_timeout=300).start()
        assert inf.wait_for_sync(5)
        time.sleep(0.3)  # inside the watch
        t0 = time.monotonic()
        thread = inf._thread
        inf.stop()
        assert time.monotonic() - t0 < 1.0
        assert not thread.is_alive()
        assert inf.errors == 0  # a stop is not a failure


def test_server_restart_on_same_port(tmp_path, informers):
    data = str(tmp_path / "state.json")
    srv = APIServer(crd_dir=str(CRDS), data_file=data, bookmark_interval=0.2).start()
    port = int(srv.url.rsplit(":", 1)[1])
    core = client.CoreV1Api(api_client(srv.write_kubeconfig(str(tmp_path / "kc"))))
    core.create_namespace({"metadata": {"name": "rs"}})
    for i in range(3):
        core.create_namespaced_pod("rs", pod(f"p{i}"))
    inf = Informer(core.list_namespaced_pod, namespace="rs", backoff=FAST)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    srv.stop()
    time.sleep(0.5)  # the informer fails to reconnect a few times meanwhile
    srv = APIServer(port=port, crd_dir=str(CRDS), data_file=data, bookmark_interval=0.2).start()
    try:
        core.delete_namespaced_pod("p0", "rs")
        core.create_namespaced_pod("rs", pod("p3"))
        until(lambda: sorted(inf.keys()) == ["rs/p1", "rs/p2", "rs/p3"], what="convergence after restart")
        assert inf.errors >= 1
        assert ("DELETED", "p0") in rec.events and ("ADDED", "p3") in rec.events
    finally:
        inf.stop()
        srv.stop()


def test_health_signal_follows_the_server(tmp_path, informers):
    srv = APIServer(crd_dir=str(CRDS), bookmark_interval=0.2).start()
    port = int(srv.url.rsplit(":", 1)[1])
    core = client.CoreV1Api(api_client(srv.write_kubeconfig(str(tmp_path / "kc"))))
    flips = []
    inf = Informer(core.list_namespace, backoff=FAST, on_health=lambda i: flips.append(i.connected))
    assert inf.connected is None and inf.last_error is None
    informers(inf.start())
    try:
        assert inf.wait_for_sync(5)
        until(lambda: flips == [True], what="connected")
        t0 = time.time()
        srv.stop()
        until(lambda: inf.connected is False, what="disconnected")
        assert flips == [True, False]
        assert inf.last_error and t0 - 1 <= inf.failing_since <= time.time()
        first = inf.failing_since
        time.sleep(0.4)  # more failed attempts keep the first failure time
        assert inf.failing_since == first and inf.errors >= 2 and flips == [True, False]
        srv = APIServer(port=port, crd_dir=str(CRDS), bookmark_interval=0.2).start()
        until(lambda: inf.connected is True, what="reconnected")
        assert flips == [True, False, True] and inf.last_error is None and inf.failing_since is None
    finally:
        inf.stop()
        srv.stop()


def test_transform_applies_to_list_and_watch(core, ns, informers):
    from meshcni.k8s.trim import trim_pod
    core.create_namespaced_pod(ns, pod("t0"))
    inf = Informer(core.list_namespaced_pod, namespace=ns, backoff=FAST, transform=trim_pod)
    rec = Recorder(inf)
    informers(inf.start())
    assert inf.wait_for_sync(5)
    core.create_namespaced_pod(ns, pod("t1"))
    until(lambda: len(rec.events) >= 2, what="list + watch")
    for name in ("t0", "t1"):
        o = inf.get(f"{ns}/{name}")
        assert set(o) == {"metadata", "spec", "status"} and "managedFields" not in o["metadata"]
        assert o["metadata"]["name"] == name and o["metadata"]["resourceVersion"]
        assert set(o["spec"]) <= {"nodeName", "hostNetwork", "containers", "initContainers"}
