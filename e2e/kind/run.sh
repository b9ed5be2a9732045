#!/usr/bin/env bash
# End-to-end on a kind cluster. Needs a running Docker engine, which the development machines
# of this project do not have; everything else is tested against the envtest-style harness
# (scripts/test.sh). Today this creates the cluster from kind-config.yaml and checks that the
# API answers; installing the chart and the team example arrives with the Helm/kind issue.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$root/scripts/versions.env"

docker info >/dev/null 2>&1 || { echo "e2e/kind: no Docker engine answers ('docker info' failed); kind needs one." >&2; exit 1; }
if ! command -v kind >/dev/null || ! kind version | grep -qF "$KIND_VERSION"; then
  go install "sigs.k8s.io/kind@$KIND_VERSION"
  PATH="$(go env GOPATH)/bin:$PATH"
fi

cluster=nsh-mesh
kind get clusters | grep -qx "$cluster" || kind create cluster --config "$root/kind-config.yaml" --wait 120s
kubectl --context "kind-$cluster" get --raw /version
kubectl --context "kind-$cluster" wait --for=condition=Ready nodes --all --timeout=120s
echo "e2e/kind: cluster kind-$cluster is up"
