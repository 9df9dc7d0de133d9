# SPDX-License-Identifier: MIT OR Apache-2.0
"""The CNI protocol: versions, error codes, environment, results.

Everything here is pure (no netlink, no files) so the rules of the spec
(https://www.cni.dev/docs/spec/, version 1.1.0) are tested without root.
Results are plain dicts in the 1.x shape internally and converted to the
version the runtime asked for only when written.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Optional

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"

# Error codes of the spec; >= 100 are ours.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# plugin-specific
IPAM_EXHAUSTED = 100
CHECK_FAILED = 101
NETLINK_FAILURE = 102
DATAPATH_FAILURE = 103

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
# What each command needs from the environment (spec section "Parameters").
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}
# Which version introduced a command: CHECK came with 0.4.0, STATUS and GC with 1.1.0.
_SINCE = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAME_BAD = re.compile(r"[/:\s]")


class CNIError(Exception):
    """An error the plugin reports to the runtime (stdout JSON + exit 1)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str = CURRENT) -> Dict[str, Any]:
        out: Dict[str, Any] = {"cniVersion": version if version in SUPPORTED_VERSIONS else CURRENT,
                               "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_tuple(v: str):
    try:
        parts = tuple(int(x) for x in v.split("."))
    except (AttributeError, ValueError):
        raise CNIError(INCOMPATIBLE_VERSION, f"cniVersion {v!r} is not a version") from None
    if len(parts) != 3:
        raise CNIError(INCOMPATIBLE_VERSION, f"cniVersion {v!r} is not a version")
    return parts


def check_version(v: Any, command: str) -> str:
    if not isinstance(v, str) or not v:
        raise CNIError(INVALID_CONFIG, "network config: cniVersion is required")
    if v not in SUPPORTED_VERSIONS:
        version_tuple(v)  # a malformed version says so
        raise CNIError(INCOMPATIBLE_VERSION, f"cniVersion {v} is not supported",
                       "supported: " + ", ".join(SUPPORTED_VERSIONS))
    since = _SINCE.get(command)
    if since and version_tuple(v) < version_tuple(since):
        raise CNIError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion >= {since}, config has {v}")
    return v


def parse_cni_args(s: str) -> Dict[str, str]:
    """CNI_ARGS: 'K=V;K2=V2' (kubelet passes K8S_POD_NAMESPACE, K8S_POD_NAME, ...)."""
    out = {}
    for part in (s or "").split(";"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        out[k] = v
    return out


def read_env(environ) -> Dict[str, Any]:
    """Validate the CNI_* variables for the command; returns a dict of them."""
    cmd = environ.get("CNI_COMMAND", "")
    if cmd not in COMMANDS:
        raise CNIError(INVALID_ENV, f"CNI_COMMAND {cmd!r} is not one of {', '.join(COMMANDS)}")
    for k in _REQUIRED_ENV[cmd]:
        if not environ.get(k):
            raise CNIError(INVALID_ENV, f"{k} is required for {cmd}")
    env = {
        "command": cmd,
        "container_id": environ.get("CNI_CONTAINERID", ""),
        "netns": environ.get("CNI_NETNS", ""),
        "ifname": environ.get("CNI_IFNAME", ""),
        "args": parse_cni_args(environ.get("CNI_ARGS", "")),
        "path": [p for p in environ.get("CNI_PATH", "").split(":") if p],
    }
    if env["container_id"] and not _CONTAINER_ID.match(env["container_id"]):
        raise CNIError(INVALID_ENV, f"CNI_CONTAINERID {env['container_id']!r}: must be alphanumeric with _ . -")
    ifn = env["ifname"]
    if ifn and (len(ifn) > 15 or _IFNAME_BAD.search(ifn) or ifn in (".", "..")):
        raise CNIError(INVALID_ENV, f"CNI_IFNAME {ifn!r} is not a valid interface name")
    return env


# ---- results --------------------------------------------------------------

def _family(addr: str) -> str:
    return "6" if ":" in addr.split("/")[0] else "4"


def parse_result(obj: Any, what: str = "prevResult") -> Dict[str, Any]:
    """A result of any supported version -> the 1.x shape (validated)."""
    if not isinstance(obj, dict):
        raise CNIError(DECODE_FAILURE, f"{what}: must be an object")
    v = obj.get("cniVersion")
    if v is not None and v not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"{what}: cniVersion {v} cannot be converted",
                       "supported: " + ", ".join(SUPPORTED_VERSIONS))
    out: Dict[str, Any] = {"cniVersion": CURRENT, "interfaces": [], "ips": [], "routes": [], "dns": {}}
    for i, itf in enumerate(obj.get("interfaces") or []):
        if not isinstance(itf, dict) or not isinstance(itf.get("name"), str):
            raise CNIError(DECODE_FAILURE, f"{what}.interfaces[{i}]: name is required")
        out["interfaces"].append(dict(itf))
    for i, ip in enumerate(obj.get("ips") or []):
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise CNIError(DECODE_FAILURE, f"{what}.ips[{i}]: address is required")
        try:
            ipaddress.ip_interface(ip["address"])
            if ip.get("gateway"):
                ipaddress.ip_address(ip["gateway"])
        except ValueError as e:
            raise CNIError(DECODE_FAILURE, f"{what}.ips[{i}]: {e}") from None
        ip = {k: v for k, v in ip.items() if k != "version"}
        if "interface" in ip and not (isinstance(ip["interface"], int) and 0 <= ip["interface"] < len(out["interfaces"])):
            raise CNIError(DECODE_FAILURE, f"{what}.ips[{i}].interface: {ip['interface']!r} is not an index of interfaces")
        out["ips"].append(ip)
    for i, r in enumerate(obj.get("routes") or []):
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            raise CNIError(DECODE_FAILURE, f"{what}.routes[{i}]: dst is required")
        out["routes"].append(dict(r))
    if isinstance(obj.get("dns"), dict):
        out["dns"] = dict(obj["dns"])
    return out


_ROUTE_1_1 = ("mtu", "advmss", "priority", "table", "scope")
_IFACE_1_1 = ("mtu", "socketPath", "pciID")


def format_result(result: Dict[str, Any], version: str) -> Dict[str, Any]:
    """The 1.x-shaped result written in the format of ``version``."""
    out: Dict[str, Any] = {"cniVersion": version}
    ifaces = [dict(i) for i in result.get("interfaces", [])]
    routes = [dict(r) for r in result.get("routes", [])]
    ips = [dict(i) for i in result.get("ips", [])]
    if version != "1.1.0":
        for r in routes:
            for k in _ROUTE_1_1:
                r.pop(k, None)
        for i in ifaces:
            for k in _IFACE_1_1:
                i.pop(k, None)
    if version == "0.4.0":
        for ip in ips:
            ip["version"] = _family(ip["address"])
    if ifaces:
        out["interfaces"] = ifaces
    out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = dict(result.get("dns") or {})
    return out


def sandbox_interface(result: Dict[str, Any], ifname: str, netns: Optional[str] = None) -> Optional[int]:
    """Index of the container interface ``ifname`` in result.interfaces."""
    for i, itf in enumerate(result.get("interfaces", [])):
        if itf.get("name") == ifname and itf.get("sandbox"):
            return i
    return None


def host_interfaces(result: Dict[str, Any]) -> List[str]:
    """Names of the interfaces without a sandbox: the host side (ptp, bridge veths)."""
    return [i["name"] for i in result.get("interfaces", []) if not i.get("sandbox")]
