# SPDX-License-Identifier: MIT OR Apache-2.0
"""Build of meshcni's compiled core.

Five kinds of artefact:
  - meshcni/layout_constants.py   layout.h's integer constants as Python
    (meshcni/_layoutgen.py), so the pure tier needs no compiled extension
  - meshcni._fastmap   Cython (meshcni/_fastmap.pyx): diff/pack hot paths
  - meshcni._libbpf    cffi API mode over the system libbpf (csrc/)
  - meshcni/bpf_objects/*.bpf.o   every bpf/*.bpf.c compiled by clang
    (-target bpf -O2 -g, BTF kept), shipped as package data
  - meshcni/bin/meshcni-cni-shim   the compiled CNI shim (csrc/cni_shim.c,
    plain libc, static when the static libc is installed), which hands CNI
    calls to the agent (`meshcni agent --cni-shim`)

Missing tools stop the build with the Debian package to install.
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    # meshcni/_bpfcc.py (clang's flags) and meshcni/_layoutgen.py serve setup.py and the
    # tests alike; loaded by path because the package is not importable yet.
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_meshcni{name}", os.path.join(ROOT, "meshcni", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bpfcc():
    return _load("_bpfcc")


def generate_layout_constants():
    """meshcni/layout_constants.py in the source tree, before build_py lists the package's modules."""
    print(f"meshcni build: {_load('_layoutgen').write(ROOT)}")


def _check_libbpf():
    for d in ("/usr/include", "/usr/local/include"):
        if os.path.exists(os.path.join(d, "bpf", "libbpf.h")):
            return
    sys.exit("meshcni build: libbpf headers (bpf/libbpf.h) not found.\n"
             "  Install them with: apt-get install -y libbpf-dev\n"
             "  (or run scripts/setup-machine.sh, which installs everything)")


def compile_bpf(out_dir):
    cc = _bpfcc()
    try:
        cc.clang()
    except cc.ToolMissing as e:
        sys.exit(f"meshcni build: {e}\n  (or run scripts/setup-machine.sh, which installs everything)")
    os.makedirs(out_dir, exist_ok=True)
    headers = glob.glob(os.path.join(ROOT, "bpf", "**", "*.h"), recursive=True)
    newest_header = max((os.path.getmtime(h) for h in headers), default=0)
    for src in sorted(glob.glob(os.path.join(ROOT, "bpf", "*.bpf.c"))):
        obj = os.path.join(out_dir, os.path.basename(src)[:-2] + ".o")
        if (os.path.exists(obj) and os.path.getmtime(obj) >= os.path.getmtime(src)
                and os.path.getmtime(obj) >= newest_header):
            continue
        print(f"meshcni build: clang -target bpf {os.path.relpath(src, ROOT)} -> {obj}")
        cc.compile_one(src, obj, ROOT)


SHIM_SRC = os.path.join(ROOT, "csrc", "cni_shim.c")
SHIM_NAME = "meshcni-cni-shim"


def build_shim(out_dir):
    """gcc -O2 csrc/cni_shim.c: static if the static libc links, else dynamic."""
    import subprocess
    import tempfile

    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, SHIM_NAME)
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(SHIM_SRC):
        return
    cc = os.environ.get("CC", "gcc").split()
    base = cc + ["-O2", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", SHIM_SRC]
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".shim.")
    os.close(fd)
    try:
        for extra in (["-static"], []):
            try:
                p = subprocess.run(base + extra + ["-o", tmp], capture_output=True, text=True)
            except FileNotFoundError:
                sys.exit(f"meshcni build: {cc[0]} not found (apt-get install -y gcc)")
            if p.returncode == 0:
                break
        else:
            sys.exit(f"meshcni build: compiling {os.path.relpath(SHIM_SRC, ROOT)} failed:\n{p.stderr}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
        print(f"meshcni build: {cc[0]} {'-static ' if extra else ''}{os.path.relpath(SHIM_SRC, ROOT)} -> {out}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class BuildPy(build_py):
    """build_py that generates meshcni/layout_constants.py first, so the wheel carries it."""

    def run(self):
        generate_layout_constants()
        super().run()


class BuildExt(build_ext):
    """build_ext that also compiles the BPF objects and the CNI shim next to the extensions."""

    def run(self):
        _check_libbpf()
        # an in-place build (pip install -e .) may skip build_py's copy; the module lives in the tree
        generate_layout_constants()
        super().run()
        pkg = os.path.join(ROOT, "meshcni") if self.inplace else os.path.join(self.build_lib, "meshcni")
        compile_bpf(os.path.join(pkg, "bpf_objects"))
        build_shim(os.path.join(pkg, "bin"))


def extensions():
    from Cython.Build import cythonize

    return cythonize(
        [Extension("meshcni._fastmap", ["meshcni/_fastmap.pyx"],
                   extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3"},
    )


setup(
    ext_modules=extensions(),
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
)
