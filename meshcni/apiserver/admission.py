# SPDX-License-Identifier: MIT OR Apache-2.0
"""What happens to an object between the request body and the store.

Defaulting (the fields a real server fills in: a Service's clusterIP, a
Pod's phase, a CR's schema defaults), status handling on create, and the
call into validation (validation.py for built-in kinds, the CRD's
openAPIV3Schema through schema.py for custom resources). Allocation of
Service cluster IPs and node ports lives here too, owned by the store.
"""
from __future__ import annotations

import copy
import ipaddress
import logging
from dataclasses import dataclass

from . import resources as res

log = logging.getLogger("meshcni.apiserver")

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")  # kube-apiserver's default --service-cluster-ip-range
NODE_PORTS = range(30000, 32768)

try:  # the parallel module owns the FieldError type; fall back while it is absent
    from .validation import FieldError
except ImportError:  # pragma: no cover - only while validation.py does not exist
    @dataclass(frozen=True)
    class FieldError:  # type: ignore[no-redef]
        field: str
        value: object
        reason: str
        message: str


def _validation():
    try:
        from . import validation
    except ImportError:
        return None
    return validation


def _schema():
    try:
        from . import schema
    except ImportError:
        return None
    return schema


def crd_version_schema(rt: res.ResourceType, obj: dict) -> dict:
    v = (obj.get("apiVersion") or "").rsplit("/", 1)[-1]
    return rt.schemas.get(v) or rt.schemas.get(rt.version) or {}


# ---------------------------------------------------------------- defaulting

def prepare_create(store, rt: res.ResourceType, obj: dict, strict: bool = False):
    """Fill defaults and reset what a client may not set on create (in place, fresh obj)."""
    key = rt.key
    if rt.status and key not in (("", "nodes"),):
        # status is written through /status only; a create starts with none (kube resets it)
        obj.pop("status", None)
    # defaulting runs before validation: a field of the wrong JSON type is left as it is,
    # for validation to report (422), never crashed on
    if key == res.NAMESPACE_KEY:
        meta = obj["metadata"]
        _name_label(meta)
        if isinstance(obj.get("spec") or {}, dict):
            spec = dict(obj.get("spec") or {})
            spec.setdefault("finalizers", ["kubernetes"])
            obj["spec"] = spec
        obj["status"] = {"phase": "Active"}
    elif key == ("", "pods") and isinstance(obj.get("spec") or {}, dict):
        spec = dict(obj.get("spec") or {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        obj["spec"] = spec
        obj["status"] = {"phase": "Pending"}
    elif key == ("", "services"):
        _default_service(obj)
        obj["status"] = {"loadBalancer": {}}
    elif key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif key == res.CRD_KEY:
        _default_crd(obj)
    if rt.crd:
        _apply_schema_defaults(rt, obj, strict)


def prepare_update(store, rt: res.ResourceType, new: dict, cur: dict, strict: bool = False):
    """Defaults on update; allocated Service fields carry over when the update omits them."""
    if rt.key == ("", "services"):
        spec = new.setdefault("spec", {})
        old = cur.get("spec") or {}
        for f in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if f not in spec and f in old:
                spec[f] = copy.deepcopy(old[f])
        if "healthCheckNodePort" not in spec and old.get("healthCheckNodePort") and _needs_health_check(spec):
            spec["healthCheckNodePort"] = old["healthCheckNodePort"]
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old.get("ports") or ()}
        for p in spec.get("ports") or ():
            if isinstance(p, dict) and "nodePort" not in p:
                prev = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
                if prev and "nodePort" in prev and spec.get("type") in ("NodePort", "LoadBalancer"):
                    p["nodePort"] = prev["nodePort"]
        _default_service(new)
        drop_type_dependent_fields(new, cur)
    elif rt.key == res.NAMESPACE_KEY:
        _name_label(new["metadata"])
        new.setdefault("spec", copy.deepcopy(cur.get("spec") or {}))
    elif rt.key == res.CRD_KEY:
        _default_crd(new)
    if rt.crd:
        _apply_schema_defaults(rt, new, strict)


def _name_label(meta):
    labels = meta.get("labels")
    if labels is None or isinstance(labels, dict):
        meta["labels"] = dict(labels or {}, **{"kubernetes.io/metadata.name": meta["name"]})


def _default_service(obj):
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    ports = spec.get("ports")
    if isinstance(ports, list):
        for p in ports:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])


