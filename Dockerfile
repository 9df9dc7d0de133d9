# SPDX-License-Identifier: MIT OR Apache-2.0
# The meshcni image: agent, controller and CNI plugin in one (`meshcni agent`,
# `meshcni controller`; the DaemonSet and the Deployment pick the command).
#
#   docker build -t ghcr.io/meshcni/meshcni:0.1.0 .
#
# Stage "build" builds the wheel: the Cython and cffi extensions need gcc and
# the libbpf headers, every bpf/*.bpf.c is compiled by clang -target bpf into
# the package, and the CNI shim is linked statically (libc6-dev's libc.a) since
# it runs on the node, outside the image. Stage "test" runs the pure test tier
# on that wheel. The last stage is the same Debian (same Python ABI) with only
# what runs: python3, libbpf1 for the cffi extension, iproute2 for the
# operator's shell; sh, stat, mount and sleep (the chart's init containers)
# are in Debian's required set. tests/pure/test_dockerfile.py checks all of
# this without docker, running this file's own build commands.

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

# The pure test tier against the wheel just built (Helm chart renders, manifests,
# this Dockerfile's own checks included): the runtime stage copies this stage's
# marker, so no image is produced from code that fails its own tests.
FROM build AS test
COPY tests/ tests/
COPY charts/ charts/
COPY deploy/ deploy/
COPY scripts/ scripts/
COPY Makefile Dockerfile ./
# `pytest`, not `python -m pytest`: /src (the sources without their built
# extensions) must not shadow the installed wheel on sys.path.
RUN /opt/build/bin/pip install --no-cache-dir "$(ls /wheels/meshcni-*.whl)[test]" \
 && /opt/build/bin/pytest -m pure -q -p no:cacheprovider tests/pure \
 && touch /tmp/pure-tier-passed

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv libbpf1 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# --no-index: the runtime installs exactly the wheels stage 1 resolved.
COPY --from=test /tmp/pure-tier-passed /usr/share/meshcni/pure-tier-passed
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/meshcni \
 && /opt/meshcni/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels meshcni \
 && rm -rf /tmp/wheels
ENV PATH=/opt/meshcni/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["meshcni"]
CMD ["--help"]
