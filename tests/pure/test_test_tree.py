# SPDX-License-Identifier: MIT OR Apache-2.0
"""The test tree itself: pytest imports test modules by basename (no packages under tests/), so two
tiers with a file of the same name fail collection of the whole run ('import file mismatch')."""
import collections
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique_across_tiers():
    seen = collections.defaultdict(list)
    for p in TESTS.rglob("*.py"):
        if p.name.startswith("test_") or p.name == "conftest.py":
            seen[p.name].append(str(p.relative_to(TESTS)))
    dup = {n: ps for n, ps in seen.items() if len(ps) > 1 and n != "conftest.py"}
    assert not dup, f"test modules with the same basename in several tiers: {dup}"
