# SPDX-License-Identifier: MIT OR Apache-2.0
"""The host-local style IPAM store: allocation rules, locking, crash safety."""
import ipaddress
import json
import multiprocessing
import os

import pytest

from meshcni.cni import ipam
from meshcni.cni.spec import CNIError

pytestmark = pytest.mark.pure


def cfg(tmp_path, **ipam_obj):
    obj = {"type": "meshcni", "dataDir": str(tmp_path)}
    obj.update(ipam_obj or {"subnet": "10.1.0.0/29"})
    return ipam.parse_config(obj)


def alloc(c, cid, ifname="eth0", net="n"):
    st = ipam.Store(c.data_dir, net)
    with st.locked():
        return st.allocate(c, cid, ifname)


def test_allocates_usable_addresses_skipping_network_broadcast_and_gateway(tmp_path):
    c = cfg(tmp_path, subnet="10.1.0.0/29", gateway="10.1.0.1")
    got = [alloc(c, f"c{i}")[0].ips[0] for i in range(5)]
    assert got == [f"10.1.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(CNIError) as e:
        alloc(c, "c-late")
    assert e.value.code == 100 and "no free address in 10.1.0.0/29" in e.value.msg and "c-late/eth0" in e.value.msg


def test_same_key_gets_the_same_address_back(tmp_path):
    c = cfg(tmp_path)
    a, created = alloc(c, "c1")
    b, again = alloc(c, "c1")
    assert created and not again and a.ips == b.ips
    other, _ = alloc(c, "c1", "net1")  # same container, second interface: its own address
    assert other.ips != a.ips


def test_release_then_round_robin_does_not_reuse_at_once(tmp_path):
    c = cfg(tmp_path)
    first = alloc(c, "c1")[0].ips[0]
    st = ipam.Store(c.data_dir, "n")
    with st.locked():
        assert st.release("c1", "eth0").ips[0] == first
        assert st.release("c1", "eth0") is None  # idempotent
    assert alloc(c, "c2")[0].ips[0] != first


def test_range_start_end_and_exclude(tmp_path):
    c = cfg(tmp_path, ranges=[[{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.20"}]],
            exclude=["10.2.0.10/31", "10.2.0.13/32"])
    got = [alloc(c, f"c{i}")[0].ips[0].split("/")[0] for i in range(3)]
    assert got == ["10.2.0.12", "10.2.0.14", "10.2.0.15"]


def test_dual_stack_gives_one_address_per_family(tmp_path):
    c = cfg(tmp_path, ranges=[[{"subnet": "10.3.0.0/24"}], [{"subnet": "fd00:3::/120"}]])
    a, _ = alloc(c, "c1")
    assert [ipaddress.ip_interface(x).version for x in a.ips] == [4, 6]


@pytest.mark.parametrize("obj,needle", [
    ({}, "needs subnet or ranges"),
    ({"subnet": "10.0.0.0/33"}, "is not a CIDR"),
    ({"subnet": "10.0.0.0/31"}, "too small"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}, "gateway: 10.0.1.1 is not in 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.200", "rangeEnd": "10.0.0.100"}, "is after rangeEnd"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0"}, "rangeStart: 10.0.0.0 is not a usable address"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}, "one range set per IP family"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]]}, "overlap"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}, "mixes IPv4 and IPv6"),
    ({"ranges": []}, "non-empty list"),
    ({"subnet": "10.0.0.0/24", "dataDir": "rel"}, "absolute path"),
])
def test_bad_ipam_config_names_the_field(obj, needle):
    with pytest.raises(CNIError) as e:
        ipam.parse_config({"type": "meshcni", "dataDir": "/tmp/x", **obj} if "dataDir" not in obj else obj)
    assert e.value.code == 7 and needle in e.value.msg


def test_gc_keeps_only_valid_attachments(tmp_path):
    c = cfg(tmp_path)
    for i in range(4):
        alloc(c, f"c{i}")
    st = ipam.Store(c.data_dir, "n")
    with st.locked():
        gone = st.gc([("c1", "eth0"), ("c3", "eth0")])
        assert sorted(a.container_id for a in gone) == ["c0", "c2"]
        assert sorted(a.container_id for a in st.all()) == ["c1", "c3"]


def test_state_is_written_atomically_and_survives_a_new_store(tmp_path):
    c = cfg(tmp_path)
    a, _ = alloc(c, "c1")
    st = ipam.Store(c.data_dir, "n")
    with open(st.path) as f:
        assert json.load(f)["allocations"]["c1/eth0"]["ips"] == a.ips
    assert not [n for n in os.listdir(st.dir) if n.startswith(".allocations.")]  # no temp left
    with st.locked():
        assert st.get("c1", "eth0").ips == a.ips


def test_corrupt_state_is_an_io_error_naming_the_file(tmp_path):
    c = cfg(tmp_path)
    st = ipam.Store(c.data_dir, "n")
    os.makedirs(st.dir)
    with open(st.path, "w") as f:
        f.write("{half")
    with pytest.raises(CNIError) as e:
        alloc(c, "c1")
    assert e.value.code == 5 and st.path in e.value.msg


def test_unwritable_data_dir_is_an_io_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = ipam.parse_config({"subnet": "10.0.0.0/24", "dataDir": str(blocker)})
    with pytest.raises(CNIError) as e:
        alloc(c, "c1")
    assert e.value.code == 5 and "IPAM data dir" in e.value.msg


def _worker(args):
    data_dir, i = args
    c = ipam.parse_config({"subnet": "10.9.0.0/24", "dataDir": data_dir})
    st = ipam.Store(c.data_dir, "n")
    with st.locked():
        return st.allocate(c, f"c{i}", "eth0")[0].ips[0]


def test_parallel_processes_get_distinct_addresses(tmp_path):
    with multiprocessing.get_context("fork").Pool(8) as pool:
        got = pool.map(_worker, [(str(tmp_path), i) for i in range(100)])
    assert len(set(got)) == 100
    st = ipam.Store(str(tmp_path), "n")
    with st.locked():
        assert len(st.all()) == 100
