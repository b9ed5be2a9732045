#!/usr/bin/env bash
# MCP daemon benchmark: ten MCP clients each starting their own stdio MCP server (the official
# TypeScript SDK's) versus ten sharing one through `nsh mcp run-once`, three runs. Prints a
# table: total memory (RSS and PSS), time to the first tools/list, the latency the bridge and
# daemon add to a call, and their CPU per call. Builds what it runs (release). Extra arguments
# go to daemon-bench (`--clients 20`, `--calls 5000`, `--runs 5`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
cargo build --release --locked -p nsh -p nsh-mesh-bench
"$CARGO_TARGET_DIR/release/daemon-bench" --nsh "$CARGO_TARGET_DIR/release/nsh" "$@"
