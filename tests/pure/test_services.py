# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired service state -> map arrays, without a kernel."""
import numpy as np
import pytest

import noext

noext.require_extension("build_tables lays rows out in layout.h's dtypes, read from meshcni._libbpf")

from meshcni.datapath.services import (Backend, Frontend, Service, ServiceError, backend_identity,  # noqa: E402
                                       build_tables, maglev_table)

pytestmark = pytest.mark.pure


def ids_for(services):
    ids = {}
    for s in services:
        for b in s.backends:
            ids.setdefault(backend_identity(b, 6 if s.frontends[0].proto == "tcp" else 17), len(ids) + 1)
    return ids


def test_layout_of_one_service():
    s = Service("web/app", [Frontend("198.51.100.1", 80)], [Backend("10.0.0.1", 8080), Backend("10.0.0.2", 8080)],
                7, affinity_timeout=30)
    t = build_tables([s], ids_for([s]))
    assert t.svc_keys["slot"].tolist() == [1, 2, 0]  # slots before the master
    master = t.svc_values[2]
    assert (master["count"], master["flags"], master["svc_id"], master["affinity_timeout"]) == (2, 1, 7, 30)
    assert bytes(t.svc_keys[0]["addr"]) == b"\0" * 10 + b"\xff\xff" + bytes([198, 51, 100, 1])
    assert t.svc_keys.tobytes()[16:18] == b"\x00\x50"  # network order port
    assert t.backend_keys["backend_id"].tolist() == [1, 2]
    assert t.revnat_keys["svc_id"].tolist() == [7]


@pytest.mark.parametrize("svc, msg", [
    (Service("web/app", [Frontend("198.51.100.1", 70000)], [], 1), "Service web/app: frontend port 70000 out of range"),
    (Service("web/app", [Frontend("nope", 80)], [], 1), "Service web/app: frontend ip 'nope' is not an address"),
    (Service("web/app", [Frontend("198.51.100.1", 80, "sctp")], [], 1), "Service web/app: frontend 0 protocol 'sctp'"),
    (Service("web/app", [Frontend("198.51.100.1", 80)], [Backend("10.0.0.1", 0)], 1), "Service web/app: backend 0 port 0"),
    (Service("web/app", [Frontend("198.51.100.1", 80)], [], 0), "Service web/app: svc_id 0 out of range"),
])
def test_errors_name_the_object_and_field(svc, msg):
    with pytest.raises(ServiceError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        build_tables([svc], {})


def test_duplicate_frontend_is_an_error():
    a = Service("a/a", [Frontend("198.51.100.1", 80)], [], 1)
    b = Service("b/b", [Frontend("198.51.100.1", 80)], [], 2)
    with pytest.raises(ServiceError, match="already used by Service a/a"):
        build_tables([a, b], {})


def test_maglev_balance_and_small_disruption():
    bes = [(f"10.0.0.{i}|80|6", i + 1) for i in range(3)]
    t = maglev_table(bes)
    counts = np.bincount(t, minlength=4)[1:]
    assert counts.max() - counts.min() <= 3  # Maglev: near-perfect balance
    t2 = maglev_table([bes[0], bes[2]])
    assert set(np.unique(t2)) == {1, 3}
    survivors = t != 2
    assert (t[survivors] != t2[survivors]).mean() < 0.05


def test_maglev_removal_with_previous_moves_only_the_removed_slots():
    import random
    rnd = random.Random(3)
    for trial in range(20):
        n = rnd.randint(2, 12)
        bes = [(f"10.{trial}.0.{i}|80|6", 100 + i) for i in range(n)]
        t = maglev_table(bes)
        gone = set(rnd.sample(range(n), rnd.randint(1, n - 1)))
        left = [b for i, b in enumerate(bes) if i not in gone]
        t2 = maglev_table(left, previous=t)
        survivors = np.isin(t, [bid for _, bid in left])
        assert (t2[survivors] == t[survivors]).all()          # nobody else moved
        assert set(np.unique(t2)) == {bid for _, bid in left}  # removed ones gone
        counts = np.bincount(t2)[[bid for _, bid in left]]
        cap = -(-len(t) // len(left))
        assert counts.sum() == len(t) and counts.max() <= cap  # still balanced
        assert counts.min() >= len(t) // len(left) - len(t) // n  # no survivor starved
    # an addition rebuilds (plain Maglev)
    bes = [(f"10.9.0.{i}|80|6", i + 1) for i in range(3)]
    t = maglev_table(bes)
    assert (maglev_table(bes + [("10.9.0.9|80|6", 9)], previous=t) ==
            maglev_table(bes + [("10.9.0.9|80|6", 9)])).all()


# ---- one parse per address: the fast paths must agree with ipaddress and the exact path

from hypothesis import given, settings, strategies as st  # noqa: E402

from meshcni.datapath import services as svcmod  # noqa: E402

_ADDRISH = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45),
    st.lists(st.sampled_from(["0", "00", "1", "01", "255", "256", "", "1a", " 1"]), min_size=3, max_size=5).map(".".join),
    st.lists(st.sampled_from(["", "0", "1", "ffff", "FFFF", "00000", "abcd", "g", "1.2.3.4", "01.2.3.4"]),
             min_size=1, max_size=10).map(":".join),
    st.ip_addresses().map(str),
)


