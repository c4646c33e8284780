"""The catalogue of what the operator writes and watches: every child kind, by API, and how objects are keyed.

Pure data: the renderer produces only these kinds, pruning looks at exactly these, and the watches follow them.
"""

from __future__ import annotations

Key = tuple[str, str]  # (kind, name) of a child within its FlaskApp's namespace
Kind = tuple[str, str, str]  # (apiVersion, kind, plural)

# Every kind the renderer may produce from the core APIs; pruning looks at exactly these.
CHILD_KINDS: tuple[Kind, ...] = (
    ("v1", "ServiceAccount", "serviceaccounts"), ("v1", "ConfigMap", "configmaps"), ("v1", "Secret", "secrets"),
    ("v1", "Service", "services"), ("batch/v1", "Job", "jobs"), ("apps/v1", "Deployment", "deployments"),
    ("apps/v1", "StatefulSet", "statefulsets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"), ("networking.k8s.io/v1", "Ingress", "ingresses"),
)

# Rendered only where the cluster serves them (the Prometheus Operator's CRDs).
MONITORING_API = "monitoring.coreos.com/v1"
MONITORING_KINDS: tuple[Kind, ...] = (
    (MONITORING_API, "PodMonitor", "podmonitors"), (MONITORING_API, "PrometheusRule", "prometheusrules"))
# Rendered only where KEDA is installed: queue-length autoscaling of worker pools.
KEDA_API = "keda.sh/v1alpha1"
KEDA_KINDS: tuple[Kind, ...] = (
    (KEDA_API, "ScaledObject", "scaledobjects"), (KEDA_API, "TriggerAuthentication", "triggerauthentications"))
# Rendered only where the Gateway API is installed: spec.route's HTTPRoute.
GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_KINDS: tuple[Kind, ...] = ((GATEWAY_API, "HTTPRoute", "httproutes"),)
# Children and pods are watched (watches.py): pods to notice failures (image pulls, crash loops, OOM kills) as
# they happen. Optional kinds are listed again while their CRDs are not served.
WATCHED_KINDS: tuple[Kind, ...] = (CHILD_KINDS + MONITORING_KINDS + KEDA_KINDS + GATEWAY_KINDS
                                   + (("v1", "Pod", "pods"),))

# Kinds whose objects start pods.
POD_KINDS = ("Deployment", "StatefulSet", "Job")


def key_of(obj: dict) -> Key:
    return obj["kind"], obj["metadata"]["name"]
