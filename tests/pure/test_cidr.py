# SPDX-License-Identifier: MIT OR Apache-2.0
"""Tests for meshcni.cidr: parsing, except arithmetic, LPM key encoding."""

import bisect
import ipaddress
import json
import random
import warnings
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshcni import cidr
from meshcni.cidr import CIDRNormalizedWarning

pytestmark = pytest.mark.pure

# Enough examples to shake out off-by-one alignment bugs while keeping the
# whole module well under the ~20 s budget.
PROP = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _quoted(value):
    return json.dumps(value)


# ---------------------------------------------------------------------------
# parse_cidr
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("10.0.0.0/8", IPv4Network("10.0.0.0/8")),
    ("0.0.0.0/0", IPv4Network("0.0.0.0/0")),
    ("192.168.1.1", IPv4Network("192.168.1.1/32")),
    ("2001:db8::/32", IPv6Network("2001:db8::/32")),
    ("::/0", IPv6Network("::/0")),
    ("2001:db8::1", IPv6Network("2001:db8::1/128")),
    ("::ffff:10.0.0.0/104", IPv6Network("::ffff:a00:0/104")),
    ("255.255.255.255/32", IPv4Network("255.255.255.255/32")),
])
def test_parse_valid(text, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = cidr.parse_cidr(text)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize("text, reason", [
    ("10.0.0.0/33", "prefix length 33 out of range 0..32"),
    ("2001:db8::/129", "prefix length 129 out of range 0..128"),
    ("10.0.0.0/99999999999999999999", "out of range 0..32"),
    ("", "empty string"),
    ("garbage", "Expected 4 octets"),
    ("10.0.0", "Expected 4 octets"),
    ("10.0.0.256/32", "256"),
    ("010.0.0.0/8", "Leading zeros"),
    ("10.0.0.01", "Leading zeros"),
    ("::ffff:010.0.0.1/128", "Leading zeros"),
    ("10.0.0.0/08", "leading zero"),
    ("10.0.0.0/", "missing prefix length"),
    ("10.0.0.0/-1", "not a decimal integer"),
    ("10.0.0.0/+8", "not a decimal integer"),
    ("10.0.0.0/8 ", "not a decimal integer"),
    ("10.0.0.0/\uff18", "not a decimal integer"),
    ("10.0.0.0/255.0.0.0", "not a decimal integer"),
    ("10.0.0.0/8/8", "not a decimal integer"),
    (" 10.0.0.0/8", ""),
    ("fe80::1%eth0/64", "zone"),
    ("2001:db8:::/32", ""),
    ("10.0.0.0\x00/8", ""),
])
def test_parse_errors_quote_value(text, reason):
    with pytest.raises(ValueError) as info:
        cidr.parse_cidr(text)
    msg = str(info.value)
    assert msg.startswith(f"CIDR {_quoted(text)}: "), msg
    assert reason in msg


def test_parse_error_exact_message_from_brief():
    with pytest.raises(ValueError) as info:
        cidr.parse_cidr("10.0.0.0/33")
    assert str(info.value) == 'CIDR "10.0.0.0/33": prefix length 33 out of range 0..32'


@pytest.mark.parametrize("value", [None, 8, b"10.0.0.0/8", ["10.0.0.0/8"],
                                   IPv4Network("10.0.0.0/8")])
def test_parse_non_string(value):
    with pytest.raises(ValueError, match="expected a string") as info:
        cidr.parse_cidr(value)
    assert type(value).__name__ in str(info.value)


def test_parse_huge_garbage_message_is_bounded():
    text = "1" * 100_000
    with pytest.raises(ValueError) as info:
        cidr.parse_cidr(text)
    assert len(str(info.value)) < 1000


def test_parse_host_bits_warns_and_normalises():
    with pytest.warns(CIDRNormalizedWarning) as record:
        net = cidr.parse_cidr("10.1.2.3/8")
    assert net == IPv4Network("10.0.0.0/8")
    assert len(record) == 1
    msg = str(record[0].message)
    assert '"10.1.2.3/8"' in msg and '"10.0.0.0/8"' in msg
    assert record[0].message.normalized == (("10.1.2.3/8", net),)
    # stacklevel points at the caller, not at meshcni internals.
    assert record[0].filename == __file__


def test_parse_host_bits_ipv6_warns():
    with pytest.warns(CIDRNormalizedWarning, match=r'"2001:db8::1/32".*"2001:db8::/32"'):
        assert cidr.parse_cidr("2001:db8::1/32") == IPv6Network("2001:db8::/32")


def test_parse_strict_rejects_host_bits():
    with pytest.raises(ValueError) as info:
        cidr.parse_cidr("10.1.2.3/8", strict=True)
    msg = str(info.value)
    assert msg.startswith('CIDR "10.1.2.3/8": host bits set')
    assert '"10.0.0.0/8"' in msg


def test_parse_strict_accepts_clean_input_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cidr.parse_cidr("10.0.0.0/8", strict=True) == IPv4Network("10.0.0.0/8")
        assert cidr.parse_cidr("10.1.2.3", strict=True) == IPv4Network("10.1.2.3/32")


def test_warning_is_userwarning_subclass():
    assert issubclass(CIDRNormalizedWarning, UserWarning)


# ---------------------------------------------------------------------------
# exclude: seed contract and unit cases
# ---------------------------------------------------------------------------

def _nets(*texts):
    return [ip_network(t) for t in texts]


def test_seed_example_mathematically_correct():
    # The upstream README claims 10.0.0.0/8 except 10.96.0.0/12 yields
    # 10.0.0.0/9, 10.128.0.0/10, 10.192.0.0/11, 10.224.0.0/12.  That list is
    # not cidr-minus-except: it still contains 10.96.0.0/12 (inside
    # 10.0.0.0/9) and omits 10.240.0.0/12, i.e. it is 10.0.0.0/8 minus
    # 10.240.0.0/12.  We implement the real set difference; ipaddress agrees.
    got = cidr.exclude("10.0.0.0/8", ["10.96.0.0/12"])
    assert got == _nets("10.0.0.0/10", "10.64.0.0/11", "10.112.0.0/12", "10.128.0.0/9")
    assert got == sorted(ip_network("10.0.0.0/8").address_exclude(ip_network("10.96.0.0/12")))


def test_seed_upstream_list_is_minus_10_240():
    upstream = _nets("10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "10.224.0.0/12")
    assert cidr.exclude("10.0.0.0/8", ["10.240.0.0/12"]) == upstream
    # ...and it really does still cover the "excluded" range.
    assert ip_network("10.96.0.0/12").subnet_of(upstream[0])


def test_exclude_no_excepts():
    assert cidr.exclude("10.0.0.0/8", []) == _nets("10.0.0.0/8")
    assert cidr.exclude("::/0", ()) == _nets("::/0")


def test_exclude_equal_to_cidr_is_empty():
    assert cidr.exclude("10.0.0.0/8", ["10.0.0.0/8"]) == []
    assert cidr.exclude("2001:db8::/32", ["2001:db8::/32", "2001:db8::/48"]) == []
    assert cidr.exclude("1.2.3.4/32", ["1.2.3.4"]) == []


def test_exclude_duplicates():
    once = cidr.exclude("10.0.0.0/8", ["10.96.0.0/12"])
    assert cidr.exclude("10.0.0.0/8", ["10.96.0.0/12"] * 5) == once


def test_exclude_overlapping_and_nested():
    # 10.96/12 contains 10.100/16; the nested one must not matter.
    assert (cidr.exclude("10.0.0.0/8", ["10.100.0.0/16", "10.96.0.0/12"])
            == cidr.exclude("10.0.0.0/8", ["10.96.0.0/12"]))


def test_exclude_adjacent_excepts_merge():
    # Two adjacent /25s cover one /24: result must be the same as excluding it.
    assert (cidr.exclude("192.168.0.0/16", ["192.168.1.0/25", "192.168.1.128/25"])
            == cidr.exclude("192.168.0.0/16", ["192.168.1.0/24"]))


def test_exclude_edges():
    assert cidr.exclude("10.0.0.0/30", ["10.0.0.0/32", "10.0.0.3/32"]) == _nets("10.0.0.1/32", "10.0.0.2/32")
    assert cidr.exclude("0.0.0.0/0", ["0.0.0.0/1"]) == _nets("128.0.0.0/1")
    assert cidr.exclude("0.0.0.0/0", ["255.255.255.255"])[-1] == ip_network("255.255.255.254/32")
    assert len(cidr.exclude("0.0.0.0/0", ["255.255.255.255"])) == 32


def test_exclude_ipv6():
    assert cidr.exclude("2001:db8::/32", ["2001:db8::/33"]) == _nets("2001:db8:8000::/33")
    got = cidr.exclude("::/0", ["::ffff:0:0/96"])
    assert len(got) == 96
    assert sum(n.num_addresses for n in got) == 2**128 - 2**32
    got = cidr.exclude("2001:db8::/64", ["2001:db8::1"])
    assert len(got) == 64 and got[0] == ip_network("2001:db8::/128")


def test_exclude_accepts_network_objects_and_mixes():
    assert (cidr.exclude(ip_network("10.0.0.0/8"), [ip_network("10.96.0.0/12"), "10.1.0.0/16"])
            == cidr.exclude("10.0.0.0/8", ["10.96.0.0/12", "10.1.0.0/16"]))


def test_exclude_result_sorted_and_typed():
    got = cidr.exclude("10.0.0.0/8", ["10.200.0.0/16", "10.3.0.0/16"])
    assert got == sorted(got, key=lambda n: (n.network_address, n.prefixlen))
    assert all(type(n) is IPv4Network for n in got)


def test_exclude_except_not_inside():
    with pytest.raises(ValueError) as info:
        cidr.exclude("192.168.0.0/16", ["192.168.1.0/24", "10.96.0.0/12"])
    msg = str(info.value)
    assert 'except "10.96.0.0/12" is not inside cidr "192.168.0.0/16"' in msg
    assert "excepts[1]" in msg


def test_exclude_except_wider_than_cidr():
    # Covers the cidr (so "overlaps") but is not inside it.
    with pytest.raises(ValueError, match=r'except "10.0.0.0/7" is not inside cidr "10.0.0.0/8"'):
        cidr.exclude("10.0.0.0/8", ["10.0.0.0/7"])


def test_exclude_not_inside_with_objects_quotes_text():
    with pytest.raises(ValueError, match=r'except "11.0.0.0/8" is not inside cidr "10.0.0.0/8"'):
        cidr.exclude(ip_network("10.0.0.0/8"), [ip_network("11.0.0.0/8")])


def test_exclude_mixed_families():
    with pytest.raises(ValueError) as info:
        cidr.exclude("10.0.0.0/8", ["2001:db8::/32"])
    msg = str(info.value)
    assert '"2001:db8::/32"' in msg and '"10.0.0.0/8"' in msg and "IPv6" in msg and "IPv4" in msg
    # v4-mapped IPv6 is still IPv6 as far as policy families go.
    with pytest.raises(ValueError, match="IPv6"):
        cidr.exclude("10.0.0.0/8", ["::ffff:10.96.0.0/108"])


def test_exclude_garbage():
    with pytest.raises(ValueError, match=r'^cidr "nope": '):
        cidr.exclude("nope", [])
    with pytest.raises(ValueError) as info:
        cidr.exclude("10.0.0.0/8", ["10.1.0.0/16", "10.0.0.0/40"])
    msg = str(info.value)
    assert '"10.0.0.0/40"' in msg and "excepts[1]" in msg and "out of range" in msg
    with pytest.raises(ValueError, match="expected a CIDR string or network object, got int"):
        cidr.exclude("10.0.0.0/8", [42])


def test_exclude_reports_first_bad_except_in_input_order():
    # The vectorised IPv4 parser runs over all excepts up front; errors must
    # still come out in input order, whatever kind they are.
    with pytest.raises(ValueError, match=r'except "11\.0\.0\.0/8" is not inside .*excepts\[0\]'):
        cidr.exclude("10.0.0.0/8", ["11.0.0.0/8", "garbage"])
    with pytest.raises(ValueError, match=r'except "garbage" \(excepts\[1\]\)'):
        cidr.exclude("10.0.0.0/8", ["10.1.0.0/16", "garbage", "11.0.0.0/8"])
    with pytest.raises(ValueError, match=r'excepts\[1\]\): host bits'):
        cidr.exclude("10.0.0.0/8", ["10.1.0.0/16", "10.2.0.1/16", "x"], strict=True)


def test_exclude_excepts_must_be_a_list_not_a_string():
    with pytest.raises(ValueError, match="excepts: expected a list"):
        cidr.exclude("10.0.0.0/8", "10.96.0.0/12")
    with pytest.raises(ValueError, match="excepts: expected a list"):
        cidr.exclude("10.0.0.0/8", None)


def test_exclude_host_bits_warn_once_per_call():
    with pytest.warns(CIDRNormalizedWarning) as record:
        got = cidr.exclude("10.1.0.0/8", ["10.96.1.1/12"])
    assert got == cidr.exclude("10.0.0.0/8", ["10.96.0.0/12"])
    assert len(record) == 1
    msg = str(record[0].message)
    assert '"10.1.0.0/8"' in msg and '"10.0.0.0/8"' in msg
    assert '"10.96.1.1/12"' in msg and '"10.96.0.0/12"' in msg
    assert record[0].filename == __file__


def test_exclude_strict():
    with pytest.raises(ValueError, match=r'except "10.96.1.1/12" \(excepts\[0\]\): host bits set'):
        cidr.exclude("10.0.0.0/8", ["10.96.1.1/12"], strict=True)
    with pytest.raises(ValueError, match=r'^cidr "10.1.0.0/8": host bits set'):
        cidr.exclude("10.1.0.0/8", [], strict=True)


# ---------------------------------------------------------------------------
# ipblock_prefixes
# ---------------------------------------------------------------------------

def test_ipblock_basic():
    assert cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}) == [
        "10.0.0.0/10", "10.64.0.0/11", "10.112.0.0/12", "10.128.0.0/9"]
    assert cidr.ipblock_prefixes({"cidr": "10.0.0.0/8"}) == ["10.0.0.0/8"]
    assert cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": None}) == ["10.0.0.0/8"]
    assert cidr.ipblock_prefixes({"cidr": "2001:db8::/32", "except": ["2001:db8::/33"]}) == [
        "2001:db8:8000::/33"]
    assert cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}) == []


