# SPDX-License-Identifier: MIT OR Apache-2.0
"""Writes meshcni/layout_constants.py: the ``#define MC_* <integer>`` lines of layout.h as Python.

The pure tier (controllers, the model, the CLI's decoders) needs layout.h's
constants but must not load the compiled extension, which is where the
header text otherwise comes from (:func:`meshcni.layout.compiled`). So the
build turns the header into a plain module: ``setup.py`` (``build_py`` and
``build_ext``, so wheels and editable installs both get it) and
``scripts/setup-machine.sh`` run this file.

The output is not in git: layout.h stays the one source, and a branch that
adds a constant cannot forget to regenerate a committed copy. A stale output
cannot go unnoticed: it carries the header's SHA-256, which
:func:`meshcni.layout.compiled` compares with the header compiled into the
extension (a stale build refuses to run), and tests/pure/test_layout_constants.py
compares it with the header in the tree.

Stdlib only, and loaded by path from setup.py: the package is not importable
before it is built.

    python meshcni/_layoutgen.py [--check] [SOURCE_ROOT]
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from typing import Dict, Optional

HEADER = os.path.join("bpf", "include", "meshcni", "layout.h")  # relative to the source root
OUTPUT = os.path.join("meshcni", "layout_constants.py")

_DEFINE_RE = re.compile(r"^\s*#define\s+(MC_\w+)\s+(\d+)\s*$", re.M)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def defines(text: str) -> Dict[str, int]:
    """The integer constants of header text, in header order (comments ignored)."""
    return {m.group(1): int(m.group(2)) for m in _DEFINE_RE.finditer(strip_comments(text))}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render(text: str) -> str:
    """The module's source for header text ``text``."""
    consts = defines(text)
    lines = [
        "# SPDX-License-Identifier: MIT OR Apache-2.0",
        f"# Generated from {HEADER.replace(os.sep, '/')} by meshcni/_layoutgen.py at build time; not in git.",
        "# Edit layout.h and rebuild (scripts/setup-machine.sh or pip install -e .).",
        '"""The integer constants of layout.h (``#define MC_*``), importable without the compiled extension."""',
        "",
        f'HEADER_SHA256 = "{sha256(text)}"',
        "",
    ]
    lines += [f"{k} = {v}" for k, v in consts.items()]
    lines += ["", "CONSTANTS = {"]
    lines += [f'    "{k}": {k},' for k in consts]
    lines += ["}", ""]
    return "\n".join(lines)


def _read(root: str) -> str:
    with open(os.path.join(root, HEADER)) as f:
        return f.read()


def write(root: str, out_path: Optional[str] = None) -> str:
    """Generate from ``root``'s header into ``out_path`` (default: ``root``/meshcni/layout_constants.py).

    Rewritten only when the content changes (an unchanged build touches
    nothing), and atomically, so a concurrent import never reads half a file.
    """
    out_path = out_path or os.path.join(root, OUTPUT)
    src = render(_read(root))
    try:
        with open(out_path) as f:
            if f.read() == src:
                return out_path
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = f"{out_path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(src)
    os.replace(tmp, out_path)
    return out_path


def check(root: str, out_path: Optional[str] = None) -> Optional[str]:
    """None when the generated module is current, else what is wrong."""
    out_path = out_path or os.path.join(root, OUTPUT)
    try:
        with open(out_path) as f:
            have = f.read()
    except FileNotFoundError:
        return f"{out_path} is missing: build meshcni (scripts/setup-machine.sh)"
    if have != render(_read(root)):
        return f"{out_path} was generated from another {HEADER}: rebuild (scripts/setup-machine.sh)"
    return None


def main(argv) -> int:
    args = [a for a in argv if a != "--check"]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "--check" in argv:
        why = check(root)
        if why:
            print(f"meshcni layout constants: {why}", file=sys.stderr)
            return 1
        return 0
    print(f"meshcni build: {HEADER} -> {write(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
