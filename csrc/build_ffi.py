# SPDX-License-Identifier: MIT OR Apache-2.0
"""cffi builder (API mode) for ``meshcni._libbpf``.

The cdef is csrc/mc_bpf.h and csrc/mc_nl.h themselves (minus preprocessor
lines) plus the layout structs of bpf/include/meshcni/layout.h, so cffi's
compile-time checks compare both against what the C compiler actually lays
out: a drift between the header and the extension cannot build.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BPF_INCLUDE = os.path.join(ROOT, "bpf", "include")
LAYOUT_H = os.path.join(BPF_INCLUDE, "meshcni", "layout.h")

_KERNEL_TYPES = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef uint16_t __be16;
typedef uint32_t __be32;
typedef uint64_t __be64;
"""


def _strip_preprocessor(text, keep_int_defines):
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = re.match(r"#define\s+(MC_\w+)\s+(\d+)\s*$", s)
            if keep_int_defines and m:
                out.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        out.append(line)
    return "\n".join(out)


def _c_string(text):
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return "\n".join(f'"{line}\\n"' for line in body.splitlines())


def make_ffi():
    with open(os.path.join(HERE, "mc_bpf.h")) as f:
        api = f.read()
    with open(os.path.join(HERE, "mc_nl.h")) as f:
        nl_api = f.read()
    with open(LAYOUT_H) as f:
        layout = f.read()
    # pycparser has no comments; cdef strips them itself, but the '/*' inside
    # prose would confuse the define filter, so drop comments first.
    layout_nc = re.sub(r"/\*.*?\*/", "", layout, flags=re.S)
    api_nc = re.sub(r"/\*.*?\*/", "", api, flags=re.S)
    nl_nc = re.sub(r"/\*.*?\*/", "", nl_api, flags=re.S)

    ffi = FFI()
    ffi.cdef(_KERNEL_TYPES)
    ffi.cdef(_strip_preprocessor(layout_nc, keep_int_defines=True))
    ffi.cdef(_strip_preprocessor(api_nc, keep_int_defines=False))
    ffi.cdef(_strip_preprocessor(nl_nc, keep_int_defines=False))
    ffi.set_source(
        "meshcni._libbpf",
        '#include <linux/types.h>\n'
        '#include "mc_bpf.h"\n'
        '#include "mc_nl.h"\n'
        '#include "meshcni/layout.h"\n'
        f"static const char MC_LAYOUT_TEXT[] =\n{_c_string(layout)};\n"
        "const char *mc_layout_header(void) { return MC_LAYOUT_TEXT; }\n",
        sources=[os.path.relpath(os.path.join(HERE, src), ROOT) for src in ("mc_bpf.c", "mc_nl.c")],
        include_dirs=[os.path.relpath(HERE, ROOT), os.path.relpath(BPF_INCLUDE, ROOT)],
        libraries=["bpf"],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    )
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
