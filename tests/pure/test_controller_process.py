# SPDX-License-Identifier: MIT OR Apache-2.0
"""The ``meshcni controller`` process against the in-process API server, through the official client."""
import random
import threading
import time
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni.apiserver import APIServer
from meshcni.controller import Controller, ControllerConfig
from meshcni.controllers import identity as idm
from meshcni.k8s import api_client
from testutil import eventually

pytestmark = pytest.mark.pure

G, V = idm.GROUP, idm.VERSION
# seconds; short so failover and GC happen within a test, in the proportions of the defaults
TIMING = dict(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)


def until(cond, timeout=10.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.02)


@pytest.fixture(scope="module")
def server():
    with APIServer(crd_dir="deploy/crds", bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def kubeconfig(server, tmp_path_factory):
    return server.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "kubeconfig"))


@pytest.fixture(scope="module")
def api(kubeconfig):
    return api_client(kubeconfig)


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


@pytest.fixture
def controllers(kubeconfig, request):
    made = []
    lease = "ctl-" + request.node.name.replace("_", "-").lower()[:40].strip("-")

    def make(**kw):
        cfg = dict(kubeconfig=kubeconfig, lease_name=lease, metrics_address="127.0.0.1:0", gc_grace=1.0,
                   identity=f"ctl-{len(made)}", **TIMING)
        cfg.update(kw)
        c = Controller(ControllerConfig(**cfg)).start()
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def mkns(core, name, labels=None):
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def mkpod(core, ns, name, labels):
    core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": labels},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}})


def idents(custom, ns):
    return custom.list_namespaced_custom_object(G, V, ns, "identities")["items"]


def managed_in(custom, *nss):
    return [o for ns in nss for o in idents(custom, ns) if idm.is_managed(o)]


def pod_label_sets(custom, ns):
    return sorted(tuple(sorted(o["spec"]["podLabels"].items())) for o in managed_in(custom, ns))


