# SPDX-License-Identifier: MIT OR Apache-2.0
"""The one layout, three readers: Python's parse, the C compiler, BTF.

Fails when bpf/include/meshcni/layout.h, the cffi extension and a BPF
object disagree on any struct's size or any field's offset.
"""
import json
import os
import subprocess

import pytest

from meshcni import layout
from meshcni._libbpf import ffi
from meshcni.bpf import BpfObject, object_path

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _btf_structs(obj_path):
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", obj_path],
                         capture_output=True, text=True, check=True).stdout
    types = json.loads(out)["types"]
    return {t["name"]: t for t in types if t["kind"] == "STRUCT" and t["name"] != "(anon)"}


def test_source_header_is_the_compiled_one():
    with open(os.path.join(ROOT, "bpf", "include", "meshcni", "layout.h")) as f:
        src = f.read()
    compiled = ffi.string(__import__("meshcni._libbpf", fromlist=["lib"]).lib.mc_layout_header()).decode()
    assert compiled == src, "the extension was built from another layout.h: rebuild (pip install -e .)"


def test_python_matches_c_compiler():
    for name, st in layout.structs().items():
        assert ffi.sizeof(f"struct {name}") == st.size, name
        assert st.dtype.itemsize == st.size, name
        for f in st.fields:
            assert ffi.offsetof(f"struct {name}", f.name) == f.offset, f"{name}.{f.name}"
            assert st.dtype.fields[f.name][1] == f.offset, f"{name}.{f.name}"
            assert st.dtype.fields[f.name][0].itemsize == f.size, f"{name}.{f.name}"


def test_python_matches_btf_of_bpf_object():
    btf = _btf_structs(object_path("maps"))
    checked = 0
    for spec in layout.map_specs().values():
        for sname in (spec.key_struct, spec.value_struct):
            if sname is None:
                continue
            st = layout.structs()[sname]
            t = btf[sname]
            assert t["size"] == st.size, sname
            members = {m["name"]: m["bits_offset"] // 8 for m in t["members"]}
            assert members == {f.name: f.offset for f in st.fields}, sname
            checked += 1
    assert checked == 2 * (len(layout.map_specs()) - 1)  # all but the ring buffer


def test_map_table_matches_object_definitions(pin_root):
    obj = BpfObject(object_path("maps"), pin_root)
    try:
        from_obj = {s.name: s for s, pinned in obj.map_specs()}
    finally:
        obj.close()
    for name, spec in layout.map_specs().items():
        o = from_obj[name]
        assert (o.type, o.key_size, o.value_size, o.max_entries, o.map_flags) == \
            (spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.map_flags), name


def test_generated_constants_are_the_compiled_ones():
    from meshcni import layout_constants
    from meshcni._layoutgen import sha256

    compiled = ffi.string(__import__("meshcni._libbpf", fromlist=["lib"]).lib.mc_layout_header()).decode()
    assert layout_constants.HEADER_SHA256 == sha256(compiled), \
        "meshcni/layout_constants.py was generated from another layout.h: rebuild (scripts/setup-machine.sh)"
    assert layout_constants.CONSTANTS == layout.constants()
    for name, value in layout.constants().items():
        assert getattr(layout_constants, name) == value, name
