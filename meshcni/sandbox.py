# SPDX-License-Identifier: MIT OR Apache-2.0
"""Private kernel playgrounds: a bpffs, a cgroup v2 child, a network namespace.

Each is a context manager that removes what it made, also when the body
raises. The tests, the benchmarks and (later) the simulator use these so that
nothing is pinned in /sys/fs/bpf, nothing is attached to the machine's root
cgroup, and no namespace outlives its user.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from typing import Iterator


def _run(*cmd: str) -> None:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip() or f'exit {p.returncode}'}")


@contextlib.contextmanager
def private_bpffs(prefix: str = "meshcni-bpffs-") -> Iterator[str]:
    """A fresh bpffs mounted on a temporary directory; yields the mount point."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        _run("mount", "-t", "bpf", "bpf", path)
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", path], check=False)
    finally:
        os.rmdir(path)


@contextlib.contextmanager
def private_cgroup2_child(prefix: str = "meshcni-") -> Iterator[str]:
    """A new child directory of a private cgroup2 mount; yields its path.

    Programs attached there apply only to processes moved into it (write a
    pid to ``<child>/cgroup.procs``), never to the machine's root cgroup.
    The child is removed on exit, so its processes must have ended by then.
    """
    mnt = tempfile.mkdtemp(prefix=prefix + "cg2-")
    try:
        _run("mount", "-t", "cgroup2", "none", mnt)
        try:
            child = os.path.join(mnt, f"{prefix}{uuid.uuid4().hex[:8]}")
            os.mkdir(child)
            try:
                yield child
            finally:
                os.rmdir(child)
        finally:
            subprocess.run(["umount", mnt], check=False)
    finally:
        os.rmdir(mnt)


@contextlib.contextmanager
def netns(prefix: str = "meshcni", lo_up: bool = True) -> Iterator[str]:
    """A new named network namespace (``ip netns``); yields its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _run("ip", "netns", "add", name)
    try:
        if lo_up:
            _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
