# SPDX-License-Identifier: MIT OR Apache-2.0
"""The agent pod's mount-bpffs init container, its own rendered script, for real.

Run in a private mount namespace against a plain directory standing for the
node's /sys/fs/bpf: the first run mounts a bpffs there (and says so), a
second run sees it and leaves it alone. Nothing is mounted outside that
namespace; the directory is removed afterwards.
"""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pure"))


def test_mount_bpffs_mounts_once(tmp_path):
    helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the [test] extra)")
    from test_chart import one, render
    del helm
    docs, _ = render({})
    init = {c["name"]: c for c in one(docs, "DaemonSet", "meshcni-agent")["spec"]["template"]["spec"]["initContainers"]}
    c = init["mount-bpffs"]
    assert c["command"][:2] == ["sh", "-ec"] and c["securityContext"]["privileged"] is True
    assert c["volumeMounts"][0]["mountPropagation"] == "Bidirectional"  # the mount reaches the host
    target = tmp_path / "bpf"
    target.mkdir()
    script = c["command"][2].replace("/sys/fs/bpf", str(target))
    check = f'test "$(stat -f -c %T {target})" = bpf_fs'
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec",
                        f"! {check}\n{script}\n{check}\necho second\n{script}\n{check}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("mounted bpffs") == 1 and p.stdout.strip().endswith("second"), p.stdout
    # private: nothing left mounted here
    assert subprocess.run(["stat", "-f", "-c", "%T", str(target)], capture_output=True, text=True).stdout.strip() \
        != "bpf_fs"
