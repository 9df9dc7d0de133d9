# SPDX-License-Identifier: MIT OR Apache-2.0
"""The API server's pure parts: selector grammar and the patch algorithms."""
import pytest

from meshcni.apiserver.errors import APIError
from meshcni.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from meshcni.apiserver.selectors import parse_field_selector, parse_label_selector

pytestmark = pytest.mark.pure


@pytest.mark.parametrize("sel,labels,want", [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("app in (web, db),tier", {"app": "db", "tier": "x"}, True),
    ("app in (web,db),tier", {"app": "db"}, False),
    ("app notin (web)", {}, True),
    ("app notin (web)", {"app": "web"}, False),
    ("!canary", {"app": "web"}, True),
    ("!canary", {"canary": ""}, False),
    ("example.com/role", {"example.com/role": "x"}, True),
    ("", {"a": "b"}, True),
])
def test_label_selector(sel, labels, want):
    assert parse_label_selector(sel).matches(labels) is want


@pytest.mark.parametrize("bad", ["app in web", "a=b=c", "=x", "app in (a b)", "a,,b", "bad key!=x"])
def test_label_selector_invalid_is_400_naming_it(bad):
    with pytest.raises(APIError) as ei:
        parse_label_selector(bad)
    assert ei.value.code == 400 and ei.value.reason == "BadRequest"
    assert bad in ei.value.message


def test_field_selector():
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert parse_field_selector("spec.nodeName=n1,status.phase==Running", "Pod").matches(pod)
    assert not parse_field_selector("spec.nodeName!=n1", "Pod").matches(pod)
    assert parse_field_selector("spec.nodeName=", "Pod").matches({"metadata": {}})
    with pytest.raises(APIError) as ei:
        parse_field_selector("spec.bogus=1", "Pod")
    assert ei.value.code == 400 and "spec.bogus" in ei.value.message


def test_merge_patch_rfc7386():
    doc = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    assert merge_patch(doc, {"a": "z", "c": {"f": None}, "l": [3]}) == {"a": "z", "c": {"d": "e"}, "l": [3]}
    assert doc == {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}  # input untouched


def test_strategic_merge_lists_by_key():
    pod = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}],
                    "tolerations": [{"key": "x"}]},
           "status": {"conditions": [{"type": "Ready", "status": "False"}]},
           "metadata": {"finalizers": ["f1"]}}
    out = strategic_merge_patch(pod, {
        "spec": {"containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "3"}],
                 "tolerations": [{"key": "y"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Init", "status": "True"}]},
        "metadata": {"finalizers": ["f2"]},
    })
    assert out["spec"]["containers"] == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"},
                                         {"name": "c", "image": "3"}]
    assert out["spec"]["tolerations"] == [{"key": "y"}]  # no merge key: replaced
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Init", "status": "True"}]
    assert out["metadata"]["finalizers"] == ["f1", "f2"]
    out = strategic_merge_patch(out, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]},
                                      "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["b", "c"]
    assert out["metadata"]["finalizers"] == ["f2"]


def test_strategic_merge_ports_keyed_by_port_and_containerport():
    svc = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
    out = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}})
    assert out["spec"]["ports"][1] == {"port": 443, "name": "https", "targetPort": 8443}
    c = {"ports": [{"containerPort": 80}]}
    assert strategic_merge_patch(c, {"ports": [{"containerPort": 81}]})["ports"] == [{"containerPort": 80},
                                                                                     {"containerPort": 81}]


def test_json_patch_rfc6902():
    doc = {"a": {"b": [1, 2, 3]}, "x": 1}
    out = json_patch(doc, [
        {"op": "add", "path": "/a/b/-", "value": 4},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "replace", "path": "/x", "value": 2},
        {"op": "copy", "from": "/x", "path": "/y"},
        {"op": "move", "from": "/y", "path": "/a/z"},
        {"op": "test", "path": "/a/z", "value": 2},
        {"op": "add", "path": "/a~1b", "value": True},
    ])
    assert out == {"a": {"b": [2, 3, 4], "z": 2}, "x": 2, "a/b": True}
    assert doc == {"a": {"b": [1, 2, 3]}, "x": 1}
    with pytest.raises(APIError) as ei:
        json_patch(doc, [{"op": "test", "path": "/x", "value": 9}])
    assert ei.value.code == 422
    with pytest.raises(APIError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_watch_from_a_future_resource_version_is_expired():
    from meshcni.apiserver.store import Store
    st = Store()
    rt = next(t for k, t in st.types.items() if t.kind == "ConfigMap")
    w = st.watch(rt, "default", str(st.rv + 1000), None, None)
    assert w.expired_message and "too large resource version" in w.expired_message