def _default_crd(obj):
    # defaulting runs before validation: a spec of the wrong shape is left to it (422)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    names = dict(spec["names"]) if isinstance(spec.get("names"), dict) else {}
    versions = spec.get("versions") if isinstance(spec.get("versions"), list) else ()
    if isinstance(names.get("kind"), str) and names["kind"]:
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    if isinstance(obj.get("spec"), dict):
        obj["spec"]["names"] = names
        obj["spec"].setdefault("scope", "Namespaced")
        obj["spec"].setdefault("conversion", {"strategy": "None"})
    stored = [v.get("name") for v in versions if isinstance(v, dict) and v.get("storage")]
    obj["status"] = {
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": obj["metadata"].get("creationTimestamp")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted",
             "lastTransitionTime": obj["metadata"].get("creationTimestamp")},
        ],
    }


def _apply_schema_defaults(rt, obj, strict=False):
    schema = _schema()
    sch = crd_version_schema(rt, obj)
    if schema is None or not sch:
        return
    # kube prunes fields a structural schema does not declare, then defaults;
    # with fieldValidation=Strict (kubectl's default) an undeclared field is an error instead
    out = schema.prune(sch, obj) if hasattr(schema, "prune") else obj
    if strict and out != obj:
        from .errors import bad_request
        unknown = ", ".join(f'unknown field "{p}"' for p in _dropped(obj, out))
        raise bad_request(f"{rt.kind} in version \"{obj.get('apiVersion', '').rsplit('/', 1)[-1]}\" "
                          f"cannot be handled as a {rt.kind}: strict decoding error: {unknown}")
    out = schema.apply_defaults(sch, out)
    if out is not None and out is not obj:
        obj.clear()
        obj.update(out)


def _dropped(before, after, path=""):
    """Dotted paths present in ``before`` but pruned from ``after``."""
    if isinstance(before, dict) and isinstance(after, dict):
        for k, v in before.items():
            p = f"{path}.{k}" if path else k
            if k not in after:
                yield p
            else:
                yield from _dropped(v, after[k], p)
    elif isinstance(before, list) and isinstance(after, list):
        for i, (b, a) in enumerate(zip(before, after)):
            yield from _dropped(b, a, f"{path}[{i}]")


# ---------------------------------------------------------------- validation

def validate(rt: res.ResourceType, obj: dict, old: dict | None) -> list:
    """All FieldErrors for ``obj`` (``old`` on update), deduplicated, in a stable order."""
    errors = []
    val = _validation()
    if val is not None:
        errors += val.validate(rt.group, (obj.get("apiVersion") or "").rsplit("/", 1)[-1] or rt.version,
                               rt.kind, obj, old)
        # kinds validation.py has no rules for still get ObjectMeta checks (its dispatch
        # table, when readable, spares the kinds it covers a second pass; else dedup below)
        covered = getattr(val, "_VALIDATORS", {})
        if (rt.group, rt.kind) not in covered:
            rule = "label" if rt.key == res.NAMESPACE_KEY else (
                "dns1035" if rt.key == ("", "services") else (
                    "path" if rt.key in (("", "nodes"),) else "subdomain"))
            errors += val.validate_object_meta(obj.get("metadata"), namespaced=rt.namespaced, name_rule=rule)
    if rt.crd:
        schema = _schema()
        sch = crd_version_schema(rt, obj)
        if schema is not None and sch:
            body = {k: v for k, v in obj.items() if k != "metadata"}
            errors += schema.validate(_without_metadata(sch), body)
    if rt.key == res.CRD_KEY:
        errors += _validate_crd(obj)
    seen = set()
    out = []
    for e in errors:
        k = (e.field, e.reason, e.message)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def _without_metadata(sch: dict) -> dict:
    # metadata is validated as ObjectMeta above; CRD schemas may only restrict name/generateName
    props = sch.get("properties")
    if isinstance(props, dict) and "metadata" in props:
        sch = dict(sch, properties={k: v for k, v in props.items() if k != "metadata"})
    return sch


def _crd_shape(spec) -> list:
    """The JSON types of the CRD fields this server reads (kube's decoder refuses the rest)."""
    if not isinstance(spec, dict):
        return [FieldError("spec", spec, "FieldValueInvalid", "must be an object")]
    errs = []
    names = spec.get("names")
    if not isinstance(names, (dict, type(None))):
        errs.append(FieldError("spec.names", names, "FieldValueInvalid", "must be an object"))
    else:
        for k, v in (names or {}).items():
            want_list = k in ("shortNames", "categories")
            if not (isinstance(v, list) and all(isinstance(x, str) for x in v) if want_list
                    else isinstance(v, str)):
                errs.append(FieldError(f"spec.names.{k}", v, "FieldValueInvalid",
                                       "must be a list of strings" if want_list else "must be a string"))
    for f in ("group", "scope"):
        if not isinstance(spec.get(f), (str, type(None))):
            errs.append(FieldError(f"spec.{f}", spec.get(f), "FieldValueInvalid", "must be a string"))
    versions = spec.get("versions")
    if not isinstance(versions, (list, type(None))):
        errs.append(FieldError("spec.versions", versions, "FieldValueInvalid", "must be a list"))
    else:
        for i, v in enumerate(versions or ()):
            sch = v.get("schema") if isinstance(v, dict) else None
            if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not (
                    sch is None or (isinstance(sch, dict) and isinstance(sch.get("openAPIV3Schema"),
                                                                          (dict, type(None))))):
                errs.append(FieldError(f"spec.versions[{i}]", v, "FieldValueInvalid",
                                       "must be an object with a name and an optional schema.openAPIV3Schema "
                                       "object"))
    return errs


