# SPDX-License-Identifier: MIT OR Apache-2.0
"""Put the plugin on a node: a launcher in the CNI bin dir, a network config.

The plugin executable ``meshcni-cni`` is either the Python launcher (the whole
plugin runs in the exec'd interpreter) or, with ``shim=True``, the compiled
shim (``csrc/cni_shim.c``, built to ``meshcni/bin/meshcni-cni-shim``) that
hands every call to the agent's local API (``POST /v1/cni``) and falls back to
the Python launcher, installed beside it as ``meshcni-cni-py``, when the agent
cannot take the call.

Standalone writes ``05-meshcni.conflist`` (its own network). Chained appends
meshcni to the first config the runtime would pick (lexical order, as
containerd and CRI-O choose), as the upstream does on Kind after kindnet's
``ptp`` + ``host-local``; a single-plugin ``.conf`` becomes a ``.conflist``
(the old file is kept as ``*.meshcni-orig`` so uninstall can put it back).
Both are idempotent: installing twice changes nothing; every file is written
to a temporary name and renamed, so a runtime never reads half a config.
The agent (issue: control plane) calls :func:`install` with the node's podCIDR.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from .plugin import PLUGIN_TYPE

STANDALONE_FILE = "05-meshcni.conflist"
FALLBACK_NAME = "meshcni-cni-py"  # the Python launcher next to the shim (csrc/cni_shim.c execs it)
SHIM_BINARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin", "meshcni-cni-shim")
ORIG_SUFFIX = ".meshcni-orig"
CONF_VERSION = "1.1.0"


class InstallError(Exception):
    pass


def _atomic_write(path: str, data, mode: int = 0o644) -> bool:
    """Write (str or bytes) if different; True when the file changed."""
    binary = isinstance(data, bytes)
    try:
        with open(path, "rb" if binary else "r") as f:
            if f.read() == data:
                os.chmod(path, mode)
                return False
    except FileNotFoundError:
        pass
    except UnicodeDecodeError:  # a binary where the launcher goes (the shim before)
        pass
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".meshcni.")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def launcher(python: Optional[str] = None) -> str:
    """The plugin executable: this interpreter, importing only the plugin.

    -s keeps a user's ~/.local site out of a root process; the environment's
    own site-packages (a venv or the image's) stay on the path.
    """
    return (f"#!{python or sys.executable} -s\n"
            "# meshcni CNI plugin launcher, written by `meshcni cni install`\n"
            "import sys\n"
            "from meshcni.cni.plugin import main\n"
            "sys.exit(main())\n")


def shim_binary() -> Optional[str]:
    """The built shim (``meshcni/bin/meshcni-cni-shim``), or None when this build has none."""
    return SHIM_BINARY if os.access(SHIM_BINARY, os.X_OK) else None


def plugin_entry(*, datapath: str = "auto", bpf_root: Optional[str] = None, state_dir: Optional[str] = None,
                 agent_socket: Optional[str] = None, log_file: Optional[str] = None,
                 mtu: Optional[int] = None, subnets: Optional[List[str]] = None,
                 data_dir: Optional[str] = None) -> Dict[str, Any]:
    e: Dict[str, Any] = {"type": PLUGIN_TYPE, "datapath": datapath}
    for k, v in (("bpfRoot", bpf_root), ("stateDir", state_dir), ("agentSocket", agent_socket),
                 ("logFile", log_file), ("mtu", mtu)):
        if v is not None:
            e[k] = v
    if subnets:
        e["ipam"] = {"type": "meshcni", "ranges": [[{"subnet": s}] for s in subnets]}
        if data_dir:
            e["ipam"]["dataDir"] = data_dir
    return e


def _configs(conf_dir: str) -> List[str]:
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    return [os.path.join(conf_dir, n) for n in names
            if n.endswith((".conflist", ".conf", ".json")) and not n.startswith(".")]


def install(bin_dir: str, conf_dir: str, *, chained: bool = False, name: str = "meshcni",
            python: Optional[str] = None, shim: bool = False, shim_path: Optional[str] = None,
            fallback: bool = True, **entry_kw) -> Dict[str, Any]:
    """Install the plugin executable and the config; returns what was done (paths, changed flags).

    ``shim``: ``meshcni-cni`` is the compiled shim (``shim_path``, default the
    built one) and the Python launcher goes next to it as ``meshcni-cni-py``,
    its fallback; the shim needs ``agent_socket`` in the config to reach the
    agent (without it every call falls back). Otherwise ``meshcni-cni`` is
    the launcher and a fallback left by an earlier shim install is removed.

    ``fallback=False`` (with ``shim``): no launcher at all, and one left by
    an earlier install is removed. For a bin dir on another root than this
    process's, the case of an agent in a container writing to the node's
    /opt/cni/bin: the launcher's interpreter (``sys.executable``) exists in
    the image only, so on the node it could never run. The shim then answers
    by itself while the agent cannot take a call (csrc/cni_shim.c,
    answer_alone), and nothing on the node refers to the image's files.
    """
    done: Dict[str, Any] = {}
    exe = os.path.join(bin_dir, PLUGIN_TYPE)
    fallback_exe = os.path.join(bin_dir, FALLBACK_NAME)
    if not shim and not fallback:
        raise InstallError("the Python plugin is this interpreter's; without the shim and without a fallback "
                           "there would be no plugin (--no-cni-fallback needs --cni-shim)")
    if shim and not fallback:
        src = shim_path or shim_binary()
        if not src or not os.access(src, os.X_OK):
            raise InstallError(f"shim install: no built shim at {src or SHIM_BINARY} "
                               "(rebuild: pip install -e . / scripts/setup-machine.sh)")
        with open(src, "rb") as f:
            binary = f.read()
        done["plugin"] = {"path": exe, "changed": _atomic_write(exe, binary, 0o755), "shim": True}
        # the shim first, then the launcher goes: a shim always finds what it expects
        if os.path.lexists(fallback_exe):
            os.unlink(fallback_exe)
            done["plugin"]["changed"] = True
        done["fallback"] = None
    elif shim:
        src = shim_path or shim_binary()
        if not src or not os.access(src, os.X_OK):
            raise InstallError(f"shim install: no built shim at {src or SHIM_BINARY} "
                               "(rebuild: pip install -e . / scripts/setup-machine.sh)")
        with open(src, "rb") as f:
            binary = f.read()
        # the fallback first: a shim that is there always finds its launcher
        done["fallback"] = {"path": fallback_exe, "changed": _atomic_write(fallback_exe, launcher(python), 0o755)}
        done["plugin"] = {"path": exe, "changed": _atomic_write(exe, binary, 0o755), "shim": True}
    else:
        done["plugin"] = {"path": exe, "changed": _atomic_write(exe, launcher(python), 0o755), "shim": False}
        if os.path.exists(fallback_exe):
            os.unlink(fallback_exe)
            done["plugin"]["changed"] = True
    entry = plugin_entry(**entry_kw)
    if not chained:
        if "ipam" not in entry:
            raise InstallError("standalone install needs at least one --subnet (the node's pod CIDR)")
        path = os.path.join(conf_dir, STANDALONE_FILE)
        conf = {"cniVersion": CONF_VERSION, "name": name, "plugins": [entry]}
        done["config"] = {"path": path, "changed": _atomic_write(path, json.dumps(conf, indent=2) + "\n")}
        return done
    if "ipam" in entry:
        raise InstallError("chained install takes no --subnet: the previous plugin assigns addresses")
    existing = [p for p in _configs(conf_dir) if os.path.basename(p) != STANDALONE_FILE]
    if not existing:
        raise InstallError(f"chained install: no CNI config in {conf_dir} to chain after")
    first = existing[0]
    try:
        with open(first) as f:
            conf = json.load(f)
    except (OSError, ValueError) as e:
        raise InstallError(f"chained install: {first}: {e}") from None
    if not isinstance(conf, dict):
        raise InstallError(f"chained install: {first}: not a JSON object")
    target = first
    if "plugins" not in conf:  # a single-plugin .conf: make it a list
        single = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
        conf = {"cniVersion": conf.get("cniVersion", CONF_VERSION), "name": conf.get("name", name),
                "plugins": [single]}
        target = os.path.splitext(first)[0] + ".conflist"
    plugins = [p for p in conf["plugins"] if p.get("type") != PLUGIN_TYPE]
    plugins.append(entry)
    conf["plugins"] = plugins
    changed = _atomic_write(target, json.dumps(conf, indent=2) + "\n")
    if target != first:
        os.rename(first, first + ORIG_SUFFIX)
        changed = True
    done["config"] = {"path": target, "changed": changed, "chainedAfter": [p.get("type") for p in plugins[:-1]]}
    return done


def uninstall(bin_dir: str, conf_dir: str) -> Dict[str, Any]:
    """Remove the plugin (launcher or shim, and the shim's fallback) and meshcni's config or chain entry (idempotent)."""
    done: Dict[str, Any] = {"removed": [], "restored": []}
    for exe in (os.path.join(bin_dir, PLUGIN_TYPE), os.path.join(bin_dir, FALLBACK_NAME)):
        if os.path.exists(exe):
            os.unlink(exe)
            done["removed"].append(exe)
    for path in _configs(conf_dir):
        if os.path.basename(path) == STANDALONE_FILE:
            os.unlink(path)
            done["removed"].append(path)
            continue
        try:
            with open(path) as f:
                conf = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(conf, dict) and any(p.get("type") == PLUGIN_TYPE for p in conf.get("plugins", [])):
            orig = os.path.splitext(path)[0] + ".conf" + ORIG_SUFFIX
            if os.path.exists(orig):
                os.rename(orig, orig[: -len(ORIG_SUFFIX)])
                os.unlink(path)
                done["restored"].append(orig[: -len(ORIG_SUFFIX)])
            else:
                conf["plugins"] = [p for p in conf["plugins"] if p.get("type") != PLUGIN_TYPE]
                _atomic_write(path, json.dumps(conf, indent=2) + "\n")
                done["restored"].append(path)
    return done
