#!/usr/bin/env bash
# Builds the container images the tests run into a cache folder outside the work tree, as
# `docker save` archives the one-node test cluster imports into its containerd:
#   - pause (the pod sandbox), from the pinned Kubernetes module's pause.c.
# Built with buildah (Debian's package) from the same Dockerfiles a user builds with Docker.
#
# Idempotent: an archive whose inputs did not change is kept. Prints the folder on its last
# line of stdout; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${NSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsh-mesh}"
out="$cache/images"
mkdir -p "$out"

log() { printf 'images: %s\n' "$*" >&2; }

for tool in buildah gcc go; do
  command -v "$tool" >/dev/null || { log "$tool is not on PATH (scripts/test.sh installs buildah and gcc with apt)"; exit 1; }
done

# build NAME TAG CONTEXT: builds CONTEXT/Dockerfile as TAG into $out/NAME.tar unless the
# archive exists for the same inputs (a hash of the context folder).
build() {
  local name="$1" tag="$2" context="$3" stamp
  stamp="$(cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  if [ -f "$out/$name.tar" ] && [ "$(cat "$out/$name.stamp" 2>/dev/null)" = "$tag $stamp" ]; then
    log "$name: cached ($tag)"; return
  fi
  log "$name: building $tag"
  buildah bud --quiet --layers -f "$context/Dockerfile" -t "$tag" "$context" >&2
  rm -f "$out/$name.tar.tmp"
  buildah push --quiet "$tag" "docker-archive:$out/$name.tar.tmp:$tag" >&2
  mv "$out/$name.tar.tmp" "$out/$name.tar"
  echo "$tag $stamp" >"$out/$name.stamp"
  log "$name: $(du -h "$out/$name.tar" | cut -f1) ($tag)"
}

build_pause() {
  local work="$cache/images-src/pause" source
  source="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [ -f "$source" ] || { log "no $source: run scripts/testbin.sh first (it fetches the module)"; exit 1; }
  mkdir -p "$work"
  cp "$root/e2e/testenv/images/pause/Dockerfile" "$work/Dockerfile"
  if ! cmp -s "$source" "$work/pause.c"; then
    cp "$source" "$work/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o "$work/pause" "$work/pause.c"
  fi
  build pause "registry.k8s.io/pause:$PAUSE_VERSION" "$work"
}

build_pause
echo "$out"
