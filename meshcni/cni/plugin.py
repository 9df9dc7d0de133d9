# SPDX-License-Identifier: MIT OR Apache-2.0
"""The ``meshcni-cni`` executable: what a container runtime runs for every pod.

CNI 1.1.0 (0.4.0 and 1.0.0 accepted; results written in the version asked
for). Two modes, chosen per call:

- standalone (no ``prevResult`` on ADD): a veth into the pod, an address from
  the built-in host-local style IPAM (or a delegated IPAM plugin), a
  link-local next hop, the host route; then the datapath and the endpoint.
- chained (``prevResult`` on ADD, e.g. after ``ptp`` + ``host-local``): the
  interface exists already; attach the datapath to its host side, register
  the endpoint and pass the previous result on.

Network config fields of meshcni (besides cniVersion, name, type):
``mtu`` (1500), ``ipam`` (``type: meshcni`` or absent = built-in; any other
type is executed from CNI_PATH), ``datapath`` (``auto``: attach the tc
programs if the agent pinned them; ``required``: refuse ADD until it has;
``off``), ``bpfRoot`` (/sys/fs/bpf/meshcni), ``stateDir`` (/var/run/meshcni),
``agentSocket`` (when set the agent must answer, else ADD says try again
later), ``logFile`` (one line per call).

Test hook: ``MESHCNI_CNI_CRASH_AT=ipam|veth`` makes ADD exit abruptly at that
point, the way a killed plugin would, so the retry path is tested for real.

In-process use: the agent runs :func:`run` for the compiled shim
(``csrc/cni_shim.c`` -> ``POST /v1/cni``) in a thread of its local API, with
``agent=`` an object answering like :class:`endpoints.AgentClient` (so the
plugin does not call its own agent over HTTP). Nothing here touches
process-wide state: the environment is the ``environ`` argument, namespaces
are entered per thread and restored (``link.entered``), IPAM is serialised by
flock on a per-call descriptor; the crash hook is ignored in-process.
"""
from __future__ import annotations

import json
import re
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import endpoints, spec
from .spec import (CHECK_FAILED, DATAPATH_FAILURE, DECODE_FAILURE, INVALID_CONFIG, IO_FAILURE,
                   LIMITED_CONNECTIVITY, NOT_AVAILABLE, TRY_AGAIN_LATER, UNKNOWN_CONTAINER,
                   UNSUPPORTED_FIELD, CNIError)

if TYPE_CHECKING:  # imported where used: chained mode never needs the IPAM module
    from . import ipam

PLUGIN_TYPE = "meshcni-cni"
DEFAULT_BPF_ROOT = "/sys/fs/bpf/meshcni"
DATAPATH_MODES = ("auto", "required", "off")
BUILTIN_IPAM = ("", "meshcni")
VALID_ATTACHMENTS = "cni.dev/valid-attachments"


class NetConf:
    """The validated network config (a plain class: @dataclass costs ~0.5 ms per plugin run)."""

    def __init__(self, raw: Dict[str, Any], version: str, name: str) -> None:
        self.raw, self.version, self.name = raw, version, name
        self.mtu: int = 1500
        self.ipam: Optional[Dict[str, Any]] = None
        self.datapath: str = "auto"
        self.bpf_root: str = DEFAULT_BPF_ROOT
        self.state_dir: str = endpoints.DEFAULT_STATE_DIR
        self.agent_socket: Optional[str] = None
        self.log_file: Optional[str] = None
        self.prev_result: Optional[Dict[str, Any]] = None
        self.valid_attachments: Optional[List[Tuple[str, str]]] = None
        self.extra: Dict[str, Any] = {}

    @property
    def builtin_ipam(self) -> bool:
        return self.ipam is not None and self.ipam.get("type", "") in BUILTIN_IPAM


_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")


