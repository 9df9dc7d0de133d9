# SPDX-License-Identifier: MIT OR Apache-2.0
"""Shared fixtures and the tier rules.

Tiers (markers): pure (no root, no kernel), kernel (root, real bpf(), a
private bpffs and namespaces the test creates), e2e (a simulator cluster).
A kernel-tier test on a machine without root is skipped with the reason —
except when MESHCNI_REQUIRE_KERNEL=1 (CI sets it), where it fails: CI must
never pass by skipping the real tests.
"""
import contextlib
import os

import pytest

import noext

# MESHCNI_NO_EXTENSION=1: meshcni's compiled modules are refused from here on, as if never built
# (tests/noext.py); kernel and e2e tests and tests marked `extension` are skipped, everything else
# must pass without them
NO_EXTENSION = noext.enabled()
if NO_EXTENSION:
    noext.install()

from meshcni.sandbox import netns as make_netns
from meshcni.sandbox import private_bpffs, private_cgroup2_child

REQUIRE_KERNEL = os.environ.get("MESHCNI_REQUIRE_KERNEL") == "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in ("pure", "kernel", "e2e")}
        if not tiers:
            raise pytest.UsageError(f"{item.nodeid}: every test needs a tier marker (pure/kernel/e2e)")


def pytest_runtest_setup(item):
    if NO_EXTENSION and any(m.name in ("kernel", "e2e", "extension") for m in item.iter_markers()):
        pytest.skip(f"needs the compiled extension ({noext.ENV}=1)")
    if any(m.name in ("kernel", "e2e") for m in item.iter_markers()) and os.geteuid() != 0:
        msg = "needs root for bpf(), bpffs and network namespaces"
        if REQUIRE_KERNEL:
            pytest.fail(msg + " (MESHCNI_REQUIRE_KERNEL=1)")
        pytest.skip(msg)


@pytest.fixture
def bpffs():
    """A private bpffs mount, unmounted (with everything pinned) afterwards."""
    with private_bpffs() as path:
        yield path


@pytest.fixture
def pin_root(bpffs):
    """A meshcni pin root inside the private bpffs."""
    return os.path.join(bpffs, "meshcni")


@pytest.fixture
def netns():
    """Factory for network namespaces (lo down), all deleted afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda prefix="mctest": stack.enter_context(make_netns(prefix, lo_up=False))


@pytest.fixture
def cgroup2_child():
    """A child of a private cgroup2 mount, removed afterwards."""
    with private_cgroup2_child("meshcni-test-") as child:
        yield child
