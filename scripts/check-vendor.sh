#!/usr/bin/env bash
# Each crate in mesh/vendor is its published version plus exactly its patch (mesh/vendor/README.md):
# undoing NAME.patch in a copy of mesh/vendor/NAME must give back the files NAME.sha256 lists,
# the published crate's, and no others. Works offline: no registry download needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../mesh/vendor"

fail() { echo "check-vendor: $*" >&2; exit 1; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for sums in *.sha256; do
  name="${sums%.sha256}"
  [ -d "$name" ] || fail "$sums has no crate directory $name"
  [ -f "$name.patch" ] || fail "$name has no $name.patch (an unpatched crate needs no vendoring: use crates.io)"
  cp -r "$name" "$scratch/$name"
  patch --quiet --reverse --strip=1 --directory="$scratch/$name" < "$name.patch" ||
    fail "$name.patch does not undo cleanly: the vendored crate changed beyond its patch (regenerate the patch and say why in README.md)"
  (cd "$scratch/$name" && find . -type f | sed 's|^\./||' | sort) > "$scratch/$name.files"
  awk '{print $2}' "$sums" | sort > "$scratch/$name.published"
  diff -u "$scratch/$name.published" "$scratch/$name.files" >&2 ||
    fail "$name: files added or removed against the published crate (listed above)"
  (cd "$scratch/$name" && sha256sum --check --quiet "$OLDPWD/$sums") ||
    fail "$name: with its patch undone, it is not the published crate"
  # Cargo ignores a [patch] whose version no dependency asks for any more (after an upgrade),
  # with only a warning: the lock file must show the vendored copy (a package with no source).
  awk -v name="$name" '
    $0 == "[[package]]" { if (found && !registry) used = 1; found = 0; registry = 0 }
    $0 == "name = \"" name "\"" { found = 1 }
    found && /^source = / { registry = 1 }
    END { if (found && !registry) used = 1; exit used ? 0 : 1 }
  ' ../../Cargo.lock ||
    fail "$name: Cargo.lock does not use the vendored copy (the [patch.crates-io] entry is unused: drop it, or vendor the version now in use)"
done
echo "check-vendor: every vendored crate is its published version plus its patch"
