# SPDX-License-Identifier: MIT OR Apache-2.0
"""Tables of benchmarks/test_nodeport.py's JSON: rates and ratios to direct.

    python benchmarks/report_nodeport.py benchmarks/out/nodeport.json
"""
import json
import sys
from collections import defaultdict


def main(path):
    with open(path) as f:
        data = json.load(f)
    conn = defaultdict(dict)
    thr = {}
    for b in data["benchmarks"]:
        x = b["extra_info"]
        if "connects_per_second" in x:
            conn[x["services"]][x["method"]] = x["connects_per_second"]
        elif "gbit_median" in x:
            thr[x["method"]] = x["gbit_median"]
    print("| Services | method | connections/s (median) | vs direct |")
    print("|---:|---|---:|---:|")
    for s in sorted(conn):
        d = conn[s].get("direct")
        for m in ("direct", "meshcni", "iptables", "nftables"):
            if m in conn[s]:
                r = f"{conn[s][m] / d:.2f}x" if d else "-"
                print(f"| {s} | {m} | {conn[s][m]:,.0f} | {r} |")
    if thr:
        print()
        print("| method | Gbit/s (median) | vs direct |")
        print("|---|---:|---:|")
        d = thr.get("direct")
        for m, v in sorted(thr.items()):
            print(f"| {m} | {v:.2f} | {v / d:.2f}x |" if d else f"| {m} | {v:.2f} | - |")


if __name__ == "__main__":
    main(sys.argv[1])
