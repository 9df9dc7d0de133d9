# SPDX-License-Identifier: MIT OR Apache-2.0
"""The Dockerfile against what the chart and the code expect, without docker.

Nothing here runs docker (there is none on these machines); what can be
checked without it is:

- the build stage's own commands, on exactly the files its COPY lines bring
  in: the wheel they produce holds both extensions, a BPF object for every
  bpf/*.bpf.c, the static CNI shim and every package the code imports, and
  declares the `meshcni` entry point the chart's containers run;
- the runtime stage: `meshcni` on PATH through the venv, every shared
  library the extensions link against comes from a package the stage
  installs (or one it depends on, or Debian's required set, which the slim
  image has), the tools the chart's init containers run (sh, stat, mount,
  sleep) are in Debian's required set, and the shim needs no loader on the host.

Not verified here (needs docker): that debian:12-slim still has these
packages, that apt inside the build succeeds, the image's size and layers.
This machine is the same Debian release as the image (checked below), so
package names and library sonames carry over.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest
import yaml

pytestmark = pytest.mark.pure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")


def _instructions():
    """[(stage index, INSTRUCTION, argument text)] with continuation lines joined."""
    text = open(DOCKERFILE, encoding="utf-8").read()
    text = re.sub(r"\\\n", " ", text)
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ins, _, arg = line.partition(" ")
        ins = ins.upper()
        if ins == "FROM":
            stage += 1
        out.append((stage, ins, arg.strip()))
    return out


INS = _instructions()
STAGES = [a for _, i, a in INS if i == "FROM"]


def _stage_of(name):
    for n, (_, i, a) in enumerate([x for x in INS if x[1] == "FROM"]):
        if a.split()[-1] == name:
            return n
    raise AssertionError(f"no stage named {name}")


def _final():
    return len(STAGES) - 1


def _apt_packages(stage):
    pkgs = []
    for s, i, a in INS:
        if s == stage and i == "RUN" and "apt-get install" in a:
            tail = a.split("apt-get install", 1)[1].split("&&")[0]
            pkgs += [w for w in tail.split() if not w.startswith("-")]
    return pkgs


def _dpkg(*args):
    p = subprocess.run(["dpkg-query", *args], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else ""


def _owner(path):
    """The Debian package of a file; merged /usr means a package may list /bin/x for /usr/bin/x."""
    cands = [path, os.path.realpath(path)]
    for c in list(cands):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
            if c.startswith(a):
                cands.append(b + c[len(a):])
            elif c.startswith(b):
                cands.append(a + c[len(b):])
    for c in cands:
        p = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
        owners = [line.split(":")[0].strip() for line in p.stdout.splitlines()
                  if not line.startswith("diversion by")]
        if p.returncode == 0 and owners:
            return owners[0].split(",")[0]
    return None


def _closure(pkgs):
    """The packages and everything they depend on (installed here), by name without arch."""
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        deps = _dpkg("-W", "-f=${Depends},${Pre-Depends}", p)
        for alt in deps.split(","):
            name = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return seen


def _required(pkg):
    return _dpkg("-W", "-f=${Priority} ${Essential}", pkg).split()[:1] in (["required"],) or \
        "yes" in _dpkg("-W", "-f=${Essential}", pkg)


def test_the_dockerfile_is_the_one_the_readme_and_makefile_build():
    assert STAGES[0].startswith("debian:12-slim") and STAGES[-1].startswith("debian:12-slim")
    with open("/etc/os-release") as f:
        osr = dict(line.rstrip().split("=", 1) for line in f if "=" in line)
    if osr.get("VERSION_ID", "").strip('"') != "12":
        pytest.skip("the package checks compare with this machine's Debian, which is not the image's (12)")


def test_runtime_stage_runs_what_the_chart_runs():
    final = _final()
    env = " ".join(a for s, i, a in INS if s == final and i == "ENV")
    assert re.search(r"PATH=/opt/meshcni/bin:", env), "meshcni must be on PATH (the chart's command is [meshcni])"
    (ep,) = [a for s, i, a in INS if s == final and i == "ENTRYPOINT"]
    assert json.loads(ep) == ["meshcni"]
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the controller's root filesystem is read-only"
    # the chart's containers: commands the image has
    sys.path.insert(0, os.path.join(ROOT, "tests", "pure"))
    from test_chart import PRESETS, render
    commands = set()
    for values in (PRESETS["default"], PRESETS["uninstall"]):
        docs, _ = render(values)
        for d in docs:
            if d["kind"] in ("DaemonSet", "Deployment"):
                spec = d["spec"]["template"]["spec"]
                for c in spec.get("initContainers", []) + spec["containers"]:
                    commands.add(c["command"][0])
                    if c["command"][0] == "sh":
                        commands |= set(re.findall(r"\b(stat|mount|echo|exit)\b", c["command"][2]))
    assert commands >= {"meshcni", "sh", "stat", "mount", "sleep"}
    for tool in sorted(commands - {"meshcni", "echo", "exit"}):
        path = shutil.which(tool)
        assert path, f"{tool} is not on this machine either"
        pkg = _owner(path)
        assert pkg and _required(pkg), f"{tool} ({pkg}) is not in Debian's required set: install it in the image"


def _shared_libs(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    return [m.group(1) for m in re.finditer(r"=>\s+(/\S+)", out)]


def test_runtime_stage_has_every_library_the_extensions_link():
    final = _final()
    listed = _apt_packages(final)
    assert "libbpf1" in listed and "python3" in listed
    have = _closure(listed)
    import meshcni  # where the built extensions are: in place here, site-packages in the image's test stage
    pkg_dir = os.path.dirname(meshcni.__file__)
    exts = glob.glob(os.path.join(pkg_dir, "_libbpf*.so")) + glob.glob(os.path.join(pkg_dir, "_fastmap*.so"))
    assert len(exts) == 2, "build the extensions first (scripts/setup-machine.sh)"
    for ext in exts:
        for lib in _shared_libs(ext):
            pkg = _owner(lib)
            if pkg is None:  # a wheel's own bundled library (numpy's) travels in the wheel
                continue
            pkg = pkg.split(":")[0]
            assert pkg in have or _required(pkg), \
                f"{os.path.basename(ext)} links {lib} from {pkg}, which the runtime stage does not install"


def _is_static(path):
    with open(path, "rb") as f:
        head = f.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2, f"{path}: not a 64-bit ELF"
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        for _ in range(phnum):
            p_type, = struct.unpack("<I", f.read(phentsize)[:4])
            if p_type == 3:  # PT_INTERP: needs a dynamic loader
                return False
    return True


def test_build_stage_commands_make_what_the_image_needs(tmp_path):
    """The build stage's COPY lines and its `pip wheel`, run here on a copy of just those files."""
    build = _stage_of("build")
    src = tmp_path / "src"
    src.mkdir()
    for s, i, a in INS:
        if s == build and i == "COPY":
            *items, dest = a.split()
            for item in items:
                full = os.path.join(ROOT, item.rstrip("/"))
                to = src / (dest.rstrip("/") if dest.rstrip("/") not in ("", ".") and len(items) == 1
                            else os.path.basename(item.rstrip("/")))
                if os.path.isdir(full):
                    shutil.copytree(full, to, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(full, to)
    (run,) = [a for s, i, a in INS if s == build and i == "RUN" and "--wheel-dir" in a]
    # the stage's own cleanup of in-tree build products, then its wheel build (this venv's build tools)
    cleanup = run.split("&&")[1].strip()
    assert cleanup.startswith("rm -f ")
    subprocess.run(["sh", "-ec", cleanup], cwd=src, check=True)
    subprocess.run(["sh", "-ec", run.split("&&")[0]], cwd=src, check=True)  # the find of __pycache__
    wheels = tmp_path / "wheels"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                        "--wheel-dir", str(wheels), "."], cwd=src, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (whl,) = glob.glob(str(wheels / "meshcni-*.whl"))
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        eps = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        z.extract("meshcni/bin/meshcni-cni-shim", tmp_path / "x")
    assert re.search(r"^meshcni = meshcni\.cli:main$", eps, re.M)
    assert any(re.fullmatch(r"meshcni/_fastmap\..*\.so", n) for n in names)
    assert any(re.fullmatch(r"meshcni/_libbpf\..*\.so", n) for n in names)
    for c in glob.glob(os.path.join(ROOT, "bpf", "*.bpf.c")):
        assert f"meshcni/bpf_objects/{os.path.basename(c)[:-2]}.o" in names, f"{c} not compiled into the wheel"
    assert "meshcni/bin/meshcni-cni-shim" in names
    assert _is_static(str(tmp_path / "x" / "meshcni" / "bin" / "meshcni-cni-shim")), \
        "the shim runs on the host: it must need no loader (install the static libc, libc6-dev, in the build stage)"
    # every module of the source tree is packaged (a new subpackage missing from pyproject would vanish)
    for py in glob.glob(os.path.join(ROOT, "meshcni", "**", "*.py"), recursive=True):
        rel = os.path.relpath(py, ROOT)
        assert rel in names, f"{rel} is not in the wheel: add its package to [tool.setuptools] packages"
    # the chart's args are what this wheel's parser takes: test_chart.py parses them with the same code


def test_the_image_tag_is_the_charts_default():
    with open(os.path.join(ROOT, "charts", "meshcni", "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert chart["appVersion"] == version, "the chart deploys the image of this version (image.tag defaults to it)"
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert re.search(rf"^TAG\s+\?=\s+{re.escape(version)}$", f.read(), re.M)
    with open(DOCKERFILE) as f:
        assert f"meshcni:{version}" in f.read()
