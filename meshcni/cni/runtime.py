# SPDX-License-Identifier: MIT OR Apache-2.0
"""The runtime side of CNI: execute a conflist's plugins as containerd does.

Used by the simulator's kubelet and by the tests, so the plugin is always
driven the way a real runtime drives it (libcni's rules):

- every plugin gets its own object from ``plugins`` plus the list's
  ``cniVersion`` and ``name``; ADD threads each result into the next
  plugin's ``prevResult``; the last result is cached per attachment and
  becomes ``prevResult`` of CHECK and DEL;
- DEL runs the plugins in reverse order; CHECK and GC skip lists that say
  ``disableCheck`` / ``disableGC``; STATUS stops at the first plugin that
  is not ready;
- environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
  CNI_ARGS, CNI_PATH; stdin the JSON config; stdout the result or error.

``node_netns`` runs the plugins inside that network namespace (the node of a
simulated cluster) through ``nsenter``.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple


class PluginError(Exception):
    """A plugin answered with the CNI error JSON (or crashed)."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "", stderr: str = ""):
        super().__init__(f"{plugin} {command}: error {code}: {msg}" + (f" ({details})" if details else ""))
        self.plugin, self.command, self.code, self.msg, self.details, self.stderr = \
            plugin, command, code, msg, details, stderr


@dataclass
class Attachment:
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: Optional[Dict[str, str]] = None

    def cni_args(self) -> str:
        # kubelet always leads with IgnoreUnknown=1, so plugins that know no
        # K8S_* keys (host-local) accept them
        args = {"IgnoreUnknown": "1", **(self.args or {})}
        return ";".join(f"{k}={v}" for k, v in args.items())


def load_conflist(path: str) -> Dict[str, Any]:
    with open(path) as f:
        conf = json.load(f)
    if "plugins" not in conf:  # a single .conf is a one-plugin list
        conf = {"cniVersion": conf.get("cniVersion"), "name": conf.get("name"),
                "plugins": [{k: v for k, v in conf.items() if k not in ("cniVersion", "name")}]}
    return conf


class Runtime:
    def __init__(self, conflist: Dict[str, Any], cni_path: Sequence[str], *,
                 cache_dir: Optional[str] = None, node_netns: Optional[str] = None,
                 extra_env: Optional[Dict[str, str]] = None, timeout: float = 60.0):
        self.conf = conflist
        self.cni_path = list(cni_path)
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="meshcni-cni-cache-")
        self.node_netns = node_netns
        self.extra_env = dict(extra_env or {})
        self.timeout = timeout

    # -- plumbing --

    def _find(self, typ: str) -> str:
        for d in self.cni_path:
            p = os.path.join(d, typ)
            if os.access(p, os.X_OK):
                return p
        raise PluginError(typ, "find", 0, f"plugin {typ!r} not found in {':'.join(self.cni_path)}")

    def exec_plugin(self, plugin: Dict[str, Any], command: str, att: Optional[Attachment],
                    prev: Optional[Dict[str, Any]] = None, extra: Optional[Dict[str, Any]] = None,
                    env_override: Optional[Dict[str, str]] = None) -> Optional[Dict[str, Any]]:
        conf = dict(plugin)
        conf["cniVersion"] = self.conf["cniVersion"]
        conf["name"] = self.conf["name"]
        if prev is not None:
            conf["prevResult"] = prev
        conf.update(extra or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(self.extra_env)
        env.update(CNI_COMMAND=command, CNI_PATH=":".join(self.cni_path))
        if att is not None:
            env.update(CNI_CONTAINERID=att.container_id, CNI_NETNS=att.netns, CNI_IFNAME=att.ifname,
                       CNI_ARGS=att.cni_args())
        env.update(env_override or {})
        exe = self._find(plugin["type"])
        argv = [exe] if not self.node_netns else ["nsenter", f"--net={self.node_netns}", "--", exe]
        p = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True,
                           timeout=self.timeout)
        out = p.stdout.decode(errors="replace").strip()
        err = p.stderr.decode(errors="replace")
        if p.returncode != 0:
            try:
                e = json.loads(out)
                raise PluginError(plugin["type"], command, int(e.get("code", 0)), e.get("msg", ""),
                                  e.get("details", ""), err)
            except (ValueError, AttributeError, TypeError):
                raise PluginError(plugin["type"], command, 0, f"exit {p.returncode}: {out or err}".strip(),
                                  stderr=err) from None
        if command == "ADD":
            try:
                return json.loads(out)
            except ValueError:
                raise PluginError(plugin["type"], command, 0, f"result is not JSON: {out[:200]}", stderr=err) from None
        if command == "VERSION":
            return json.loads(out)
        return None

    def _cache_path(self, att: Attachment) -> str:
        return os.path.join(self.cache_dir, f"{self.conf['name']}-{att.container_id}-{att.ifname}.json")

    def cached(self, att: Attachment) -> Optional[Dict[str, Any]]:
        try:
            with open(self._cache_path(att)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    # -- operations --

    def add(self, att: Attachment, env_override: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        prev = None
        for plugin in self.conf["plugins"]:
            prev = self.exec_plugin(plugin, "ADD", att, prev, env_override=env_override)
        os.makedirs(self.cache_dir, exist_ok=True)
        tmp = self._cache_path(att) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(prev, f)
        os.rename(tmp, self._cache_path(att))
        return prev

    def check(self, att: Attachment) -> None:
        if self.conf.get("disableCheck"):
            return
        prev = self.cached(att)
        if prev is None:
            raise PluginError("runtime", "CHECK", 0, f"no cached result for {att.container_id}/{att.ifname}")
        for plugin in self.conf["plugins"]:
            self.exec_plugin(plugin, "CHECK", att, prev)

    def delete(self, att: Attachment) -> None:
        prev = self.cached(att)
        for plugin in reversed(self.conf["plugins"]):
            self.exec_plugin(plugin, "DEL", att, prev)
        try:
            os.unlink(self._cache_path(att))
        except FileNotFoundError:
            pass

    def status(self) -> None:
        for plugin in self.conf["plugins"]:
            self.exec_plugin(plugin, "STATUS", None)

    def gc(self, valid: List[Tuple[str, str]]) -> None:
        if self.conf.get("disableGC"):
            return
        va = [{"containerID": c, "ifname": i} for c, i in valid]
        for plugin in self.conf["plugins"]:
            self.exec_plugin(plugin, "GC", None, extra={"cni.dev/valid-attachments": va})

    def version(self, plugin: Dict[str, Any]) -> Dict[str, Any]:
        return self.exec_plugin(plugin, "VERSION", None)
