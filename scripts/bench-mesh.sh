#!/usr/bin/env bash
# Mesh benchmark: nsh mesh server versus the official Node socket.io 4.8 server running the same
# relay logic, driven by the same load generators, on this machine. Prints a table. Extra
# arguments go to mesh-bench (see `mesh-bench --help`: --pairs, --window, --duration, --rate,
# --connections, --load-threads, --load rust,node,node2 (node2: the Node client on two
# threads); `--scenario replicas` for two replicas on one Redis versus Node's Redis adapters).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
(cd mesh/interop && [ -d node_modules/@socket.io/redis-streams-adapter ] || npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --locked -p nsh -p nsh-mesh-bench
ulimit -n "$(ulimit -Hn)"
"$CARGO_TARGET_DIR/release/mesh-bench" --nsh "$CARGO_TARGET_DIR/release/nsh" --interop-dir mesh/interop "$@"