def test_ipblock_except_not_inside_names_field():
    with pytest.raises(ValueError) as info:
        cidr.ipblock_prefixes({"cidr": "192.168.0.0/16",
                               "except": ["192.168.1.0/24", "10.96.0.0/12"]})
    assert str(info.value) == (
        'ipBlock.except[1] "10.96.0.0/12" is not inside ipBlock.cidr "192.168.0.0/16"')


def test_ipblock_garbage_except_names_index():
    with pytest.raises(ValueError, match=r'^ipBlock\.except\[1\] "10\.0\.0\.0/33": prefix length 33'):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.0.0.0/33"]})


def test_ipblock_cidr_errors():
    with pytest.raises(ValueError, match=r'^ipBlock\.cidr "x": '):
        cidr.ipblock_prefixes({"cidr": "x"})
    with pytest.raises(ValueError, match=r"^ipBlock\.cidr: required"):
        cidr.ipblock_prefixes({"except": ["10.0.0.0/8"]})
    with pytest.raises(ValueError, match=r"^ipBlock\.cidr: required"):
        cidr.ipblock_prefixes({"cidr": None})


def test_ipblock_structure_errors():
    with pytest.raises(ValueError, match=r'^ipBlock: unknown field "excepts"'):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "excepts": ["10.96.0.0/12"]})
    with pytest.raises(ValueError, match=r"^ipBlock: expected a mapping, got str"):
        cidr.ipblock_prefixes("10.0.0.0/8")
    with pytest.raises(ValueError, match=r"^ipBlock\.except: expected a list"):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": "10.96.0.0/12"})
    with pytest.raises(ValueError, match=r"^ipBlock\.except\[0\] 7: "):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": [7]})
    with pytest.raises(ValueError, match=r'^ipBlock\.except\[0\] "2001:db8::/32" is IPv6'):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["2001:db8::/32"]})


