#!/usr/bin/env bash
# `make demo`: a cluster (the current kube context with DEMO_CLUSTER=current, kind when Docker and kind
# are present, else the local cluster). On the local cluster's real node: the chart's operator pod, a
# PostgreSQL, the example app behind Traefik, and a URL to curl. Elsewhere: the CRD, the operator as a
# process and the full sample, then what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
STATE=build/demo
mkdir -p "$STATE"
export PATH="$($PY -m localcluster bin --for demo):$PATH"
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

down() {
  if [ -f "$STATE/operator.pid" ]; then kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true; rm -f "$STATE/operator.pid"; fi
  if [ -f "$STATE/cluster" ] && [ "$(cat "$STATE/cluster")" = local ]; then $PY -m localcluster down; fi
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
    echo "no Docker engine: starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, and a"
    echo "real node: kubelet, containerd, CoreDNS, Traefik, kube-router; kwok fake nodes where none can run)"
    if [ ! -f build/localcluster/processes.json ]; then $PY -m localcluster up --for demo >/dev/null; fi
    export KUBECONFIG="$PWD/build/localcluster/kubeconfig"; echo local > "$STATE/cluster"
  fi
  kubectl get nodes -o wide
  if [ -n "$(kubectl get nodes -l flaskapp.dev/local-node=true -o name)" ]; then real_node; return; fi

  step "CRD"
  kubectl apply --server-side -f manifests/crd/
  # (kubectl wait fails at once while the CRD has no conditions yet: wait for them first)
  until kubectl get crd flaskapps.flaskapp.dev -o jsonpath='{.status.conditions}' | grep -q Established; do sleep 1; done
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
  budget_caps shop '{"spec":{"web":{"autoscaling":{"minReplicas":2,"maxReplicas":40}}}}' \
    '{"spec":{"web":{"autoscaling":{"minReplicas":2,"maxReplicas":4}}}}'
  pooler_render

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

# ★ The connection budget steers scaling: an autoscaler maximum the database cannot take is capped, not refused.
budget_caps() {
  local app=$1 patch=$2 revert=$3
  step "★ The budget caps autoscalers instead of refusing the app (web maxReplicas 40, maxConnections 100)"
  kubectl patch flaskapp "$app" --type=merge -p "$patch"
  until kubectl get flaskapp "$app" -o jsonpath='{.status.conditions[?(@.type=="BudgetCapped")].status}' | grep -q True; do sleep 1; done
  kubectl get flaskapp "$app" -o jsonpath='{.status.conditions[?(@.type=="BudgetCapped")].message}'; echo
  kubectl get hpa -l app.kubernetes.io/instance="$app"
  kubectl get flaskapp "$app" -o jsonpath='{.status.tuning.budget}' | $PY -c 'import json,sys,yaml; b=json.load(sys.stdin); print(yaml.safe_dump({k: b[k] for k in ("message", "cappedAutoscalers", "largestFeasibleMaxReplicas")}, sort_keys=False))'
  kubectl patch flaskapp "$app" --type=merge -p "$revert" >/dev/null  # back to the sample (a re-run applies it again)
}

# ★ PgBouncer: 40 web pods x 3 workers share a server pool the budget allows.
pooler_render() {
  step "★ PgBouncer, as rendered for manifests/samples/autopilot.yaml (flaskapp-operator render --tuning)"
  .venv/bin/flaskapp-operator render -f manifests/samples/autopilot.yaml --tuning \
    --database-url postgresql://orders:secret@db.example:5432/orders 2>&1 >/dev/null \
    | $PY -c 'import sys,yaml; t=yaml.safe_load(sys.stdin)["tuning"]; print(yaml.safe_dump({"pooler": t["pooler"], "budget": t["budget"]["message"]}, sort_keys=False))'
}

# The local cluster's real node: everything runs as pods, images built here (make images).
real_node() {
  step "Operator: helm install of charts/flaskapp-operator (a pod, with the chart's RBAC)"
  helm upgrade --install flaskapp-operator charts/flaskapp-operator -n flaskapp-system --create-namespace \
    --set image.repository=localhost/flaskapp-operator/operator --set image.tag=local --wait --timeout 180s
  step "PostgreSQL for the example app (Debian's package, namespace e2e-db)"
  $PY - "$STATE" <<'PYTHON'
import sys
import yaml
from localcluster import images
from localcluster.node import INGRESS_CLASS
db = list(yaml.safe_load_all(open("tests/e2e/postgres.yaml")))
db[1]["spec"]["template"]["spec"]["containers"][0]["image"] = images.POSTGRES_REF
app = yaml.safe_load(open("tests/e2e/shop.yaml"))
spec = app["spec"]
spec.update(image=images.EXAMPLE_REF)
for sidecar in spec["web"]["pod"]["sidecars"]:  # the web pods' uploads reader runs the example image too
    sidecar["image"] = images.EXAMPLE_REF
spec["nginx"]["image"], spec["redis"]["image"] = images.NGINX_REF, images.VALKEY_REF
spec["monitoring"]["images"] = images.MONITORING_IMAGES
spec["ingress"]["className"] = INGRESS_CLASS
open(f"{sys.argv[1]}/postgres.yaml", "w").write(yaml.safe_dump_all(db))
open(f"{sys.argv[1]}/shop.yaml", "w").write(yaml.safe_dump(app))
PYTHON
  kubectl apply -f "$STATE/postgres.yaml"
  kubectl -n e2e-db rollout status deploy/postgres --timeout=180s
  step "The example app (FlaskApp shop: web, nginx, Celery worker and beat, two Redis, migration Job)"
  kubectl create secret generic shop-db --from-literal=url=postgresql+psycopg://shop:shop@postgres.e2e-db.svc:5432/shop \
    --dry-run=client -o yaml | kubectl apply -f -
  kubectl apply -f "$STATE/shop.yaml"
  kubectl wait --for=condition=Ready flaskapp/shop --timeout=300s
  kubectl get flaskapps -o wide
  kubectl get pods -o wide
  local ip; ip=$(kubectl get ingress shop -o jsonpath='{.status.loadBalancer.ingress[0].ip}'); ip=${ip:-10.245.255.1}
  step "It answers through the ingress controller (Traefik on $ip)"
  curl -s --resolve "shop.local:80:$ip" http://shop.local/; echo
  curl -s -o /dev/null -D - -H 'Accept-Encoding: gzip' --resolve "shop.local:80:$ip" http://shop.local/static/app.css \
    | grep -i -E '^(HTTP|cache-control|content-encoding)'
  curl -s --cookie c=1 --resolve "shop.local:80:$ip" http://shop.local/task; echo "   <- a Celery task through the broker Redis"
  step "The same app through a Gateway API route (Gateway demo of class traefik, spec.route)"
  kubectl apply -f - <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: demo}
spec:
  gatewayClassName: traefik
  listeners: [{name: http, protocol: HTTP, port: 80, hostname: shop.gateway.local}]
YAML
  kubectl patch flaskapp shop --type=merge \
    -p '{"spec":{"route":{"enabled":true,"parentRefs":[{"name":"demo"}],"hostnames":["shop.gateway.local"]}}}'
  # (kubectl wait needs the object: the operator renders the HTTPRoute at its next pass)
  for _ in $(seq 60); do kubectl get httproute shop >/dev/null 2>&1 && break; sleep 1; done
  kubectl wait --for=jsonpath='{.status.parents[0].conditions[?(@.type=="Accepted")].status}'=True httproute/shop \
    --timeout=120s
  kubectl get httproute shop
  # (Traefik serves a route a moment after accepting it: retried)
  curl -sf --retry 10 --retry-all-errors --retry-delay 1 --resolve "shop.gateway.local:80:$ip" http://shop.gateway.local/
  echo
  budget_caps shop '{"spec":{"web":{"replicas":null,"autoscaling":{"minReplicas":2,"maxReplicas":40}}}}' \
    '{"spec":{"web":{"autoscaling":null,"replicas":2}}}'
  step "★ PgBouncer on the node: FlaskApp orders, its web tier through the pooler to the same PostgreSQL"
  kubectl create secret generic orders-db --from-literal=url=postgresql+psycopg://shop:shop@postgres.e2e-db.svc:5432/shop \
    --dry-run=client -o yaml | kubectl apply -f -
  $PY - "$STATE" <<'PYTHON'
import sys
import yaml
from localcluster import images
app = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "orders"},
       "spec": {"image": images.EXAMPLE_REF, "wsgi": "app:create_app()", "ingress": {"enabled": False},
                "web": {"replicas": 2, "healthCheckPath": "/healthz", "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}}},
                "nginx": {"replicas": 1, "image": images.NGINX_REF}, "redis": {"image": images.VALKEY_REF},
                "database": {"secretName": "orders-db", "maxConnections": 12, "reservedConnections": 2,
                             "pooler": {"enabled": True, "replicas": 1, "image": images.PGBOUNCER_REF}}}}
