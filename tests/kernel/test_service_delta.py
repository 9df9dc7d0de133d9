# SPDX-License-Identifier: MIT OR Apache-2.0
"""ServiceDatapath.apply_delta on real pinned maps against a full apply of the same states.

Seeded random sequences of Service changes (backends added, removed and
moved between Services, frontends changed, Services added and removed,
svc_ids reused, Maglev, ClientIP affinity, source ranges) go to one set of
maps as deltas and to another as full applies; after every step the maps
must say the same thing (backend ids differ between the two, so rows are
compared by the backend addresses they name) and hold nothing else: no
stale backend, revnat, Maglev or source-range entry. A resync then finds
nothing to repair, and repairs (and counts) what was changed behind the
agent's back.
"""
import os
import random

import numpy as np
import pytest

from meshcni.bpf import MeshMaps
from meshcni.datapath import ServiceDatapath
from meshcni.datapath.services import Backend, Frontend, Service

pytestmark = pytest.mark.kernel


def decode(maps):
    """The maps' meaning, with backend ids replaced by the backends' (addr, port, proto)."""
    bk, bv = maps.backends.dump()
    ident = {int(k["backend_id"]): (bytes(v["addr"]), int(v["port"]), int(v["proto"])) for k, v in zip(bk, bv)}
    sk, sv = maps.svc.dump()
    fronts = {}
    for k, v in zip(sk, sv):
        fk = (bytes(k["addr"]), int(k["port"]), int(k["proto"]), int(k["scope"]))
        f = fronts.setdefault(fk, {})
        if int(k["slot"]) == 0:
            f[0] = (int(v["count"]), int(v["flags"]), int(v["svc_id"]), int(v["affinity_timeout"]))
        else:
            f[int(k["slot"])] = (ident[int(v["backend_id"])], int(v["svc_id"]))  # KeyError: a missing backend
    for fk, f in fronts.items():
        assert 0 in f and sorted(f) == list(range(f[0][0] + 1)), f"frontend {fk}: slots {sorted(f)} for {f.get(0)}"
    rk, rv = maps.revnat.dump()
    revnat = {int(k["svc_id"]): (bytes(v["addr"]), int(v["port"])) for k, v in zip(rk, rv)}
    mk, mv = maps.maglev.dump()
    maglev = {int(k["svc_id"]): tuple(ident[int(b)] for b in v["backend_ids"]) for k, v in zip(mk, mv)}
    lk, _ = maps.lb_src_ranges.dump()
    src = sorted((int(k["prefixlen"]), int(k["svc_id"]), bytes(k["addr"])) for k in lk)
    referenced = {s[0] for f in fronts.values() for slot, s in f.items() if slot} | \
        {b for t in maglev.values() for b in t}
    return {"fronts": fronts, "revnat": revnat, "maglev": maglev, "src": src,
            "backends": sorted(ident.values()), "referenced": sorted(referenced)}


def rand_service(r, i, sid):
    n_fe = r.choice([1, 1, 2])
    proto = r.choice(["tcp", "udp"])
    fes = [Frontend(f"10.96.{i}.{j + 1}", r.choice([80, 443]), proto, r.choice([0, 0, 4]), 0) for j in range(n_fe)]
    bes = sorted({Backend(f"10.244.{r.randint(0, 2)}.{r.randint(1, 9)}", r.choice([8080, 8081]))
                  for _ in range(r.randint(0, 6))}, key=lambda b: (b.ip, b.port))
    src = ("203.0.113.0/24",) if r.random() < 0.2 else ()
    return Service(f"s{i}", fes, bes, sid, affinity_timeout=r.choice([None, None, 60]), maglev=r.random() < 0.3,
                   src_ranges=src)


@pytest.mark.parametrize("seed", range(4))
def test_delta_equals_full_apply_after_every_step(bpffs, seed):
    r = random.Random(seed)
    with MeshMaps(os.path.join(bpffs, "a")) as ma, MeshMaps(os.path.join(bpffs, "b")) as mb:
        a, b = ServiceDatapath(ma), ServiceDatapath(mb)
        state = {}
        free = list(range(1, 200))
        for i in range(12):
            state[f"s{i}"] = rand_service(r, i, free.pop(0))
        a.apply(list(state.values()))
        b.apply(list(state.values()))
        assert decode(ma) == decode(mb)
        for step in range(60):
            ups, rems = [], []
            for _ in range(r.randint(1, 4)):
                i = r.randint(0, 15)
                name = f"s{i}"
                old = state.get(name)
                if old is not None and r.random() < 0.2:
                    del state[name]
                    free.insert(0, old.svc_id)  # the next new Service reuses the id, as ServiceIDs does
                    rems.append(name)
                    ups = [u for u in ups if u.name != name]
                    continue
                if old is not None and r.random() < 0.6:  # an endpoint change: same frontends, other backends
                    new = rand_service(r, i, old.svc_id)
                    new.frontends, new.maglev, new.affinity_timeout = old.frontends, old.maglev, old.affinity_timeout
                    new.src_ranges = old.src_ranges
                else:
                    new = rand_service(r, i, old.svc_id if old else free.pop(0))
                state[name] = new
                rems = [n for n in rems if n != name]
                ups = [u for u in ups if u.name != name] + [new]
            a.apply_delta(ups, rems)
            b.apply(list(state.values()))
            da, db = decode(ma), decode(mb)
            assert da == db, f"seed {seed} step {step}"
            assert da["backends"] == da["referenced"], "a backend no frontend names is left in the map"
        assert a.resync(list(state.values())) == 0
        assert decode(ma) == decode(mb)


def test_resync_repairs_and_counts_drift(bpffs):
    with MeshMaps(os.path.join(bpffs, "a")) as m:
        dp = ServiceDatapath(m)
        svcs = [Service(f"s{i}", [Frontend(f"10.96.0.{i + 1}", 80)],
                        [Backend(f"10.244.0.{j + 1}", 8080) for j in range(3)], i + 1) for i in range(5)]
        dp.apply(svcs)
        want = decode(m)
        svcs[2] = Service("s2", [Frontend("10.96.0.3", 80)], [Backend("10.244.0.9", 8080)], 3)
        dp.apply_delta([svcs[2]], [])
        want = decode(m)
        # behind the agent's back: one slot deleted, one junk frontend written
        k, v = m.svc.dump()
        m.svc.delete(k[:1])
        junk_k, junk_v = k[:1].copy(), v[:1].copy()
        junk_k["port"] = 9
        m.svc.update(junk_k, junk_v)
        assert dp.resync(svcs) == 2
        assert decode(m) == want
        assert dp.resync(svcs) == 0
        assert dp.synced


def test_failed_delta_leaves_the_full_path(bpffs):
    with MeshMaps(os.path.join(bpffs, "a")) as m:
        dp = ServiceDatapath(m)
        with pytest.raises(RuntimeError):
            dp.apply_delta([], [])  # no mirror before the first full apply
        s1 = Service("s1", [Frontend("10.96.0.1", 80)], [Backend("10.244.0.1", 8080)], 1)
        dp.apply([s1])
        clash = Service("s2", [Frontend("10.96.0.1", 80)], [Backend("10.244.0.2", 8080)], 2)
        with pytest.raises(ValueError, match="already used by Service s1"):
            dp.apply_delta([clash], [])
        assert not dp.synced
        dp.apply([s1])
        assert dp.synced and np.array_equal(*[sorted(decode(m)["backends"])] * 2)
