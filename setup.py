# SPDX-License-Identifier: MIT OR Apache-2.0
"""Build of meshcni's compiled core.

Three kinds of artefact:
  - meshcni._fastmap   Cython (meshcni/_fastmap.pyx): diff/pack hot paths
  - meshcni._libbpf    cffi API mode over the system libbpf (csrc/)
  - meshcni/bpf_objects/*.bpf.o   every bpf/*.bpf.c compiled by clang
    (-target bpf -O2 -g, BTF kept), shipped as package data

Missing tools stop the build with the Debian package to install.
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _bpfcc():
    # meshcni/_bpfcc.py holds clang's flags for setup.py and the tests alike;
    # loaded by path because the package is not importable yet.
    import importlib.util

    spec = importlib.util.spec_from_file_location("_meshcni_bpfcc", os.path.join(ROOT, "meshcni", "_bpfcc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


class BuildExt(build_ext):
    """build_ext that also compiles the BPF objects next to the extensions."""

    def run(self):
        _check_libbpf()
        super().run()
        if self.inplace:
            compile_bpf(os.path.join(ROOT, "meshcni", "bpf_objects"))
        else:
            compile_bpf(os.path.join(self.build_lib, "meshcni", "bpf_objects"))


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
    cmdclass={"build_ext": BuildExt},
)
