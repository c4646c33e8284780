#!/usr/bin/env bash
# kube-score over what users get: the rendered samples and the chart's default install. Any finding not in the
# list below fails (`make lint`, CI). Each ignored check says why we deliberately differ.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KUBE_SCORE=$("$PY" -c 'from localcluster import build; print(build.build_kube_score())')
HELM=$("$PY" -c 'from localcluster import build; print(build.build_helm() / "helm")')

IGNORED=(
  # No CPU limits: CFS throttling stalls latency-bound gunicorn and nginx workers mid-request; the tuning engine
  # sizes processes from the CPU request (or a limit when the user sets one). Memory and ephemeral-storage
  # limits are on every container the operator writes.
  --ignore-container-cpu-limit
  # imagePullPolicy Always: images are pinned by tag or digest; IfNotPresent spares a registry round trip on
  # every pod start (spec.imagePullPolicy sets Always for the app's images where a team wants it).
  --ignore-test container-image-pull-policy
  # UID/GID above 10000: the app runs as 10001 (spec.securityContext); nginx-unprivileged (101) and Redis (999)
  # run as the users their images own their files as. All run as non-root under PSS "restricted".
  --ignore-test container-security-context-user-group-id
  # Host podAntiAffinity: replaced by topologySpreadConstraints (soft, over nodes and zones, on every tier
  # with more than one pod), which kube-score checks itself (pod-topology-spread-constraints).
  --ignore-test deployment-has-host-podantiaffinity
  --ignore-test statefulset-has-host-podantiaffinity
  # A headless governing Service: the broker StatefulSet has exactly one pod, which clients reach through the
  # ClusterIP Service of the same name (a Service cannot become headless in place: clusterIP is immutable).
  --ignore-test statefulset-has-servicename
  # One replica with Recreate for the cache Redis (its memory is the cache: two would split it) and beat (two
  # schedulers would send every periodic task twice).
  --ignore-test deployment-replicas
  --ignore-test deployment-strategy
)

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
for sample in manifests/samples/*.yaml; do
  "$PY" -m flaskapp_operator.cli render -f "$sample" > "$workdir/$(basename "$sample")"
done
"$HELM" template flaskapp-operator charts/flaskapp-operator --namespace flaskapp-system --kube-version 1.35.4 > "$workdir/chart.yaml"
"$KUBE_SCORE" score --output-format ci --exit-one-on-warning "${IGNORED[@]}" "$workdir"/*.yaml \
  | grep -v -e '^\[OK\]' -e '^\[SKIPPED\]' || true
"$KUBE_SCORE" score --output-format ci --exit-one-on-warning "${IGNORED[@]}" "$workdir"/*.yaml > /dev/null
echo "kube-score: no findings beyond the documented exceptions"
