# SPDX-License-Identifier: MIT OR Apache-2.0
"""meshcni.fastjson: the codec of list and watch bodies on both ends gives the standard
library's results (bytes on the way out, values on the way in), and the informer drops
managedFields as it decodes."""
import gc
import json
import threading

import pytest
from kubernetes import client

from meshcni import fastjson
from meshcni.apiserver import APIServer, write_kubeconfig
from meshcni.k8s import Informer, api_client

pytestmark = pytest.mark.pure


def _std(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


SAMPLES = [
    {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "12"},
     "items": [{"metadata": {"name": f"s{i}", "labels": {"a": "b"}}, "spec": {"ports": [{"port": 80}],
                "clusterIPs": ["10.0.0.1"], "x": None, "t": True, "f": False}} for i in range(50)]},
    {"type": "ADDED", "object": {"metadata": {"name": "quote\"back\\slash\ttab\nnl\x01"}}},
    {"s": "caf\u00e9 \u2028 <>&/"},       # non-ASCII: the standard library escapes it
    {"s": "del\x7f"},                     # DEL is ASCII, but escaped by the standard library
    {"big": 2 ** 70, "neg": -2 ** 63},     # beyond 64 bits: orjson refuses, the stdlib writes it
    {1: "int key"},                        # non-string key: the stdlib writes "1"
    {"floats": [0.1, 1.0, 1e16, -0.0, 3.14, 123456789.123, 1.5e300]},
    [], {}, "x", 0, None,
]


@pytest.mark.parametrize("obj", SAMPLES, ids=range(len(SAMPLES)))
def test_dumps_is_the_standard_librarys_bytes(obj):
    assert fastjson.dumps(obj) == _std(obj)


def test_small_floats_differ_only_in_format():
    for f in (1e-05, 2.5e-07, 1.2345e-300):
        assert json.loads(fastjson.dumps({"f": f})) == {"f": f}


@pytest.mark.parametrize("text", [
    b'{"a":[1,2,{"b":null}],"c":"\\u00e9","d":1.5}',
    b'{"u64":18446744073709551615,"i64":-9223372036854775808}',
    b'{"s":"\\ud800"}',                           # a lone surrogate: orjson alone refuses
    '{"str":"input"}',
])
def test_loads_gives_the_standard_librarys_values(text):
    assert fastjson.loads(text) == json.loads(text)


def test_integers_beyond_64_bits_decode_as_go_decodes_them():
    # kube-apiserver holds JSON numbers as int64/float64 and never sends a longer integer;
    # orjson reads one as a float, as Go does
    assert fastjson.loads(b'{"huge":123456789012345678901234567890}') == {"huge": 1.2345678901234568e+29}


def test_loads_raises_valueerror_on_garbage():
    with pytest.raises(ValueError):
        fastjson.loads(b'{"a":')


def test_gc_paused_nests_across_threads_and_restores():
    assert gc.isenabled()
    inside = threading.Event()
    leave = threading.Event()

    def other():
        with fastjson.gc_paused():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=other)
    with fastjson.gc_paused():
        t.start()
        inside.wait(5)
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread is still inside
    leave.set()
    t.join(5)
    assert gc.isenabled()
    gc.disable()
    try:
        with fastjson.gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_api_server_refuses_nan_and_infinity(tmp_path):
    import urllib.error
    import urllib.request
    with APIServer() as srv:
        for body, ctype in ((b'{"metadata":{"name":"x"},"data":{"a":NaN}}', "application/json"),
                            (b'metadata: {name: x}\nspec: {f: .inf}\n', "application/yaml")):
            req = urllib.request.Request(f"{srv.url}/api/v1/namespaces/default/configmaps", data=body,
                                         headers={"Content-Type": ctype}, method="POST")
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(req, timeout=5)
            assert ei.value.code == 400
            assert b"not a JSON number" in ei.value.read()


def test_informer_drops_managed_fields_from_lists_and_watch_events(tmp_path):
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {}}}}]
    with APIServer() as srv:
        # a snapshot of a real cluster carries managedFields; the store serves them as stored
        srv.store.load({"resourceVersion": 7, "objects": [
            {"group": "", "plural": "namespaces", "object": {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "ns", "uid": "u0", "resourceVersion": "1"}}},
            {"group": "", "plural": "services", "object": {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "5",
                             "labels": {"app": "a"}, "managedFields": managed},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]}}}]})
        raw = client.CoreV1Api(api_client(write_kubeconfig(str(tmp_path / "kc"), srv.url)))
        served = json.loads(raw.list_namespaced_service("ns", _preload_content=False).data)
        assert served["items"][0]["metadata"]["managedFields"] == managed
        inf = Informer(raw.list_namespaced_service, namespace="ns", name="svc", backoff=(0.05, 0.3))
        with inf:
            assert inf.wait_for_sync(10)
            obj = inf.get("ns/a")
            assert "managedFields" not in obj["metadata"]
            assert obj["metadata"]["labels"] == {"app": "a"} and obj["spec"]["clusterIP"] == "10.96.0.10"
            # a watch event is decoded the same way (the frame as a real server sends it)
            inf._handle(json.loads(fastjson.dumps({"type": "MODIFIED", "object": dict(
                served["items"][0], metadata=dict(served["items"][0]["metadata"], resourceVersion="9"))})))
            obj = inf.get("ns/a")
            assert obj["metadata"]["resourceVersion"] == "9" and "managedFields" not in obj["metadata"]


def test_without_orjson_the_standard_library_does_it_all():
    import subprocess
    import sys
    code = ("import sys; sys.modules['orjson'] = None\n"
            "from meshcni import fastjson\n"
            "assert fastjson.BACKEND == 'json', fastjson.BACKEND\n"
            "assert fastjson.dumps({'a': [1, 'caf\\u00e9']}) == b'{\"a\":[1,\"caf\\\\u00e9\"]}'\n"
            "assert fastjson.loads(b'{\"a\": 1}') == {'a': 1}\n"
            "with fastjson.gc_paused():\n"
            "    import gc; assert not gc.isenabled()\n"
            "from meshcni.k8s import informer\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
