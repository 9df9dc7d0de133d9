# SPDX-License-Identifier: MIT OR Apache-2.0
"""Markdown table of benchmarks/test_tuple_update.py: every method against the C batch call.

    python benchmarks/report_tuples.py benchmarks/out/tuples.json
"""
import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    runs = json.load(open(path))["benchmarks"]
    groups = defaultdict(dict)
    for b in runs:
        e = b["extra_info"]
        med = e.get("inprocess_median", b["stats"]["median"])
        groups[(e["op"], e["entries"])][e["method"]] = (med, b["stats"]["rounds"])
    print("| map | rows | method | rounds | median s | rows/s | vs c-batch | vs tuples-python |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for (op, n), ms in sorted(groups.items()):
        c = ms.get("c-batch", (None,))[0]
        old = ms.get("tuples-python", (None,))[0]
        for m in ("c-batch", "tuples-compiled", "numpy-array", "tuples-python"):
            if m not in ms:
                continue
            t, r = ms[m]
            vc = f"{c / t:.2f}x" if c else "-"
            vo = f"{old / t:.1f}x" if old else "-"
            print(f"| {op.replace('tuples-', '')} | {n:,} | {m} | {r} | {t:.4f} | {n / t / 1e6:.2f} M/s | {vc} | {vo} |")


if __name__ == "__main__":
    main(sys.argv[1])