def _ref16(s):
    try:
        return svcmod._addr16_slow(s)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(_ADDRISH)
def test_addr16_reads_text_exactly_as_ipaddress(s):
    try:
        got = svcmod._addr16(s)
    except ValueError:
        got = None
    assert got == _ref16(s)
    bulk = svcmod._addrs_bulk([s])
    assert bulk is None or bulk == [_ref16(s)]  # None: the exact path decides


@pytest.mark.parametrize("ip", ["10.0.0.1", "::ffff:10.0.0.1", "::FFFF:10.0.0.1", "2001:DB8::1", "fe80::1%eth0",
                                "0.0.0.0", "::", 167772161, b"\x0a\x00\x00\x01"])
def test_addr16_non_plain_inputs_as_ipaddress(ip):
    assert svcmod._addr16(ip) == svcmod._addr16_slow(ip)


def _mixed_services():
    shared = Backend("10.9.9.9", 80)
    return [
        Service("a/v4", [Frontend("198.51.100.1", 80)], [Backend(f"10.0.0.{i}", 8080) for i in range(5)] + [shared], 3,
                affinity_timeout=60),
        Service("a/v6", [Frontend("2001:db8::1", 80, "TCP")], [Backend(f"2001:db8::{i + 10:x}", 8080) for i in range(4)], 9),
        Service("a/dual", [Frontend("198.51.100.2", 53, "udp"), Frontend("198.51.100.3", 53, "udp")],
                [Backend("10.0.1.1", 53), Backend("2001:db8::53", 53), shared], 4, maglev=True),
        Service("a/empty", [Frontend("198.51.100.4", 80)], [], 5),
        Service("a/shared", [Frontend("198.51.100.5", 80)], [shared, Backend("::ffff:10.0.0.1", 8080)], 6),
    ]


def _fresh_dp():
    dp = svcmod.ServiceDatapath.__new__(svcmod.ServiceDatapath)  # no maps: ids and tables only
    dp._ids, dp._next = {}, 1
    return dp