def test_ipblock_host_bits():
    with pytest.warns(CIDRNormalizedWarning, match=r'ipBlock\.cidr "10\.1\.0\.0/8"'):
        assert cidr.ipblock_prefixes({"cidr": "10.1.0.0/8"}) == ["10.0.0.0/8"]
    with pytest.raises(ValueError, match=r'^ipBlock\.except\[0\] "10\.1\.1\.1/16": host bits'):
        cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": ["10.1.1.1/16"]}, strict=True)


# ---------------------------------------------------------------------------
# exclude: properties
# ---------------------------------------------------------------------------

@st.composite
def cidr_with_excepts(draw, version):
    bits = 32 if version == 4 else 128
    # ip_network((int, plen)) would pick IPv4 for small ints.
    net_cls = IPv4Network if version == 4 else IPv6Network
    plen = draw(st.integers(0, bits))
    base = net_cls((draw(st.integers(0, 2**bits - 1)), plen), strict=False)
    first = int(base.network_address)
    # Bias except lengths towards the base length so that excepts overlap,
    # nest and equal the base reasonably often.
    depth = draw(st.sampled_from([2, 4, 8, bits]))
    excepts = []
    for _ in range(draw(st.integers(0, 10))):
        eplen = draw(st.integers(plen, min(bits, plen + depth)))
        offset = draw(st.integers(0, base.num_addresses - 1))
        excepts.append(net_cls((first + offset, eplen), strict=False))
    if excepts and draw(st.booleans()):
        excepts.append(draw(st.sampled_from(excepts)))  # duplicate
    samples = draw(st.lists(st.integers(0, base.num_addresses - 1), max_size=20))
    return base, excepts, [first + s for s in samples]


