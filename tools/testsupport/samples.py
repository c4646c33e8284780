"""Paths of the repository and its sample FlaskApps, for every test suite."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this package is installed editable)
SAMPLES = ROOT / "manifests" / "samples"


def load_sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


def patched(doc: dict, name: str, patch: dict) -> dict:
    """`doc` renamed, with each dotted spec path set to its value (None removes it; digits index lists)."""
    import copy

    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name}
    for path, value in patch.items():
        node = doc["spec"]
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return doc


# Invalid pod blocks, probes, ingress and identity settings (issue 14): (case, patch of the full sample, the
# field path the API server and the parser must both name).
POD_BLOCK_REJECTED = [
    ("sidecar-reserved-name", {"web.pod.sidecars": [{"name": "gunicorn", "image": "x:1"}]}, "spec.web.pod.sidecars"),
    ("init-reserved-name", {"pod.initContainers": [{"name": "copy-static", "image": "x:1"}]}, "spec.pod.initContainers"),
    ("volume-reserved-name", {"pod.volumes": [{"name": "tmp", "emptyDir": {}}]}, "spec.pod.volumes"),
    ("volume-duplicate", {"web.pod.volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]},
     "spec.web.pod.volumes"),
    ("mount-over-tmp", {"web.pod.volumeMounts": [{"name": "uploads", "mountPath": "/tmp"}]},
     "spec.web.pod.volumeMounts"),
    ("mount-in-config-dir", {"pod.volumeMounts": [{"name": "settings", "mountPath": "/etc/flaskapp/x"}]},
     "spec.pod.volumeMounts"),
    ("redis-mount-data", {"redis.pod.volumeMounts": [{"name": "x", "mountPath": "/data"}]},
     "spec.redis.pod.volumeMounts"),
    ("label-reserved", {"pod.labels": {"app.kubernetes.io/instance": "other"}}, "spec.pod.labels"),
    ("annotation-reserved", {"nginx.pod.annotations": {"flaskapp.dev/config-checksum": "x"}},
     "spec.nginx.pod.annotations"),
    ("toleration-type", {"pod.tolerations": [{"key": "a", "tolerationSeconds": "long"}]},
     "spec.pod.tolerations[0].tolerationSeconds"),
    ("sidecar-no-name", {"web.pod.sidecars": [{"image": "x:1"}]}, "spec.web.pod.sidecars[0].name"),
    ("sidecar-port-word", {"web.pod.sidecars": [{"name": "s", "image": "x:1", "ports": [{"containerPort": "a"}]}]},
     "spec.web.pod.sidecars[0].ports[0].containerPort"),
    ("affinity-unknown", {"pod.affinity": {"nodeAffinity": {"required": {}}}}, "spec.pod.affinity.nodeAffinity.required"),
    ("spread-no-key", {"web.pod.topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}]},
     "spec.web.pod.topologySpreadConstraints[0].topologyKey"),
    ("sidecar-memory-word", {"pod.sidecars": [{"name": "s", "image": "x:1", "resources": {"limits": {"memory": "lots"}}}]},
     "spec.pod.sidecars[0].resources.limits.memory"),
    ("priority-class-name", {"beat.pod.priorityClassName": "Not A Name"}, "spec.beat.pod.priorityClassName"),
    ("issuer-no-host", {"ingress.host": None, "ingress.hosts": None, "ingress.tlsSecretName": None},
     "spec.ingress.issuerRef"),
    ("issuer-kind", {"ingress.issuerRef": {"name": "le", "kind": "Certificate"}}, "spec.ingress.issuerRef.kind"),
    ("path-type", {"ingress.paths": [{"path": "/", "pathType": "Regex"}]}, "spec.ingress.paths[0].pathType"),
    ("path-relative", {"ingress.paths": [{"path": "shop"}]}, "spec.ingress.paths[0].path"),
    ("host-repeated", {"ingress.hosts": ["shop.example.com"]}, "spec.ingress.hosts"),
    ("uid-root", {"securityContext.runAsUser": 0}, "spec.securityContext.runAsUser"),
    ("probe-period", {"web.probes.readiness.periodSeconds": 0}, "spec.web.probes.readiness.periodSeconds"),
    ("probe-path", {"web.probes.liveness.path": "healthz"}, "spec.web.probes.liveness.path"),
    ("grace-zero", {"workerPools.0.terminationGracePeriodSeconds": 0},
     "spec.workerPools[0].terminationGracePeriodSeconds"),
    ("beat-memory-word", {"beat.resources": {"limits": {"memory": "lots"}}}, "spec.beat.resources.limits.memory"),
    # What nginx, the operator's watch or gunicorn behind nginx would misread (issue 27).
    ("static-path-injection", {"nginx.staticUrlPath": "/s/ { return 200; } location /t/"}, "spec.nginx.staticUrlPath"),
    ("monitoring-label-reserved", {"monitoring.labels": {"app.kubernetes.io/managed-by": "me"}},
     "spec.monitoring.labels"),
    ("keepalive-below-nginx", {"web.gunicorn.keepaliveSeconds": 30}, "spec.web.gunicorn.keepaliveSeconds"),
    ("queue-name-list", {"workerPools.0.queues": ["a,b"]}, "spec.workerPools[0].queues[0]"),
]

# Invalid connection-budget settings (issue 13), same shape.
BUDGET_REJECTED = [
    ("budget-policy-word", {"database.budgetPolicy": "shrink"}, "spec.database.budgetPolicy"),
    ("minimum-pool-zero", {"database.minimumPoolSize": 0}, "spec.database.minimumPoolSize"),
    ("priority-unknown-pool", {"database.autoscalingPriority": ["web", "worker-nightly"]},
     "spec.database.autoscalingPriority"),
    ("priority-not-a-tier", {"database.autoscalingPriority": ["nginx"]}, "spec.database.autoscalingPriority"),
]

# Invalid queue-length autoscaling (issue 13), same shape.
KEDA_REJECTED = [
    ("scale-to-zero-on-cpu", {"workerPools.1.autoscaling": {"minReplicas": 0, "maxReplicas": 3}},
     "spec.workerPools[1].autoscaling.minReplicas"),
    ("queue-length-zero", {"workerPools.1.autoscaling": {"maxReplicas": 3, "queueLength": 0}},
     "spec.workerPools[1].autoscaling.queueLength"),
    ("queue-length-external-redis", {"workerPools.1.autoscaling": {"maxReplicas": 3, "queueLength": 5},
                                     "redis.mode": "external", "redis.external": {"secretName": "redis"}},
     "spec.workerPools"),
    ("web-queue-length", {"web.autoscaling.queueLength": 5}, "queueLength"),
]

# Invalid cache engine settings (issue 13), same shape.
MEMCACHED_REJECTED = [
    ("memcached-external", {"redis.cache.engine": "memcached", "redis.mode": "external",
                            "redis.external": {"secretName": "redis"}}, "spec.redis.cache.engine"),
    ("cache-engine-word", {"redis.cache.engine": "valkey"}, "spec.redis.cache.engine"),
]