def _same_tables(a, b):
    for f in ("svc_keys", "svc_values", "backend_keys", "backend_values", "revnat_keys", "revnat_values",
              "maglev_keys", "maglev_values"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes(), f
    assert a.pairs == b.pairs


def test_bulk_parse_equals_the_service_by_service_path():
    svcs = _mixed_services()
    bulk = svcmod._parse_bulk(svcs)
    assert bulk is not None  # these are all plain: the fast path takes them
    dp = _fresh_dp()
    exact = svcmod._parse_one_by_one(svcs, dp._assign)
    for f in ("protos", "fe_counts", "fe_addr", "fe_port", "counts", "idents"):
        assert getattr(bulk, f) == getattr(exact, f), f
    dp2 = _fresh_dp()
    bulk.bids = dp2._assign(bulk.idents)
    assert bulk.bids == exact.bids and dp2._ids == dp._ids
    _same_tables(svcmod._tables(bulk, {}), svcmod._tables(exact, {}))
    _same_tables(svcmod._tables(bulk, {}), build_tables(svcs, dp._ids))


def test_layout_columns_of_a_multi_frontend_service():
    t = build_tables(_mixed_services(), _ids_in_order(_mixed_services()))
    k, v = t.svc_keys, t.svc_values
    # a/dual: two frontends, each 3 slots + master, same backend ids in order
    rows = [i for i in range(len(k)) if v[i]["svc_id"] == 4]
    assert [int(k[i]["slot"]) for i in rows] == [1, 2, 3, 0, 1, 2, 3, 0]
    assert [int(v[i]["backend_id"]) for i in rows][:3] == [int(v[i]["backend_id"]) for i in rows][4:7]
    assert [int(v[i]["count"]) for i in rows] == [0, 0, 0, 3, 0, 0, 0, 3]
    assert [int(v[i]["flags"]) for i in rows] == [0, 0, 0, 2, 0, 0, 0, 2]
    assert int(t.revnat_values[list(t.revnat_keys["svc_id"]).index(4)]["port"]) == 53


def _ids_in_order(svcs):
    dp = _fresh_dp()
    dp._parse_and_assign(svcs)
    return dp._ids


LATER = "Service z/later: backend 0 ip 'bad' is not an address"


@pytest.mark.parametrize("bad, msg, apply_msg", [
    (lambda s: s[3].backends.append(Backend("10.0.0.999", 80)),
     "Service a/empty: backend 0 ip '10.0.0.999' is not an address", None),
    (lambda s: s[1].backends.append(Backend("2001:db8::77", 0)), "Service a/v6: backend 4 port 0 out of range", None),
    (lambda s: s[4].backends.append(Backend("nope", 80)), "Service a/shared: backend 2 ip 'nope' is not an address", None),
    (lambda s: s[4].backends.append(s[4].backends[0]), "Service a/shared: backends repeat", None),
    (lambda s: setattr(s[2], "affinity_timeout", 2 ** 32), "Service a/dual: affinity_timeout 4294967296 out of range", None),
    (lambda s: s[0].frontends.append(Frontend("198.51.100.1", 80, "udp")),
     "Service a/v4: frontends mix protocols (one Service per protocol)", None),
    # clashes between Services: apply checks every Service on its own first, build_tables one after another
    (lambda s: setattr(s[4], "svc_id", 3), "Service a/shared: svc_id 3 already used by Service a/v4", LATER),
    (lambda s: s[4].frontends.append(Frontend("198.51.100.2", 53, "udp")),
     "Service a/shared: frontends mix protocols (one Service per protocol)", None),
])
def test_errors_name_the_first_bad_service_and_field(bad, msg, apply_msg):
    svcs = _mixed_services()
    bad(svcs)
    svcs.append(Service("z/later", [Frontend("198.51.100.9", 80)], [Backend("bad", 1)], 99))  # a later error
    assert svcmod._parse_bulk(svcs) is None  # the exact path finds which
    with pytest.raises(ServiceError) as e:
        svcmod._tables(_fresh_dp()._parse_and_assign(svcs), {})
    assert str(e.value) == (apply_msg or msg)
    with pytest.raises(ServiceError) as e:
        build_tables(svcs, _ids_in_order(_mixed_services()))
    assert str(e.value) == msg


def test_clash_errors_on_the_fast_path():
    svcs = _mixed_services()
    svcs[4].frontends = [Frontend("198.51.100.1", 80)]  # a/v4's
    assert svcmod._parse_bulk(svcs) is not None  # every Service is fine on its own
    with pytest.raises(ServiceError, match="^Service a/shared: frontend 198.51.100.1:80/tcp already used by Service a/v4$"):
        svcmod._tables(_fresh_dp()._parse_and_assign(svcs), {})
    svcs = _mixed_services()
    svcs[3].svc_id = 9
    with pytest.raises(ServiceError, match="^Service a/empty: svc_id 9 already used by Service a/v6$"):
        svcmod._tables(_fresh_dp()._parse_and_assign(svcs), {})


def test_ids_of_services_before_a_bad_one_are_kept():
    svcs = _mixed_services()
    svcs[2].backends.append(Backend("10.0.0.1", 99999))
    dp = _fresh_dp()
    with pytest.raises(ServiceError, match="Service a/dual: backend 3 port 99999"):
        dp._parse_and_assign(svcs)
    assert sorted(dp._ids.values()) == list(range(1, 11))  # a/v4 (6) and a/v6 (4), none of a/dual's
