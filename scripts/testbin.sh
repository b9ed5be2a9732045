#!/usr/bin/env bash
# Builds the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kubectl), the node (kube-scheduler, kubelet, kube-proxy), etcd, CoreDNS, helm and
# kubeconform from
# their Go modules, at the versions pinned in scripts/versions.env, into a cache folder
# outside the work tree.
#
# Idempotent: a binary that is already there and reports the pinned version is kept.
# Prints the folder that holds the binaries on its last line of stdout; everything
# else goes to stderr.
#
# Why wrapper modules: k8s.io/kubernetes and etcd's modules carry `replace` lines
# pointing at their own source trees, so `go install module@version` refuses them.
# A small module of ours `require`s the release, maps each k8s.io staging module
# v1.N.M -> v0.N.M (the list is read from the release's own go.mod), and builds the
# commands from there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${NSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsh-mesh}"
out="$cache/testbin"
work="$cache/testbin-src"
mkdir -p "$out" "$work"

log() { printf 'testbin: %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH: install Go 1.26 or newer (https://go.dev/dl)"; exit 1; }

# version_ok BIN PATTERN: the binary exists and its --version output contains PATTERN.
version_ok() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -qF -- "$2"; }

gomod_of() { go list -m -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'; }

build_kubernetes() {
  local v="$KUBERNETES_VERSION" minor staging_v dir mod
  if version_ok "$out/kube-apiserver" "Kubernetes $v" &&
     version_ok "$out/kube-controller-manager" "Kubernetes $v" &&
     version_ok "$out/kube-scheduler" "Kubernetes $v" &&
     version_ok "$out/kubelet" "Kubernetes $v" &&
     version_ok "$out/kube-proxy" "Kubernetes $v" &&
     [ -x "$out/kubectl" ] && "$out/kubectl" version --client 2>/dev/null | grep -qF "$v"; then
    log "kubernetes $v: cached"; return
  fi
  staging_v="v0.${v#v1.}"
  dir="$work/kubernetes-$v"
  mkdir -p "$dir"
  mod="$(cd "$dir" && GOFLAGS=-mod=mod gomod_of "k8s.io/kubernetes@$v")"
  log "kubernetes $v: writing wrapper module (staging modules -> $staging_v)"
  {
    echo "module nsh.dev/testbin/kubernetes"
    echo
    grep -E '^go [0-9.]+$' "$mod"
    grep -E '^godebug ' "$mod" || true
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    # Every `k8s.io/NAME => ./staging/src/k8s.io/NAME` line of the release becomes
    # `k8s.io/NAME => k8s.io/NAME v0.N.M`, the published copy of that staging tree.
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/[a-z0-9-]*$#\t\1 => \1 '"$staging_v"'#p' "$mod"
    echo ")"
  } >"$dir/go.mod"
  printf 'package testbin\n' >"$dir/doc.go"
  minor="${v#v1.}"; minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  # A module zip carries no git metadata: the commit is left empty rather than the
  # "$Format:%H$" placeholder, and the build date is the real one.
  local ldflags="-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  log "kubernetes $v: resolving modules"
  local cmds=(kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy)
  local pkgs=("${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  (cd "$dir" && go get "${pkgs[@]/%/@$v}" >&2)
  log "kubernetes $v: building ${cmds[*]} (a cold build takes several minutes)"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}" >&2)
  version_ok "$out/kube-apiserver" "Kubernetes $v" || { log "kube-apiserver does not report $v"; exit 1; }
}

build_etcd() {
  local v="$ETCD_VERSION" dir="$work/etcd-$ETCD_VERSION"
  if version_ok "$out/etcd" "etcd Version: ${v#v}"; then log "etcd $v: cached"; return; fi
  mkdir -p "$dir"
  printf 'module nsh.dev/testbin/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$v" >"$dir/go.mod"
  printf 'package testbin\n' >"$dir/doc.go"
  log "etcd $v: resolving modules"
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$v" >&2)
  log "etcd $v: building"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release-$v" \
      -o "$out/etcd" go.etcd.io/etcd/server/v3 >&2)
  version_ok "$out/etcd" "etcd Version: ${v#v}" || { log "etcd does not report $v"; exit 1; }
}

build_coredns() {
  local v="$COREDNS_VERSION"
  if version_ok "$out/coredns" "CoreDNS-${v#v}"; then log "coredns $v: cached"; return; fi
  log "coredns $v: building"
  # No replace lines in its go.mod: `go install` builds it as published.
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$v" >&2
  version_ok "$out/coredns" "CoreDNS-${v#v}" || { log "coredns does not report $v"; exit 1; }
}

build_kubeconform() {
  local v="$KUBECONFORM_VERSION"
  if [ -x "$out/kubeconform" ] && [ "$(cat "$out/kubeconform.version" 2>/dev/null)" = "$v" ]; then log "kubeconform $v: cached"; return; fi
  log "kubeconform $v: building"
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$v" >&2
  # It reports no version of its own when built with `go install`.
  echo "$v" >"$out/kubeconform.version"
}

build_actionlint() {
  local v="$ACTIONLINT_VERSION"
  if [ -x "$out/actionlint" ] && "$out/actionlint" -version 2>/dev/null | head -n 1 | grep -qxF "$v"; then log "actionlint $v: cached"; return; fi
  log "actionlint $v: building"
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X main.version=$v" "github.com/rhysd/actionlint/cmd/actionlint@$v" >&2
}

build_helm() {
  local v="$HELM_VERSION" dir="$work/helm-$HELM_VERSION"
  if [ -x "$out/helm" ] && "$out/helm" version --short 2>/dev/null | grep -qF "$v"; then log "helm $v: cached"; return; fi
  mkdir -p "$dir"
  printf 'module nsh.dev/testbin/helm\n\ngo 1.25\n\nrequire helm.sh/helm/v3 %s\n' "$v" >"$dir/go.mod"
  printf 'package testbin\n' >"$dir/doc.go"
  log "helm $v: resolving modules"
  (cd "$dir" && go get "helm.sh/helm/v3/cmd/helm@$v" >&2)
  log "helm $v: building"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
      -o "$out/helm" helm.sh/helm/v3/cmd/helm >&2)
  "$out/helm" version --short | grep -qF "$v" || { log "helm does not report $v"; exit 1; }
}

case "${1:-all}" in
  all) build_etcd; build_kubernetes; build_coredns; build_helm; build_kubeconform; build_actionlint ;;
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  coredns) build_coredns ;;
  helm) build_helm ;;
  kubeconform) build_kubeconform ;;
  actionlint) build_actionlint ;;
  *) log "usage: $0 [all|etcd|kubernetes|coredns|helm|kubeconform|actionlint]"; exit 2 ;;
esac
echo "$out"
