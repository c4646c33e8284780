#!/usr/bin/env bash
# `make demo`: a cluster (the current kube context with DEMO_CLUSTER=current, kind when Docker and kind
# are present, else the local control plane), the CRD, the operator, the full sample; then what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
STATE=build/demo
mkdir -p "$STATE"
export PATH="$(PYTHONPATH=tools $PY -m localcluster bin):$PATH"
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

down() {
  if [ -f "$STATE/operator.pid" ]; then kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true; rm -f "$STATE/operator.pid"; fi
  if [ -f "$STATE/cluster" ] && [ "$(cat "$STATE/cluster")" = local ]; then PYTHONPATH=tools $PY -m localcluster down; fi
  if [ -f "$STATE/cluster" ] && [ "$(cat "$STATE/cluster")" = kind ]; then kind delete cluster --name flaskapp-demo; fi
  rm -rf "$STATE"
  echo "demo stopped"
}

up() {
  step "Cluster"
  if [ "${DEMO_CLUSTER:-}" = current ]; then
    echo "using the current kube context: $(kubectl config current-context)"; echo current > "$STATE/cluster"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1 && command -v kind >/dev/null; then
    kind create cluster --name flaskapp-demo; echo kind > "$STATE/cluster"
  else
    echo "no Docker engine: starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    if [ ! -f build/localcluster/processes.json ]; then PYTHONPATH=tools $PY -m localcluster up >/dev/null; fi
    export KUBECONFIG="$PWD/build/localcluster/kubeconfig"; echo local > "$STATE/cluster"
  fi
  kubectl get nodes

  step "CRD"
  kubectl apply --server-side -f manifests/crd/
  kubectl wait --for=condition=Established crd/flaskapps.flaskapp.dev --timeout=60s

  step "Operator (logs: $STATE/operator.log)"
  if [ ! -f "$STATE/operator.pid" ] || ! kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
    nohup .venv/bin/flaskapp-operator run --liveness http://127.0.0.1:18080/healthz > "$STATE/operator.log" 2>&1 &
    echo $! > "$STATE/operator.pid"
  fi
  echo "running, pid $(cat "$STATE/operator.pid")"

  step "The full sample (manifests/samples/full.yaml)"
  kubectl create secret generic shop-db --from-literal=url=postgresql://shop:shop@postgres/shop \
    --dry-run=client -o yaml | kubectl apply -f -
  kubectl apply -f manifests/samples/full.yaml
  kubectl wait --for=condition=Ready flaskapp/shop --timeout=180s

  step "kubectl get flaskapps"
  kubectl get flaskapps -o wide
  step "Children"
  kubectl get deployments,services,jobs,ingresses,hpa,pdb,networkpolicies -l app.kubernetes.io/instance=shop
  step "The tuning report (status.tuning)"
  kubectl get flaskapp shop -o jsonpath='{.status.tuning}' | $PY -c 'import json,sys,yaml; print(yaml.safe_dump(json.load(sys.stdin), sort_keys=False))'
  step "Events"
  kubectl get events --field-selector involvedObject.kind=FlaskApp

  cat <<TXT

Explore:
  export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
  kubectl explain flaskapp.spec.web.gunicorn
  kubectl get flaskapp shop -o yaml
  kubectl scale flaskapp/shop --replicas=3      # fails: the sample autoscales; edit spec.web instead
  kubectl patch flaskapp shop --type=merge -p '{"spec":{"database":{"maxConnections":20}}}'   # watch it go Degraded
  .venv/bin/flaskapp-operator render -f manifests/samples/full.yaml --tuning
Tear down:
  make demo-down
TXT
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
