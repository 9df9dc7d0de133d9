# SPDX-License-Identifier: MIT OR Apache-2.0
"""The compiled diff behind reconcile, against a dict-based oracle."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import noext

noext.require_extension("it tests the Cython module meshcni._fastmap")

from meshcni import _fastmap  # noqa: E402

pytestmark = pytest.mark.pure


def rows(ints, width):
    a = np.array(ints, dtype=">u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(a[:, 8 - width:]) if len(ints) else np.zeros((0, width), np.uint8)


def oracle(cur, want):
    add = [k for k in want if k not in cur]
    change = [k for k in want if k in cur and cur[k] != want[k]]
    delete = [k for k in cur if k not in want]
    same = sum(1 for k in want if k in cur and cur[k] == want[k])
    return sorted(add), sorted(change), sorted(delete), same


def run(cur, want, cur_order=None, want_order=None):
    ck = list(cur) if cur_order is None else cur_order
    wk = list(want) if want_order is None else want_order
    a, c, d, same = _fastmap.diff(rows(ck, 4), rows([cur[k] for k in ck], 2),
                                  rows(wk, 4), rows([want[k] for k in wk], 2))
    return sorted(wk[i] for i in a), sorted(wk[i] for i in c), sorted(ck[i] for i in d), same


keys = st.integers(0, 2**32 - 1)
vals = st.integers(0, 2**16 - 1)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, vals, max_size=60), st.dictionaries(keys, vals, max_size=60), st.randoms())
def test_diff_matches_oracle_in_any_order(cur, want, rnd):
    ck, wk = list(cur), list(want)
    rnd.shuffle(ck)
    rnd.shuffle(wk)
    assert run(cur, want, ck, wk) == oracle(cur, want)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, vals, min_size=1, max_size=80), st.data())
def test_diff_of_an_edited_copy_in_stable_order(cur, data):
    # the reconcile(cache=True) shape: the same order, a few edits anywhere
    order = list(cur)
    want = dict(cur)
    for k in data.draw(st.lists(st.sampled_from(order), max_size=5)):
        want.pop(k, None)
    for k in data.draw(st.lists(st.sampled_from(order), max_size=5)):
        if k in want:
            want[k] = (want[k] + 1) % 2**16
    extra = data.draw(st.dictionaries(keys, vals, max_size=5))
    pos = data.draw(st.integers(0, len(order)))
    want_order = [k for k in order[:pos] if k in want] + [k for k in extra if k not in cur] + \
        [k for k in order[pos:] if k in want]
    for k in extra:
        if k not in cur:
            want[k] = extra[k]
    assert run(cur, want, order, want_order) == oracle(cur, want)


def test_repeated_wanted_key_is_refused_with_rows():
    for want in ([1, 2, 3, 2], [1, 9, 2, 3, 9], [5, 5]):
        with pytest.raises(ValueError, match="repeat a key"):
            _fastmap.diff(rows([1, 2, 3], 4), rows([0, 0, 0], 2), rows(want, 4), rows([0] * len(want), 2))
    # a repeat of an aligned row inside the changed middle
    with pytest.raises(ValueError, match="rows 0 and 2"):
        _fastmap.diff(rows([1, 2, 3], 4), rows([0, 0, 0], 2), rows([1, 7, 1, 3], 4), rows([0] * 4, 2))


def test_duplicate_keys():
    assert _fastmap.duplicate_keys(rows([4, 5, 6], 4)) is None
    assert _fastmap.duplicate_keys(rows([4, 5, 4], 4)) == (0, 2)


def test_empty_and_width_errors():
    e = np.zeros((0, 4), np.uint8)
    v = np.zeros((0, 2), np.uint8)
    a, c, d, same = _fastmap.diff(e, v, e, v)
    assert (len(a), len(c), len(d), same) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="key widths differ"):
        _fastmap.diff(rows([1], 4), rows([1], 2), rows([1], 3), rows([1], 2))
    with pytest.raises(TypeError, match="2-D uint8"):
        _fastmap.diff(np.zeros(3), v, e, v)
