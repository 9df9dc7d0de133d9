# SPDX-License-Identifier: MIT OR Apache-2.0
"""Shared fixtures and the tier rules.

Tiers (markers): pure (no root, no kernel), kernel (root, real bpf(), a
private bpffs and namespaces the test creates), e2e (a simulator cluster).
A kernel-tier test on a machine without root is skipped with the reason —
except when MESHCNI_REQUIRE_KERNEL=1 (CI sets it), where it fails: CI must
never pass by skipping the real tests.
"""
import os
import subprocess
import tempfile
import uuid

import pytest

REQUIRE_KERNEL = os.environ.get("MESHCNI_REQUIRE_KERNEL") == "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in ("pure", "kernel", "e2e")}
        if not tiers:
            raise pytest.UsageError(f"{item.nodeid}: every test needs a tier marker (pure/kernel/e2e)")


def pytest_runtest_setup(item):
    if any(m.name in ("kernel", "e2e") for m in item.iter_markers()) and os.geteuid() != 0:
        msg = "needs root for bpf(), bpffs and network namespaces"
        if REQUIRE_KERNEL:
            pytest.fail(msg + " (MESHCNI_REQUIRE_KERNEL=1)")
        pytest.skip(msg)


@pytest.fixture
def bpffs():
    """A private bpffs mount, unmounted (with everything pinned) afterwards."""
    path = tempfile.mkdtemp(prefix="meshcni-bpffs-")
    subprocess.run(["mount", "-t", "bpf", "bpf", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
        os.rmdir(path)


@pytest.fixture
def pin_root(bpffs):
    """A meshcni pin root inside the private bpffs."""
    return os.path.join(bpffs, "meshcni")


@pytest.fixture
def netns():
    """Factory for network namespaces, all deleted afterwards."""
    made = []

    def make(prefix="mctest"):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)
