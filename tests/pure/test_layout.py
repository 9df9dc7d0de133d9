# SPDX-License-Identifier: MIT OR Apache-2.0
"""The layout parser enforces the header's rules (explicit padding only)."""
import pytest

from meshcni import layout

pytestmark = pytest.mark.pure


def test_parses_types_arrays_and_constants():
    structs, consts = layout.parse("""
        #define MC_N 3
        struct k { __u32 a; __be16 b; __u8 c[MC_N]; __u8 pad; __u16 pad2; };
    """.replace("; ", ";\n"))
    s = structs["k"]
    assert consts == {"MC_N": 3}
    assert [(f.name, f.offset, f.size) for f in s.fields] == [("a", 0, 4), ("b", 4, 2), ("c", 6, 3), ("pad", 9, 1), ("pad2", 10, 2)]
    assert (s.size, s.align, s.dtype.itemsize) == (12, 4, 12)


def test_implicit_padding_is_rejected_with_field_name():
    with pytest.raises(layout.LayoutError, match=r"struct k\.b: at offset 1 a __u32 would get implicit padding"):
        layout.parse("struct k {\n __u8 a;\n __u32 b;\n};")


def test_trailing_padding_is_rejected():
    with pytest.raises(layout.LayoutError, match="trailing padding"):
        layout.parse("struct k {\n __u64 a;\n __u8 b;\n};")


def test_unknown_field_type_is_rejected():
    with pytest.raises(layout.LayoutError, match="cannot parse field line 'int x;'"):
        layout.parse("struct k {\n int x;\n};")


def test_big_endian_fields_get_big_endian_dtypes():
    structs, _ = layout.parse("struct k {\n __be32 a;\n __u32 b;\n};")
    dt = structs["k"].dtype
    assert dt.fields["a"][0].byteorder == ">" and dt.fields["b"][0].str == "<u4"
