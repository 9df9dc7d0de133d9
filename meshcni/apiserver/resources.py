# SPDX-License-Identifier: MIT OR Apache-2.0
"""The resource table: what the API server serves, as data.

Each :class:`ResourceType` says everything the HTTP layer and the store need
to know about one kind (its URL, scope, discovery names, whether it has a
status subresource). Built-in kinds are listed in :data:`BUILTIN`; CRDs add
entries at run time through :func:`from_crd`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CLUSTER_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str              # "" for the core group
    version: str            # the version the object is served (and stored) at
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False    # has the /status subresource
    categories: tuple[str, ...] = ()
    # served versions: a CRD may serve several; objects are stored once, unconverted
    versions: tuple[str, ...] = ()
    # CR only: version -> openAPIV3Schema
    schemas: dict = field(default_factory=dict, compare=False, hash=False)
    printer_columns: dict = field(default_factory=dict, compare=False, hash=False)
    # kinds with a meaningful spec: generation follows spec changes only
    crd: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: (group, plural), shared by all served versions."""
        return (self.group, self.plural)

    @property
    def served_versions(self) -> tuple[str, ...]:
        return self.versions or (self.version,)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.version
        return f"{self.group}/{v}" if self.group else v

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def verbs(self) -> tuple[str, ...]:
        return ALL_VERBS if self.namespaced or self.crd else CLUSTER_VERBS

    def describe(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _core(plural, singular, kind, namespaced, short=(), status=False, categories=()):
    return ResourceType("", "v1", plural, singular, kind, namespaced, tuple(short), status,
                        tuple(categories))


BUILTIN: tuple[ResourceType, ...] = (
    _core("namespaces", "namespace", "Namespace", False, ("ns",), status=True),
    _core("pods", "pod", "Pod", True, ("po",), status=True, categories=("all",)),
    _core("services", "service", "Service", True, ("svc",), status=True, categories=("all",)),
    _core("nodes", "node", "Node", False, ("no",), status=True),
    _core("secrets", "secret", "Secret", True),
    _core("configmaps", "configmap", "ConfigMap", True, ("cm",)),
    _core("events", "event", "Event", True, ("ev",)),
    _core("endpoints", "endpoints", "Endpoints", True, ("ep",)),
    _core("serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy",
                 True, ("netpol",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "customresourcedefinition", "CustomResourceDefinition", False,
                 ("crd", "crds"), status=True),
)

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")

# The groups a real server always lists first, in its own order; kubectl does not care
# about the order but a stable one keeps discovery output diffable.
PREFERRED_GROUP_ORDER = ("", "apiextensions.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
                         "networking.k8s.io")


def from_crd(crd: dict) -> ResourceType:
    """The served resource a CustomResourceDefinition describes.

    The storage version (or the first served one) is the default version;
    every served version is reachable and returns the same stored objects
    (conversion strategy None, which is all meshcni's CRDs use).
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or () if v.get("served", True)]
    storage = next((v for v in versions if v.get("storage")), versions[0] if versions else {})
    schemas = {v["name"]: ((v.get("schema") or {}).get("openAPIV3Schema") or {}) for v in versions}
    columns = {v["name"]: list(v.get("additionalPrinterColumns") or ()) for v in versions}
    status = any("status" in (v.get("subresources") or {}) for v in versions)
    plural = names.get("plural", "")
    return ResourceType(
        group=spec.get("group", ""),
        version=storage.get("name", ""),
        plural=plural,
        singular=names.get("singular") or names.get("kind", "").lower(),
        kind=names.get("kind", ""),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        status=status,
        categories=tuple(names.get("categories") or ()),
        versions=tuple(v["name"] for v in versions),
        schemas=schemas,
        printer_columns=columns,
        crd=True,
    )

