#!/usr/bin/env bash
# Soak: two mesh replicas (--redis --persistence) on a durable Redis under mixed traffic while
# Redis and a replica are killed and restarted; prints messages sent, acked, delivered, lost
# (must be 0) and delivered twice, and each replica's RSS over time.
# Usage: scripts/soak-mesh.sh [SECONDS]   (default 3600; the test suite runs 24). Builds first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
command -v redis-server >/dev/null || { echo "soak-mesh.sh: needs redis-server (scripts/test.sh installs it)" >&2; exit 1; }
NSH_SOAK_SECS="${1:-3600}" cargo test --release --locked -p nsh --test mesh_soak -- --nocapture --test-threads 1
