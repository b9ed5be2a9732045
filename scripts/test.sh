#!/usr/bin/env bash
# Runs every test, first installing what the tests need:
#   - Debian packages: redis-server; containerd, runc, containernetworking-plugins and
#     iptables (the one-node test cluster); buildah, debootstrap, gcc, musl-tools (images),
#     shellcheck (actionlint runs it on the workflows' scripts),
#   - the official Socket.io peers for interop tests (npm packages in mesh/interop, and
#     python-socketio in a virtualenv under the cache),
#   - etcd, the Kubernetes control plane and node binaries, CoreDNS, kubectl, helm and actionlint, built from their Go
#     modules at the versions in scripts/versions.env (cached; see scripts/testbin.sh),
# and the container images (scripts/images.sh: nsh, the agent image, pause), then the
# layering check (scripts/check-architecture.py) and `cargo test` over the whole
# workspace. Extra arguments go to `cargo test`.
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

# Debian packages: Redis; the one-node test cluster's containerd, runc, CNI plugins and
# iptables; the image builder (buildah), debootstrap for the agent image's base, gcc for the
# pause image, musl-gcc for the static nsh binary; shellcheck for the workflows' scripts.
packages=(redis-server containerd runc containernetworking-plugins iptables iproute2 util-linux buildah debootstrap gcc musl-tools shellcheck)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  need apt-get "Install ${missing[*]} with your package manager."
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo auditable --version >/dev/null 2>&1 || {
  say "installing cargo-auditable (the images' binary carries its dependency list)"
  cargo install --locked --quiet cargo-auditable
}
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || {
  say "adding the Rust target x86_64-unknown-linux-musl (the static nsh binary in the images)"
  rustup target add x86_64-unknown-linux-musl
}

need node "Install Node.js 20 or newer."
need python3 "Install Python 3.11 or newer."
say "installing interop peers: socket.io, socket.io-client, @modelcontextprotocol/sdk and two of its servers (npm), python-socketio, jsonschema (PyPI)"
(cd mesh/interop && npm ci --no-audit --no-fund --loglevel=error)
venv="$NSH_CACHE_DIR/interop-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    # Debian's python3 keeps venv in a separate package.
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r mesh/interop/requirements.txt
export NSH_INTEROP_PYTHON="$venv/bin/python"

say "building the pinned control plane and helm (cached after the first run)"
NSH_TESTBIN_DIR="$(scripts/testbin.sh | tail -n 1)"
export NSH_TESTBIN_DIR

say "building the images (nsh, nsh-agent, its test stand-in, pause; cached after the first run)"
NSH_IMAGES_DIR="$(scripts/images.sh | tail -n 1)"
export NSH_IMAGES_DIR

say "layers point one way, no module cycles"
python3 scripts/check-architecture.py

say "the benchmark's tail analysis groups and names stalls (scripts/tail-episodes.py)"
python3 scripts/tail-episodes.py --self-test

say "vendored crates are their published version plus their patch (mesh/vendor/README.md)"
scripts/check-vendor.sh

say "releases: one version for crates and charts; the GitHub workflows lint clean"
scripts/check-release-version.sh >/dev/null
"$NSH_TESTBIN_DIR/actionlint" -color=false

say "cargo install from a clean checkout of HEAD; nsh --version names the version and the commit"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  checkout="$(mktemp -d)"
  trap 'rm -rf "$checkout"' EXIT
  git clone --quiet "$root" "$checkout/src"
  # --debug: the dev profile, so the shared target dir's artifacts are reused.
  cargo install --quiet --locked --debug --path "$checkout/src/cli" --root "$checkout/root"
  installed="$("$checkout/root/bin/nsh" --version)"
  want="nsh $(scripts/check-release-version.sh) (commit $(git -C "$root" rev-parse --short=12 HEAD))"
  [ "$installed" = "$want" ] || { echo "test.sh: the installed nsh says '$installed', not '$want'" >&2; exit 1; }
else
  echo "(not a git checkout: skipped)" >&2
fi

say "cargo test (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --locked "$@"
