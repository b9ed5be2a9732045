#!/usr/bin/env bash
# End-to-end on a kind cluster, for machines with a Docker engine (the project's development
# machines have none: there, scripts/test.sh runs the same test on its one-node cluster,
# cli/tests/e2e_example_team.rs). Builds the images from the repository's Dockerfiles with
# Docker, creates the kind cluster from kind-config.yaml, loads the images into it, and runs
# the end-to-end test against it: helm install of both charts, the example team, messages
# between the agents' pods, the faults, helm upgrade and uninstall.
#
#   e2e/kind/run.sh            # keeps the cluster afterwards; `kind delete cluster --name nsh-mesh`
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source scripts/versions.env
source scripts/env.sh

docker info >/dev/null 2>&1 || { echo "e2e/kind: no Docker engine answers ('docker info' failed); kind needs one." >&2; exit 1; }
if ! command -v kind >/dev/null || ! kind version | grep -qF "$KIND_VERSION"; then
  go install "sigs.k8s.io/kind@$KIND_VERSION"
  PATH="$(go env GOPATH)/bin:$PATH"
fi

echo "== kubectl and helm at the pinned versions" >&2
NSH_TESTBIN_DIR="$(scripts/testbin.sh | tail -n 1)"
export NSH_TESTBIN_DIR

echo "== images (docker)" >&2
NSH_IMAGES_DIR="$(NSH_IMAGE_BUILDER=docker scripts/images.sh | tail -n 1)"
export NSH_IMAGES_DIR

cluster=nsh-mesh
kind get clusters | grep -qx "$cluster" || kind create cluster --config kind-config.yaml --wait 120s
kubeconfig="$NSH_CACHE_DIR/kind-$cluster.kubeconfig"
kind get kubeconfig --name "$cluster" >"$kubeconfig"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
for image in "ghcr.io/nsh-dev/nsh:$version" "ghcr.io/nsh-dev/nsh-agent:$version" "ghcr.io/nsh-dev/nsh-agent-standin:$version"; do
  kind load docker-image --name "$cluster" "$image"
done

echo "== the end-to-end test against kind-$cluster" >&2
NSH_E2E_KUBECONFIG="$kubeconfig" cargo test --locked -p nsh --test e2e_example_team -- --nocapture
echo "e2e/kind: passed on kind-$cluster"
