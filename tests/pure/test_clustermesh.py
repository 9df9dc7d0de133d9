# SPDX-License-Identifier: MIT OR Apache-2.0
"""The multi-cluster mesh controller against two in-process API servers ("local" and "remote").

The real ``meshcni controller`` (leader election off) runs against the local
server; each test starts its own remote server, stores its kubeconfig in a
Secret and applies a Cluster; everything goes through the official client.
"""
import base64
import threading
import time

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni.apiserver import APIServer
from meshcni.controller import Controller, ControllerConfig
from meshcni.controllers import mesh
from meshcni.k8s import api_client
from testutil import eventually

pytestmark = pytest.mark.pure

G, V = "mesh-cni.dev", "v1alpha1"
NS = "meshcni-system"
CRDS = "deploy/crds"


def until(cond, timeout=10.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.02)


@pytest.fixture(scope="module")
def local():
    with APIServer(crd_dir=CRDS, bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def lapi(local, tmp_path_factory):
    return api_client(local.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "local")))


@pytest.fixture(scope="module")
def core(lapi):
    c = client.CoreV1Api(lapi)
    c.create_namespace({"metadata": {"name": NS}})
    c.create_namespace({"metadata": {"name": "app"}})
    c.create_node({"metadata": {"name": "local-1"}, "spec": {"podCIDR": "10.244.0.0/24",
                                                             "podCIDRs": ["10.244.0.0/24"]},
                   "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}})
    return c


@pytest.fixture(scope="module")
def custom(lapi):
    return client.CustomObjectsApi(lapi)


@pytest.fixture(scope="module")
def ctl(local, lapi, core, tmp_path_factory):
    kc = local.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "ctl"))
    c = Controller(ControllerConfig(kubeconfig=kc, leader_elect=False, metrics_address="127.0.0.1:0",
                                    cluster_name="local", namespace=NS, mesh_stale_grace=30.0,
                                    service_cidrs=("10.96.0.0/12",))).start()
    c.mesh.cfg.remote_backoff = (0.05, 0.3)  # reconnect fast: tests stop and start remote servers
    c.mesh.cfg.remote_connect_timeout = 1.0
    yield c
    c.stop()


