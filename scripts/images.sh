#!/usr/bin/env bash
# Builds the container images into a cache folder outside the work tree, as `docker save`
# archives (the one-node test cluster imports them into its containerd):
#   - nsh (Dockerfile): the static `nsh` binary (musl), non-root, CA certificates;
#   - nsh-agent (agent-image/Dockerfile): Claude Code, Node.js, git and nsh on slim Debian;
#   - nsh-agent-standin: the agent image with a stand-in for `claude` (tests only);
#   - pause (the pod sandbox), from the pinned Kubernetes module's pause.c.
# No registry is reachable here, so the Debian base is made with debootstrap from Debian's
# mirror and stored under the name the Dockerfile asks for (docker.io/library/debian:...).
# Built with buildah (Debian's package) from the same Dockerfiles a user builds with Docker;
# NSH_IMAGE_BUILDER=docker builds with a Docker engine instead (e2e/kind does).
#
# Idempotent: an archive whose inputs did not change is kept. Prints the folder on its last
# line of stdout; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# The caches (cargo's target dir among them) outside the work tree.
# shellcheck source=env.sh
source "$here/env.sh"

cache="$NSH_CACHE_DIR"
out="$cache/images"
mkdir -p "$out"

log() { printf 'images: %s\n' "$*" >&2; }

builder="${NSH_IMAGE_BUILDER:-buildah}"
# The CA bundle build steps download with (this machine's, which may trust a TLS proxy); a
# build secret, never stored in an image.
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
# Every image of ours is tagged with the workspace's version (the operator's defaults).
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)"
for tool in "$builder" gcc go cargo; do
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
  log "$name: building $tag with $builder"
  rm -f "$out/$name.tar.tmp"
  case "$builder" in
    buildah)
      # Host network: build steps fetch from Debian's mirror and the npm registry.
      buildah bud --quiet --layers --network host --secret "id=extra-ca,src=$ca_bundle" \
        -f "$context/Dockerfile" -t "$tag" "$context" >&2
      buildah push --quiet "$tag" "docker-archive:$out/$name.tar.tmp:$tag" >&2 ;;
    docker)
      DOCKER_BUILDKIT=1 docker build --quiet --secret "id=extra-ca,src=$ca_bundle" \
        -f "$context/Dockerfile" -t "$tag" "$context" >&2
      docker save -o "$out/$name.tar.tmp" "$tag" >&2 ;;
    *) log "NSH_IMAGE_BUILDER must be buildah or docker"; exit 2 ;;
  esac
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

build_nsh() {
  local work="$cache/images-src/nsh" target="x86_64-unknown-linux-musl"
  rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >&2
  command -v musl-gcc >/dev/null || { log "musl-gcc is not on PATH (apt-get install musl-tools)"; exit 1; }
  # With cargo-auditable where it is installed: the dependency list goes into the binary,
  # for scanners (`cargo audit bin`, trivy, syft). scripts/test.sh installs it.
  local build=build
  cargo auditable --version >/dev/null 2>&1 && build="auditable build"
  log "nsh: cargo $build --release --target $target"
  # Static: musl links it so; the C parts (ring, mimalloc) go through musl-gcc.
  # shellcheck disable=SC2086 # $build is one or two words
  (cd "$root" && CC_x86_64_unknown_linux_musl=musl-gcc cargo $build --release --locked -p nsh --target "$target" >&2)
  mkdir -p "$work"
  cp "$root/Dockerfile" "$work/Dockerfile"
  # Without symbols: a third of the size, and backtraces keep their line tables out of pods.
  strip -o "$work/nsh.new" "$CARGO_TARGET_DIR/$target/release/nsh"
  cmp -s "$work/nsh.new" "$work/nsh" && rm "$work/nsh.new" || mv "$work/nsh.new" "$work/nsh"
  cp /etc/ssl/certs/ca-certificates.crt "$work/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/group"
  build nsh "ghcr.io/nsh-dev/nsh:$version" "$work"
}

# The Debian base under its registry name, made locally when the builder does not have it.
seed_debian() {
  local name="docker.io/library/debian:$DEBIAN_SUITE-slim" rootfs="$cache/images-src/debian-$DEBIAN_SUITE.tar"
  [ "$builder" = buildah ] || return 0
  buildah inspect --type image "$name" >/dev/null 2>&1 && { log "$name: present"; return; }
  if [ ! -f "$rootfs" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is not on PATH (apt-get install debootstrap)"; exit 1; }
    log "$name: debootstrap --variant=minbase $DEBIAN_SUITE (once; cached)"
    local dir="$cache/images-src/debian-$DEBIAN_SUITE.rootfs"
    rm -rf "$dir"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir" http://deb.debian.org/debian >&2
    # As the official slim image: no apt lists, caches or downloaded packages, and apt set
    # to clean up after itself.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$dir/etc/apt/apt.conf.d/docker-clean"
    tar -C "$dir" -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
    rm -rf "$dir"
  fi
  local ctr
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$rootfs" / >&2
  buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >&2
  log "$name: made from debootstrap"
}

build_agent() {
  local work="$cache/images-src/nsh-agent"
  seed_debian
  mkdir -p "$work"
  cp "$root/agent-image/Dockerfile" "$work/Dockerfile"
  # A new base makes a new image too.
  case "$builder" in
    buildah) buildah inspect --type image --format '{{.FromImageID}}' "docker.io/library/debian:$DEBIAN_SUITE-slim" ;;
    docker) docker image inspect --format '{{.Id}}' "docker.io/library/debian:$DEBIAN_SUITE-slim" 2>/dev/null || true ;;
  esac >"$work/base.id"
  # The nsh image it copies from changed: so does this one.
  cp "$out/nsh.stamp" "$work/nsh.stamp"
  build nsh-agent "ghcr.io/nsh-dev/nsh-agent:$version" "$work"
}

# The agent image with `claude` replaced by a stand-in (tests only: no model API here).
build_standin() {
  local work="$cache/images-src/nsh-agent-standin"
  mkdir -p "$work"
  cp "$root/e2e/testenv/images/agent-standin/"* "$work/"
  cp "$out/nsh-agent.stamp" "$work/nsh-agent.stamp"
  build nsh-agent-standin "ghcr.io/nsh-dev/nsh-agent-standin:$version" "$work"
}

build_pause
build_nsh
build_agent
build_standin
echo "$out"
