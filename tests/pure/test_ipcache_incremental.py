# SPDX-License-Identifier: MIT OR Apache-2.0
"""The incremental ipcache equals :func:`~meshcni.controllers.ipcache.desired_ipcache` after every step of
random pod events, including IP reuse between pods and pod addresses that a node or a /32 ipBlock also
claims (those must ask for a full recompute, never guess)."""
from __future__ import annotations

import random

import pytest

from meshcni.controllers.identity import MANAGED_BY, MANAGER, desired_cidr_identities, identity_labels, identity_name
from meshcni.controllers.ipcache import desired_ipcache
from meshcni.controllers.ipcache_inc import IncrementalIPCache

pytestmark = pytest.mark.pure

NSS = ["a", "b"]
APPS = ["web", "api", "db"]


def _namespaces():
    return [{"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}} for n in NSS]


def _identities():
    out = []
    for i, (ns, app) in enumerate((ns, app) for ns in NSS for app in APPS):
        if (ns, app) == ("b", "db"):
            continue  # not created yet: such pods are left out of the ipcache
        labels = identity_labels({"metadata": {"namespace": ns, "labels": {"app": app}}},
                                 {"kubernetes.io/metadata.name": ns})
        out.append({"metadata": {"name": identity_name(labels), "namespace": ns, "labels": {MANAGED_BY: MANAGER}},
                    "spec": {"id": 16777216 + i, **labels}})
    return out


NODES = [{"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}},
         {"metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}}]
IPS = [f"10.0.0.{i}" for i in range(1, 40)] + ["fd00::1", "not-an-ip"]


def _pod(rng, ns, name):
    st = {"phase": "Succeeded" if rng.random() < 0.1 else "Running"}
    if rng.random() < 0.85:
        st["podIP"] = rng.choice(IPS)
        if rng.random() < 0.2:
            st["podIPs"] = [{"ip": st["podIP"]}, {"ip": "fd00::2"}]
    spec = {"hostNetwork": True} if rng.random() < 0.05 else {}
    return {"metadata": {"name": name, "namespace": ns, "labels": {"app": rng.choice(APPS)}}, "spec": spec,
            "status": st}


def _key(p):
    return f"{p['metadata']['namespace']}/{p['metadata']['name']}"


@pytest.mark.parametrize("seed", range(20))
def test_incremental_ipcache_equals_full_after_every_event(seed):
    rng = random.Random(seed)
    nss, ids = _namespaces(), _identities()
    pol = [{"metadata": {"name": "x", "namespace": "a"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.9/32"}},
                                                              {"ipBlock": {"cidr": "10.0.0.0/24"}}]}]}}]
    cidrs = desired_cidr_identities(pol, [])[0]
    pods = {}
    for i in range(6):
        p = _pod(rng, rng.choice(NSS), f"p{i}")
        pods[_key(p)] = p
    args = lambda: (list(pods.values()), nss, ids, cidrs, NODES, "n1")  # noqa: E731
    inc = IncrementalIPCache()
    inc.full(*args())
    model = dict(inc.prefixes)
    fulls = incs = 0
    for step in range(80):
        r = rng.random()
        if r < 0.3:
            p = _pod(rng, rng.choice(NSS), f"p{step + 10}")
        elif r < 0.5 and pods:
            k = rng.choice(sorted(pods))
            del pods[k]
            changes = [(k, None)]
            p = None
        else:
            k = rng.choice(sorted(pods)) if pods else "a/p0"
            ns, name = k.split("/")
            p = _pod(rng, ns, name)
        if p is not None:
            pods[_key(p)] = p
            changes = [(_key(p), p)]
        delta = inc.pods_changed(changes)
        if delta is None:
            fulls += 1
            inc.full(*args())
            model = dict(inc.prefixes)
        else:
            incs += 1
            for k, v in delta.items():
                if v is None:
                    del model[k]
                else:
                    model[k] = v
        want, problems, _ = desired_ipcache(*args())
        assert inc.prefixes == want, (seed, step)
        assert model == want, (seed, step)
        assert sorted(map(str, inc.problems())) == sorted(map(str, problems)), (seed, step)
    assert incs > fulls  # most events stay incremental
