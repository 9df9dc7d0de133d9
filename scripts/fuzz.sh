#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Longer hostile-input runs than CI's (issue 15): generated and mutated frames
# through the tc programs (BPF_PROG_TEST_RUN, root), and the CNI plugin and API
# server fuzzers with more examples. Figures go to stdout and $OUT/.
#   FRAMES=100000 (tc frames)  CNI=5000 (plugin configs; 1/20 through the executables)
#   API=3000 (generated requests per kind of test)
#   SEED=<n>: a different sequence each time (default: random)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/out/fuzz}
mkdir -p "$OUT"
export MESHCNI_FUZZ_SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
echo "fuzz: seed $MESHCNI_FUZZ_SEED"
MESHCNI_FUZZ_FRAMES=${FRAMES:-100000} MESHCNI_FUZZ_REPORT="$OUT/tc.json" \
    "$PY" -m pytest tests/kernel/test_fuzz_policy.py -q -x -p no:cacheprovider
MESHCNI_FUZZ_CNI=${CNI:-5000} MESHCNI_FUZZ_REPORT_DIR="$OUT" \
    "$PY" -m pytest tests/kernel/test_fuzz_cni.py -q -x -p no:cacheprovider
MESHCNI_FUZZ_API=${API:-3000} MESHCNI_FUZZ_REPORT_DIR="$OUT" \
    "$PY" -m pytest tests/pure/test_fuzz_apiserver.py -q -x -p no:cacheprovider
for f in "$OUT"/*.json; do echo "$(basename "$f"): $(tr -d '\n ' < "$f")"; done
