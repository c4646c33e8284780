"""The CustomResourceDefinition, generated from the Python model (api.py): `make manifests` writes it."""

from __future__ import annotations

from typing import Any

import yaml

from . import api
from .schema import openapi_schema

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Observed state, rebuilt by the operator on every reconcile.",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64",
                               "description": "The spec generation the status describes."},
        "conditions": {
            "type": "array", "description": "Ready, Progressing and Degraded, with reasons.",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "required": ["type", "status"], "properties": {
                "type": {"type": "string", "description": "Condition type."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"],
                           "description": "Condition status."},
                "reason": {"type": "string", "description": "Machine-readable reason."},
                "message": {"type": "string", "description": "Human-readable explanation."},
                "observedGeneration": {"type": "integer", "format": "int64",
                                       "description": "Generation the condition was computed for."},
                "lastTransitionTime": {"type": "string", "format": "date-time",
                                       "description": "When the status last changed."},
            }},
        },
        "webReplicas": {"type": "integer", "format": "int32", "description": "Ready web pods."},
        "webSelector": {"type": "string", "description": "Label selector of the web pods (scale subresource)."},
        "workerPools": {"type": "string", "description": "Worker pools ready / configured."},
        "url": {"type": "string", "description": "Where the app is served."},
        "components": {"type": "object", "description": "Readiness per component.",
                       "x-kubernetes-preserve-unknown-fields": True},
        "tuning": {"type": "object", "description": "Every derived setting and the connection budget.",
                   "x-kubernetes-preserve-unknown-fields": True},
        "monitoring": {"type": "string", "description": "What of spec.monitoring could not be created, and why."},
        "upgrade": {"type": "string", "description": "A new operator release's templates: rolling, queued for a "
                                                    "slot (apps roll in waves) or held (auto-upgrade off)."},
    },
}

PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Whether every component is ready."},
    {"name": "Web", "type": "integer", "jsonPath": ".status.webReplicas", "description": "Ready web pods."},
    {"name": "Pools", "type": "string", "jsonPath": ".status.workerPools",
     "description": "Worker pools ready / configured."},
    {"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "Where the app is served."},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
     "priority": 1, "description": "Why it is (not) ready."},
    {"name": "Upgrade", "type": "string", "jsonPath": ".status.upgrade", "priority": 1,
     "description": "A new operator release's templates: rolling, queued or held."},
    {"name": "Capped", "type": "string", "jsonPath": '.status.conditions[?(@.type=="BudgetCapped")].status',
     "priority": 1, "description": "Whether the connection budget lowered an autoscaler's maxReplicas."},
    {"name": "Budget", "type": "string", "jsonPath": '.status.conditions[?(@.type=="BudgetGuaranteed")].reason',
     "priority": 1, "description": "Whether every process keeps to the connection plan, as the agent reports."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict:
    spec_schema = openapi_schema(api.FlaskAppSpec)
    spec_schema["description"] = ("Desired state of a Flask application: web, workers, beat, Redis, "
                                  "Nginx, Ingress and the database connection budget.")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}",
                     "labels": {"app.kubernetes.io/name": "flaskapp-operator",
                                "app.kubernetes.io/part-of": "flaskapp-operator"}},
        "spec": {
            "group": api.GROUP,
            "names": {"kind": api.KIND, "listKind": f"{api.KIND}List", "plural": api.PLURAL,
                      "singular": api.SINGULAR, "shortNames": list(api.SHORT_NAMES), "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{
                "name": api.VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A Flask application run and tuned by flaskapp-operator.",
                    "required": ["spec"],
                    "x-kubernetes-validations": [{"rule": api.NAME_RULE_CEL, "message": api.NAME_RULE_MESSAGE},
                                                 {"rule": api.NAME_LABEL_CEL, "message": api.NAME_LABEL_MESSAGE}],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "API version of the object."},
                        "kind": {"type": "string", "description": "Kind of the object."},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": STATUS_SCHEMA,
                    },
                }},
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.web.replicas", "statusReplicasPath": ".status.webReplicas",
                              "labelSelectorPath": ".status.webSelector"},
                },
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from operator/flaskapp_operator/api.py by `make manifests`; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)