def metric(ctl, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_identities_per_namespace_relabel_and_gc(core, custom, controllers):
    a = mkns(core, "ida", {"team": "x"})
    b = mkns(core, "idb")
    mkpod(core, a, "web-1", {"app": "web", "pod-template-hash": "h1"})
    mkpod(core, a, "web-2", {"app": "web", "pod-template-hash": "h2"})
    mkpod(core, b, "web-1", {"app": "web"})
    ctl = controllers()
    assert urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/readyz", timeout=5).status == 200
    got = until(lambda: len(managed_in(custom, a)) == 1 and len(managed_in(custom, b)) == 1
                and managed_in(custom, a, b), what="one identity per namespace")
    ida = next(o for o in got if o["metadata"]["namespace"] == a)
    assert ida["spec"]["podLabels"] == {"app": "web"}  # pod-template-hash dropped
    assert ida["spec"]["namespaceLabels"] == {"team": "x", "kubernetes.io/metadata.name": a}
    for o in got:
        assert idm.POD_ID_MIN <= o["spec"]["id"] <= idm.POD_ID_MAX
        assert o["metadata"]["labels"][idm.ID_LABEL] == str(o["spec"]["id"])
        assert o["metadata"]["name"] == idm.identity_name(o["spec"])
    assert got[0]["spec"]["id"] != got[1]["spec"]["id"]
    assert metric(ctl, "meshcni_controller_allocations_total") == 2

    # relabel both pods of a: a new identity; the old one is stamped unused, then deleted after the grace
    for name in ("web-1", "web-2"):
        core.patch_namespaced_pod(name, a, {"metadata": {"labels": {"app": "web2"}}})
    until(lambda: pod_label_sets(custom, a) == [(("app", "web"),), (("app", "web2"),)], what="new identity")
    old = next(o for o in managed_in(custom, a) if o["spec"]["podLabels"] == {"app": "web"})
    until(lambda: idm.UNUSED_SINCE in (next((o for o in managed_in(custom, a) if o["metadata"]["name"]
                                             == old["metadata"]["name"]), {"metadata": {"annotations": {
                                                 idm.UNUSED_SINCE: "gone"}}})["metadata"].get("annotations") or {}),
          what="unused-since stamp")
    until(lambda: pod_label_sets(custom, a) == [(("app", "web2"),)], timeout=5, what="GC of the old identity")
    assert metric(ctl, "meshcni_controller_gc_deletions_total") >= 1
    # b untouched
    assert [o["spec"]["id"] for o in managed_in(custom, b)] == [next(o for o in got if o["metadata"]["namespace"]
                                                                     == b)["spec"]["id"]]


def test_restart_keeps_ids_and_a_returning_pod_clears_the_stamp(core, custom, controllers):
    ns = mkns(core, "idrestart")
    mkpod(core, ns, "p", {"app": "keep"})
    c1 = controllers(gc_grace=30.0)
    first = until(lambda: managed_in(custom, ns), what="identity")
    c1.stop()
    c2 = controllers(gc_grace=30.0)
    until(lambda: c2.leading.is_set(), what="leadership")
    # the pod goes and comes back while nobody would GC: the stamp appears, then is cleared
    core.delete_namespaced_pod("p", ns)
    until(lambda: idm.UNUSED_SINCE in (managed_in(custom, ns)[0]["metadata"].get("annotations") or {}),
          what="stamp")
    mkpod(core, ns, "p", {"app": "keep"})
    until(lambda: idm.UNUSED_SINCE not in (managed_in(custom, ns)[0]["metadata"].get("annotations") or {}),
          what="stamp cleared")
    now = managed_in(custom, ns)
    assert [(o["metadata"]["uid"], o["spec"]["id"]) for o in now] == [(o["metadata"]["uid"], o["spec"]["id"])
                                                                      for o in first]


def test_leader_election_one_acts_and_failover(core, custom, controllers):
    ns = mkns(core, "idle")
    c1, c2 = controllers(), controllers()
    leader = until(lambda: next((c for c in (c1, c2) if c.leading.is_set()), None), what="a leader")
    follower = c2 if leader is c1 else c1
    mkpod(core, ns, "p1", {"app": "one"})
    until(lambda: len(managed_in(custom, ns)) == 1, what="identity")
    time.sleep(0.3)
    assert len(managed_in(custom, ns)) == 1
    assert metric(leader, "meshcni_controller_allocations_total") == 1
    assert metric(follower, "meshcni_controller_allocations_total") == 0
    assert not follower.leading.is_set()
    leader.stop()
    until(lambda: follower.leading.is_set(), timeout=5, what="failover")
    mkpod(core, ns, "p2", {"app": "two"})
    until(lambda: len(managed_in(custom, ns)) == 2, what="identity from the new leader")
    ids = [o["spec"]["id"] for o in managed_in(custom, ns)]
    assert len(set(ids)) == 2
    assert metric(follower, "meshcni_controller_allocations_total") == 1


def test_racing_controllers_without_election_never_duplicate(core, custom, controllers):
    ns = mkns(core, "idrace")
    controllers(leader_elect=False), controllers(leader_elect=False)
    for i in range(8):
        mkpod(core, ns, f"p{i}", {"app": f"a{i % 4}"})
    until(lambda: len(managed_in(custom, ns)) == 4, what="four identities")
    time.sleep(0.5)
    objs = managed_in(custom, ns)
    assert len(objs) == 4 and len({o["spec"]["id"] for o in objs}) == 4


def test_identity_allocation_under_churn(core, custom, controllers):
    nss = [mkns(core, "churn-a", {"env": "a"}), mkns(core, "churn-b", {"env": "b"})]
    ctl = controllers()
    apps = ["w", "x", "y", "z", "v", "u"]
    rnd = random.Random(7)
    seeds = [rnd.randrange(1 << 30) for _ in range(4)]
    errors = []

    def churn(t):
        r = random.Random(seeds[t])
        ns = nss[t % 2]
        try:
            for i in range(6):
                mkpod(core, ns, f"t{t}-p{i}", {"app": r.choice(apps), "pod-template-hash": f"h{i}"})
            for _ in range(15):
                i = r.randrange(6)
                core.patch_namespaced_pod(f"t{t}-p{i}", ns, {"metadata": {"labels": {"app": r.choice(apps)}}})
                time.sleep(0.02)  # let the controller see intermediate states, not only the last one
            for i in range(0, 6, 3):
                core.delete_namespaced_pod(f"t{t}-p{i}", ns)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors

    def in_use(ns):
        return sorted({(("app", p.metadata.labels["app"]),) for p in core.list_namespaced_pod(ns).items})

    # after the grace (1 s) exactly the label sets in use remain: nothing missing, nothing leaked
    until(lambda: all(pod_label_sets(custom, ns) == in_use(ns) for ns in nss), timeout=10,
          what="one identity per label set in use")
    ids = [o["spec"]["id"] for o in managed_in(custom, *nss)]
    assert len(ids) == len(set(ids))
    time.sleep(1.3)  # past the grace again: still exactly the sets in use
    assert all(pod_label_sets(custom, ns) == in_use(ns) for ns in nss)
    assert metric(ctl, "meshcni_controller_allocations_total") >= len(ids)
    every = custom.list_cluster_custom_object(G, V, "identities")["items"]
    all_ids = [o["spec"]["id"] for o in every if idm.is_managed(o)]
    assert len(all_ids) == len(set(all_ids))


def test_handmade_identities_reported_managed_wins(core, custom, controllers):
    ns = mkns(core, "idhand")
    mkpod(core, ns, "p", {"app": "real"})
    ctl = controllers()
    m = until(lambda: managed_in(custom, ns), what="identity")[0]
    body = {"apiVersion": f"{G}/{V}", "kind": "Identity", "metadata": {"name": "by-hand-zero"},
            "spec": {"id": 0, "podLabels": {"app": "real"}}}
    # the CRD schema is the first line: a reserved id never gets stored
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(G, V, ns, "identities", body)
    assert e.value.status == 422
    dup = dict(body, metadata={"name": "by-hand-dup"}, spec={"id": m["spec"]["id"], "podLabels": {"app": "fake"}})
    custom.create_namespaced_custom_object(G, V, ns, "identities", dup)

    def event():
        evs = core.list_namespaced_event(ns, field_selector="involvedObject.name=by-hand-dup").items
        return [ev for ev in evs if ev.reason == "HandMadeIdentity"]
    evs = until(event, what="an Event on the hand-made Identity")
    assert "managed allocation wins" in evs[0].message
    assert metric(ctl, "meshcni_controller_handmade_total") >= 1
    time.sleep(0.3)
    now = managed_in(custom, ns)
    assert [(o["metadata"]["uid"], o["spec"]["id"]) for o in now] == [(m["metadata"]["uid"], m["spec"]["id"])]
    assert custom.get_namespaced_custom_object(G, V, ns, "identities", "by-hand-dup")  # left alone


def test_cidr_identities_follow_policies(core, custom, controllers, api):
    ns = mkns(core, "idcidr")
    net = client.NetworkingV1Api(api)
    ctl = controllers()
    net.create_namespaced_network_policy(ns, {
        "metadata": {"name": "np"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}}]}]}})
    name = idm.cidr_identity_name("10.0.0.0/8", ["10.96.0.0/12"])

    def get():
        try:
            return custom.get_cluster_custom_object(G, V, "cidridentities", name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
    o = until(get, what="CIDRIdentity")
    assert set(o["spec"]["cidrPrefixes"]) == {"10.0.0.0/10", "10.64.0.0/11", "10.112.0.0/12", "10.128.0.0/9"}
    assert o["spec"]["except"] == ["10.96.0.0/12"]
    assert idm.CIDR_ID_MIN <= o["spec"]["id"] <= idm.CIDR_ID_MAX and idm.is_managed(o)

    # hand-made, valid for the API (cover is exact) but not what the helper computes: reported
    custom.create_cluster_custom_object(G, V, "cidridentities", {
        "apiVersion": f"{G}/{V}", "kind": "CIDRIdentity", "metadata": {"name": "by-hand-cidr"},
        "spec": {"id": 9000, "cidr": "192.0.2.0/24", "cidrPrefixes": ["192.0.2.0/25", "192.0.2.128/25"]}})
    until(lambda: [ev for ev in core.list_namespaced_event("default",
                                                           field_selector="involvedObject.name=by-hand-cidr").items
                   if "cidrPrefixes" in ev.message], what="an Event on the hand-made CIDRIdentity")
    assert metric(ctl, "meshcni_controller_handmade_total") >= 1

    net.delete_namespaced_network_policy("np", ns)
    until(lambda: get() is None, what="CIDRIdentity deleted with its policy")
    assert custom.get_cluster_custom_object(G, V, "cidridentities", "by-hand-cidr")  # left alone


def test_cli_flags():
    import argparse

    from meshcni.controller.cli import add_parser, cmd_controller
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    a = parser.parse_args(["controller"])
    assert (a.leader_elect, a.lease_namespace, a.lease_name, a.metrics_address, a.gc_grace, a.fn) == \
        (True, "kube-system", "meshcni-controller", "127.0.0.1:9963", 300.0, cmd_controller)
    assert a.identity
    a = parser.parse_args(["controller", "--no-leader-elect", "--gc-grace", "1.5", "--identity", "me",
                           "--lease-namespace", "x", "--lease-name", "y", "--log-level", "debug"])
    assert (a.leader_elect, a.gc_grace, a.identity, a.lease_namespace, a.lease_name) == (False, 1.5, "me", "x", "y")


def test_two_label_sets_on_one_id_the_younger_repicks(core, custom, controllers):
    # the state two racing controllers leave behind: both created a managed object with one id
    ns = mkns(core, "iddup")
    ns_labels = core.read_namespace(ns).metadata.labels
    sets = [idm.identity_labels({"metadata": {"namespace": ns, "labels": {"app": a}}}, ns_labels)
            for a in ("one", "two")]
    made = [custom.create_namespaced_custom_object(G, V, ns, "identities", idm.identity_body(ns, s, 70000000))
            for s in sets]
    winner = min(made, key=idm._age_key)
    for i, a in enumerate(("one", "two")):
        mkpod(core, ns, f"p{i}", {"app": a})
    ctl = controllers()
    until(lambda: len(managed_in(custom, ns)) == 2 and
          len({o["spec"]["id"] for o in managed_in(custom, ns)}) == 2, what="the collision resolved")
    now = {o["metadata"]["name"]: o for o in managed_in(custom, ns)}
    w = now[winner["metadata"]["name"]]
    assert (w["metadata"]["uid"], w["spec"]["id"]) == (winner["metadata"]["uid"], 70000000)
    assert metric(ctl, "meshcni_controller_gc_deletions_total") >= 1
    evs = core.list_namespaced_event(ns).items
    assert any(ev.reason == "IdentityCollision" for ev in evs)
