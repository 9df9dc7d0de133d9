# SPDX-License-Identifier: MIT OR Apache-2.0
"""The compiled row packer (``_fastmap.Packer``) against numpy's own conversion.

``records_py`` is the path every list of tuples took before the packer: numpy
converting row by row. The packer must give byte-identical records for every
field kind of every layout.h struct and for plain integer dtypes, leave to
numpy what it does not pack itself (and numpy then decides, as before), and
an invalid row must fail naming its index and field.
"""
import ipaddress
import random

import noext
import numpy as np
import pytest

noext.require_extension("it tests the Cython module meshcni._fastmap")

from meshcni import _fastmap  # noqa: E402
from meshcni.bpf.maps import as_records, packer_for, records_py  # noqa: E402
from meshcni.layout import structs  # noqa: E402

pytestmark = pytest.mark.pure

STRUCTS = sorted(structs())


def _field_kinds(dtype):
    for name in dtype.names:
        sub = dtype.fields[name][0]
        if sub.subdtype is None:
            yield name, sub, 1
        else:
            yield name, sub.subdtype[0], sub.subdtype[1][0]


def _value(rng, base, count, form):
    hi = 1 << (8 * base.itemsize)
    if count == 1:
        v = rng.randrange(hi)
        return {"int": v, "npint": base.type(v), "bool": bool(v & 1)}.get(form, v)
    elems = [rng.randrange(hi) for _ in range(count)]
    if base.itemsize == 1 and form == "bytes":
        return bytes(elems)
    if base.itemsize == 1 and form == "bytearray":
        return bytearray(elems)
    if form == "broadcast":
        return elems[0]
    if form == "tuple":
        return tuple(elems)
    if count == 16 and base.itemsize == 1 and form == "address":
        return ipaddress.IPv6Address(bytes(elems)) if elems[0] & 1 else \
            ipaddress.IPv4Address(bytes(elems[:4]))
    return elems


def random_rows(dtype, n, rng, row_form="tuple"):
    forms = ["int", "npint", "bool", "bytes", "bytearray", "broadcast", "tuple", "list", "address"]
    rows = []
    for _ in range(n):
        vals = {name: _value(rng, base, count, rng.choice(forms)) for name, base, count in _field_kinds(dtype)}
        if row_form == "dict":
            # fields left out stay zero
            rows.append({k: v for k, v in vals.items() if rng.random() < 0.8})
        elif row_form == "list":
            rows.append(list(vals.values()))
        else:
            rows.append(tuple(vals.values()))
    return rows


@pytest.mark.parametrize("row_form", ["tuple", "list", "dict"])
@pytest.mark.parametrize("name", STRUCTS)
def test_every_layout_struct_packs_like_numpy(name, row_form):
    dtype = structs()[name].dtype
    rows = random_rows(dtype, 200, random.Random(f"{name}/{row_form}"), row_form)
    packed, n = packer_for(dtype).pack(rows)
    assert packed is not None and n == len(rows), f"{name}: the packer left row {n} to numpy"
    assert packed.dtype == dtype
    assert packed.tobytes() == records_py(rows, dtype).tobytes()


