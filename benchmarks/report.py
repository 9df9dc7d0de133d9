#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Summarise a map-churn benchmark run (pytest-benchmark --benchmark-json).

    python benchmarks/report.py benchmarks/out/map_churn.json --png benchmarks/out/map_churn.png

Prints one Markdown table per operation (median seconds, entries/second,
throughput relative to the C reference and to the per-element Python loop),
then the performance targets and whether this run meets them. For the C
reference ("c-ref") the median is of the program's own in-process timing
(``extra_info["inprocess_seconds"]``): subprocess start-up, map creation and
array filling are not part of the work being compared.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

OP_ORDER = ["update", "lpm-insert", "delete", "dump", "reconcile-1pct", "reconcile-unchanged"]
OP_TITLES = {
    "update": "Bulk update (hash, 8 B key / 8 B value, into an empty map)",
    "lpm-insert": "LPM trie insert (mc_ipcache layout, distinct /24../32 IPv4-mapped prefixes)",
    "delete": "Bulk delete (hash, all entries)",
    "dump": "Dump (hash, all entries)",
    "reconcile-1pct": "Reconcile, 1% of values changed (hash)",
    "reconcile-unchanged": "Reconcile, nothing changed (hash)",
}
METHOD_ORDER = ["c-ref", "numpy-batch", "loop-in-C", "per-element", "reconcile (dump)", "reconcile (cached)"]

# the targets
T_CREF_RATIO = 0.95      # numpy-batch update throughput >= 0.95x the C reference ...
T_CREF_SIZES = (100_000, 1_000_000)
T_PER_ELEMENT = 5.0      # ... and >= 5x the per-element loop
T_RECONCILE_N = 1_000_000
T_RECONCILE_FRAC = 0.03  # reconcile of 1M with 1% changed <= 3% of a full update


class Row:
    def __init__(self, b: dict):
        info = b.get("extra_info", {})
        self.op = info.get("op", b.get("group") or b["name"])
        self.entries = int(info.get("entries", 0))
        self.method = info.get("method", b["name"])
        self.info = info
        st = b["stats"]
        self.rounds = int(st["rounds"])
        self.wall_median = float(st["median"])
        if self.method == "c-ref" and info.get("inprocess_seconds"):
            self.median = statistics.median(float(x) for x in info["inprocess_seconds"])
        else:
            self.median = self.wall_median

    @property
    def rate(self) -> float:
        return self.entries / self.median if self.median > 0 else float("inf")

    def note(self) -> str:
        i = self.info
        parts = []
        if self.method == "c-ref":
            parts.append(f"in-process; subprocess wall {self.wall_median:.4g} s")
        if "used_batch" in i:
            parts.append("batch" if i["used_batch"] else "per-element syscalls")
        if "syscalls" in i:
            parts.append(f"{i['syscalls']} bpf() call{'s' if i['syscalls'] != 1 else ''}")
        if "writes" in i:
            parts.append(f"writes {i['writes']}")
        return ", ".join(parts)


def load(path: str):
    with open(path) as fh:
        data = json.load(fh)
    rows = [Row(b) for b in data.get("benchmarks", [])]
    return data, rows


def index(rows):
    by = {}
    for r in rows:
        by[(r.op, r.entries, r.method)] = r
    return by


