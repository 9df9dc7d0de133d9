# SPDX-License-Identifier: MIT OR Apache-2.0
"""Pins survive restarts; changed layouts migrate and roll back (Cilium-style)."""
import os

import numpy as np
import pytest

from meshcni import layout
from meshcni._bpfcc import compile_one
from meshcni.bpf import BpfMap, BpfObject, LoadError, MigrationSet, object_path, open_or_create
from meshcni.bpf.maps import rows
from meshcni.bpf.pin import ensure_root
from meshcni.errors import BpfError, PinMismatchError

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))


def backends(n):
    spec = layout.map_specs()["mc_backends"]
    k = np.arange(1, n + 1, dtype=np.uint32).view(layout.dtype_of(spec.key_struct))
    v = np.zeros(n, layout.dtype_of(spec.value_struct))
    v["port"] = np.arange(n) + 1000
    return spec, k, v


def test_pin_is_reused_with_its_contents(pin_root):
    spec, k, v = backends(10)
    with open_or_create(spec, pin_root) as m:
        m.update(k, v)
        first_id = m.info().id
    with open_or_create(spec, pin_root) as m:  # "agent restart"
        assert m.info().id == first_id
        assert len(m) == 10


def test_layout_change_migrates_and_copies(pin_root):
    spec, k, v = backends(10)
    with open_or_create(spec.with_(max_entries=32), pin_root) as m:
        m.update(k, v)
        old_id = m.info().id
    with open_or_create(spec, pin_root) as m:
        assert m.info().id != old_id and m.info().max_entries == spec.max_entries
        got_k, got_v = m.dump()
        assert sorted(got_v["port"].tolist()) == list(range(1000, 1010))
    assert sorted(os.listdir(pin_root)) == ["mc_backends"]


def test_layout_change_can_be_refused(pin_root):
    spec, _, _ = backends(1)
    open_or_create(spec.with_(max_entries=32), pin_root).close()
    with pytest.raises(PinMismatchError, match=f"max_entries 32 \\(pinned\\) != {spec.max_entries} \\(wanted\\)"):
        open_or_create(spec, pin_root, migrate=False)


def test_pending_migration_rolls_back(pin_root):
    spec, k, v = backends(5)
    with open_or_create(spec.with_(max_entries=32), pin_root) as m:
        m.update(k, v)
        old_id = m.info().id
    migs = MigrationSet()
    new = open_or_create(spec, pin_root, migrations=migs)
    new.close()
    assert os.path.exists(os.path.join(pin_root, "mc_backends:migrating"))
    migs.rollback()
    with BpfMap.open_pinned(os.path.join(pin_root, "mc_backends")) as m:
        assert m.info().id == old_id and len(m) == 5


def test_value_size_change_migrates_without_copy(pin_root):
    spec, k, v = backends(3)
    bigger = layout.MapSpec("mc_backends", 1, 4, 32, 64)
    with open_or_create(bigger, pin_root) as m:
        m.update(np.arange(3, dtype=np.uint32).view(m.key_dtype), np.zeros(3, m.value_dtype))
    with open_or_create(spec, pin_root) as m:
        assert len(m) == 0


def test_object_load_reuses_and_migrates_pins(pin_root):
    spec, k, v = backends(7)
    # a pin from "an older release" with a smaller capacity, and one identical
    with open_or_create(spec.with_(max_entries=16), pin_root) as m:
        m.update(k, v)
    svc = layout.map_specs()["mc_svc"]
    with open_or_create(svc, pin_root) as m:
        svc_id = m.info().id
    with BpfObject(object_path("maps"), pin_root) as obj:
        b = obj.map("mc_backends")
        assert b.info().max_entries == spec.max_entries and len(b) == 7
        assert obj.migrations.items[0].copied == 7
        b.close()
        s = obj.map("mc_svc")
        assert s.info().id == svc_id  # reused, not recreated
        s.close()
    assert not any(p.endswith(":migrating") for p in os.listdir(pin_root))
    assert set(os.listdir(pin_root)) == set(layout.map_specs())


def test_upgrade_from_preallocated_64k_service_maps(pin_root):
    """Before 10k x 10 fitted, mc_svc/mc_backends/mc_revnat were 65,536 entries,
    preallocated: an upgraded agent's load migrates them, entries kept."""
    old = {}
    for name in ("mc_svc", "mc_backends", "mc_revnat"):
        spec = layout.map_specs()[name]
        assert spec.map_flags == 1 and spec.max_entries >= 65536  # BPF_F_NO_PREALLOC
        k = np.zeros(50, layout.dtype_of(spec.key_struct))
        k.view(np.uint8).reshape(50, -1)[:, :4] = np.arange(1, 51, dtype=np.uint32).view(np.uint8).reshape(50, 4)
        v = np.zeros(50, layout.dtype_of(spec.value_struct))
        v.view(np.uint8).reshape(50, -1)[:, 0] = 7
        with open_or_create(spec.with_(max_entries=65536, map_flags=0), pin_root) as m:
            m.update(k, v)
        old[name] = k
    with BpfObject(object_path("maps"), pin_root) as obj:
        assert sorted((m.reason, m.copied, m.dropped) for m in obj.migrations.items) == sorted(
            (r, 50, 0) for r in [f"max_entries 65536->{layout.map_specs()[n].max_entries}, map_flags 0->1"
                                 if layout.map_specs()[n].max_entries != 65536 else "map_flags 0->1"
                                 for n in old])
        for name, k in old.items():
            with obj.map(name) as m:
                spec = layout.map_specs()[name]
                assert (m.info().max_entries, m.info().map_flags) == (spec.max_entries, 1)
                got_k, got_v = m.dump()
                assert sorted(map(bytes, rows(got_k))) == sorted(map(bytes, rows(k)))
                assert (got_v.view(np.uint8).reshape(50, -1)[:, 0] == 7).all()
    assert not any(p.endswith(":migrating") for p in os.listdir(pin_root))


def test_failed_load_puts_the_old_pins_back(pin_root, tmp_path):
    obj_path = str(tmp_path / "verifier_reject.bpf.o")
    compile_one(os.path.join(HERE, "bpf", "verifier_reject.bpf.c"), obj_path)
    spec, k, v = backends(4)
    with open_or_create(spec.with_(max_entries=16), pin_root) as m:
        m.update(k, v)
        old_id = m.info().id
    obj = BpfObject(obj_path, pin_root)
    with pytest.raises(LoadError) as ei:
        obj.load()
    obj.close()
    assert "mc_reject_me" in str(ei.value) or "invalid" in ei.value.log
    assert os.listdir(pin_root) == ["mc_backends"]  # nothing half-created stays
    with BpfMap.open_pinned(os.path.join(pin_root, "mc_backends")) as m:
        assert m.info().id == old_id and m.info().max_entries == 16 and len(m) == 4


def test_root_must_be_bpffs(tmp_path):
    with pytest.raises(BpfError, match="is not on a bpf filesystem"):
        ensure_root(str(tmp_path / "x"))


def test_prog_test_run(pin_root):
    with BpfObject(object_path("maps"), pin_root) as obj:
        assert obj.programs() == {"mc_maps_anchor": "tc"}
        pkt = bytes(14) + bytes(40)
        retval, out, _ = obj.test_run("mc_maps_anchor", pkt)
        assert retval == 0 and out == pkt
