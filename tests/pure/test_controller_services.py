# SPDX-License-Identifier: MIT OR Apache-2.0
"""Services + EndpointSlices -> desired socket-LB Services, bad input included."""
import pytest

from meshcni.controllers.services import ServiceIDs, desired_services
from meshcni.controllers.model import Backend, Frontend

pytestmark = pytest.mark.pure


def svc(name="web", ns="default", ips=("10.96.0.10",), ports=None, **spec):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": dict({"clusterIP": ips[0] if ips else None, "clusterIPs": list(ips),
                          "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]},
                         **spec)}


def eps(svc_name="web", ns="default", addrs=("10.244.0.5",), port=8080, name="http", proto="TCP", fam="IPv4",
        ready=True, terminating=False, labelled=True, slice_name=None):
    return {"metadata": {"name": slice_name or f"{svc_name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc_name} if labelled else {}},
            "addressType": fam,
            "ports": [{"name": name, "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready, "terminating": terminating}}
                          for a in addrs]}


def test_one_service_port_family_with_ready_backends():
    out, probs = desired_services([svc(ips=("10.96.0.10", "fd00::10"))],
                                  [eps(addrs=("10.244.0.5", "10.244.1.7")), eps(addrs=("fd10::5",), fam="IPv6",
                                                                                 slice_name="web-v6"),
                                   eps(addrs=("10.244.2.9",), ready=False, slice_name="web-nr"),
                                   eps(addrs=("10.244.3.9",), terminating=True, slice_name="web-term")],
                                  ServiceIDs())
    assert probs == []
    by = {s.name: s for s in out}
    v4 = by["default/web:http/TCP/v4"]
    assert v4.frontends == [Frontend("10.96.0.10", 80, "tcp")]
    assert v4.backends == [Backend("10.244.0.5", 8080), Backend("10.244.1.7", 8080)]
    assert by["default/web:http/TCP/v6"].backends == [Backend("fd10::5", 8080)]
    assert len({s.svc_id for s in out}) == 2


def test_port_matched_by_name_and_protocol_and_affinity():
    s = svc(ports=[{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sl = {**eps(port=5353, name="dns", proto="UDP"), "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                                                               {"name": "dns-tcp", "port": 5354, "protocol": "TCP"}]}
    out, _ = desired_services([s], [sl], ServiceIDs())
    by = {x.name: x for x in out}
    assert by["default/web:dns/UDP/v4"].backends == [Backend("10.244.0.5", 5353)]
    assert by["default/web:dns-tcp/TCP/v4"].backends == [Backend("10.244.0.5", 5354)]
    assert all(x.affinity_timeout == 60 for x in out)


def test_headless_externalname_and_foreign_slices_are_skipped_not_errors():
    out, probs = desired_services([svc("h", ips=("None",)), svc("x", ips=(), type="ExternalName",
                                                                externalName="example.org")],
                                  [eps(labelled=False), eps(fam="FQDN", addrs=("example.org",))], ServiceIDs())
    assert out == [] and probs == []


def test_bad_input_is_reported_by_object_and_field_and_left_out():
    services = [svc("badip", ips=("10.96.0.999",)),
                svc("zero", ports=[{"name": "a", "port": 0}, {"name": "b", "port": 70000},
                                   {"name": "c", "port": 81, "protocol": "ICMP"}, {"name": "d", "protocol": "TCP"},
                                   {"name": "ok", "port": 82, "protocol": "TCP"}]),
                {"metadata": {"name": "nospec", "namespace": "default"}},
                svc("web")]
    slices = [eps("web", addrs=("not-an-ip", "10.244.0.5")), eps("zero", name="ok", port=9000)]
    out, probs = desired_services(services, slices, ServiceIDs())
    got = {(p.name, p.field) for p in probs}
    assert ("badip", "spec.clusterIP") in got
    assert {("zero", "spec.ports[0].port"), ("zero", "spec.ports[1].port"), ("zero", "spec.ports[2].protocol"),
            ("zero", "spec.ports[3].port"), ("nospec", "spec"), ("web-abc", "endpoints[0].addresses[0]")} <= got
    assert 'spec.clusterIP: "10.96.0.999" is not an IP address' in str(next(p for p in probs if p.name == "badip"))
    names = sorted(s.name for s in out)
    assert names == ["default/web:http/TCP/v4", "default/zero:ok/TCP/v4"]  # everything else still programs
    assert next(s for s in out if s.name.startswith("default/web")).backends == [Backend("10.244.0.5", 8080)]


def test_ids_are_stable_across_restarts_and_freed(tmp_path):
    path = str(tmp_path / "ids.json")
    a, _ = desired_services([svc("a"), svc("b")], [], ServiceIDs(path))
    ids = {s.name: s.svc_id for s in a}
    again, _ = desired_services([svc("b"), svc("a"), svc("c")], [], ServiceIDs(path))
    assert {s.name: s.svc_id for s in again if s.name in ids} == ids
    gone, _ = desired_services([svc("c")], [], ServiceIDs(path))
    assert len(ServiceIDs(path).ids) == 1 and gone[0].svc_id == {s.name: s.svc_id for s in again}[gone[0].name]


@pytest.mark.parametrize("a", ["10.0.0.1", "0.0.0.0", "255.255.255.255", "010.0.0.1", "1.2.3.256", "1.2.3",
                               "1.2.3.4 ", "\u0661.2.3.4", "1.2.3.4\x00", "1.2.3.04", "::1", "FD00::0:1",
                               "::ffff:1.2.3.4", "not-an-ip", "", 5, None, 3.5])
def test_canon_matches_ipaddress(a):
    """The inet_pton fast path gives what ipaddress gives, or rejects what it rejects."""
    import ipaddress
    from meshcni.controllers.services import _canon
    try:
        ip = ipaddress.ip_address(a)
        want = (str(ip), ip.version)
    except (TypeError, ValueError):
        want = None
    assert _canon(a) == want