def parse_conf(raw: Any, command: str) -> NetConf:
    """Validate the network config the runtime sent (errors name the field)."""
    if not isinstance(raw, dict):
        raise CNIError(DECODE_FAILURE, "network config: must be a JSON object")
    version = spec.check_version(raw.get("cniVersion"), command)
    name = raw.get("name")
    if command != "VERSION" and (not isinstance(name, str) or not name):
        raise CNIError(INVALID_CONFIG, "network config: name is required")
    if command != "VERSION" and not _NETWORK_NAME.match(name):
        # libcni's rule; the name also names the IPAM store's directory
        raise CNIError(INVALID_CONFIG, f"network config: name {name[:100]!r} must be alphanumeric with _ . - "
                       "(and start alphanumeric)")
    c = NetConf(raw=raw, version=version, name=name or "")
    mtu = raw.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        raise CNIError(INVALID_CONFIG, f"network config: mtu {mtu!r} must be an integer in 68..65535")
    c.mtu = mtu
    if raw.get("ipMasq"):
        raise CNIError(UNSUPPORTED_FIELD, "network config: ipMasq is not supported: meshcni does not "
                       "masquerade pod traffic (pod IPs are routed)")
    dp = raw.get("datapath", "auto")
    if dp not in DATAPATH_MODES:
        raise CNIError(INVALID_CONFIG, f"network config: datapath {dp!r} must be one of {', '.join(DATAPATH_MODES)}")
    c.datapath = dp
    for key, attr in (("bpfRoot", "bpf_root"), ("stateDir", "state_dir"), ("agentSocket", "agent_socket"),
                      ("logFile", "log_file")):
        if key in raw and raw[key] is not None:
            v = raw[key]
            if not isinstance(v, str) or not os.path.isabs(v):
                raise CNIError(INVALID_CONFIG, f"network config: {key} {v!r} must be an absolute path")
            setattr(c, attr, v)
    if "ipam" in raw:
        if not isinstance(raw["ipam"], dict):
            raise CNIError(INVALID_CONFIG, "network config: ipam must be an object")
        typ = raw["ipam"].get("type")
        if typ is not None and not isinstance(typ, str):
            raise CNIError(INVALID_CONFIG, "network config: ipam.type must be a string")
        if typ is not None and ("/" in typ or typ in ("", ".", "..")):
            # a plugin is a file name looked up in CNI_PATH; a path would run whatever it reaches
            raise CNIError(INVALID_CONFIG, f"network config: ipam.type {typ!r} must be a plugin name, not a path")
        c.ipam = raw["ipam"]
    if raw.get("prevResult") is not None:
        c.prev_result = spec.parse_result(raw["prevResult"])
    va = raw.get(VALID_ATTACHMENTS)
    if va is not None:
        if not isinstance(va, list):
            raise CNIError(INVALID_CONFIG, f"network config: {VALID_ATTACHMENTS} must be a list")
        c.valid_attachments = []
        for i, a in enumerate(va):
            if not isinstance(a, dict) or not isinstance(a.get("containerID"), str) \
                    or not isinstance(a.get("ifname"), str):
                raise CNIError(INVALID_CONFIG, f"network config: {VALID_ATTACHMENTS}[{i}] needs containerID and ifname")
            c.valid_attachments.append((a["containerID"], a["ifname"]))
    return c


# ---- the plugin -------------------------------------------------------------

