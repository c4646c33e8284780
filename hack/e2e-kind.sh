#!/usr/bin/env bash
# `make e2e`: kind cluster, both images built and loaded, ingress-nginx, then the same e2e suite as
# `make test` runs on the local cluster's real node (it deploys its own PostgreSQL). `make e2e-down` deletes
# the cluster. Never pretends: without Docker or kind it says so and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-flaskapp-e2e}
IMG=${IMG:-ghcr.io/flaskapp-operator/flaskapp-operator:0.1.0}
EXAMPLE_IMG=${EXAMPLE_IMG:-ghcr.io/flaskapp-operator/example:0.1.0}
INGRESS_NGINX=https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.1/deploy/static/provider/kind/deploy.yaml

require() {
  command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make e2e needs a running Docker engine (none here); the same suite runs against the local control plane in make test" >&2; exit 1; }
  command -v kind >/dev/null || { echo "make e2e needs kind (go install sigs.k8s.io/kind@v0.33.0)" >&2; exit 1; }
}

up() {
  require
  kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config tests/e2e/kind-config.yaml --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  export KUBECONFIG="$PWD/build/kind-$CLUSTER.kubeconfig"
  mkdir -p build && kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"
  docker build -t "$IMG" -f operator/Dockerfile .
  docker build -t "$EXAMPLE_IMG" examples/flask-shop
  # The suite rolls the app to a second reference of the same image (an image update).
  docker tag "$EXAMPLE_IMG" "${EXAMPLE_IMG%:*}:e2e-v2"
  kind load docker-image --name "$CLUSTER" "$IMG" "$EXAMPLE_IMG" "${EXAMPLE_IMG%:*}:e2e-v2"
  kubectl apply -f "$INGRESS_NGINX"
  kubectl -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=180s
  E2E_KUBECONFIG="$KUBECONFIG" E2E_INGRESS=http://localhost:8081 IMG="$IMG" EXAMPLE_IMG="$EXAMPLE_IMG" \
    .venv/bin/pytest -v tests/e2e
}

down() {
  command -v kind >/dev/null || { echo "kind is not installed: nothing to delete" >&2; exit 1; }
  kind delete cluster --name "$CLUSTER"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