def _oracle_exclude(base, excepts):
    remaining = [base]
    for e in excepts:
        nxt = []
        for n in remaining:
            if not n.overlaps(e):
                nxt.append(n)
            elif not n.subnet_of(e):
                nxt.extend(n.address_exclude(e))
        remaining = nxt
    return list(ipaddress.collapse_addresses(remaining))


def _check_exclude_properties(base, excepts, samples):
    got = cidr.exclude(base, excepts)
    # Strings must give the same answer as objects.
    assert cidr.exclude(str(base), [str(e) for e in excepts]) == got
    assert got == sorted(got, key=lambda n: (n.network_address, n.prefixlen))

    starts = [int(n.network_address) for n in got]
    ends = [int(n.broadcast_address) for n in got]
    # (a) disjoint
    for i in range(1, len(got)):
        assert ends[i - 1] < starts[i]
    # (b) union == base minus excepts: by total count...
    excluded = sum(n.num_addresses for n in ipaddress.collapse_addresses(excepts)) if excepts else 0
    assert sum(n.num_addresses for n in got) == base.num_addresses - excluded
    # ...and by sampling, including the boundary addresses of every except.
    lo, hi = int(base.network_address), int(base.broadcast_address)
    probes = set(samples) | {lo, hi}
    for e in excepts:
        a, b = int(e.network_address), int(e.broadcast_address)
        probes |= {a - 1, a, b, b + 1}
    for p in probes:
        if not lo <= p <= hi:
            continue
        i = bisect.bisect_right(starts, p) - 1
        in_result = i >= 0 and p <= ends[i]
        in_excepts = any(int(e.network_address) <= p <= int(e.broadcast_address) for e in excepts)
        assert in_result != in_excepts, ipaddress.ip_address(p)
        assert in_result or in_excepts
    # (c) minimal: no mergeable siblings, and identical to the ipaddress oracle.
    assert list(ipaddress.collapse_addresses(got)) == got if got else True
    for x, y in zip(got, got[1:]):
        assert not (x.prefixlen == y.prefixlen and x.prefixlen > 0
                    and x.supernet() == y.supernet()), (x, y)
    oracle = _oracle_exclude(base, excepts)
    assert len(got) == len(oracle)
    assert got == oracle


