# SPDX-License-Identifier: MIT OR Apache-2.0
# The meshcni image: agent, controller and CNI plugin in one (`meshcni agent`,
# `meshcni controller`; the DaemonSet and the Deployment pick the command).
#
#   docker build -t ghcr.io/meshcni/meshcni:0.1.0 .
#
# Stage 1 builds the wheels: the Cython and cffi extensions need gcc and the
# libbpf headers, and every bpf/*.bpf.c is compiled by clang -target bpf into
# the package. Stage 2 is the same Debian (same Python ABI) with only what runs:
# python3, libbpf1 for the cffi extension, iproute2 for the operator's shell.

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-dev python3-venv gcc clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir --upgrade pip wheel
WORKDIR /src
# Only the sources: a developer's .venv, build/ and in-place extensions stay out.
COPY pyproject.toml setup.py README.md LICENSE LICENSE-MIT LICENSE-APACHE LICENSE-GPL2 ./
COPY bpf/ bpf/
COPY csrc/ csrc/
COPY meshcni/ meshcni/
# In-tree build products from a developer checkout would be packaged as they
# are; remove them so the wheel is built from source here.
RUN find meshcni -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -f meshcni/*.so meshcni/_fastmap.c meshcni/_libbpf.c meshcni/bpf_objects/*.o \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels .

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv libbpf1 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# --no-index: the runtime installs exactly the wheels stage 1 resolved.
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/meshcni \
 && /opt/meshcni/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels meshcni \
 && rm -rf /tmp/wheels
ENV PATH=/opt/meshcni/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["meshcni"]
CMD ["--help"]