class Plugin:
    def __init__(self, conf: NetConf, env: Dict[str, Any], environ=None, agent=None):
        self.conf, self.env = conf, env
        self.environ = dict(os.environ if environ is None else environ)
        self._in_process = agent  # the agent itself, when run inside it

    # -- helpers --

    def _ipam_config(self) -> ipam.IPAMConfig:
        from . import ipam  # only built-in IPAM needs it: chained calls skip its imports (~7 ms)
        return ipam.parse_config(self.conf.ipam, ipam.DEFAULT_DATA_DIR)

    def _store(self, cfg: ipam.IPAMConfig) -> ipam.Store:
        from . import ipam
        return ipam.Store(cfg.data_dir, self.conf.name)

    def _datapath_wanted(self) -> bool:
        if self.conf.datapath == "off":
            return False
        from ..datapath import tcpins
        if tcpins.present(self.conf.bpf_root):
            return True
        if self.conf.datapath == "required":
            raise CNIError(TRY_AGAIN_LATER, f"meshcni datapath is not loaded on this node (no programs pinned "
                           f"under {self.conf.bpf_root}/progs): start the meshcni agent")
        return False

    def _agent(self) -> Optional[endpoints.AgentClient]:
        if self._in_process is not None:
            return self._in_process
        return endpoints.AgentClient(self.conf.agent_socket) if self.conf.agent_socket else None

    def _crash_at(self, point: str) -> None:
        if self._in_process is None and self.environ.get("MESHCNI_CNI_CRASH_AT") == point:
            os._exit(99)

    def _delegate(self, command: str, conf_raw: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Run the IPAM plugin named by ipam.type from CNI_PATH, as the spec describes."""
        typ = self.conf.ipam["type"]
        exe = next((os.path.join(d, typ) for d in self.env["path"] if os.access(os.path.join(d, typ), os.X_OK)), None)
        if exe is None:
            raise CNIError(INVALID_CONFIG, f"ipam.type {typ!r}: no such plugin in CNI_PATH "
                           f"({':'.join(self.env['path']) or 'empty'})")
        import subprocess
        env = dict(self.environ, CNI_COMMAND=command)
        p = subprocess.run([exe], input=json.dumps(conf_raw).encode(), env=env, capture_output=True)
        out = p.stdout.decode(errors="replace").strip()
        if p.returncode != 0:
            try:
                err = json.loads(out)
                raise CNIError(int(err.get("code", IO_FAILURE)), f"ipam {typ}: {err.get('msg', '')}",
                               err.get("details", ""))
            except (ValueError, AttributeError):
                raise CNIError(IO_FAILURE, f"ipam {typ} exited {p.returncode}: "
                               f"{(out or p.stderr.decode(errors='replace')).strip()[:300]}") from None
        if command == "ADD":
            return spec.parse_result(json.loads(out), f"ipam {typ} result")
        return None

    def _record(self, mode: str, host_if: str, host_index: int, ips: List[str], **more) -> Dict[str, Any]:
        a = self.env["args"]
        rec = {
            "containerID": self.env["container_id"], "ifname": self.env["ifname"],
            "netns": self.env["netns"], "mode": mode, "network": self.conf.name,
            "hostIfname": host_if, "hostIfindex": host_index, "ips": ips,
            "podNamespace": a.get("K8S_POD_NAMESPACE", ""), "podName": a.get("K8S_POD_NAME", ""),
            "podUID": a.get("K8S_POD_UID", ""), "created": round(time.time(), 3),
        }
        rec.update(more)
        return rec

    def _register(self, rec: Dict[str, Any]) -> None:
        endpoints.write(self.conf.state_dir, rec)
        agent = self._agent()
        if agent is not None:
            agent.put_endpoint(rec)

    def _unregister(self) -> None:
        cid, ifn = self.env["container_id"], self.env["ifname"]
        endpoints.remove(self.conf.state_dir, cid, ifn)
        agent = self._agent()
        if agent is not None:
            try:
                agent.delete_endpoint(cid, ifn)
            except CNIError as e:  # DEL must succeed; the agent re-reads the records on start
                log(self.conf, f"DEL {cid}/{ifn}: agent not told: {e.msg}")

    # -- commands --

    def add(self) -> Dict[str, Any]:
        agent = self._agent()
        if agent is not None:
            why = agent.healthy()
            if why:
                raise CNIError(TRY_AGAIN_LATER, why)
        with_dp = self._datapath_wanted()
        if self.conf.prev_result is not None:
            return self._add_chained(with_dp)
        return self._add_standalone(with_dp)

    def _add_standalone(self, with_dp: bool) -> Dict[str, Any]:
        from . import link
        if self.conf.ipam is None:
            raise CNIError(INVALID_CONFIG, "network config: ipam is required in standalone mode "
                           "(or chain meshcni after a plugin that creates the interface)")
        cid, ifn, netns = self.env["container_id"], self.env["ifname"], self.env["netns"]
        host_if = link.host_ifname(cid, ifn)
        if not os.path.exists(netns):
            raise CNIError(UNKNOWN_CONTAINER, f"netns {netns} does not exist")
        store = None
        if self.conf.builtin_ipam:
            cfg = self._ipam_config()
            store = self._store(cfg)
            with store.locked():
                alloc, _ = store.allocate(cfg, cid, ifn, {"hostIfname": host_if})
            addrs = alloc.ips
        else:
            res = self._delegate("ADD", self.conf.raw)
            addrs = [i["address"] for i in res["ips"]]
            if not addrs:
                raise CNIError(IO_FAILURE, f"ipam {self.conf.ipam['type']} returned no address")
        self._crash_at("ipam")
        host = pod = None
        try:
            host = link.open_host()
            pod = link.open_pod(netns)
            # left by an ADD that died half way; deleting one end of a veth
            # deletes its peer in the pod too
            link.delete_link(host, host_if)
            veth = link.create_veth(host, pod, netns, host_if, ifn, self.conf.mtu)
            self._crash_at("veth")
            link.configure_pod(pod, veth, addrs, netns)
            link.configure_host(host, veth, addrs)
            progs = self._attach(veth.host_index) if with_dp else {}
            pod_ips = [_host_cidr(a) for a in addrs]
            rec = self._record("standalone", host_if, veth.host_index, pod_ips, podMac=veth.pod_mac,
                               hostMac=veth.host_mac, netnsCookie=link.netns_cookie(netns), programs=progs)
            self._register(rec)
        except BaseException:
            if host is not None:
                try:
                    link.delete_link(host, host_if)
                except CNIError:
                    pass
            if store is not None:
                with store.locked():
                    store.release(cid, ifn)
            else:
                try:
                    self._delegate("DEL", self.conf.raw)
                except CNIError:
                    pass
            endpoints.remove(self.conf.state_dir, cid, ifn)
            raise
        finally:
            for s in (host, pod):
                if s is not None:
                    s.close()
        return {
            "cniVersion": spec.CURRENT,
            "interfaces": [{"name": host_if, "mac": veth.host_mac},
                           {"name": ifn, "mac": veth.pod_mac, "mtu": self.conf.mtu, "sandbox": netns}],
            "ips": [{"address": a, "gateway": link.gateway_for(a), "interface": 1} for a in pod_ips],
            "routes": [{"dst": "::/0" if ":" in a else "0.0.0.0/0", "gw": link.gateway_for(a)} for a in pod_ips],
            "dns": {},
        }

    def _attach(self, ifindex: int) -> Dict[str, int]:
        from ..datapath import tcpins
        from ..errors import BpfError
        try:
            return tcpins.attach(self.conf.bpf_root, ifindex)
        except BpfError as e:
            raise CNIError(DATAPATH_FAILURE, f"attach meshcni tc programs to ifindex {ifindex}: {e}") from None

    def _chained_host_veth(self, host, result: Dict[str, Any]) -> Tuple[str, int]:
        from . import link
        names = spec.host_interfaces(result)
        for n in names:
            idx = link.link_index(host, n)
            if idx is not None and link.link_info(host, idx)["kind"] == "veth":
                return n, idx
        raise CNIError(INVALID_CONFIG, "prevResult: no host-side veth among interfaces "
                       f"{names or '(none without sandbox)'}; meshcni chains after veth plugins such as ptp")

    def _add_chained(self, with_dp: bool) -> Dict[str, Any]:
        from . import link
        prev = self.conf.prev_result
        host = link.open_host()
        try:
            host_if, hidx = self._chained_host_veth(host, prev)
        finally:
            host.close()
        progs = self._attach(hidx) if with_dp else {}
        ips = [i["address"] for i in prev["ips"]]
        cookie = link.netns_cookie(self.env["netns"]) if os.path.exists(self.env["netns"]) else 0
        self._register(self._record("chained", host_if, hidx, ips, netnsCookie=cookie, programs=progs))
        return prev

    def delete(self) -> None:
        from . import link
        cid, ifn = self.env["container_id"], self.env["ifname"]
        rec = endpoints.read(self.conf.state_dir, cid, ifn)
        chained = (rec or {}).get("mode") == "chained" or (rec is None and self.conf.prev_result is not None)
        host = link.open_host()
        try:
            if chained:
                host_if = (rec or {}).get("hostIfname")
                if not host_if and self.conf.prev_result:
                    host_if = next(iter(spec.host_interfaces(self.conf.prev_result)), None)
                idx = link.link_index(host, host_if) if host_if else None
                if idx is not None:
                    from ..datapath import tcpins
                    try:
                        tcpins.detach(idx)
                    except Exception as e:  # the previous plugin deletes the veth anyway
                        log(self.conf, f"DEL {cid}/{ifn}: detach from {host_if}: {e}")
            else:
                link.delete_link(host, link.host_ifname(cid, ifn))
                if self.conf.ipam is not None:
                    if self.conf.builtin_ipam:
                        cfg = self._ipam_config()
                        with self._store(cfg).locked() as st:
                            st.release(cid, ifn)
                    else:
                        self._delegate("DEL", self.conf.raw)
        finally:
            host.close()
        self._unregister()

    def check(self) -> None:
        from . import link
        prev = self.conf.prev_result
        if prev is None:
            raise CNIError(INVALID_CONFIG, "CHECK needs prevResult in the network config")
        cid, ifn, netns = self.env["container_id"], self.env["ifname"], self.env["netns"]
        rec = endpoints.read(self.conf.state_dir, cid, ifn)
        if rec is None:
            raise CNIError(UNKNOWN_CONTAINER, f"no meshcni endpoint for container {cid} interface {ifn}")
        problems: List[str] = []
        host = link.iproute()
        try:
            host_if = rec["hostIfname"]
            hidx = link.link_index(host, host_if)
            if hidx is None:
                problems.append(f"host interface {host_if} is missing")
            if rec["mode"] == "standalone":
                if not os.path.exists(netns):
                    raise CNIError(UNKNOWN_CONTAINER, f"netns {netns} does not exist")
                pod = link.pod_iproute(netns)
                try:
                    st = link.pod_state(pod, ifn)
                finally:
                    pod.close()
                if st is None:
                    problems.append(f"interface {ifn} is missing in netns {netns}")
                else:
                    want = {i["address"] for i in prev["ips"]}
                    have = set(st["addresses"])
                    for a in sorted(want - have):
                        problems.append(f"{ifn}: address {a} is missing (has {', '.join(sorted(have)) or 'none'})")
                    if st["mtu"] != self.conf.mtu:
                        problems.append(f"{ifn}: mtu {st['mtu']}, config says {self.conf.mtu}")
                    for a in want:
                        gw = link.gateway_for(a)
                        dflt = "::/0" if ":" in a else "0.0.0.0/0"
                        if not any(r["dst"] == dflt and r["gw"] == gw for r in st["routes"]):
                            problems.append(f"{ifn}: default route via {gw} is missing")
                        if hidx is not None and st["neighbours"].get(gw) != link.link_info(host, hidx)["mac"]:
                            problems.append(f"{ifn}: neighbour {gw} does not point at {host_if}")
                    for i in prev.get("interfaces", []):
                        if i.get("sandbox") and i.get("name") == ifn and i.get("mac") and i["mac"] != st["mac"]:
                            problems.append(f"{ifn}: mac {st['mac']}, prevResult says {i['mac']}")
                if hidx is not None:
                    routes = link.host_routes(host, hidx)
                    for a in prev["ips"]:
                        if _host_cidr(a["address"]) not in routes:
                            problems.append(f"host route to {a['address']} via {host_if} is missing")
            if hidx is not None and self.conf.datapath != "off":
                from ..datapath import tcpins
                if tcpins.present(self.conf.bpf_root):
                    want_ids = tcpins.pinned_ids(self.conf.bpf_root)
                    got = tcpins.attached(hidx)
                    for prog, pid in want_ids.items():
                        if got.get(prog) != pid:
                            problems.append(f"{host_if}: tc program {prog} is "
                                            f"{'not attached' if got.get(prog) is None else f'id {got[prog]}, pinned is {pid}'}")
                elif self.conf.datapath == "required":
                    problems.append(f"datapath required but not loaded under {self.conf.bpf_root}")
        finally:
            host.close()
        if problems:
            raise CNIError(CHECK_FAILED, f"CHECK {cid}/{ifn}: " + "; ".join(problems))

    def status(self) -> None:
        if self.conf.ipam is not None and self.conf.builtin_ipam:
            cfg = self._ipam_config()
            store = self._store(cfg)
            try:
                with store.locked() as st:
                    used = st.used()
            except CNIError as e:
                raise CNIError(NOT_AVAILABLE, f"IPAM not usable: {e.msg}") from None
            for rset in cfg.ranges:
                free = sum(r.usable() - (1 if r.gateway and r.start <= r.gateway <= r.end else 0)
                           for r in rset) - sum(1 for u in used if any(_in_range(u, r) for r in rset))
                if free <= 0:
                    raise CNIError(NOT_AVAILABLE, "IPAM: no free address in "
                                   + ", ".join(str(r.subnet) for r in rset))
        agent = self._agent()
        if agent is not None:
            why = agent.healthy()
            if why:
                raise CNIError(NOT_AVAILABLE, why)
        if self.conf.datapath == "required":
            from ..datapath import tcpins
            if not tcpins.present(self.conf.bpf_root):
                existing = endpoints.all_records(self.conf.state_dir)
                raise CNIError(LIMITED_CONNECTIVITY if existing else NOT_AVAILABLE,
                               f"meshcni datapath is not loaded (no programs under {self.conf.bpf_root}/progs)"
                               + (f"; {len(existing)} existing endpoints get no policy updates" if existing else ""))

    def gc(self) -> None:
        from . import link
        if self.conf.valid_attachments is None:
            raise CNIError(INVALID_CONFIG, f"GC needs {VALID_ATTACHMENTS} in the network config")
        valid = set(self.conf.valid_attachments)
        keep_links = {link.host_ifname(c, i) for c, i in valid}
        released: List[str] = []
        if self.conf.ipam is not None and self.conf.builtin_ipam:
            cfg = self._ipam_config()
            with self._store(cfg).locked() as st:
                released = [a.extra.get("hostIfname", "") for a in st.gc(valid)]
        elif self.conf.ipam is not None:
            try:
                self._delegate("GC", self.conf.raw)
            except CNIError as e:
                log(self.conf, f"GC: ipam {self.conf.ipam.get('type')}: {e.msg}")
        for rec in endpoints.all_records(self.conf.state_dir):
            if rec.get("network", self.conf.name) != self.conf.name:
                continue
            if (rec.get("containerID"), rec.get("ifname")) not in valid:
                endpoints.remove(self.conf.state_dir, rec["containerID"], rec["ifname"])
                if rec.get("mode") == "standalone":
                    released.append(rec.get("hostIfname", ""))
        host = link.iproute()
        try:
            # veths named like ours whose attachment is not valid: leftovers of
            # a runtime that lost track (crash between ADD and its bookkeeping)
            for msg in host.get_links():
                name = msg.get_attr("IFLA_IFNAME") or ""
                if _is_ours(name) and name not in keep_links:
                    info = link.link_info(host, msg["index"])
                    if info["kind"] == "veth":
                        released.append(name)
            for name in set(filter(None, released)):
                if name not in keep_links:
                    link.delete_link(host, name)
        finally:
            host.close()


def _is_ours(name: str) -> bool:
    from .link import HOST_PREFIX
    rest = name[len(HOST_PREFIX):]
    return name.startswith(HOST_PREFIX) and len(rest) == 13 and all(c in "0123456789abcdef" for c in rest)


def _host_cidr(address: str) -> str:
    ip = address.split("/")[0]
    return f"{ip}/{128 if ':' in ip else 32}"


def _in_range(addr: str, r: ipam.Range) -> bool:
    import ipaddress as _ip
    a = _ip.ip_address(addr)
    return a.version == r.family and r.start <= a <= r.end


def log(conf: Optional[NetConf], line: str) -> None:
    """One line to the config's logFile (runtimes keep stderr only on failure)."""
    print(line, file=sys.stderr)
    if conf is not None and conf.log_file:
        try:
            with open(conf.log_file, "a") as f:
                f.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")
        except OSError:
            pass


def in_process_refusal(raw: Any) -> Optional[str]:
    """Why a call with this network config must run in a plugin process, or None.

    A delegated IPAM plugin is exec'd from CNI_PATH, a path of the host that
    the agent's container need not see the same way: such configs are run by
    the shim's fallback, the Python plugin on the host.
    """
    if isinstance(raw, dict) and isinstance(raw.get("ipam"), dict) \
            and raw["ipam"].get("type", "") not in BUILTIN_IPAM:
        return f"ipam.type {raw['ipam'].get('type')!r} is delegated to a plugin executable"
    return None


def run(environ, stdin: bytes, agent=None) -> Tuple[int, Optional[Dict[str, Any]]]:
    """(exit status, JSON to print). The whole plugin, without process I/O.

    ``agent``: run inside the agent; endpoint registration goes to this object
    (``healthy()``, ``put_endpoint(rec)``, ``delete_endpoint(cid, ifname)``).
    """
    t0 = time.perf_counter()
    conf = None
    version = spec.CURRENT
    cmd = environ.get("CNI_COMMAND", "")
    try:
        if cmd == "VERSION":
            try:
                raw = json.loads(stdin or b"{}")
            except (ValueError, RecursionError):
                raw = {}
            asked = raw.get("cniVersion") if isinstance(raw, dict) else None
            return 0, {"cniVersion": asked if asked in spec.SUPPORTED_VERSIONS else spec.CURRENT,
                       "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
        raw, bad_json = None, None
        try:
            raw = json.loads(stdin)
        except (ValueError, UnicodeDecodeError) as e:
            bad_json = e
        except RecursionError:  # ([[[[... deeper than the decoder goes) still a decode failure, not an I/O one
            bad_json = ValueError("nested too deeply")
        if isinstance(raw, dict) and raw.get("cniVersion") in spec.SUPPORTED_VERSIONS:
            version = raw["cniVersion"]  # errors are answered in the version asked for
        env = spec.read_env(environ)
        if bad_json is not None:
            raise CNIError(DECODE_FAILURE, f"network config on stdin is not JSON: {bad_json}")
        conf = parse_conf(raw, env["command"])
        p = Plugin(conf, env, environ, agent=agent)
        if cmd == "ADD":
            out = spec.format_result(p.add(), conf.version)
        else:
            {"DEL": p.delete, "CHECK": p.check, "STATUS": p.status, "GC": p.gc}[cmd]()
            out = None
        log(conf, f"{cmd} {env['container_id']}/{env['ifname']} ok in {(time.perf_counter() - t0) * 1000:.1f} ms")
        return 0, out
    except CNIError as e:
        log(conf, f"{cmd} {environ.get('CNI_CONTAINERID', '')}/{environ.get('CNI_IFNAME', '')}: "
                  f"error {e.code}: {e.msg}")
        return 1, e.to_json(version)
    except Exception as e:  # never a traceback instead of the error JSON the runtime parses
        err = CNIError(IO_FAILURE, f"{type(e).__name__}: {e}")
        log(conf, f"{cmd}: unexpected {err.msg}")
        return 1, err.to_json(version)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "--version", "version"):
        print(f"{PLUGIN_TYPE}: the meshcni CNI plugin (CNI {', '.join(spec.SUPPORTED_VERSIONS)}).\n"
              "Run by a container runtime with CNI_COMMAND and the network config on stdin;\n"
              "install it on a node with `meshcni cni install`.")
        return 0
    data = b"" if os.environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() else sys.stdin.buffer.read()
    rc, out = run(os.environ, data)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return rc
