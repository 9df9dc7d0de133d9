# SPDX-License-Identifier: MIT OR Apache-2.0
"""``RouteDatapath``: the routes meshcni owns in this network namespace, reconciled over netlink.

Owned routes carry protocol ``RTPROT_MESHCNI`` (191) in the main table: the
diff reads only those, so a route someone else installed (the node's own
uplink, kindnet's, a user's) is never changed or deleted, even for the same
prefix.
"""
from __future__ import annotations

import socket
from typing import Dict

from pyroute2 import IPRoute

RTPROT_MESHCNI = 191  # routes the agent owns (and may delete); others are never touched
MAIN_TABLE = 254


def _family(dst: str) -> int:
    return socket.AF_INET6 if ":" in dst else socket.AF_INET


class RouteDatapath:
    """Makes the owned routes of the calling thread's network namespace exactly ``{dst CIDR: via IP}``."""

    def __init__(self, proto: int = RTPROT_MESHCNI, table: int = MAIN_TABLE):
        self.proto = proto
        self.table = table

    def owned(self, ipr: IPRoute) -> Dict[str, str]:
        """{dst CIDR: gateway} of the routes carrying our protocol."""
        have = {}
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=self.table):
                if r["proto"] == self.proto:
                    have[f"{r.get_attr('RTA_DST')}/{r['dst_len']}"] = r.get_attr("RTA_GATEWAY")
        return have

    def apply(self, want: Dict[str, str]) -> Dict[str, int]:
        """Replace what differs, delete owned routes no longer wanted; returns counts."""
        replaced = deleted = 0
        with IPRoute() as ipr:
            have = self.owned(ipr)
            for dst, via in want.items():
                if have.get(dst) != via:
                    ipr.route("replace", dst=dst, gateway=via, proto=self.proto, table=self.table,
                              family=_family(dst))
                    replaced += 1
            for dst in set(have) - set(want):
                ipr.route("del", dst=dst, proto=self.proto, table=self.table, family=_family(dst))
                deleted += 1
        return {"routes": len(want), "replaced": replaced, "deleted": deleted}
