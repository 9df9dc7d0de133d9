# SPDX-License-Identifier: MIT OR Apache-2.0
"""``meshcni demo``: the map library on a private bpffs (bulk insert, lookups, a reconcile)."""
from __future__ import annotations

import os
import tempfile
import time


def cmd_demo(args):
    """Bulk-program the ipcache on a private bpffs, then reconcile a change."""
    import numpy as np
    from ..bpf.pin import mount_bpffs, umount
    from ..bpf.typed import MeshMaps

    n = args.entries
    tmp = tempfile.mkdtemp(prefix="meshcni-demo-")
    mount_bpffs(tmp)
    try:
        root = os.path.join(tmp, "meshcni")
        with MeshMaps(root) as mm:
            print(f"created {len(mm.maps)} pinned maps under {root} (private bpffs)")
            base = np.arange(n, dtype=np.uint32)
            # n distinct /32s in 10.0.0.0/8 and a few wider prefixes
            texts = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32" for i in base.tolist()]
            texts += ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
            idents = [100000 + i for i in range(n)] + [2, 30001, 30002]
            t = time.perf_counter()
            written = mm.ipcache.insert_prefixes(texts, idents)
            dt = time.perf_counter() - t
            print(f"bulk insert: {written} prefixes in {dt * 1e3:.1f} ms ({written / dt:,.0f}/s)")
            for ip in ("10.0.1.5", "10.255.255.254", "192.0.2.7", "2001:db8::1", "198.51.100.1"):
                print(f"  lookup {ip:16} -> identity {mm.ipcache.lookup_ip(ip)}")
            changed = dict(zip(texts, idents))
            for t_ in texts[: max(1, n // 100)]:
                changed[t_] += 1
            for t_ in texts[n // 2: n // 2 + n // 200]:
                del changed[t_]
            t = time.perf_counter()
            r = mm.ipcache.reconcile_prefixes(changed)
            dt = time.perf_counter() - t
            print(f"reconcile: +{r.added} ~{r.changed} -{r.deleted} ={r.unchanged} in {dt * 1e3:.1f} ms "
                  f"({r.syscalls} bpf() calls)")
            r2 = mm.ipcache.reconcile_prefixes(changed)
            print(f"reconcile again: {r2.writes} writes, {r2.syscalls} bpf() calls")
    finally:
        umount(tmp)
        os.rmdir(tmp)
    print("cleaned up the private bpffs")
    return 0


def add_demo(sub) -> None:
    x = sub.add_parser("demo", help="bulk-program maps on a private bpffs (needs root)",
                       description="Mounts a private bpffs in a temporary directory, creates every meshcni map "
                       "there, bulk-inserts --entries prefixes into the ipcache, looks a few up and reconciles a "
                       "change; then unmounts it. Touches no pinned map of the node. Needs root.")
    x.add_argument("--entries", type=int, default=100000, help="number of /32 prefixes (default %(default)s)")
    x.set_defaults(fn=cmd_demo)