def _validate_crd(obj) -> list:
    spec = obj.get("spec") or {}
    errs = _crd_shape(spec)
    if errs:
        return errs
    names = spec.get("names") or {}
    for f in ("plural", "kind"):
        if not names.get(f):
            errs.append(FieldError(f"spec.names.{f}", None, "FieldValueRequired", ""))
    if not spec.get("group"):
        errs.append(FieldError("spec.group", None, "FieldValueRequired", ""))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(FieldError("spec.versions", None, "FieldValueRequired", "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        errs.append(FieldError("spec.versions", versions and [v.get("name") for v in versions],
                               "FieldValueInvalid", "must have exactly one version marked as storage version"))
    want = f"{names.get('plural')}.{spec.get('group')}"
    name = obj["metadata"].get("name")
    if names.get("plural") and spec.get("group") and name != want:
        errs.append(FieldError("metadata.name", name, "FieldValueInvalid", 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(FieldError("spec.scope", spec.get("scope"), "FieldValueNotSupported",
                               'supported values: "Cluster", "Namespaced"'))
    return errs


# ---------------------------------------------------------------- allocation

def parse_port_range(text: str) -> range:
    """``--service-node-port-range``: "LOW-HIGH" (inclusive, as kube-apiserver reads it) or one port."""
    lo, sep, hi = str(text).partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"--service-node-port-range {text!r}: not LOW-HIGH") from None
    if not 0 < lo_i <= hi_i < 65536:
        raise ValueError(f"--service-node-port-range {text!r}: need 1 <= LOW <= HIGH <= 65535")
    return range(lo_i, hi_i + 1)


def _needs_node_ports(spec) -> bool:
    return isinstance(spec, dict) and spec.get("type") in ("NodePort", "LoadBalancer") and not (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False)


def _needs_health_check(spec) -> bool:
    return isinstance(spec, dict) and spec.get("type") == "LoadBalancer" \
        and spec.get("externalTrafficPolicy") == "Local"


def _node_ports(spec) -> list:
    """(index, nodePort) of a spec's ports that carry one."""
    ports = spec.get("ports") if isinstance(spec, dict) else None
    return [(i, p["nodePort"]) for i, p in enumerate(ports if isinstance(ports, list) else ())
            if isinstance(p, dict) and p.get("nodePort")]


def drop_type_dependent_fields(new: dict, old: dict) -> None:
    """kube's dropTypeDependentFields: a type (or traffic policy) change that no longer needs the node
    ports or the health check port clears them, unless the update changed them itself."""
    spec, ospec = new.get("spec"), old.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if _needs_node_ports(ospec) and not _needs_node_ports(spec) and _node_ports(spec) == _node_ports(ospec) \
            and not (spec.get("type") == "LoadBalancer"):
        for p in spec.get("ports") or ():
            if isinstance(p, dict):
                p.pop("nodePort", None)
    if _needs_health_check(ospec) and not _needs_health_check(spec) \
            and spec.get("healthCheckNodePort") == ospec.get("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)


class IPAllocator:
    """Cluster IPs from the service CIDR (default 10.96.0.0/12); node ports and health check node ports
    from the node port range (default 30000-32767), as kube-apiserver allocates them: a port asked for
    must be in the range and free, an absent one is picked, and both are released when the Service goes
    or stops needing them (type change)."""

    def __init__(self, service_cidr=SERVICE_CIDR, node_port_range: range = NODE_PORTS):
        self.cidr = ipaddress.ip_network(service_cidr)
        self.ips: set[str] = {str(self.cidr.network_address + 1)}  # kubernetes.default
        self.ports: set[int] = set()
        self.port_range = node_port_range
        self._next_ip = 10
        self._next_port = 0

    @staticmethod
    def _all_ports(spec) -> list:
        out = [p for _, p in _node_ports(spec)]
        if isinstance(spec, dict) and spec.get("healthCheckNodePort"):
            out.append(spec["healthCheckNodePort"])
        return [p for p in out if isinstance(p, int) and not isinstance(p, bool)]

    def reserve(self, svc):
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip != "None":
                self.ips.add(ip)
        self.ports.update(self._all_ports(spec))

    def release(self, svc):
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            self.ips.discard(ip)
        self.ports.difference_update(self._all_ports(spec))

    def _new_ip(self) -> str:
        size = self.cidr.num_addresses
        for _ in range(size):
            cand = str(self.cidr.network_address + self._next_ip)
            self._next_ip = self._next_ip + 1 if self._next_ip + 2 < size else 2
            if cand not in self.ips:
                return cand
        raise RuntimeError(f"service CIDR {self.cidr} exhausted")

    def _new_port(self, taken=()) -> int:
        rng = self.port_range
        for _ in range(len(rng)):
            cand = rng[self._next_port % len(rng)]
            self._next_port += 1
            if cand not in self.ports and cand not in taken:
                return cand
        raise RuntimeError(f"node port range {rng.start}-{rng.stop - 1} exhausted")

    def _range_text(self) -> str:
        return f"{self.port_range.start}-{self.port_range.stop - 1}"

    def _node_port_fields(self, invalid, name, spec, own=frozenset()):
        """Check the node ports asked for and pick the absent ones (``own``: the ports the Service held
        before this update, which it may keep)."""
        taken: dict = {}  # nodePort -> the port number it serves in this Service
        ports = spec.get("ports")
        ports = ports if isinstance(ports, list) else []

        def check(field_, v):
            if isinstance(v, bool) or not isinstance(v, int):
                raise _svc_invalid(invalid, name, field_, v, "must be an integer")
            if v in own:
                return
            if v not in self.port_range:
                raise _svc_invalid(invalid, name, field_, v, "provided port is not in the valid range. "
                                   f"The range of valid ports is {self._range_text()}")
            if v in self.ports:
                raise _svc_invalid(invalid, name, field_, v, "provided port is already allocated")

        if _needs_node_ports(spec):
            for i, p in enumerate(ports):
                if isinstance(p, dict) and p.get("nodePort"):
                    check(f"spec.ports[{i}].nodePort", p["nodePort"])
                    taken.setdefault(p["nodePort"], p.get("port"))
            for p in ports:
                if not isinstance(p, dict) or p.get("nodePort"):
                    continue
                # one port number served over two protocols (DNS on 53 TCP and UDP) shares its node port
                same = next((q["nodePort"] for q in ports if isinstance(q, dict) and q is not p
                             and q.get("nodePort") and q.get("port") == p.get("port")), None)
                p["nodePort"] = same or self._new_port(taken)
                taken.setdefault(p["nodePort"], p.get("port"))
        if _needs_health_check(spec):
            hc = spec.get("healthCheckNodePort")
            if hc:
                check("spec.healthCheckNodePort", hc)
                if hc in taken:
                    raise _svc_invalid(invalid, name, "spec.healthCheckNodePort", hc,
                                       "must not be one of the Service's node ports")
            else:
                spec["healthCheckNodePort"] = self._new_port(taken)

    def allocate(self, svc, dry_run=False):
        """Fill clusterIP(s) and node ports of a new Service; conflicts are 422 like kube."""
        from .errors import invalid
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            return
        name = svc["metadata"]["name"]
        stype = spec.get("type", "ClusterIP")
        ips = spec.get("clusterIPs")
        for field_, v in (("spec.clusterIP", spec.get("clusterIP")),
                          ("spec.clusterIPs", ips if not isinstance(ips, list) else (ips or [None])[0])):
            if v is not None and not isinstance(v, str):
                raise _svc_invalid(invalid, name, field_, v, "must be an IP address (a string)")
        if stype != "ExternalName":
            ip = spec.get("clusterIP") or ((spec.get("clusterIPs") or [None])[0])
            if ip and ip != "None":
                if ip in self.ips:
                    raise _svc_invalid(invalid, name, "spec.clusterIPs[0]", ip,
                                       "failed to allocate IP " + ip + ": provided IP is already allocated")
            elif not ip:
                ip = self._new_ip()
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
            if ip != "None":
                fam = "IPv6" if ":" in ip else "IPv4"
                spec.setdefault("ipFamilies", [fam])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            else:
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("ipFamilies", ["IPv4"])
        self._node_port_fields(invalid, name, spec)
        if not dry_run:
            self.reserve(svc)

    def allocate_update(self, old, new):
        """Node ports of an update: what the Service held it may keep, new ones are checked, absent ones
        picked (reserved when the update commits: :meth:`reallocate`)."""
        from .errors import invalid
        spec = new.get("spec")
        if isinstance(spec, dict):
            self._node_port_fields(invalid, new["metadata"]["name"], spec,
                                   own=frozenset(self._all_ports(old.get("spec") or {})))

    def reallocate(self, old, new):
        self.release(old)
        self.reserve(new)


def _svc_invalid(invalid, name, field, value, msg):
    rt = next(r for r in res.BUILTIN if r.key == ("", "services"))
    return invalid(rt, name, [FieldError(field, value, "FieldValueInvalid", msg)])