@pytest.mark.parametrize("code", ["u1", "<u2", ">u2", "<u4", ">u4", "<u8", ">u8", "i1", "<i2", ">i4", "<i8"])
def test_plain_and_one_field_dtypes_at_their_limits(code):
    base = np.dtype(code)
    info = np.iinfo(base)
    values = [int(info.min), int(info.max), 0, 1, int(info.max) // 3, np.int64(1), True]
    for dtype in (base, np.dtype([("x", base)])):
        packed, _ = packer_for(dtype).pack(values)
        assert packed is not None
        assert packed.tobytes() == records_py(values, dtype).tobytes()
        assert as_records(values, dtype).tobytes() == packed.tobytes()


def test_address_objects_are_the_unified_form():
    dtype = structs()["mc_ipcache_key"].dtype
    rows = [(128, ipaddress.ip_address("10.1.2.3")), (128, ipaddress.ip_address("2001:db8::7"))]
    out = as_records(rows, dtype)
    assert bytes(out[0]["addr"]) == b"\0" * 10 + b"\xff\xff" + bytes([10, 1, 2, 3])
    assert bytes(out[1]["addr"]) == ipaddress.ip_address("2001:db8::7").packed
    # numpy alone would have repeated int(address) in all 16 bytes: the reference agrees now
    assert records_py(rows, dtype).tobytes() == out.tobytes()


def test_big_endian_fields_are_written_big_endian():
    dtype = structs()["mc_backend"].dtype
    out = as_records([(b"\x01" * 16, 8080, 6, 0, 0)], dtype)
    raw = out.tobytes()
    off = dtype.fields["port"][1]
    assert raw[off:off + 2] == (8080).to_bytes(2, "big")
    assert int(out[0]["port"]) == 8080


@pytest.mark.parametrize("value", [1.9, "7", np.float64(3.0)])
def test_values_the_packer_leaves_to_numpy_convert_as_before(value):
    dtype = structs()["mc_ipcache"].dtype
    rows = [(1, 2), (value, 0), (3, 4)]
    packed, stop = packer_for(dtype).pack(rows)
    assert packed is None and stop == 1
    assert as_records(rows, dtype).tobytes() == records_py(rows, dtype).tobytes()


def test_one_element_sequence_broadcasts_as_numpy_does():
    dtype = structs()["mc_ipcache_key"].dtype
    rows = [(96, b"\x09"), (96, [7])]
    assert as_records(rows, dtype).tobytes() == records_py(rows, dtype).tobytes()
    assert bytes(as_records(rows, dtype)[1]["addr"]) == b"\x07" * 16


BAD = [
    # (rows, row index, field named or None, text numpy gives)
    ([(1, b"\0" * 16), (-1, b"\0" * 16)], 1, "prefixlen", "out of bounds for uint32"),
    ([(1, b"\0" * 16)] * 3 + [(2 ** 32, b"\0" * 16)], 3, "prefixlen", "out of bounds for uint32"),
    ([(1, b"\0" * 16), (1, b"\0" * 4)], 1, "addr", "could not broadcast"),
    ([(1, b"\0" * 16), (1, [0] * 15 + [256])], 1, "addr", "out of bounds for uint8"),
    ([(1, b"\0" * 16), (None, b"\0" * 16)], 1, "prefixlen", "NoneType"),
    ([(1, b"\0" * 16), (1,)], 1, None, "tuple of length 1"),
    ([(1, b"\0" * 16), (1, b"\0" * 16, 3)], 1, None, "tuple of length 3"),
    ([{"prefixlen": 1}, {"prefixlen": 1, "nope": 2}], 1, "nope", "no field of name nope"),
    ([{"prefixlen": 1}, {"addr": b"\0"}, {"addr": b"\0\0"}], 2, "addr", "could not broadcast"),
]


@pytest.mark.parametrize("rows,row,field,why", BAD)
def test_a_bad_row_names_its_index_and_field(rows, row, field, why):
    dtype = structs()["mc_ipcache_key"].dtype
    with pytest.raises(TypeError) as ei:
        as_records(rows, dtype, "map mc_ipcache", "keys")
    msg = str(ei.value)
    assert msg.startswith("map mc_ipcache: cannot convert keys to ")
    where = f"row {row}" + (f", field {field!r}" if field else "") + ":"
    assert where in msg and why in msg, msg
    # numpy's path fails too: the packer never accepts what the reference refuses
    with pytest.raises((TypeError, ValueError, KeyError, OverflowError)):
        records_py(rows, dtype)


def test_scalar_rows_out_of_range_name_the_row():
    with pytest.raises(TypeError, match=r"^t: cannot convert keys to uint32: row 2: Python integer -1"):
        as_records([1, 2, -1], np.dtype(np.uint32), "t", "keys")
    with pytest.raises(TypeError, match=r"row 1, field 'backend_id': Python integer 4294967296"):
        as_records([1, 2 ** 32], structs()["mc_backend_key"].dtype, "t", "keys")


def test_dtypes_with_non_integer_fields_have_no_packer():
    assert packer_for(np.dtype("V8")) is None
    assert packer_for(np.dtype([("a", "<u4"), ("f", "<f4")])) is None
    with pytest.raises(TypeError, match="field 'f'"):
        _fastmap.Packer(np.dtype([("a", "<u4"), ("f", "<f4")]))
    # and they still convert, through numpy
    assert as_records([b"12345678"], np.dtype("V8")).tobytes() == b"12345678"


def test_empty_and_generator_inputs():
    dtype = structs()["mc_ipcache"].dtype
    assert len(as_records([], dtype)) == 0
    assert as_records(((i, 0) for i in range(3)), dtype)["identity"].tolist() == [0, 1, 2]


def test_row_form_comes_from_the_first_row():
    dtype = structs()["mc_ipcache_key"].dtype
    # a dict after a tuple is read as a tuple of its keys, as numpy's path always did: an error
    with pytest.raises(TypeError, match="row 1"):
        as_records([(1, b"\0" * 16), {"prefixlen": 1}], dtype)
    # namedtuples and other tuple subclasses are rows
    from collections import namedtuple
    K = namedtuple("K", "prefixlen addr")
    rows = [K(32, b"\1" * 16), K(64, b"\2" * 16)]
    assert as_records(rows, dtype).tobytes() == records_py(rows, dtype).tobytes()