@PROP
@given(cidr_with_excepts(4))
def test_exclude_properties_ipv4(case):
    _check_exclude_properties(*case)


@PROP
@given(cidr_with_excepts(6))
def test_exclude_properties_ipv6(case):
    _check_exclude_properties(*case)


def test_exclude_10k_excepts():
    rng = random.Random(20240601)
    base = ip_network("10.0.0.0/8")
    excepts = []
    for _ in range(10_000):
        plen = rng.randint(14, 32)
        excepts.append(ip_network((0x0A000000 + rng.randrange(2**24), plen), strict=False))
    excepts += excepts[:500]  # duplicates
    texts = [str(e) for e in excepts]
    got = cidr.exclude("10.0.0.0/8", texts)
    excluded = list(ipaddress.collapse_addresses(excepts))
    assert sum(n.num_addresses for n in got) == base.num_addresses - sum(
        n.num_addresses for n in excluded)
    assert list(ipaddress.collapse_addresses(got)) == got  # disjoint, sorted, unmergeable
    assert list(ipaddress.collapse_addresses(got + excluded)) == [base]  # covers the rest
    assert cidr.ipblock_prefixes({"cidr": "10.0.0.0/8", "except": texts}) == [str(n) for n in got]


def test_exclude_2k_ipv6_excepts():
    rng = random.Random(7)
    base = ip_network("2001:db8::/32")
    first = int(base.network_address)
    excepts = [IPv6Network((first + rng.randrange(2**96), rng.randint(40, 64)), strict=False)
               for _ in range(2000)]
    got = cidr.exclude(base, excepts)
    excluded = list(ipaddress.collapse_addresses(excepts))
    assert list(ipaddress.collapse_addresses(got)) == got
    assert list(ipaddress.collapse_addresses(got + excluded)) == [base]


# ---------------------------------------------------------------------------
# unified addresses and LPM keys
# ---------------------------------------------------------------------------

def test_unified_addr():
    assert cidr.unified_addr("10.1.2.3") == bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 3])
    assert cidr.unified_addr(ip_address("2001:db8::1")) == ip_address("2001:db8::1").packed
    assert cidr.from_unified(cidr.unified_addr("10.1.2.3")) == ip_address("10.1.2.3")
    assert cidr.from_unified(bytearray(16)) == ip_address("::")
    assert cidr.from_unified(np.frombuffer(cidr.unified_addr("1.2.3.4"), np.uint8)) == ip_address("1.2.3.4")


@pytest.mark.parametrize("bad", ["10.0.0.256", "010.0.0.1", "", "fe80::1%eth0", 5, None])
def test_unified_addr_errors(bad):
    with pytest.raises(ValueError) as info:
        cidr.unified_addr(bad)
    assert (_quoted(bad) if isinstance(bad, str) else repr(bad)) in str(info.value)


