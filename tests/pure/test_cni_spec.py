# SPDX-License-Identifier: MIT OR Apache-2.0
"""The CNI protocol rules, without a kernel: env, versions, configs, results."""
import json

import pytest

from meshcni.cni import spec
from meshcni.cni.plugin import parse_conf, run
from meshcni.cni.spec import CNIError

pytestmark = pytest.mark.pure

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}


def conf(**kw):
    c = {"cniVersion": "1.1.0", "name": "n", "type": "meshcni-cni",
         "ipam": {"type": "meshcni", "subnet": "10.1.0.0/24"}}
    c.update(kw)
    return json.dumps(c).encode()


def test_version_lists_supported_and_answers_in_the_asked_version():
    rc, out = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    rc, out = run({"CNI_COMMAND": "VERSION"}, b"")
    assert rc == 0 and out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("env,code,needle", [
    ({"CNI_COMMAND": "FROB"}, 4, "CNI_COMMAND"),
    ({**ENV, "CNI_IFNAME": ""}, 4, "CNI_IFNAME is required"),
    ({**ENV, "CNI_NETNS": ""}, 4, "CNI_NETNS is required for ADD"),
    ({**ENV, "CNI_CONTAINERID": "a/b"}, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_IFNAME": "x" * 16}, 4, "not a valid interface name"),
    ({**ENV, "CNI_ARGS": "K8S_POD_NAME"}, 4, "not KEY=VALUE"),
])
def test_bad_environment_is_code_4(env, code, needle):
    rc, out = run(env, conf())
    assert rc == 1 and out["code"] == code and needle in out["msg"], out


@pytest.mark.parametrize("stdin,code,needle", [
    (b"{not json", 6, "not JSON"),
    (b"[1,2]", 6, "must be a JSON object"),
    (conf(cniVersion="0.3.1"), 1, "0.3.1 is not supported"),
    (conf(cniVersion="banana"), 1, "not a version"),
    (json.dumps({"name": "n"}).encode(), 7, "cniVersion is required"),
    (conf(name=""), 7, "name is required"),
    (conf(mtu=10), 7, "mtu 10"),
    (conf(mtu="1500"), 7, "mtu '1500'"),
    (conf(datapath="maybe"), 7, "datapath 'maybe'"),
    (conf(stateDir="relative/dir"), 7, "stateDir"),
    (conf(ipam="host-local"), 7, "ipam must be an object"),
    (conf(ipMasq=True), 2, "ipMasq is not supported"),
    (conf(prevResult={"ips": [{"address": "nope"}]}), 6, "prevResult.ips[0]"),
    (conf(prevResult={"cniVersion": "0.2.0", "ips": []}), 1, "cannot be converted"),
])
def test_bad_config_codes(stdin, code, needle):
    rc, out = run(ENV, stdin)
    assert rc == 1 and out["code"] == code and needle in out["msg"], out


def test_errors_are_written_in_the_config_version():
    rc, out = run({**ENV, "CNI_IFNAME": ""}, conf(cniVersion="0.4.0"))
    assert out["cniVersion"] == "0.4.0" and out["code"] == 4


def test_status_and_gc_need_1_1_and_check_needs_0_4():
    for cmd in ("STATUS", "GC"):
        rc, out = run({"CNI_COMMAND": cmd}, conf(cniVersion="1.0.0"))
        assert out["code"] == 1 and "needs cniVersion >= 1.1.0" in out["msg"]
    with pytest.raises(CNIError) as e:
        spec.check_version("0.3.1", "CHECK")
    assert e.value.code == 1


def test_gc_needs_valid_attachments_list():
    with pytest.raises(CNIError, match="valid-attachments.*list"):
        parse_conf({"cniVersion": "1.1.0", "name": "n", "cni.dev/valid-attachments": "all"}, "GC")
    with pytest.raises(CNIError, match=r"valid-attachments\[0\]"):
        parse_conf({"cniVersion": "1.1.0", "name": "n", "cni.dev/valid-attachments": [{"ifname": "eth0"}]}, "GC")
    c = parse_conf({"cniVersion": "1.1.0", "name": "n",
                    "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}, "GC")
    assert c.valid_attachments == [("a", "eth0")]


def test_cni_args_parsed():
    assert spec.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0") == \
        {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "web-0"}
    assert spec.parse_cni_args("") == {}


RESULT_1_1 = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "mcx", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "mac": "aa:bb:cc:dd:ee:00", "mtu": 1400, "sandbox": "/run/netns/p"}],
    "ips": [{"address": "10.1.0.5/32", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00::5/128", "gateway": "fe80::1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400}],
    "dns": {},
}


def test_result_formats_per_version():
    r = spec.parse_result(RESULT_1_1)
    v04 = spec.format_result(r, "0.4.0")
    assert [i["version"] for i in v04["ips"]] == ["4", "6"]
    assert "mtu" not in v04["interfaces"][1] and "mtu" not in v04["routes"][0]
    v10 = spec.format_result(r, "1.0.0")
    assert all("version" not in i for i in v10["ips"]) and "mtu" not in v10["routes"][0]
    v11 = spec.format_result(r, "1.1.0")
    assert v11["interfaces"][1]["mtu"] == 1400 and v11["routes"][0]["mtu"] == 1400
    # a 0.4.0 result read back is the same 1.x result (version fields dropped)
    assert spec.parse_result(v04)["ips"] == spec.parse_result(v10)["ips"]


def test_result_interface_index_is_checked():
    bad = dict(RESULT_1_1, ips=[{"address": "10.1.0.5/32", "interface": 7}])
    with pytest.raises(CNIError, match="not an index"):
        spec.parse_result(bad)


def test_host_interfaces_are_those_without_sandbox():
    assert spec.host_interfaces(spec.parse_result(RESULT_1_1)) == ["mcx"]
