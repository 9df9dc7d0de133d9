# SPDX-License-Identifier: MIT OR Apache-2.0
"""Secret bytes never leave the controller (issue 15, security): not in a Cluster's status, not in an
Event, not in /metrics, not in a log line.

The real ``meshcni controller`` (leader election off) runs against an in-process API server; each
Cluster's kubeconfig Secret is broken in its own way, every one of them carrying the same bearer
token, password and client key. One remote API server answers for the Secrets that can connect.
"""
import base64
import json
import logging
import urllib.request

import pytest
import yaml
from kubernetes import client

from meshcni.apiserver import APIServer
from meshcni.controller import Controller, ControllerConfig
from meshcni.controllers import mesh
from meshcni.k8s import api_client
from testutil import eventually

pytestmark = pytest.mark.pure

G, V = "mesh-cni.dev", "v1alpha1"
NS = "meshcni-system"
CRDS = "deploy/crds"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.bWVzaGNuaS1zZWNyZXQtdG9rZW4.c2lnbmF0dXJlLWJ5dGVz"
PASSWORD = "hunter2-Pa55w0rd-never-shown"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7private-key-bytes\n" \
      b"-----END PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIDazCCAlOgAwIBAgIUcertificate-bytes-not-a-cert\n-----END CERTIFICATE-----\n"


def b64(b) -> str:
    return base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()


# what must appear nowhere, in every form a message could carry it
FORBIDDEN = [TOKEN, TOKEN[:24], TOKEN[-24:], PASSWORD, b64(TOKEN), b64(PASSWORD), KEY.decode().splitlines()[1],
             b64(KEY), b64(KEY)[:40], CERT.decode().splitlines()[1], b64(CERT)[:40]]


