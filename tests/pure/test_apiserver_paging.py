# SPDX-License-Identifier: MIT OR Apache-2.0
"""Paged lists from the API server (the store sorts a resource's keys once per write, not once
per page): every page sequence equals the unpaged list, across namespaces, with selectors, with
remainingItemCount right, and with writes between pages seen by the next list."""
import random

import pytest
from kubernetes import client

from meshcni.apiserver import APIServer, write_kubeconfig
from meshcni.k8s import api_client

pytestmark = pytest.mark.pure


def _names(items):
    return [(o.metadata.namespace, o.metadata.name) for o in items]


def _paged(core, ns, limit, **kw):
    out, cont, remaining = [], None, []
    while True:
        if ns is None:
            r = core.list_config_map_for_all_namespaces(limit=limit, _continue=cont, **kw)
        else:
            r = core.list_namespaced_config_map(ns, limit=limit, _continue=cont, **kw)
        out += _names(r.items)
        cont = r.metadata._continue
        remaining.append(r.metadata.remaining_item_count)
        if not cont:
            return out, remaining


def test_pages_equal_the_whole_list(tmp_path):
    rng = random.Random(5)
    with APIServer() as srv:
        core = client.CoreV1Api(api_client(write_kubeconfig(str(tmp_path / "kc"), srv.url)))
        spaces = ["a", "a-b", "b", "ab"]  # "a" is a prefix of two others: its run of keys must end right
        for ns in spaces:
            core.create_namespace({"metadata": {"name": ns}})
        for i in range(120):
            ns = rng.choice(spaces)
            core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i:03d}",
                                                                "labels": {"even": str(i % 2 == 0).lower()}}})
        for ns in spaces + [None]:
            whole = _names((core.list_config_map_for_all_namespaces() if ns is None else
                            core.list_namespaced_config_map(ns)).items)
            for limit in (1, 7, 50, 500):
                got, remaining = _paged(core, ns, limit)
                assert got == whole, (ns, limit)
                # remainingItemCount: what the pages after this one hold
                assert remaining[:-1] == [len(whole) - limit * (k + 1) for k in range(len(remaining) - 1)]
                assert remaining[-1] is None
            even = _names((core.list_config_map_for_all_namespaces(label_selector="even=true") if ns is None else
                           core.list_namespaced_config_map(ns, label_selector="even=true")).items)
            got, remaining = _paged(core, ns, 5, label_selector="even=true")
            assert got == even and all(n.endswith(("0", "2", "4", "6", "8")) for _, n in got)
            if len(even) > 5:
                assert remaining[0] == len(even) - 5

        # writes between lists: a new key, a deleted key, a replaced object are all seen
        before, _ = _paged(core, "a", 3)
        core.create_namespaced_config_map("a", {"metadata": {"name": "aaa-new"}})
        if before:
            core.delete_namespaced_config_map(before[-1][1], "a")
        after, _ = _paged(core, "a", 3)
        assert after == sorted(set(before) - {before[-1]} | {("a", "aaa-new")} if before else [("a", "aaa-new")])