class Remote:
    """A remote cluster: its API server, a client to fill it, and helpers."""

    def __init__(self, tmp_path, port=0, store=None):
        self.tmp = tmp_path
        self.srv = APIServer(port=port, crd_dir=CRDS, bookmark_interval=0.2)
        if store is not None:
            self.srv.store = store  # another front on the same data: "the same cluster at a new address"
        self.srv.start()
        self.port = int(self.srv.url.rsplit(":", 1)[1])
        self.kubeconfig = open(self.srv.write_kubeconfig(str(tmp_path / f"remote-{self.port}"))).read()
        api = api_client(str(tmp_path / f"remote-{self.port}"))
        self.core, self.disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)

    def seed(self, nodes=(("r-1", "10.245.0.0/24", "172.18.1.2"),)):
        for name, cidr, ip in nodes:
            self.core.create_node({"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                                   "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
        self.core.create_namespace({"metadata": {"name": "app"}})
        return self

    def service(self, name="web", annotations=None):
        self.core.create_namespaced_service("app", {
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})

    def slice(self, ips, name="web", not_ready=(), create=True):
        body = {"metadata": {"name": f"{name}-s1", "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]
                + [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]}
        if create:
            self.disc.create_namespaced_endpoint_slice("app", body)
        else:
            self.disc.replace_namespaced_endpoint_slice(f"{name}-s1", "app", dict(
                body, metadata=dict(body["metadata"], resourceVersion=self.disc.read_namespaced_endpoint_slice(
                    f"{name}-s1", "app").metadata.resource_version)))

    def stop(self):
        self.srv.stop()


def put_secret(core, name, data):
    body = {"metadata": {"name": name}, "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    try:
        core.create_namespaced_secret(NS, body)
    except ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_secret(name, NS, body)


def local_service(core, name="web", meshed=True):
    core.create_namespaced_service("app", {
        "metadata": {"name": name, "annotations": {mesh.MULTI_CLUSTER: "true"} if meshed else {}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}})


@pytest.fixture
def cluster(core, custom, ctl, tmp_path):
    """make(name, remote, grace=None, secret=...): a Cluster for ``remote``; deleted (and awaited) after the test."""
    made, remotes = [], []

    def make(name, remote=None, grace=None, secret=True):
        if remote is not None and secret:
            put_secret(core, f"{name}-kc", {"config": remote.kubeconfig})
        spec = {"secret": {"name": f"{name}-kc"}}
        if grace is not None:
            spec["staleGracePeriodSeconds"] = grace
        custom.create_cluster_custom_object(G, V, "clusters", {"apiVersion": f"{G}/{V}", "kind": "Cluster",
                                                               "metadata": {"name": name}, "spec": spec})
        made.append(name)
        if remote is not None:
            remotes.append(remote)
        return name
    yield make
    for name in made:
        try:
            custom.delete_cluster_custom_object(G, V, "clusters", name)
        except ApiException:
            pass
    for name in made:
        until(lambda: not clusters_named(custom, name), what=f"Cluster {name} gone")
        until(lambda: not meps(custom, name), what=f"MeshEndpoints of {name} gone")
    for r in remotes:
        r.stop()
    for s in core.list_service_for_all_namespaces().items:
        if s.metadata.namespace == "app":
            core.delete_namespaced_service(s.metadata.name, "app")


def clusters_named(custom, name):
    return [c for c in custom.list_cluster_custom_object(G, V, "clusters")["items"] if c["metadata"]["name"] == name]


def get_cluster(custom, name):
    return custom.get_cluster_custom_object(G, V, "clusters", name)


def cond(custom, name, typ):
    st = get_cluster(custom, name).get("status") or {}
    return next((c for c in st.get("conditions") or () if c["type"] == typ), {})


def meps(custom, owner=None):
    items = custom.list_namespaced_custom_object(G, V, "app", "meshendpoints")["items"]
    return [o for o in items if owner is None or o["metadata"]["labels"].get(mesh.CLUSTER_OWNER) == owner]


def mep(custom, name):
    try:
        return custom.get_namespaced_custom_object(G, V, "app", "meshendpoints", name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def ips(obj):
    return sorted(m["ip"] for m in (obj or {}).get("spec", {}).get("backend_port_mappings", ()))


def events_about(core, name, reason=None):
    evs = core.list_event_for_all_namespaces().items
    return [e for e in evs if e.involved_object.name == name and (reason is None or e.reason == reason)]


def settle(ctl, quiet=0.3, timeout=10.0):
    """Wait until the mesh's queue has been idle for ``quiet`` seconds."""
    q = ctl.mesh.queue
    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        busy = len(q) or q.in_flight()
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= quiet:
            return
        time.sleep(0.02)
    raise AssertionError("mesh queue never went idle")


# ---------------------------------------------------------------- tests

def test_meshendpoints_follow_the_remote(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10", "10.245.0.11", "10.245.0.12"], not_ready=["10.245.0.13"])
    local_service(core)
    cluster("east", r)
    got = until(lambda: mep(custom, "web-east"), what="MeshEndpoint web-east")
    svc = core.read_namespaced_service("web", "app")
    assert got["metadata"]["labels"] == {"kubernetes.io/service-name": "web", "mesh-cni.dev/cluster-owner": "east",
                                         "app.kubernetes.io/managed-by": "meshcni-controller"}
    assert got["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                   "uid": svc.metadata.uid, "controller": True}]
    until(lambda: ips(mep(custom, "web-east")) == ["10.245.0.10", "10.245.0.11", "10.245.0.12"], what="3 backends")
    assert mep(custom, "web-east")["spec"]["backend_port_mappings"][0] == {
        "ip": "10.245.0.10", "service_port": 80, "backend_port": 8080, "protocol": "TCP"}
    until(lambda: cond(custom, "east", "Ready").get("status") == "True", what="Ready")
    c = get_cluster(custom, "east")
    st = c["status"]
    assert mesh.FINALIZER in c["metadata"]["finalizers"]
    assert {x["type"]: x["status"] for x in st["conditions"]} == {
        "Ready": "True", "SecretResolved": "True", "APIServerReachable": "True", "InitialSyncComplete": "True",
        "CIDRConflict": "False"}
    assert st["observedGeneration"] == c["metadata"]["generation"]
    assert (st["meshedServices"], st["remoteEndpoints"]) == (1, 3) and st["lastSyncTime"]
    assert st["nodes"] == [{"name": "r-1", "addresses": ["172.18.1.2"], "podCIDRs": ["10.245.0.0/24"]}]

    # scale up, then down
    r.slice([f"10.245.0.{i}" for i in range(10, 16)], create=False)
    until(lambda: len(ips(mep(custom, "web-east"))) == 6, what="scale up followed")
    r.slice(["10.245.0.14"], create=False)
    until(lambda: ips(mep(custom, "web-east")) == ["10.245.0.14"], what="scale down followed")
    until(lambda: get_cluster(custom, "east")["status"]["remoteEndpoints"] == 1, what="count follows")

    # the remote opts out, then in again
    r.core.patch_namespaced_service("web", "app", {"metadata": {"annotations": {mesh.EXPORT: "false"}}})
    until(lambda: mep(custom, "web-east") is None, what="opt-out removes it")
    r.core.patch_namespaced_service("web", "app", {"metadata": {"annotations": {mesh.EXPORT: None}}})
    until(lambda: mep(custom, "web-east"), what="back after opting in")
    # the remote namespace opts out
    r.core.patch_namespace("app", {"metadata": {"annotations": {mesh.EXPORT: "false"}}})
    until(lambda: mep(custom, "web-east") is None, what="namespace opt-out removes it")
    r.core.patch_namespace("app", {"metadata": {"annotations": {mesh.EXPORT: None}}})
    until(lambda: mep(custom, "web-east"), what="back")

    # the local annotation removed, then the local Service deleted
    core.patch_namespaced_service("web", "app", {"metadata": {"annotations": {mesh.MULTI_CLUSTER: None}}})
    until(lambda: mep(custom, "web-east") is None, what="un-meshed Service loses it")
    core.patch_namespaced_service("web", "app", {"metadata": {"annotations": {mesh.MULTI_CLUSTER: "true"}}})
    until(lambda: mep(custom, "web-east"), what="meshed again")
    core.delete_namespaced_service("web", "app")
    until(lambda: mep(custom, "web-east") is None, what="deleted Service loses it")
    # the remote Service deleted
    local_service(core)
    until(lambda: mep(custom, "web-east"), what="meshed again")
    r.core.delete_namespaced_service("web", "app")
    until(lambda: mep(custom, "web-east") is None, what="remote Service gone")


def test_no_write_when_nothing_changed(core, custom, ctl, cluster, tmp_path, local):
    r = Remote(tmp_path).seed()
    for i in range(5):
        r.service(f"s{i}")
        r.slice([f"10.245.0.{10 + i}"], name=f"s{i}")
        local_service(core, f"s{i}")
    cluster("quiet", r)
    until(lambda: len(meps(custom, "quiet")) == 5, what="5 MeshEndpoints")
    until(lambda: cond(custom, "quiet", "Ready").get("status") == "True", what="Ready")
    settle(ctl)
    rv, writes, syncs = local.store.rv, sum(ctl.mesh.writes.values()), ctl.mesh.syncs
    # remote changes that change nothing here, a local change to an unmeshed field, and plain kicks
    r.core.patch_namespaced_service("s0", "app", {"metadata": {"labels": {"touched": "yes"}}})
    r.core.create_namespace({"metadata": {"name": "unrelated"}})
    for _ in range(3):
        ctl.mesh.queue.add("quiet")
        settle(ctl, quiet=0.1)
    settle(ctl)
    assert ctl.mesh.syncs >= syncs + 3, "the kicks were reconciled"
    assert sum(ctl.mesh.writes.values()) == writes
    assert local.store.rv == rv, "the local API server saw a write"


def test_remote_unreachable_stale_then_removed_then_back(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10", "10.245.0.11"])
    local_service(core)
    # the grace must outlast the checks made during it on a loaded 2-core machine (2 s did not, once)
    cluster("gone", r, grace=6)
    until(lambda: len(ips(mep(custom, "web-gone"))) == 2, what="MeshEndpoint")
    until(lambda: cond(custom, "gone", "Ready").get("status") == "True", what="Ready")
    uid = mep(custom, "web-gone")["metadata"]["uid"]
    store, port = r.srv.store, r.port
    r.stop()
    c = until(lambda: cond(custom, "gone", "APIServerReachable").get("status") == "False"
              and cond(custom, "gone", "APIServerReachable"), what="unreachable")
    assert c["reason"] == "Unreachable" and "stale" in c["message"]
    assert cond(custom, "gone", "Ready")["status"] == "False"
    st = until(lambda: (mep(custom, "web-gone") or {}).get("status"), what="stale mark")
    assert st["stale"] is True and st["staleSince"]
    assert mep(custom, "web-gone")["metadata"]["uid"] == uid and len(ips(mep(custom, "web-gone"))) == 2
    assert get_cluster(custom, "gone")["status"]["nodes"], "routes kept during the grace"
    assert events_about(core, "gone", "ClusterProblem")
    # a change while we cannot see it: on reconnect it must be found
    side = Remote(tmp_path, store=store)
    side.slice(["10.245.0.11"], create=False)
    side.stop()
    until(lambda: mep(custom, "web-gone") is None, timeout=15, what="removed after the grace")
    # the MeshEndpoint goes first, the Cluster's status is written after it
    until(lambda: get_cluster(custom, "gone")["status"]["nodes"] == [], what="routing data emptied")
    until(lambda: "removed" in cond(custom, "gone", "APIServerReachable")["message"], what="condition says removed")
    back = Remote(tmp_path, port=port, store=store)
    try:
        until(lambda: ips(mep(custom, "web-gone")) == ["10.245.0.11"], timeout=10, what="back after restart")
        until(lambda: cond(custom, "gone", "Ready").get("status") == "True", what="Ready again")
        assert not (mep(custom, "web-gone").get("status") or {}).get("stale")
        assert get_cluster(custom, "gone")["status"]["nodes"]
    finally:
        back.stop()


def test_stale_mark_cleared_when_back_within_the_grace(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10"])
    local_service(core)
    cluster("blip", r, grace=30)
    until(lambda: ips(mep(custom, "web-blip")), what="MeshEndpoint")
    uid = mep(custom, "web-blip")["metadata"]["uid"]
    store, port = r.srv.store, r.port
    r.stop()
    until(lambda: (mep(custom, "web-blip") or {}).get("status", {}).get("stale"), what="stale")
    back = Remote(tmp_path, port=port, store=store)
    try:
        until(lambda: (mep(custom, "web-blip") or {}).get("status", {}).get("stale") is False, what="fresh again")
        assert mep(custom, "web-blip")["metadata"]["uid"] == uid  # never deleted
        assert "staleSince" not in mep(custom, "web-blip")["status"]
        until(lambda: cond(custom, "blip", "Ready").get("status") == "True", what="Ready")
    finally:
        back.stop()


def test_secret_missing_wrong_key_garbage_then_fixed(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10"])
    local_service(core)
    cluster("sec", r, secret=False)

    def reason():
        return cond(custom, "sec", "SecretResolved").get("reason")
    until(lambda: reason() == "SecretNotFound", what="SecretNotFound")
    assert cond(custom, "sec", "Ready")["status"] == "False" and cond(custom, "sec", "Ready")["reason"] == \
        "SecretNotFound"
    until(lambda: events_about(core, "sec", "ClusterProblem"), what="Warning Event")
    put_secret(core, "sec-kc", {"kubeconfig": r.kubeconfig})
    until(lambda: reason() == "KeyNotFound", what="KeyNotFound")
    put_secret(core, "sec-kc", {"config": "{{{ not: yaml"})
    until(lambda: reason() == "InvalidKubeconfig", what="InvalidKubeconfig (YAML)")
    put_secret(core, "sec-kc", {"config": yaml.safe_dump({"clusters": [], "contexts": []})})
    until(lambda: "current-context" in cond(custom, "sec", "SecretResolved").get("message", ""),
          what="InvalidKubeconfig (structure)")
    assert mep(custom, "web-sec") is None
    put_secret(core, "sec-kc", {"config": r.kubeconfig})
    until(lambda: cond(custom, "sec", "Ready").get("status") == "True", what="Ready once fixed")
    until(lambda: ips(mep(custom, "web-sec")) == ["10.245.0.10"], what="MeshEndpoint once fixed")
    assert {e.message.split(": ")[2] for e in events_about(core, "sec", "ClusterProblem")} >= {
        "SecretNotFound", "KeyNotFound", "InvalidKubeconfig"}


def test_secret_rotated_to_a_new_address_without_flap(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10", "10.245.0.11"])
    local_service(core)
    cluster("rot", r)
    until(lambda: len(ips(mep(custom, "web-rot"))) == 2, what="MeshEndpoint")
    until(lambda: cond(custom, "rot", "Ready").get("status") == "True", what="Ready")
    before = mep(custom, "web-rot")
    seen = []
    stop = threading.Event()

    def watch():  # every state of the MeshEndpoint during the rotation
        while not stop.is_set():
            seen.append(mep(custom, "web-rot"))
            time.sleep(0.01)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    b = Remote(tmp_path, store=r.srv.store)  # the same cluster behind a new address
    try:
        put_secret(core, "rot-kc", {"config": b.kubeconfig})
        until(lambda: ctl.mesh.status()["remotes"].get("rot", {}).get("active", {}).get("server") == b.srv.url,
              what="switched to the new address")
        r.stop()  # the old address goes away: the new connection must carry on
        settle(ctl)
        stop.set()
        t.join()
        assert all(o is not None and len(ips(o)) == 2 for o in seen), "the MeshEndpoint flapped"
        after = mep(custom, "web-rot")
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        b.slice(["10.245.0.12"], create=False)
        until(lambda: ips(mep(custom, "web-rot")) == ["10.245.0.12"], what="changes followed via the new address")
        assert cond(custom, "rot", "Ready")["status"] == "True"
    finally:
        stop.set()
        b.stop()


def test_cluster_deleted_finalizer_cleans_up(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    for n in ("a", "b"):
        r.service(n)
        r.slice(["10.245.0.10"], name=n)
        local_service(core, n)
    cluster("bye", r)
    until(lambda: len(meps(custom, "bye")) == 2, what="2 MeshEndpoints")
    until(lambda: mesh.FINALIZER in (get_cluster(custom, "bye")["metadata"].get("finalizers") or ()),
          what="finalizer")
    custom.delete_cluster_custom_object(G, V, "clusters", "bye")
    until(lambda: not clusters_named(custom, "bye"), what="Cluster gone")
    assert meps(custom, "bye") == []
    until(lambda: "bye" not in ctl.mesh.status()["remotes"], what="connection closed")


def test_cidr_conflict_programs_nothing(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed(nodes=(("r-1", "10.245.0.0/24", "172.18.1.2"), ("r-2", "10.244.0.128/25", "172.18.1.3")))
    r.service()
    r.slice(["10.245.0.10"])
    local_service(core)
    cluster("clash", r)
    c = until(lambda: cond(custom, "clash", "CIDRConflict").get("status") == "True"
              and cond(custom, "clash", "CIDRConflict"), what="CIDRConflict")
    assert "r-2" in c["message"] and "local node local-1" in c["message"]
    st = get_cluster(custom, "clash")["status"]
    assert st["nodes"] == [] and st["meshedServices"] == 0
    assert cond(custom, "clash", "Ready")["status"] == "False"
    assert meps(custom, "clash") == []
    # a remote node in the local service CIDR is a conflict too
    r.core.delete_node("r-2")
    r.core.create_node({"metadata": {"name": "r-3"}, "spec": {"podCIDR": "10.96.1.0/24", "podCIDRs": ["10.96.1.0/24"]},
                        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.1.4"}]}})
    until(lambda: "service CIDR" in cond(custom, "clash", "CIDRConflict").get("message", ""), what="service CIDR")
    r.core.delete_node("r-3")
    until(lambda: cond(custom, "clash", "CIDRConflict").get("status") == "False", what="conflict gone")
    until(lambda: ips(mep(custom, "web-clash")) == ["10.245.0.10"], what="programmed once the conflict is gone")


def test_handmade_meshendpoint_reported_never_touched(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10"])
    local_service(core)
    hand = custom.create_namespaced_custom_object(G, V, "app", "meshendpoints", {
        "apiVersion": f"{G}/{V}", "kind": "MeshEndpoint",
        "metadata": {"name": "web-hand", "labels": {mesh.SERVICE_NAME_LABEL: "web", mesh.CLUSTER_OWNER: "hand"}},
        "spec": {"backend_port_mappings": [{"ip": "192.0.2.1", "service_port": 80, "backend_port": 80}]}})
    try:
        until(lambda: events_about(core, "web-hand", "HandMadeMeshEndpoint"), what="hand-made reported")
        cluster("hand", r)  # its managed MeshEndpoint would take exactly that name
        until(lambda: cond(custom, "hand", "Ready").get("status") == "True", what="Ready")
        settle(ctl)
        cur = mep(custom, "web-hand")
        assert cur["metadata"]["resourceVersion"] == hand["metadata"]["resourceVersion"], "touched"
        assert len(events_about(core, "web-hand", "HandMadeMeshEndpoint")) >= 1
    finally:
        custom.delete_namespaced_custom_object(G, V, "app", "meshendpoints", "web-hand")
    # gone: the managed one takes its place
    until(lambda: mesh.is_managed(mep(custom, "web-hand") or {}), what="managed MeshEndpoint after the hand-made")


def test_cluster_named_like_the_local_cluster_is_ignored(core, custom, ctl, cluster, tmp_path):
    r = Remote(tmp_path).seed()
    r.service()
    r.slice(["10.245.0.10"])
    local_service(core)
    cluster("local", r)
    c = until(lambda: cond(custom, "local", "Ready").get("reason") == "LocalClusterName"
              and cond(custom, "local", "Ready"), what="ignored")
    assert c["status"] == "False"
    until(lambda: events_about(core, "local", "ClusterProblem"), what="reported")
    settle(ctl)
    assert meps(custom, "local") == [] and "local" not in ctl.mesh.status()["remotes"]
