#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Sets the machine up (idempotent) and runs the demo in the local simulator:
# a 2-node cluster in network namespaces, the demo app of
# deploy/examples/demo.yaml, live checks of what works, then teardown
# (`--keep` leaves the cluster up; `meshcni sim down` removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-machine.sh
exec .venv/bin/meshcni sim demo "$@"
