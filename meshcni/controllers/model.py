# SPDX-License-Identifier: MIT OR Apache-2.0
"""The desired-state types: what the controllers produce and the datapath appliers consume.

Both sides import them from here, so a controller never imports
:mod:`meshcni.datapath` (which loads the compiled extension and libbpf):
this module needs only the standard library and the generated
:mod:`meshcni.layout_constants`. The types carry no validation; the
appliers check what they write.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

from ..layout_constants import (MC_DIR_EGRESS, MC_DIR_INGRESS, MC_POLICY_ALLOW, MC_POLICY_DENY, MC_SVC_F_ETP_LOCAL,
                                MC_SVC_F_EXTERNAL, MC_SVC_F_ITP_LOCAL, MC_SVC_F_NODEPORT, MC_SVC_F_SRC_RANGES,
                                MC_SVC_F_TWO_SCOPES, MC_SVC_SCOPE_EXT, MC_SVC_SCOPE_INT)


@dataclass(frozen=True)
class Problem:
    """Bad input: which object, which field, what is wrong (logged and sent as an Event)."""
    kind: str
    namespace: str
    name: str
    field: str
    message: str
    # the Event's reason; empty: the recorder's default (InvalidField). Keyword-only: subclasses
    # (MeshProblem) add positional fields after message
    reason: str = field(default="", kw_only=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.field}: {self.message}"


# Services: the socket LB's view (one Service per Kubernetes Service, port and IP family)

# Frontend kinds and traffic-policy bits a frontend carries itself (layout.h MC_SVC_F_*); AFFINITY and
# MAGLEV are the Service's and are added to every master of it
F_NODEPORT, F_EXTERNAL, F_ETP_LOCAL = MC_SVC_F_NODEPORT, MC_SVC_F_EXTERNAL, MC_SVC_F_ETP_LOCAL
F_TWO_SCOPES, F_SRC_RANGES, F_ITP_LOCAL = MC_SVC_F_TWO_SCOPES, MC_SVC_F_SRC_RANGES, MC_SVC_F_ITP_LOCAL
FRONTEND_FLAGS = F_NODEPORT | F_EXTERNAL | F_ETP_LOCAL | F_TWO_SCOPES | F_SRC_RANGES | F_ITP_LOCAL
# mc_svc_key.scope: external clients (tc on the uplink), in-cluster (socket LB)
SCOPE_EXT, SCOPE_INT = MC_SVC_SCOPE_EXT, MC_SVC_SCOPE_INT
FLAG_NAMES = {F_NODEPORT: "nodeport", F_EXTERNAL: "external", F_ETP_LOCAL: "etp-local", F_TWO_SCOPES: "two-scopes",
              F_SRC_RANGES: "src-ranges", F_ITP_LOCAL: "itp-local"}


@dataclass(frozen=True)
class Frontend:
    ip: str
    port: int
    proto: str = "tcp"
    flags: int = 0             # FRONTEND_FLAGS bits of this master
    scope: int = SCOPE_EXT     # which master of (ip, port, proto) this is


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
    # loadBalancerSourceRanges (ipaddress networks or their text): rows of mc_lb_src_ranges under this
    # svc_id, read for the frontends flagged F_SRC_RANGES
    src_ranges: Sequence = ()

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
