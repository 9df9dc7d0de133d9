#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Sets the machine up (idempotent) and runs the demo: until the local
# simulator lands (issue 6) this is the map library on a private bpffs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-machine.sh
exec .venv/bin/meshcni demo "$@"
