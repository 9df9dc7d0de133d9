# SPDX-License-Identifier: MIT OR Apache-2.0
"""Fixtures for the map-churn benchmarks.

The benchmarks live outside ``tests/`` (the repo's ``testpaths``), so a plain
``pytest`` never collects them; they run only when selected explicitly::

    python -m pytest benchmarks/ --benchmark-json benchmarks/out/map_churn.json

The rootdir stays /work/main (its pyproject holds the pytest config, with
``--strict-markers``), so only the registered markers are used: the
benchmark module marks everything ``kernel`` (needs root and a real bpf()).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent
C_SRC = BENCH_DIR / "c_ref" / "mapbench.c"
BIN_DIR = BENCH_DIR / "bin"  # gitignored
MAPBENCH = BIN_DIR / "mapbench"

_SESSION_START = time.monotonic()


def pytest_configure(config):
    # pytest-benchmark writes --benchmark-json only at the very end; make sure
    # the directory exists so a long run is not lost to a missing benchmarks/out/
    path = config.getoption("benchmark_json", default=None)
    path = getattr(path, "name", path)  # pytest-benchmark >= 5 hands an open file
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record the run's wall time and machine alongside pytest-benchmark's data."""
    output_json["meshcni"] = {
        "session_seconds": time.monotonic() - _SESSION_START,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "sizes": os.environ.get("MESHCNI_BENCH_SIZES", ""),
    }


@pytest.fixture(scope="session")
def mapbench_bin() -> Path:
    """Compile the C reference (benchmarks/c_ref/mapbench.c) into benchmarks/bin/.

    Rebuilt on every session (it takes well under a second) so a stale binary
    is never measured. A build failure fails the benchmark with gcc's output.
    """
    cc = shutil.which("gcc")
    if cc is None:
        pytest.fail("gcc not found: cannot build the C reference benchmarks/c_ref/mapbench.c")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = MAPBENCH.with_suffix(".tmp")
    cmd = [cc, "-Wall", "-O2", "-o", str(tmp), str(C_SRC), "-lbpf"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the C reference failed ({' '.join(cmd)}):\n{proc.stderr}{proc.stdout}",
                    pytrace=False)
    os.replace(tmp, MAPBENCH)
    return MAPBENCH


@pytest.fixture(scope="session")
def bpf_ready():
    """bpf() is usable: root, and the kernel creates a map.

    Mounts nothing: the benchmark maps are unpinned, so no bpffs is needed.
    """
    if os.geteuid() != 0:
        pytest.skip("map benchmarks need root (CAP_BPF)")
    import numpy as np
    from meshcni.bpf import BpfMap
    from meshcni.layout import MapSpec

    m = BpfMap.create(MapSpec("bench_probe", 1, 8, 8, 16), key_dtype=np.uint64, value_dtype=np.uint64)
    m.close()
    return True