@pytest.mark.parametrize("bad", [b"\x00" * 4, b"\x00" * 17, "not bytes", 3, np.zeros(16, np.int64)])
def test_from_unified_errors(bad):
    with pytest.raises(ValueError, match="16 bytes"):
        cidr.from_unified(bad)


def test_lpm_keys_basic():
    plen, addr = cidr.lpm_keys(["10.0.0.0/8", "2001:db8::/32", "1.2.3.4",
                                ip_network("192.168.0.0/16"), "::/0"])
    assert plen.dtype == np.uint32 and plen.shape == (5,)
    assert addr.dtype == np.uint8 and addr.shape == (5, 16)
    assert plen.tolist() == [104, 32, 128, 112, 0]
    assert bytes(addr[0]) == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 0])
    assert bytes(addr[1]) == ip_address("2001:db8::").packed
    assert bytes(addr[2]) == cidr.unified_addr("1.2.3.4")
    assert bytes(addr[3]) == cidr.unified_addr("192.168.0.0")
    assert bytes(addr[4]) == bytes(16)


def test_lpm_keys_empty():
    plen, addr = cidr.lpm_keys([])
    assert plen.shape == (0,) and plen.dtype == np.uint32
    assert addr.shape == (0, 16) and addr.dtype == np.uint8


def test_lpm_keys_v4_mapped_v6_collides_with_v4():
    plen, addr = cidr.lpm_keys(["10.0.0.0/8", "::ffff:10.0.0.0/104"])
    assert plen[0] == plen[1] and bytes(addr[0]) == bytes(addr[1])


def test_lpm_keys_host_bits_single_warning():
    with pytest.warns(CIDRNormalizedWarning) as record:
        plen, addr = cidr.lpm_keys(["10.1.2.3/8", "10.0.0.0/8", "2001:db8::1/32",
                                    "192.168.1.1/16", "172.16.1.1/12"])
    assert len(record) == 1
    msg = str(record[0].message)
    assert msg.startswith("4 CIDRs had host bits set")
    assert 'prefixes[0] "10.1.2.3/8" -> "10.0.0.0/8"' in msg
    assert 'prefixes[2] "2001:db8::1/32" -> "2001:db8::/32"' in msg
    assert "(1 more)" in msg
    assert len(record[0].message.normalized) == 4
    assert record[0].filename == __file__
    ref_plen, ref_addr = cidr.lpm_keys([ip_network(s, strict=False) for s in
                                        ["10.1.2.3/8", "10.0.0.0/8", "2001:db8::1/32",
                                         "192.168.1.1/16", "172.16.1.1/12"]])
    assert (plen == ref_plen).all() and (addr == ref_addr).all()


def test_lpm_keys_strict():
    with pytest.raises(ValueError, match=r'^prefixes\[1\] "10\.1\.2\.3/8": host bits'):
        cidr.lpm_keys(["10.0.0.0/8", "10.1.2.3/8", "2001:db8::1/32"], strict=True)
    with pytest.raises(ValueError, match=r'^prefixes\[1\] "2001:db8::1/32": host bits'):
        cidr.lpm_keys(["10.0.0.0/8", "2001:db8::1/32", "10.1.2.3/8"], strict=True)


def test_lpm_keys_errors_in_input_order():
    with pytest.raises(ValueError, match=r'^prefixes\[1\] "bad": '):
        cidr.lpm_keys(["10.0.0.0/8", "bad", "2001:db8::/129", "10.0.0.0/33"])
    with pytest.raises(ValueError, match=r'^prefixes\[2\] "10\.0\.0\.0/33": prefix length 33 out of range'):
        cidr.lpm_keys(["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/33"])
    with pytest.raises(ValueError, match=r"^prefixes\[0\] None: "):
        cidr.lpm_keys([None])
    with pytest.raises(ValueError, match="expected a sequence"):
        cidr.lpm_keys("10.0.0.0/8")


V4_TEXT_CHUNKS = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["0", "00", "01", "010", "255", "256", "999", "0000", ""]),
)


@st.composite
def v4ish_text(draw):
    """Strings near the dotted-quad grammar, to hammer the vectorised parser."""
    if draw(st.booleans()):
        return draw(st.text(alphabet="0123456789./:", max_size=20))
    parts = [draw(V4_TEXT_CHUNKS) for _ in range(draw(st.integers(3, 5)))]
    text = ".".join(parts)
    if draw(st.booleans()):
        text += "/" + draw(st.one_of(st.integers(0, 40).map(str),
                                     st.sampled_from(["", "08", "00", "0", "032", "/8"])))
    return text


