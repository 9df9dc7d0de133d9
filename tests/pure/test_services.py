# SPDX-License-Identifier: MIT OR Apache-2.0
"""Desired service state -> map arrays, without a kernel."""
import numpy as np
import pytest

from meshcni.datapath.services import (Backend, Frontend, Service, ServiceError, backend_identity,
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
