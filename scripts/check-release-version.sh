#!/usr/bin/env bash
# One version for the crates, the images and the charts. Without an argument: checks that every
# workspace crate and both charts carry the same version (the test command runs this). With a
# tag (`v0.2.0`): also that the tag names exactly that version (the release workflow runs this
# before it builds anything). Prints the version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "check-release-version: $*" >&2; exit 1; }

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)"
[ -n "$version" ] || fail "Cargo.toml: no version under [workspace.package]"

# Every crate takes the workspace's version.
for manifest in $(sed -n 's/^members = \[\(.*\)\]$/\1/p' Cargo.toml | tr -d '" ' | tr ',' '\n' | sed 's|$|/Cargo.toml|'); do
  grep -q '^version.workspace = true$' "$manifest" ||
    fail "$manifest: set \`version.workspace = true\` (one version for every crate)"
done

for chart in charts/*/Chart.yaml; do
  chart_version="$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart")"
  app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart")"
  [ "$chart_version" = "$version" ] || fail "$chart: version $chart_version, but the crates are $version"
  [ "$app_version" = "$version" ] || fail "$chart: appVersion $app_version, but the crates are $version"
done

if [ $# -gt 0 ]; then
  tag="$1"
  [[ "$tag" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
    fail "tag $tag is not vX.Y.Z (or vX.Y.Z-PRE)"
  [ "${tag#v}" = "$version" ] ||
    fail "tag $tag, but the crates and charts are $version: bump them (release-plz does) or tag v$version"
fi
echo "$version"
