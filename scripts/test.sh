#!/usr/bin/env bash
# Runs every test, first installing what the tests need:
#   - redis-server (Debian package),
#   - etcd, kube-apiserver, kube-controller-manager, kubectl and helm, built from their Go
#     modules at the versions in scripts/versions.env (cached; see scripts/testbin.sh),
# then `cargo test` over the whole workspace. Extra arguments go to `cargo test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh

say() { printf '\n== %s\n' "$*" >&2; }
need() {
  command -v "$1" >/dev/null || { echo "test.sh: '$1' is not on PATH. $2" >&2; exit 1; }
}
need cargo "Install Rust 1.94 or newer (rustup)."
need go "Install Go 1.26 or newer."

if ! command -v redis-server >/dev/null; then
  say "installing redis-server (Debian package)"
  need apt-get "Install redis-server with your package manager."
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

say "building the pinned control plane and helm (cached after the first run)"
NSH_TESTBIN_DIR="$(scripts/testbin.sh | tail -n 1)"
export NSH_TESTBIN_DIR

say "cargo test (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --locked "$@"
