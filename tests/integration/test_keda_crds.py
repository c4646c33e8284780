"""Queue-length autoscaling against a real API server: without KEDA's CRDs the FlaskApp is Degraded and nothing
rolls out (no silent CPU fallback); once the pinned KEDA release's CRDs are installed, the operator creates the
ScaledObject and TriggerAuthentication, which the API server validates against those CRDs' schemas."""

from __future__ import annotations

import copy

import yaml

from flaskapp_operator.render import render
from testsupport.kube import ROOT, wait_until
from localcluster import build

SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "full.yaml").read_text())
CRDS = ("scaledobjects", "triggerauthentications")


def queue_scaled_app(namespace: str) -> dict:
    doc = copy.deepcopy(SAMPLE)
    doc["metadata"] = {"name": "queued", "namespace": namespace}
    doc["spec"]["workerPools"][1]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 5, "queueLength": 10}
    return doc


def conditions(kube, namespace: str) -> dict:
    status = kube.get("flaskapp", "queued", namespace).get("status") or {}
    return {c["type"]: c for c in status.get("conditions", [])}


def test_queue_scaling_waits_for_keda_then_rolls_out_valid_scaled_objects(kube, operator, namespace):
    kube.apply(queue_scaled_app(namespace))
    degraded = wait_until(lambda: conditions(kube, namespace).get("Degraded", {}).get("reason") == "KedaNotInstalled"
                          and conditions(kube, namespace)["Degraded"], 90, what="Degraded KedaNotInstalled")
    assert "keda.sh/v1alpha1" in degraded["message"] and "reports" in degraded["message"]
    assert kube.get("deployments", namespace=namespace, selector="app.kubernetes.io/instance=queued")["items"] == []

    crds = build.keda_crds()
    kube.kubectl("apply", "--server-side", *(a for f in CRDS for a in ("-f", str(crds / f"keda.sh_{f}.yaml"))))
    for f in CRDS:
        kube.wait_crd_established(f"{f}.keda.sh")
    scaled = wait_until(lambda: kube.get("scaledobjects", namespace=namespace,
                                         selector="app.kubernetes.io/instance=queued")["items"], 120,
                        what="the ScaledObject")
    assert [s["metadata"]["name"] for s in scaled] == ["queued-worker-reports"]
    assert scaled[0]["spec"]["minReplicaCount"] == 0 and scaled[0]["spec"]["maxReplicaCount"] == 5
    assert kube.get("triggerauthentications", "queued-keda-broker", namespace)["spec"]["secretTargetRef"][0]["name"] \
        == "queued-redis"
    hpas = [h["metadata"]["name"] for h in kube.get("hpa", namespace=namespace,
                                                    selector="app.kubernetes.io/instance=queued")["items"]]
    assert "queued-worker-reports" not in hpas  # KEDA makes its own HPA; no second autoscaler from us
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/queued", "-n", namespace, "--timeout=180s")

    # What was applied is what the renderer makes, valid under strict field validation; a broken edit is refused
    # by KEDA's schema (the validation is real).
    rendered = [o for o in render(queue_scaled_app(namespace), redis_password="x").objects
                if o["apiVersion"].startswith("keda.sh/")]
    kube.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump_all(rendered))
    broken = copy.deepcopy(next(o for o in rendered if o["kind"] == "ScaledObject"))
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 10  # KEDA wants a map of strings
    refused = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert refused.returncode != 0 and "listLength" in refused.stderr
