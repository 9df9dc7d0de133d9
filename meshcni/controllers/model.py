# SPDX-License-Identifier: MIT OR Apache-2.0
"""The desired-state types: what the controllers produce and the datapath appliers consume.

Both sides import them from here, so a controller never imports
:mod:`meshcni.datapath` (which loads the compiled extension and libbpf):
this module needs only the standard library and the generated
:mod:`meshcni.layout_constants`. The types carry no validation; the
appliers check what they write.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

from ..layout_constants import MC_DIR_EGRESS, MC_DIR_INGRESS, MC_POLICY_ALLOW, MC_POLICY_DENY


@dataclass(frozen=True)
class Problem:
    """Bad input: which object, which field, what is wrong (logged and sent as an Event)."""
    kind: str
    namespace: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.field}: {self.message}"


# Services: the socket LB's view (one Service per Kubernetes Service, port and IP family)

@dataclass(frozen=True)
class Frontend:
    ip: str
    port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int


@dataclass
class Service:
    name: str
    frontends: Sequence[Frontend]
    backends: Sequence[Backend]
    svc_id: int
    affinity_timeout: Optional[int] = None  # seconds; None = no ClientIP affinity
    maglev: bool = False
    # backend -> the remote cluster it lives in (MeshEndpoints); None or absent = local.
    # For status views only: the maps do not carry it.
    clusters: Optional[Dict[Backend, str]] = None

    def __post_init__(self):
        if isinstance(self.frontends, Frontend):
            self.frontends = [self.frontends]


# NetworkPolicy: identity policy rows before their LPM encoding

ANY = None
INGRESS = MC_DIR_INGRESS
EGRESS = MC_DIR_EGRESS
ALLOW = MC_POLICY_ALLOW
DENY = MC_POLICY_DENY

PortSpec = Union[None, int, Tuple[int, int]]


@dataclass(frozen=True)
class PolicyEntry:
    """Allow (or deny) ``identity`` in ``direction`` to/from ``peer``.

    ``peer``/``proto``/``port`` None = any; ``port`` is one port or an
    inclusive ``(port, end_port)`` range (NetworkPolicy endPort).
    """
    identity: int
    direction: int
    peer: Optional[int] = ANY
    proto: Optional[int] = ANY
    port: PortSpec = ANY
    action: int = ALLOW
    rule_id: int = 0
