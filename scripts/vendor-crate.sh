#!/usr/bin/env bash
# Vendors a published crate into mesh/vendor for a small patch (mesh/vendor/README.md), and
# writes the patch back from the edited copy. Reads the .crate file cargo already downloaded.
#
#   scripts/vendor-crate.sh add NAME VERSION   # mesh/vendor/NAME as published, and NAME.sha256
#   scripts/vendor-crate.sh diff NAME          # NAME.patch from the edits made to that copy
#
# Then point `[patch.crates-io]` in the root Cargo.toml at it and say why in the README.
# The copy leaves out the two files cargo ignores in a dependency: .cargo_vcs_info.json and the
# crate's own Cargo.lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../mesh/vendor"

crate_file() {
  local found
  found=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$1-$2.crate" 2>/dev/null | head -1)
  [ -n "$found" ] || { echo "vendor-crate: $1 $2 is not in cargo's cache; run 'cargo fetch' first" >&2; exit 1; }
  echo "$found"
}

# Extracts NAME VERSION's published files into directory DEST.
extract() {
  local file scratch
  # Assigned on its own line so that a missing crate stops the script (set -e).
  file=$(crate_file "$1" "$2")
  scratch=$(mktemp -d)
  tar xzf "$file" -C "$scratch"
  rm -f "$scratch/$1-$2/.cargo_vcs_info.json" "$scratch/$1-$2/Cargo.lock"
  mv "$scratch/$1-$2" "$3"
  rmdir "$scratch"
}

case "${1:-}" in
  add)
    name=$2 version=$3
    [ ! -e "$name" ] || { echo "vendor-crate: mesh/vendor/$name exists; remove it first" >&2; exit 1; }
    extract "$name" "$version" "$name"
    (cd "$name" && find . -type f | sed 's|^\./||' | sort | xargs sha256sum) > "$name.sha256"
    echo "mesh/vendor/$name: $name $version as published; edit it, then: $0 diff $name"
    ;;
  diff)
    name=$2
    version=$(awk -F'"' '/^version = /{print $2; exit}' "$name/Cargo.toml")
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    extract "$name" "$version" "$scratch/a"
    cp -r "$name" "$scratch/b"
    (cd "$scratch" && diff -ruN a b || true) | grep -v '^diff -ruN ' | sed -E 's#^(---|\+\+\+) ([ab]/[^\t]*)\t.*#\1 \2#' > "$name.patch"
    echo "mesh/vendor/$name.patch: $(grep -c '^[-+][^-+]' "$name.patch") changed lines"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
