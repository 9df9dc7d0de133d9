# SPDX-License-Identifier: MIT OR Apache-2.0
"""The simulator's level-based loops wake on their watches (informers from meshcni/k8s), against the
project's API server on loopback."""
import threading

import pytest

from meshcni.apiserver import APIServer
from meshcni.k8s.client import api_client
from meshcni.k8s.rest import APIStatusError, get_json, send_json
from meshcni.sim.controllers import Loop
from testutil import eventually

pytestmark = pytest.mark.pure


def _pod(name, node):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}


def test_a_loop_wakes_on_its_watch_and_caches_only_names(tmp_path):
    with APIServer() as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        seen, lock = [], threading.Lock()

        def sync():
            with lock:
                seen.append(sorted(p["metadata"]["name"] for p in get_json(api, "/api/v1/pods")["items"]))

        # a period far beyond the test: every sync below was rung by the watch
        loop = Loop("t", api, ["/api/v1/pods?fieldSelector=spec.nodeName=n1"], sync, period=3600).start()
        try:
            eventually(lambda: all(i.has_synced() for i in loop.informers), 10, "the loop's informer listed")
            send_json(api, "POST", "/api/v1/namespaces/default/pods", _pod("a", "n1"))
            eventually(lambda: ["a"] in seen, 10, "a sync seeing pod a")
            send_json(api, "DELETE", "/api/v1/namespaces/default/pods/a", None)
            eventually(lambda: seen and seen[-1] == [], 10, "a sync after pod a went")
            send_json(api, "POST", "/api/v1/namespaces/default/pods", _pod("b", "n2"))  # not n1's
            send_json(api, "POST", "/api/v1/namespaces/default/pods", _pod("c", "n1"))
            eventually(lambda: seen and seen[-1] == ["b", "c"], 10, "a sync after pod c came")
            (inf,) = loop.informers
            assert inf.list() == [{"metadata": {"name": "c", "namespace": "default",
                                                "resourceVersion": inf.get("default/c")["metadata"]["resourceVersion"]}}]
        finally:
            loop.stop()
        assert not any(i.running for i in loop.informers)
        with pytest.raises(APIStatusError) as e:
            get_json(api, "/api/v1/namespaces/default/pods/a")
        assert e.value.status == 404
        api.close()


def test_a_loop_refuses_what_it_cannot_watch():
    for path, why in [("/apis/apps/v1/deployments", "cannot watch"),
                      ("/api/v1/pods?limit=5", "unsupported query limit")]:
        with pytest.raises(ValueError, match=why):
            Loop("t", None, [path], lambda: None).start()
