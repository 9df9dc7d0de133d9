# SPDX-License-Identifier: MIT OR Apache-2.0
"""mc_svc / mc_backends / mc_lb_src_ranges rows as issue 20's contract lays
them out (layout.h), written straight into the maps for the datapath tests.

The control plane's encoder (datapath/services.py) is the product's writer;
this is the contract's row shape in a dozen lines, so the BPF side is tested
against the header and not against one encoder.
"""
import ipaddress

import numpy as np

from meshcni import layout

EXT, INT = 0, 1
F = {n[len("MC_SVC_F_"):].lower(): v for n, v in layout.constants().items() if n.startswith("MC_SVC_F_")}
PROTO = {"tcp": 6, "udp": 17}


def addr16(ip) -> bytes:
    a = ipaddress.ip_address(ip)
    return (b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def write_frontend(maps, ip, port, proto, svc_id, backends, *, scope=EXT, flags=(), first_id=None,
                   affinity_timeout=0):
    """One frontend's master and slots; backends [(ip, port)] get ids first_id.. (default svc_id*100+1)."""
    p = PROTO[proto]
    fl = 0
    for f in flags:
        fl |= F[f]
    first_id = first_id or svc_id * 100 + 1
    bk = np.zeros(len(backends), layout.dtype_of("mc_backend_key"))
    bv = np.zeros(len(backends), layout.dtype_of("mc_backend"))
    sk = np.zeros(len(backends) + 1, layout.dtype_of("mc_svc_key"))
    sv = np.zeros(len(backends) + 1, layout.dtype_of("mc_svc_value"))
    for i, (bip, bport) in enumerate(backends):
        bk[i]["backend_id"] = first_id + i
        bv[i]["addr"] = np.frombuffer(addr16(bip), np.uint8)
        bv[i]["port"] = bport
        bv[i]["proto"] = p
        sv[i + 1]["backend_id"] = first_id + i
        sv[i + 1]["svc_id"] = svc_id
    for i in range(len(backends) + 1):
        sk[i]["addr"] = np.frombuffer(addr16(ip), np.uint8)
        sk[i]["port"] = port
        sk[i]["proto"] = p
        sk[i]["scope"] = scope
        sk[i]["slot"] = i
    sv[0]["count"] = len(backends)
    sv[0]["flags"] = fl
    sv[0]["svc_id"] = svc_id
    sv[0]["affinity_timeout"] = affinity_timeout
    if len(backends):
        maps.map("mc_backends").update(bk, bv)
    maps.map("mc_svc").update(sk, sv)


def write_src_range(maps, svc_id, cidr):
    net = ipaddress.ip_network(cidr)
    plen = net.prefixlen + (96 if net.version == 4 else 0)
    k = np.zeros(1, layout.dtype_of("mc_lb_src_range_key"))
    k[0]["prefixlen"] = 32 + plen
    k[0]["svc_id"] = svc_id
    k[0]["addr"] = np.frombuffer(addr16(net.network_address), np.uint8)
    maps.map("mc_lb_src_ranges").update(k, np.zeros(1, layout.dtype_of("mc_lb_src_range")))


def write_ipcache(maps, prefixes):
    maps.map("mc_ipcache").reconcile_prefixes(prefixes)
