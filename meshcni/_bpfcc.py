# SPDX-License-Identifier: MIT OR Apache-2.0
"""How meshcni compiles BPF C: one place for clang's flags.

Used by setup.py (loaded by file path, before the package exists) and by the
tests that build small BPF objects of their own. Standard library only.
"""
import os
import platform
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ToolMissing(RuntimeError):
    pass


def clang() -> str:
    path = os.environ.get("CLANG") or shutil.which("clang")
    if path and not shutil.which(path):
        raise ToolMissing(f"CLANG={path} is not an executable")
    if not path:
        raise ToolMissing("clang (needed to compile bpf/*.bpf.c) not found: apt-get install -y clang llvm")
    return path


def cflags(root: str = ROOT) -> list:
    """-target bpf -O2 -g (BTF kept); Debian keeps asm/types.h per-arch."""
    # -Werror only where we develop (scripts/setup-machine.sh sets MESHCNI_BPF_WERROR=1):
    # a newer clang's new warning must not break a user's install
    flags = ["-target", "bpf", "-O2", "-g", "-Wall",
             "-I", os.path.join(root, "bpf", "include"), "-I", os.path.join(root, "bpf")]
    if os.environ.get("MESHCNI_BPF_WERROR") == "1":
        flags.append("-Werror")
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    if os.path.isdir(arch_inc):
        flags += ["-I", arch_inc]
    return flags


def compile_one(src: str, obj: str, root: str = ROOT, extra=()) -> None:
    cmd = [clang(), *cflags(root), *extra, "-c", src, "-o", obj]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"clang failed on {src}:\n{proc.stderr}")