def kubeconfig(server, **user) -> dict:
    return {"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "r", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "r", "context": {"cluster": "r", "user": "u"}}], "current-context": "r"}


def dump(cfg) -> str:
    return yaml.safe_dump(cfg)


@pytest.fixture(scope="module")
def servers():
    with APIServer(crd_dir=CRDS, bookmark_interval=0.2) as local, APIServer(crd_dir=CRDS) as remote:
        yield local, remote


def cases(remote_url: str):
    """name -> (Secret data {key: raw bytes or str (stored base64)} or a raw data dict, the reason expected)."""
    https = remote_url.replace("http://", "https://")
    return {
        # a token pasted with its newline: sent as a header, the HTTP library's error quotes it whole
        "token-newline": ({"config": dump(kubeconfig(remote_url, token=TOKEN + "\n"))}, "InvalidKubeconfig"),
        "token-crlf": ({"config": dump(kubeconfig(remote_url, token=TOKEN + "\r\nX-Forwarded: 1"))},
                       "InvalidKubeconfig"),
        "password-newline": ({"config": dump(kubeconfig(remote_url, username="u", password=PASSWORD + "\n"))},
                             "InvalidKubeconfig"),
        # a YAML tag quoting the token, and a YAML syntax error next to it
        "yaml-tag": ({"config": "users:\n- name: u\n  user: {token: !" + TOKEN + " x}\n"}, "InvalidKubeconfig"),
        "yaml-syntax": ({"config": "users: [ {token: " + TOKEN + "} \n  : : ]\n  - " + PASSWORD}, "InvalidKubeconfig"),
        "yaml-scalar": ({"config": TOKEN}, "InvalidKubeconfig"),
        # (data that is not base64 the API server refuses, as kube-apiserver; the pure table has it)
        # the kubeconfig under another key
        "wrong-key": ({"kubeconfig": dump(kubeconfig(remote_url, token=TOKEN))}, "KeyNotFound"),
        # client certificate and key that are not PEM, over TLS: the SSL error
        "bad-client-key": ({"config": dump(kubeconfig(https, **{"client-certificate-data": b64(CERT),
                                                              "client-key-data": b64(KEY)}))}, "Unreachable"),
        # a good kubeconfig to a server that is not there
        "unreachable": ({"config": dump(kubeconfig("http://127.0.0.1:1", token=TOKEN, username="u",
                                                   password=PASSWORD))}, "Unreachable"),
        # an auth provider the client does not know, its config holding the token: the client ignores
        # it and the test server checks no credentials, so this one connects (Ready), logging as it goes
        "auth-provider": ({"config": dump(kubeconfig(remote_url, **{"auth-provider": {
            "name": "no-such-provider", "config": {"access-token": TOKEN, "client-secret": PASSWORD}}}))}, "Ready"),
    }


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append(self.format(record))
        except Exception as e:  # a record that cannot be formatted is a bug too: show it
            self.lines.append(f"unformattable record {record.msg!r}: {e}")


def reason_of(cl: dict) -> tuple:
    conds = {c["type"]: c for c in (cl.get("status") or {}).get("conditions") or ()}
    for typ in (mesh.SECRET_RESOLVED, mesh.API_REACHABLE):
        c = conds.get(typ) or {}
        if c.get("status") == "False":
            return typ, c.get("reason")
    return None, (conds.get(mesh.READY) or {}).get("reason")


def test_no_secret_bytes_in_status_events_metrics_or_logs(servers, tmp_path):
    local, remote = servers
    cap = Capture()
    cap.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(cap)
    root.setLevel(logging.INFO)  # the level the controller runs at
    api = api_client(local.write_kubeconfig(str(tmp_path / "local")))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": NS}})
    ctl = Controller(ControllerConfig(kubeconfig=local.write_kubeconfig(str(tmp_path / "ctl")), leader_elect=False,
                                      metrics_address="127.0.0.1:0", cluster_name="local", namespace=NS)).start()
    try:
        ctl.mesh.cfg.remote_backoff = (0.05, 0.3)
        ctl.mesh.cfg.remote_connect_timeout = 1.0
        table = cases(remote.url)
        for name, (data, _) in table.items():
            raw = {k: b64(v) for k, v in data.items()}
            core.create_namespaced_secret(NS, {"metadata": {"name": f"{name}-kc"}, "type": "Opaque", "data": raw})
            custom.create_cluster_custom_object(G, V, "clusters", {
                "apiVersion": f"{G}/{V}", "kind": "Cluster", "metadata": {"name": name},
                "spec": {"secret": {"name": f"{name}-kc"}}})

        def settled():
            got = {c["metadata"]["name"]: reason_of(c)
                   for c in custom.list_cluster_custom_object(G, V, "clusters")["items"]}
            want = {n: r for n, (_, r) in table.items()}
            seen["last"] = got
            return all(n in got and got[n][1] == r for n, r in want.items()) \
                and got
        seen = {}
        try:
            got = eventually(settled, 20, "every Cluster reports its Secret's problem", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {seen.get('last')}") from None
        # each problem is named (the reason) and its Event is out
        eventually(lambda: {e.involved_object.name for e in core.list_namespaced_event("default").items
                            + core.list_event_for_all_namespaces().items} >= set(table) - {"auth-provider"}, 10,
                   "an Event for every Cluster", interval=0.1)
        clusters = custom.list_cluster_custom_object(G, V, "clusters")["items"]
        events = [e.to_dict() for e in core.list_event_for_all_namespaces().items]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=5).read().decode()
        status = json.dumps([c.get("status") for c in clusters], default=str)
        messages = {c["metadata"]["name"]: [x.get("message", "") for x in c["status"]["conditions"]]
                    for c in clusters}
        # the reports are useful: they name the field, not the value
        assert any("token has a control character" in m for m in messages["token-newline"]), messages
        assert any("password has a control character" in m for m in messages["password-newline"]), messages
        assert any("is not YAML (line" in m for m in messages["yaml-tag"]), messages
        assert any("SSL" in m or "PEM" in m for m in messages["bad-client-key"]), messages
        texts = {"Cluster.status": status, "Events": json.dumps(events, default=str), "/metrics": metrics,
                 "logs": "\n".join(cap.lines)}
        leaks = [(where, f) for where, text in texts.items() for f in FORBIDDEN if f in text]
        assert not leaks, leaks
        assert len(cap.lines) > 20 and len(events) >= len(table) - 1  # auth-provider is Ready: no Event
        print({n: r for n, r in got.items()})
    finally:
        for name in cases(remote.url):
            try:
                custom.delete_cluster_custom_object(G, V, "clusters", name)
            except client.ApiException:
                pass
        ctl.stop()
        root.removeHandler(cap)
        root.setLevel(old_level)


def test_redact_takes_every_credential_out():
    cfg = kubeconfig("https://x", token=TOKEN + "\n", password=PASSWORD, **{
        "client-key-data": b64(KEY), "auth-provider": {"config": {"access-token": "abcd1234"}},
        "exec": {"env": [{"name": "T", "value": "envsecret"}]}})
    msg = f"ValueError: Invalid header value b'Bearer {TOKEN}\\n' {PASSWORD} {b64(KEY)} abcd1234 envsecret"
    out = mesh.redact(msg, mesh.credentials(cfg))
    assert out.count("<redacted>") == 5 and TOKEN not in out and "envsecret" not in out, out
