# SPDX-License-Identifier: MIT OR Apache-2.0
"""`meshcni cni install`: standalone and chained configs, idempotent, reversible."""
import json
import os
import subprocess
import sys

import pytest

from meshcni.cni.install import InstallError, install, uninstall

pytestmark = pytest.mark.pure

KINDNET = {"cniVersion": "0.4.0", "name": "kindnet", "plugins": [
    {"type": "ptp", "ipMasq": False, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def read(p):
    with open(p) as f:
        return json.load(f)


def test_standalone_writes_its_conflist_and_a_runnable_launcher(tmp_path):
    b, c = tmp_path / "bin", tmp_path / "net.d"
    done = install(str(b), str(c), subnets=["10.244.1.0/24"], datapath="required")
    assert done["plugin"]["changed"] and done["config"]["changed"]
    conf = read(done["config"]["path"])
    assert conf["cniVersion"] == "1.1.0" and conf["plugins"][0]["type"] == "meshcni-cni"
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    exe = b / "meshcni-cni"
    assert os.access(exe, os.X_OK)
    p = subprocess.run([str(exe)], input=b'{"cniVersion":"1.0.0"}', env={"CNI_COMMAND": "VERSION"},
                       capture_output=True)
    assert p.returncode == 0 and json.loads(p.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    again = install(str(b), str(c), subnets=["10.244.1.0/24"], datapath="required")
    assert not again["plugin"]["changed"] and not again["config"]["changed"]


def test_chained_appends_to_the_first_conflist_once(tmp_path):
    b, c = tmp_path / "bin", tmp_path / "net.d"
    c.mkdir()
    (c / "10-kindnet.conflist").write_text(json.dumps(KINDNET))
    (c / "99-other.conflist").write_text(json.dumps(dict(KINDNET, name="other")))
    done = install(str(b), str(c), chained=True)
    assert done["config"]["path"].endswith("10-kindnet.conflist")
    assert done["config"]["chainedAfter"] == ["ptp", "portmap"]
    types = [p["type"] for p in read(c / "10-kindnet.conflist")["plugins"]]
    assert types == ["ptp", "portmap", "meshcni-cni"]
    install(str(b), str(c), chained=True, datapath="required")
    plugins = read(c / "10-kindnet.conflist")["plugins"]
    assert [p["type"] for p in plugins] == ["ptp", "portmap", "meshcni-cni"]
    assert plugins[-1]["datapath"] == "required"
    assert "meshcni-cni" not in json.dumps(read(c / "99-other.conflist"))
    uninstall(str(b), str(c))
    assert read(c / "10-kindnet.conflist") == KINDNET and not (b / "meshcni-cni").exists()


def test_chained_turns_a_single_conf_into_a_list_and_back(tmp_path):
    b, c = tmp_path / "bin", tmp_path / "net.d"
    c.mkdir()
    single = {"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp",
              "ipam": {"type": "host-local", "subnet": "10.5.0.0/24"}}
    (c / "10-ptp.conf").write_text(json.dumps(single))
    install(str(b), str(c), chained=True)
    conf = read(c / "10-ptp.conflist")
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "meshcni-cni"] and conf["name"] == "ptpnet"
    assert not (c / "10-ptp.conf").exists()  # else a runtime would still pick the old one first
    uninstall(str(b), str(c))
    assert read(c / "10-ptp.conf") == single and not (c / "10-ptp.conflist").exists()


@pytest.mark.parametrize("kw,needle", [
    ({}, "needs at least one --subnet"),
    ({"chained": True}, "no CNI config"),
    ({"chained": True, "subnets": ["10.0.0.0/24"]}, "takes no --subnet"),
])
def test_install_refuses_what_cannot_work(tmp_path, kw, needle):
    with pytest.raises(InstallError, match=needle):
        install(str(tmp_path / "bin"), str(tmp_path / "net.d"), **kw)


def test_cli_install_help_and_error_exit(tmp_path):
    out = subprocess.run([sys.executable, "-m", "meshcni.cli", "cni", "install", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--chained" in out.stdout and "--subnet" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "meshcni.cli", "cni", "install", "--bin-dir", str(tmp_path / "b"),
                          "--conf-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert bad.returncode == 1 and "needs at least one --subnet" in bad.stderr


def test_shim_install_is_idempotent_and_reversible(tmp_path):
    from meshcni.cni.install import shim_binary
    shim = shim_binary()
    if shim is None:
        pytest.skip("shim not built (run scripts/setup-machine.sh)")
    b, c = tmp_path / "bin", tmp_path / "net.d"
    done = install(str(b), str(c), subnets=["10.244.1.0/24"], shim=True, agent_socket="/run/x.sock")
    assert done["plugin"]["shim"] and done["plugin"]["changed"] and done["fallback"]["changed"]
    assert (b / "meshcni-cni").read_bytes() == open(shim, "rb").read()
    assert os.access(b / "meshcni-cni", os.X_OK) and os.access(b / "meshcni-cni-py", os.X_OK)
    assert (b / "meshcni-cni-py").read_text().startswith("#!")
    again = install(str(b), str(c), subnets=["10.244.1.0/24"], shim=True, agent_socket="/run/x.sock")
    assert not again["plugin"]["changed"] and not again["fallback"]["changed"] and not again["config"]["changed"]
    # back to the Python plugin: the fallback goes, meshcni-cni is the launcher again
    install(str(b), str(c), subnets=["10.244.1.0/24"], agent_socket="/run/x.sock")
    assert not (b / "meshcni-cni-py").exists() and (b / "meshcni-cni").read_text().startswith("#!")
    install(str(b), str(c), subnets=["10.244.1.0/24"], shim=True, agent_socket="/run/x.sock")
    gone = uninstall(str(b), str(c))
    assert {"meshcni-cni", "meshcni-cni-py"} <= {os.path.basename(p) for p in gone["removed"]}
    assert not os.listdir(b)


def test_shim_install_without_a_built_shim_is_a_clear_error(tmp_path):
    with pytest.raises(InstallError, match="shim"):
        install(str(tmp_path / "bin"), str(tmp_path / "net.d"), subnets=["10.244.1.0/24"], shim=True,
                shim_path=str(tmp_path / "missing"))
    assert not (tmp_path / "bin" / "meshcni-cni").exists()
