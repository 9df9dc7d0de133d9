#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Render deploy/ from charts/meshcni: the chart is the one source of the manifests.

    .venv/bin/python scripts/render-manifests.py           # write deploy/
    .venv/bin/python scripts/render-manifests.py --check   # exit 1 and name the files that differ

Helm's own engine renders (helm-python-sdk embeds Helm v4's Go SDK; no helm
binary needed), with the chart's default values plus createNamespace=true,
release "meshcni" in namespace meshcni-system. Each template becomes the
deploy/ file of the same path (templates/agent/daemonset.yaml ->
deploy/agent/daemonset.yaml: `meshcni sim` reads that one), and
deploy/kustomization.yaml lists them after the CRDs, so `kubectl apply -k
deploy` installs what `helm install` would.

The CRDs are the exception: Helm never templates crds/, so the chart's crds/
is a symlink to deploy/crds, which stays the source (the API server and the
simulator load it too).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "meshcni")
DEPLOY = os.path.join(ROOT, "deploy")
RELEASE, NAMESPACE = "meshcni", "meshcni-system"
VALUES = {"createNamespace": True}
SPDX = "# SPDX-License-Identifier: MIT OR Apache-2.0"
# deploy/ files this script owns (written, or removed when a template renders empty)
OWNED_DIRS = ("agent", "controller", "rbac")
OWNED_TOP = ("namespace.yaml", "kustomization.yaml")
# apply order in the kustomization: what others refer to first
ORDER = ("namespace.yaml", "rbac/", "agent/", "controller/")


def render(values=None, *, name=RELEASE, namespace=NAMESPACE) -> dict:
    """template path (relative to templates/) -> rendered text; empty renders and NOTES.txt left out."""
    import helm_python as helm
    helm.disable_logging()  # the crds/ symlink is logged at INFO on every load
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name=name, namespace=namespace)
    prefix = f"{chart_name()}/templates/"
    rendered = {}
    for path, text in out.items():
        rel = path[len(prefix):] if path.startswith(prefix) else path
        if rel.endswith("NOTES.txt") or not _body(text).strip():
            continue
        rendered[rel] = text
    return rendered


def chart_name() -> str:
    import yaml
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        return yaml.safe_load(f)["name"]


def _body(text: str) -> str:
    """The rendered text without the template's own licence line (the file gets one header)."""
    lines = text.splitlines()
    while lines and (lines[0].strip() == SPDX or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines).rstrip() + "\n"


def _sort_key(rel: str):
    for i, p in enumerate(ORDER):
        if rel == p or rel.startswith(p):
            return (i, rel)
    return (len(ORDER), rel)


def manifests() -> dict:
    """deploy/-relative path -> the exact file content."""
    files = {}
    for rel, text in render(VALUES).items():
        files[rel] = (f"{SPDX}\n"
                      f"# Rendered from charts/meshcni/templates/{rel} by scripts/render-manifests.py\n"
                      f"# (default values, release {RELEASE} in {NAMESPACE}). Do not edit: change the\n"
                      "# chart and re-render; tests/pure/test_chart.py fails when this file drifts.\n"
                      + _body(text))
    listed = ["crds"] + sorted(files, key=_sort_key)
    files["kustomization.yaml"] = (
        f"{SPDX}\n"
        "# Rendered by scripts/render-manifests.py. Everything a cluster needs:\n"
        "# `kubectl apply -k deploy` (the same objects as `helm install meshcni charts/meshcni\n"
        f"# -n {NAMESPACE} --create-namespace`). Not included on purpose: deploy/kind (kind's\n"
        "# own configs and per-cluster Cluster CRs) and deploy/examples (the demo app).\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n" + "".join(f"  - {p}\n" for p in listed))
    return files


def current() -> dict:
    """What deploy/ holds now of the files this script owns."""
    out = {}
    for top in OWNED_TOP:
        p = os.path.join(DEPLOY, top)
        if os.path.exists(p):
            out[top] = open(p, encoding="utf-8").read()
    for d in OWNED_DIRS:
        for dirpath, _, names in os.walk(os.path.join(DEPLOY, d)):
            for n in names:
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, DEPLOY)] = open(p, encoding="utf-8").read()
    return out


def diff(want: dict, have: dict) -> list:
    return sorted(p for p in set(want) | set(have) if want.get(p) != have.get(p))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if deploy/ differs from a fresh render")
    args = ap.parse_args(argv)
    want, have = manifests(), current()
    changed = diff(want, have)
    if args.check:
        for p in changed:
            print(f"deploy/{p}: {'missing' if p not in have else 'not in the render' if p not in want else 'differs'}")
        return 1 if changed else 0
    for p in changed:
        full = os.path.join(DEPLOY, p)
        if p not in want:
            os.unlink(full)
            print(f"removed deploy/{p}")
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(want[p])
        print(f"wrote deploy/{p}")
    for d in OWNED_DIRS:  # directories left empty by a removed template
        full = os.path.join(DEPLOY, d)
        if os.path.isdir(full) and not os.listdir(full):
            os.rmdir(full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
