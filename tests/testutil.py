# SPDX-License-Identifier: MIT OR Apache-2.0
"""Helpers shared by the test tiers (importable as ``testutil``: pytest puts tests/ on sys.path
through its conftest.py)."""
import os
import subprocess
import sys
import time


def eventually(pred, timeout: float, what: str = "condition", interval: float = 0.05):
    """Poll ``pred`` every ``interval`` seconds until it returns something true (returned), or fail
    after ``timeout`` seconds naming ``what`` and the last value seen."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def sim(root, *args, check: bool = True, env=None, timeout: float = 240):
    """``meshcni sim --state-root ROOT ARGS...`` as a user runs it; fails the test on a non-zero
    exit (with its output) unless ``check`` is false."""
    p = subprocess.run([sys.executable, "-m", "meshcni.cli", "sim", "--state-root", str(root), *args],
                       capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"sim {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def netpol_manifest(ns, name, pods=None, ingress=None, egress=None, types=None):
    """A NetworkPolicy manifest: ``pods`` the podSelector ({} when None); rules and policyTypes only
    where given (their absence means something of its own to the API)."""
    spec = {"podSelector": pods if pods is not None else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}
