#!/usr/bin/env bash
# Operator benchmark: `nsh operator run` (release build, its own process) reconciling 1,000
# Agents of one Team against the real control plane from scripts/testbin.sh; prints a table of
# time, reconcile rate and memory. Extra arguments go to operator-bench (`--agents`, `--rest`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
NSH_TESTBIN_DIR="$(scripts/testbin.sh | tail -n 1)"
export NSH_TESTBIN_DIR
cargo build --release --locked -p nsh -p nsh-operator-bench
"$CARGO_TARGET_DIR/release/operator-bench" --nsh "$CARGO_TARGET_DIR/release/nsh" --crds crds "$@"
