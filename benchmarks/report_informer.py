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
        base = {b["extra_info"]["shape"]: b["stats"]["median"] for b in sync if b["extra_info"]["method"] == "stdlib"}
        print("| caches | codec | rounds | median s | min s | services list s | slices list s | vs stdlib |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for b in sorted(sync, key=lambda b: (b["extra_info"]["shape"], b["extra_info"]["method"] != "stdlib")):
            e, s = b["extra_info"], b["stats"]
            vs = f"{base[e['shape']] / s['median']:.2f}x" if e["shape"] in base else "-"
            print(f"| {e['shape']} | {e['method']} | {s['rounds']} | {s['median']:.3f} | {s['min']:.3f} | "
                  f"{e['services_list_s']:.3f} | {e['slices_list_s']:.3f} | {vs} |")
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
