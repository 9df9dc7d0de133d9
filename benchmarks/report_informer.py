# SPDX-License-Identifier: MIT OR Apache-2.0
"""Markdown tables of benchmarks/test_informer_sync.py: sync time and pod-cache memory per codec.

    python benchmarks/report_informer.py benchmarks/out/informer_sync.json
"""
import json
import sys


def main(path: str) -> None:
    runs = json.load(open(path))["benchmarks"]
    sync = [b for b in runs if b["group"].startswith("informer-sync")]
    mem = [b for b in runs if b["group"] == "informer-pod-memory"]
    if sync:
        print("| caches | rounds | stdlib median s | fastjson median s | stdlib min s | fastjson min s | "
              "median of per-round ratios |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for b in sorted(sync, key=lambda b: b["extra_info"]["shape"]):
            e = b["extra_info"]
            print(f"| {e['shape']} | {len(e['stdlib_s'])} | {e['stdlib_median']:.3f} | {e['fastjson_median']:.3f} | "
                  f"{min(e['stdlib_s']):.3f} | {min(e['fastjson_s']):.3f} | {e['ratio_median']:.2f}x |")
    if mem:
        print()
        print("| codec | pods | RSS before KiB | RSS after sync KiB | KiB per pod |")
        print("|---|---:|---:|---:|---:|")
        for b in mem:
            e = b["extra_info"]
            print(f"| {e['method']} | {e['pods']:,} | {e['rss_kib']['base']:,} | {e['rss_kib']['after']:,} | "
                  f"{e['kib_per_pod']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
