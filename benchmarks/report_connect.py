#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Summarise a connect-rate run (benchmarks/test_connect_rate.py --benchmark-json).

    python benchmarks/report_connect.py benchmarks/out/connect.json [--md FILE]

One Markdown table (services, method, connects/s from connbench's in-process
CLOCK_MONOTONIC time, median over rounds, ratio vs ``direct`` at the same
service count), then the target: socklb >= 0.95x direct at 10,000 services.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

METHOD_ORDER = ["direct", "socklb", "direct+lb", "iptables"]
NOTES = {
    "direct": "backend pod IP 127.0.0.2:8080, nothing attached",
    "socklb": "service address (last of S), SockLB attached, S services in the maps",
    "direct+lb": "backend pod IP with SockLB attached and S services (hook misses)",
    "iptables": "service address, last rule of S in KUBE-SERVICES (linear walk) + conntrack",
}
T_SERVICES, T_RATIO = 10_000, 0.95


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows, paired = {}, {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if info.get("paired"):
            d, s = [float(x) for x in info["direct_seconds"]], [float(x) for x in info["socklb_seconds"]]
            r = [float(x) for x in info["ratios"]]
            n = int(info["connects"])
            paired[int(info["services"])] = {
                "rounds": len(r), "connects": n, "direct": n / statistics.median(d),
                "socklb": n / statistics.median(s), "ratio": statistics.median(r),
                "min": min(r), "max": max(r), "target": info.get("target", "")}
            continue
        secs = [float(x) for x in info["inprocess_seconds"]]
        med = statistics.median(secs)
        rows[(int(info["services"]), info["method"])] = {
            "rounds": len(secs), "connects": int(info["connects"]), "median": med,
            "rate": int(info["connects"]) / med, "target": info.get("target", ""),
            "spread": (max(secs) - min(secs)) / med if med else 0.0,
        }
    return data, rows, paired


def report(data, rows, paired) -> str:
    out = []
    m = data.get("machine_info", {})
    mc = data.get("meshcni", {})
    out.append(f"Run {data.get('datetime', '')[:19]} on {m.get('cpu', {}).get('brand_raw', platform.processor())}, "
               f"{mc.get('nproc', '?')} CPUs, Linux {mc.get('kernel', platform.release())}; "
               f"session {mc.get('session_seconds', 0):.0f} s.")
    out.append("")
    if rows:
        out.extend(_main_table(rows))
    return _tail(out, rows, paired)


def _main_table(rows):
    out = []
    out.append("| services | method | rounds × connects | median s | connects/s | vs direct | spread | connect target / notes |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---|")
    for s in sorted({k[0] for k in rows}):
        base = rows.get((s, "direct"))
        for meth in sorted({k[1] for k in rows if k[0] == s},
                           key=lambda x: (METHOD_ORDER.index(x) if x in METHOD_ORDER else 99, x)):
            r = rows[(s, meth)]
            ratio = f"{r['rate'] / base['rate']:.3f}×" if base else "—"
            out.append(f"| {s:,} | {meth} | {r['rounds']} × {r['connects']:,} | {r['median']:.4f} | "
                       f"{r['rate'] / 1000:.1f} k/s | {ratio} | ±{r['spread'] * 50:.1f}% | "
                       f"{r['target']}: {NOTES.get(meth, '')} |")
    out.append("")
    out.append("connects/s = connects / median of connbench's in-process time; vs direct = this row's "
               "rate / direct's at the same service count (>1 is faster); spread = (max-min)/2 "
               "over the rounds, relative to the median.")
    out.append("")
    return out


def _tail(out, rows, paired) -> str:
    if paired:
        out.append("Paired (direct and socklb alternating round by round in one environment; "
                   "ratio = median over rounds of t(direct)/t(socklb)):")
        out.append("")
        out.append("| services | rounds × connects | direct connects/s | socklb connects/s | socklb vs direct (median) | min … max |")
        out.append("|---:|---:|---:|---:|---:|---|")
        for s in sorted(paired):
            p = paired[s]
            out.append(f"| {s:,} | {p['rounds']} × {p['connects']:,} | {p['direct'] / 1000:.1f} k/s | "
                       f"{p['socklb'] / 1000:.1f} k/s | {p['ratio']:.3f}× | {p['min']:.3f}× … {p['max']:.3f}× |")
        out.append("")
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    lb, d = rows.get((T_SERVICES, "socklb")), rows.get((T_SERVICES, "direct"))
    p = paired.get(T_SERVICES)
    if p:
        met = "yes" if p["ratio"] >= T_RATIO else "**no**"
        out.append(f"| socklb ≥ {T_RATIO}× direct connect rate at {T_SERVICES:,} services (paired) | "
                   f"{p['ratio']:.3f}× (rounds {p['min']:.3f}× … {p['max']:.3f}×) | {met} |")
    if lb and d:
        ratio = lb["rate"] / d["rate"]
        met = "yes" if ratio >= T_RATIO else "**no**"
        out.append(f"| socklb ≥ {T_RATIO}× direct connect rate at {T_SERVICES:,} services (separate tests) | {ratio:.3f}× "
                   f"({lb['rate'] / 1000:.1f} k/s vs {d['rate'] / 1000:.1f} k/s) | {met} |")
    elif not p:
        out.append(f"| socklb ≥ {T_RATIO}× direct at {T_SERVICES:,} services | not measured in this run | — |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--md", help="also write the Markdown here")
    a = ap.parse_args(argv)
    text = report(*load(a.json))
    sys.stdout.write(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
