#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Installs everything meshcni needs on a fresh Debian machine (12 or 13) and
# builds the package into ./.venv. Idempotent: cheap when nothing is missing,
# so it runs before every test run. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(clang llvm libbpf-dev bpftool iproute2 iptables containernetworking-plugins
          libelf-dev zlib1g-dev pkg-config gcc procps util-linux nftables iperf3)
# kubectl for the API server's smoke tests: Debian's kubernetes-client unless
# the machine already has one (a newer kubectl is kept as it is)
command -v kubectl >/dev/null 2>&1 || APT_PKGS+=(kubernetes-client)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-machine: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup-machine: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# editable: the extensions and BPF objects are built in place (meshcni/)
MESHCNI_BPF_WERROR=${MESHCNI_BPF_WERROR:-1} .venv/bin/python -m pip install -q -e '.[test]'
# layout.h's constants for the pure tier (setup.py generates them too; this also covers a
# setuptools whose editable build skips build_py), then a check that they match the extension
.venv/bin/python meshcni/_layoutgen.py
.venv/bin/python -c "import meshcni._fastmap, meshcni._libbpf; from meshcni import layout; layout.constants(); from meshcni.bpf import object_path; object_path('maps')"
echo "setup-machine: ok ($(.venv/bin/python -c 'import meshcni._libbpf as l; print("libbpf", l.ffi.string(l.lib.mc_libbpf_version()).decode())'), $(clang --version | head -1))"