open(f"{sys.argv[1]}/orders.yaml", "w").write(yaml.safe_dump(app))
PYTHON
  kubectl apply -f "$STATE/orders.yaml"
  kubectl wait --for=condition=Ready flaskapp/orders --timeout=300s
  kubectl get flaskapp orders -o jsonpath='{.status.tuning.pooler}'; echo
  # (a Service's address may take a second or two to route after its pods are ready: retried)
  kubectl exec deploy/orders-web -c gunicorn -- python3 -c '
import time, urllib.request
for attempt in range(30):
    try:
        print("GET /db through PgBouncer:", urllib.request.urlopen("http://127.0.0.1:8000/db").read().decode()); break
    except Exception as exc:
        time.sleep(1)
else:
    raise SystemExit(f"no answer: {exc}")'
  pooler_render
  cat <<TXT

The example app is at http://shop.local/ (Ingress) and http://shop.gateway.local/ (Gateway API route) on $ip:
  curl --resolve shop.local:80:$ip http://shop.local/
  curl --resolve shop.gateway.local:80:$ip http://shop.gateway.local/
  curl --resolve shop.local:80:$ip http://shop.local/expensive -D -   # twice: X-Cache-Status MISS, then HIT
Explore:
  export KUBECONFIG=$KUBECONFIG
  kubectl get flaskapp shop -o yaml                 # status.tuning: every derived number
  kubectl logs -n flaskapp-system deploy/flaskapp-operator
  kubectl scale flaskapp/shop --replicas=3
Tear down:
  make demo-down
TXT
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
