#!/usr/bin/env bash
# Gateway benchmark: the same rmcp client and the same rmcp upstream (an `echo` tool over
# streamable HTTP, its own process), called directly and through `nsh gateway run` at 1 and 32
# concurrent sessions, three runs. Prints a table: p50/p99 latency, throughput, what the
# gateway adds, and the gateway's own CPU per call. Builds what it runs (release). Extra
# arguments go to gateway-bench (`--duration 10s`, `--sessions 1,8,32`, `--runs 5`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
cargo build --release --locked -p nsh -p nsh-mesh-bench
ulimit -n "$(ulimit -Hn)"
"$CARGO_TARGET_DIR/release/gateway-bench" --nsh "$CARGO_TARGET_DIR/release/nsh" "$@"
