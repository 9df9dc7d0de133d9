# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pure tier needs no compiled code: the controllers and their model import and run from a copy
of the package without the extensions' .so files, and the whole tier runs under the import hook of
tests/noext.py (scripts/test.sh does that pass first; this file checks the hook and the script)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import noext

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

PURE_MODULES = ["meshcni.layout_constants", "meshcni.controllers.model", "meshcni.controllers.services",
                "meshcni.controllers.netpol", "meshcni.controllers.ipcache", "meshcni.controllers.identity",
                "meshcni.controllers.routes", "meshcni.controllers.mesh", "meshcni.cidr", "meshcni.k8s.reconciler"]

# imports the pure modules, runs each controller once on a small cluster, and prints what was loaded
PROGRAM = textwrap.dedent("""
    import importlib, importlib.machinery, json, sys
    for m in sys.argv[1:]:
        importlib.import_module(m)
    from meshcni.controllers.ipcache import ID_HOST, desired_ipcache
    from meshcni.controllers.model import INGRESS, Backend, Frontend
    from meshcni.controllers.netpol import compile_policies
    from meshcni.controllers.services import ServiceIDs, desired_services
    from meshcni.controllers.identity import MANAGED_BY, MANAGER, identity_labels, identity_name
    ns_labels = {"kubernetes.io/metadata.name": "shop"}
    ns = [{"metadata": {"name": "shop", "labels": ns_labels}}]
    pod = {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
           "spec": {"nodeName": "n1", "containers": []},
           "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}}
    labels = identity_labels(pod, ns_labels)
    ident = {"metadata": {"name": identity_name(labels), "namespace": "shop", "labels": {MANAGED_BY: MANAGER}},
             "spec": {"id": 16777300, **labels}}
    svc = {"metadata": {"name": "web", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    eps = {"metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}]}
    pol = {"metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {}}}
    svcs, probs = desired_services([svc], [eps], ServiceIDs())
    assert probs == [] and svcs[0].frontends == [Frontend("10.96.0.10", 80, "tcp")], (svcs, probs)
    assert svcs[0].backends == [Backend("10.244.0.5", 8080)], svcs
    out = compile_policies([pol], [pod], ns, [ident], [])
    assert out.problems == [] and out.enforced == {(16777300, INGRESS)}, out
    prefixes, probs, _ = desired_ipcache([pod], ns, [ident], [], [{"metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}], "n1")
    assert prefixes["10.244.0.5/32"] == 16777300 and prefixes["192.0.2.1/32"] == ID_HOST, prefixes
    compiled = sorted(n for n, m in sys.modules.items()
                      if isinstance(getattr(m, "__loader__", None), importlib.machinery.ExtensionFileLoader)
                      and n.split(".")[0] in ("meshcni", "_cffi_backend"))
    print(json.dumps({"meshcni": sys.modules["meshcni"].__file__, "compiled": compiled,
                      "cffi": "_cffi_backend" in sys.modules or "cffi" in sys.modules}))
""")


def _copy_without_compiled(dst: Path) -> Path:
    """The package as a checkout that was never built, except for the generated constants."""
    def ignore(_dir, names):
        return [n for n in names if n.endswith((".so", ".o", ".c")) or n in ("__pycache__", "bpf_objects", "bin")]
    shutil.copytree(REPO / "meshcni", dst / "meshcni", ignore=ignore)
    assert not list((dst / "meshcni").rglob("*.so"))
    return dst


def _run(cwd: Path, *pre: str) -> dict:
    import json

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(TESTS)])}
    env.pop(noext.ENV, None)
    code = "".join(pre) + PROGRAM
    p = subprocess.run([sys.executable, "-c", code, *PURE_MODULES], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


# an editable install's finder would serve a module missing from the copy out of the source tree
NO_EDITABLE = ("import sys\n"
               "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n")


def test_controllers_import_and_run_with_the_so_files_removed(tmp_path):
    got = _run(_copy_without_compiled(tmp_path), NO_EDITABLE)
    assert got["meshcni"] == str(tmp_path / "meshcni" / "__init__.py")
    assert got["compiled"] == [] and got["cffi"] is False


def test_controllers_import_and_run_under_the_hook():
    got = _run(REPO, "import noext; noext.install()\n")
    assert got["meshcni"] == str(REPO / "meshcni" / "__init__.py")
    assert got["compiled"] == [] and got["cffi"] is False


def test_the_hook_refuses_each_compiled_module_as_never_built():
    code = textwrap.dedent("""
        import noext; noext.install()
        for name in ("meshcni._libbpf", "meshcni._fastmap", "_cffi_backend"):
            try:
                __import__(name)
            except ModuleNotFoundError as e:
                print(name, type(e).__name__)
            else:
                raise SystemExit(name + " imported")
    """)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop(noext.ENV, None)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == ["meshcni._libbpf ExtensionRefused", "meshcni._fastmap ExtensionRefused",
                                        "_cffi_backend ExtensionRefused"]


def test_the_ci_entry_runs_the_pure_tier_without_the_extension():
    script = (REPO / "scripts" / "test.sh").read_text()
    assert f"{noext.ENV}=1 .venv/bin/python -m pytest tests/pure" in script
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