def _reference_key(text):
    """Expected lpm key via the exact (ipaddress-based) parser, or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = cidr.parse_cidr(text)
        except ValueError:
            return None
    plen, addr = cidr.lpm_keys([net])  # network objects bypass the fast path
    return int(plen[0]), bytes(addr[0])


@settings(max_examples=300, deadline=None)
@given(st.lists(v4ish_text(), min_size=1, max_size=8))
def test_lpm_keys_fast_path_matches_exact_parser(texts):
    refs = [_reference_key(t) for t in texts]
    for i, (t, ref) in enumerate(zip(texts, refs)):
        if ref is None:
            with pytest.raises(ValueError) as info:
                cidr.lpm_keys(["10.0.0.0/8", t])
            assert str(info.value).startswith(f"prefixes[1] {_quoted(t)}: ")
    valid = [t for t, r in zip(texts, refs) if r is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plen, addr = cidr.lpm_keys(valid)
    assert [(int(p), bytes(a)) for p, a in zip(plen, addr)] == [r for r in refs if r is not None]


def test_lpm_keys_bulk_ipv4_vectorised(monkeypatch):
    # Dotted quads must never reach the per-string ipaddress parser.
    def not_called(text):
        raise AssertionError(f"slow path used for {text!r}")

    monkeypatch.setattr(cidr, "_parse_text", not_called)
    rng = np.random.default_rng(1)
    n = 200_000
    ints = rng.integers(0, 2**32, size=n, dtype=np.uint64)
    plens = rng.integers(0, 33, size=n)
    plens[: n // 2] = 32  # bare addresses and /32s are the common case
    octs = [(ints >> np.uint64(s)) & np.uint64(0xFF) for s in (24, 16, 8, 0)]
    texts = [f"{a}.{b}.{c}.{d}/{p}" if i % 3 else f"{a}.{b}.{c}.{d}"
             for i, (a, b, c, d, p) in enumerate(zip(*(o.tolist() for o in octs), plens.tolist()))]
    exp_plen = np.where(np.arange(n) % 3 == 0, 32, plens)
    with pytest.warns(CIDRNormalizedWarning) as record:
        plen, addr = cidr.lpm_keys(texts)
    assert len(record) == 1
    assert (plen == exp_plen + 96).all()
    mask = (np.uint64(0xFFFFFFFF) << (32 - exp_plen).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    net = ints & mask
    assert (addr[:, :10] == 0).all() and (addr[:, 10:12] == 0xFF).all()
    for k, s in enumerate((24, 16, 8, 0)):
        assert (addr[:, 12 + k] == ((net >> np.uint64(s)) & np.uint64(0xFF))).all()
    monkeypatch.undo()
    # Spot-check against ipaddress directly.
    for i in rng.integers(0, n, size=500).tolist():
        assert cidr.from_lpm_key(int(plen[i]), addr[i]) == ip_network(texts[i], strict=False)


@st.composite
def any_network(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    net_cls = IPv4Network if version == 4 else IPv6Network
    return net_cls((draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, bits))), strict=False)


def _expected_roundtrip(net):
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(ip_network("::ffff:0:0/96")):
        return ip_network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


@PROP
@given(st.lists(any_network(), max_size=20))
def test_lpm_roundtrip(nets):
    plen, addr = cidr.lpm_keys(nets)
    plen_s, addr_s = cidr.lpm_keys([str(n) for n in nets])
    assert (plen == plen_s).all() and (addr == addr_s).all()
    for n, p, a in zip(nets, plen, addr):
        assert cidr.from_lpm_key(p, a) == _expected_roundtrip(n)
        assert cidr.from_lpm_key(int(p), bytes(a)) == _expected_roundtrip(n)


def test_from_lpm_key_mapped_boundaries():
    mapped = cidr.unified_addr("0.0.0.0")
    assert cidr.from_lpm_key(96, mapped) == ip_network("0.0.0.0/0")
    assert cidr.from_lpm_key(95, bytes(10) + b"\xff\xfe" + bytes(4)) == ip_network("::fffe:0:0/95")
    assert cidr.from_lpm_key(0, bytes(16)) == ip_network("::/0")
    assert cidr.from_lpm_key(128, cidr.unified_addr("::1")) == ip_network("::1/128")


def test_from_lpm_key_host_bits():
    key = cidr.unified_addr("10.1.2.3")
    with pytest.warns(CIDRNormalizedWarning, match=r'"10\.0\.0\.0/8"'):
        assert cidr.from_lpm_key(104, key) == ip_network("10.0.0.0/8")
    with pytest.raises(ValueError, match="host bits"):
        cidr.from_lpm_key(104, key, strict=True)


@pytest.mark.parametrize("plen, addr, match", [
    (129, bytes(16), "out of range"),
    (-1, bytes(16), "out of range"),
    (1.5, bytes(16), "out of range"),
    ("x", bytes(16), "not an integer"),
    (8, bytes(15), "16 bytes"),
])
def test_from_lpm_key_errors(plen, addr, match):
    with pytest.raises(ValueError, match=match):
        cidr.from_lpm_key(plen, addr)


# ---------------------------------------------------------------------------
# longest_prefix_match
# ---------------------------------------------------------------------------

def test_lpm_basic():
    table = {"10.0.0.0/8": "a", "10.1.0.0/16": "b", ip_network("10.1.2.0/24"): "c",
             "2001:db8::/32": "d"}
    assert cidr.longest_prefix_match(table, "10.1.2.3") == "c"
    assert cidr.longest_prefix_match(table, "10.1.3.3") == "b"
    assert cidr.longest_prefix_match(table, ip_address("10.200.0.1")) == "a"
    assert cidr.longest_prefix_match(table, "11.0.0.1") is None
    assert cidr.longest_prefix_match(table, "2001:db8::1") == "d"
    assert cidr.longest_prefix_match(table, "2001:db9::1") is None
    assert cidr.longest_prefix_match(table, cidr.unified_addr("10.1.2.3")) == "c"
    assert cidr.longest_prefix_match({}, "10.0.0.1") is None


def test_lpm_value_none_and_falsy():
    assert cidr.longest_prefix_match({"0.0.0.0/0": 0, "10.0.0.0/8": None}, "10.0.0.1") is None
    assert cidr.longest_prefix_match({"0.0.0.0/0": 0}, "10.0.0.1") == 0


def test_lpm_unified_space_semantics():
    # Documented trie behaviour: a short IPv6 prefix also covers IPv4.
    assert cidr.longest_prefix_match({"::/0": "v6-any"}, "10.0.0.1") == "v6-any"
    assert cidr.longest_prefix_match({"::/0": "v6", "0.0.0.0/0": "v4"}, "10.0.0.1") == "v4"
    assert cidr.longest_prefix_match({"0.0.0.0/0": "v4"}, "2001:db8::1") is None


def test_lpm_colliding_keys():
    with pytest.raises(ValueError, match=r'"10\.0\.0\.0/8" and "::ffff:a00:0/104"'):
        cidr.longest_prefix_match({"10.0.0.0/8": 1, "::ffff:a00:0/104": 2}, "10.0.0.1")
    with pytest.raises(ValueError, match="same LPM key"):
        cidr.longest_prefix_match({"10.0.0.0/8": 1, ip_network("10.0.0.0/8"): 2}, "10.0.0.1")


def test_lpm_errors():
    with pytest.raises(ValueError, match=r'^prefix "bad": '):
        cidr.longest_prefix_match({"bad": 1}, "10.0.0.1")
    with pytest.raises(ValueError, match=r'^address "10\.0\.0\.256": '):
        cidr.longest_prefix_match({"10.0.0.0/8": 1}, "10.0.0.256")


@st.composite
def lpm_case(draw):
    nets = draw(st.lists(any_network(), max_size=15))
    # Derive related prefixes so nesting (the interesting case) is common.
    for n in list(nets):
        if n.prefixlen < n.max_prefixlen and draw(st.booleans()):
            nets.append(next(n.subnets(prefixlen_diff=draw(
                st.integers(1, min(8, n.max_prefixlen - n.prefixlen))))))
        if n.prefixlen > 0 and draw(st.booleans()):
            nets.append(n.supernet(prefixlen_diff=draw(st.integers(1, min(8, n.prefixlen)))))
    table, seen = {}, set()
    for i, n in enumerate(nets):
        key = cidr.lpm_keys([n])
        key = (int(key[0][0]), bytes(key[1][0]))
        if key not in seen:  # the trie can hold only one entry per key
            seen.add(key)
            table[str(n) if i % 2 else n] = i
    if nets and draw(st.booleans()):
        target = draw(st.sampled_from(nets))
        off = draw(st.integers(0, target.num_addresses - 1))
        ip = target.network_address + off
    else:
        if draw(st.booleans()):
            ip = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        else:
            ip = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
    return table, ip


def _brute_lpm(table, ip):
    target = ipaddress.IPv6Address(cidr.unified_addr(ip))
    best = None
    for key, value in table.items():
        net = ip_network(key) if isinstance(key, str) else key
        if net.version == 4:
            net = IPv6Network(f"::ffff:{net.network_address}/{net.prefixlen + 96}")
        if target in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, value)
    return None if best is None else best[1]


@PROP
@given(lpm_case())
def test_lpm_vs_brute_force(case):
    table, ip = case
    assert cidr.longest_prefix_match(table, ip) == _brute_lpm(table, ip)
    assert cidr.longest_prefix_match(table, str(ip)) == _brute_lpm(table, ip)