def fmt_ratio(x) -> str:
    return "—" if x is None else f"{x:.2f}×"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def method_key(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def tables(rows, by) -> str:
    out = []
    ops = sorted({r.op for r in rows}, key=lambda o: (OP_ORDER.index(o) if o in OP_ORDER else 99, o))
    for op in ops:
        out.append(f"### {OP_TITLES.get(op, op)}\n")
        hash_op = op not in ("update", "lpm-insert")
        cols = ["entries", "method", "rounds", "median s", "entries/s", "vs c-ref", "vs per-element"]
        if hash_op:
            cols.append("% of numpy-batch update")
        cols.append("notes")
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---:" if c not in ("method", "notes") else "---" for c in cols) + "|")
        for r in sorted((r for r in rows if r.op == op), key=lambda r: (r.entries, method_key(r.method))):
            cref = by.get((op, r.entries, "c-ref"))
            pe = by.get((op, r.entries, "per-element"))
            vs_c = cref.median / r.median if cref else None
            vs_pe = pe.median / r.median if pe else None
            cells = [f"{r.entries:,}", r.method, str(r.rounds), f"{r.median:.6f}", fmt_rate(r.rate),
                     fmt_ratio(vs_c), fmt_ratio(vs_pe)]
            if hash_op:
                upd = by.get(("update", r.entries, "numpy-batch"))
                cells.append(f"{100 * r.median / upd.median:.1f}%" if upd else "—")
            cells.append(r.note())
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out.append("Ratios are throughput ratios (the other method's median time / this row's): "
               ">1 means this row is faster. c-ref medians are the C program's in-process time.\n")
    return "\n".join(out)


def targets(by, rows):
    """[(description, measured text, met: True/False/None)]"""
    res = []
    for base, label, goal, fmt in (("c-ref", "C-ref throughput", T_CREF_RATIO, ".3f"),
                                   ("per-element", "per-element", T_PER_ELEMENT, ".2f")):
        for n in T_CREF_SIZES:
            np_ = by.get(("update", n, "numpy-batch"))
            other = by.get(("update", n, base))
            what = f"bulk update {n:,}: numpy-batch ≥ {goal:g}× {label}"
            if np_ and other:
                ratio = other.median / np_.median
                res.append((what, f"{ratio:{fmt}}× ({np_.median:.4f} s vs {other.median:.4f} s)", ratio >= goal))
            else:
                res.append((what, "not measured", None))
    upd = by.get(("update", T_RECONCILE_N, "numpy-batch"))
    rec = sorted((r for r in rows if r.op == "reconcile-1pct" and r.entries == T_RECONCILE_N),
                 key=lambda r: method_key(r.method))
    if upd and rec:
        for r in rec:
            frac = r.median / upd.median
            res.append((f"{r.method} {T_RECONCILE_N:,}, 1% changed ≤ {T_RECONCILE_FRAC:.0%} of full update",
                        f"{frac:.1%} ({r.median:.4f} s vs {upd.median:.4f} s)", frac <= T_RECONCILE_FRAC))
    else:
        res.append((f"reconcile {T_RECONCILE_N:,}, 1% changed ≤ {T_RECONCILE_FRAC:.0%} of full update",
                    "not measured", None))
    unchanged = [r for r in rows if r.op == "reconcile-unchanged"]
    if unchanged:
        bad = [r for r in unchanged if int(r.info.get("writes", -1)) != 0]
        sizes = ", ".join(sorted({f"{r.entries:,}" for r in unchanged}, key=lambda s: int(s.replace(",", ""))))
        methods = ", ".join(sorted({r.method for r in unchanged}, key=method_key))
        res.append(("reconcile with nothing changed wrote nothing",
                    f"{len(unchanged) - len(bad)}/{len(unchanged)} runs wrote 0 ({methods}; {sizes})"
                    + ("; wrote: " + ", ".join(f"{r.method} {r.entries}: {r.info.get('writes')}" for r in bad)
                       if bad else ""), not bad))
    else:
        res.append(("reconcile with nothing changed wrote nothing", "not measured", None))
    return res


def targets_md(tg) -> str:
    out = ["### Targets\n", "| target | measured | met |", "|---|---|---|"]
    for desc, meas, met in tg:
        out.append(f"| {desc} | {meas} | {'yes' if met else ('n/a' if met is None else '**no**')} |")
    return "\n".join(out) + "\n"


def header(data) -> str:
    mi = data.get("machine_info", {})
    cpu = (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or "?"
    extra = data.get("meshcni", {})
    nproc = extra.get("nproc") or (mi.get("cpu") or {}).get("count") or "?"
    kernel = extra.get("kernel") or mi.get("release") or "?"
    lines = [f"Run {data.get('datetime', '?')} — {cpu}, {nproc} CPUs, Linux {kernel}, "
             f"Python {mi.get('python_version', '?')}"]
    if "session_seconds" in extra:
        lines.append(f"Total benchmark session: {extra['session_seconds']:.0f} s "
                     f"({extra['session_seconds'] / 60:.1f} min)")
    return "\n\n".join(lines) + "\n"


def plot(rows, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 6))
    series = defaultdict(list)
    for r in rows:
        if r.op == "update":
            series[r.method].append((r.entries, r.rate))
    markers = {"c-ref": "s", "numpy-batch": "o", "loop-in-C": "^", "per-element": "v"}
    for method in sorted(series, key=method_key):
        pts = sorted(series[method])
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(method, "o"), label=method)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("entries")
    ax1.set_ylabel("entries / second")
    ax1.set_title("bulk update (hash 8B/8B, empty map)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    other = defaultdict(list)
    for r in rows:
        if r.op != "update":
            other[(r.op, r.method)].append((r.entries, r.rate))
    ops = [o for o in OP_ORDER if any(k[0] == o for k in other)] + \
        sorted({k[0] for k in other} - set(OP_ORDER))
    colors = {op: f"C{i}" for i, op in enumerate(ops)}
    styles = {"reconcile (cached)": ("--", "D"), "c-ref": (":", "s"), "loop-in-C": ("-.", "^"),
              "per-element": (":", "v")}
    for op, method in sorted(other, key=lambda k: (ops.index(k[0]), method_key(k[1]))):
        pts = sorted(other[(op, method)])
        ls, mk = styles.get(method, ("-", "o"))
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[op], linestyle=ls, marker=mk,
                 label=f"{op}: {method}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("entries")
    ax2.set_ylabel("entries / second")
    ax2.set_title("other operations (reconcile: entries reconciled / s)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle("meshcni map churn: entries vs throughput (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="pytest-benchmark --benchmark-json output")
    ap.add_argument("--png", help="write the throughput plot here")
    ap.add_argument("--md", help="also write the Markdown report here")
    args = ap.parse_args(argv)
    data, rows = load(args.json)
    if not rows:
        print(f"{args.json}: no benchmarks", file=sys.stderr)
        return 1
    by = index(rows)
    text = "\n".join([header(data), tables(rows, by), targets_md(targets(by, rows))])
    print(text)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    if args.png:
        plot(rows, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
