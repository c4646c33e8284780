"""One reconcile pass against an in-memory cluster: what it decides to apply, keep and prune."""

from __future__ import annotations

from flaskapp_operator.reconcile import reconcile
from testsupport.memorycluster import MemoryCluster
from testsupport.samples import load_sample

UID = "00000000-0000-4000-8000-000000000001"


def migration_job(name: str, state: str) -> dict:
    conditions = {"Running": [], "Complete": [{"type": "Complete", "status": "True"}]}[state]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app.kubernetes.io/component": "migrations"},
                         "ownerReferences": [{"uid": UID, "kind": "FlaskApp", "name": "shop"}]},
            "status": {"conditions": conditions}}


def test_a_running_migration_is_never_pruned_and_the_next_one_waits_for_it():
    app = load_sample("full")
    app["metadata"].update(namespace="ns", uid=UID, generation=1)
    cluster = MemoryCluster(app, {("Job", "shop-migrate-earlier"): migration_job("shop-migrate-earlier", "Running")})

    reconcile(cluster, "ns", "shop")
    new_jobs = [k for k in cluster.applied if k[0] == "Job"]
    assert new_jobs == [] and ("Job", "shop-migrate-earlier") not in cluster.pruned
    progressing = next(c for c in cluster.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "MigrationRunning" and "shop-migrate-earlier" in progressing["message"]
    assert not any(k[0] == "Deployment" and k[1] in ("shop-web", "shop-beat") for k in cluster.applied)

    # Once it has ended, it is pruned and the new image's Job starts.
    cluster.live[("Job", "shop-migrate-earlier")] = migration_job("shop-migrate-earlier", "Complete")
    reconcile(cluster, "ns", "shop")
    assert ("Job", "shop-migrate-earlier") in cluster.pruned
    assert [k for k in cluster.applied if k[0] == "Job"] != []


def test_a_pooler_waits_for_the_database_secret_and_then_rolls_out_from_it():
    import base64

    app = load_sample("full")
    app["metadata"].update(namespace="ns", uid=UID, generation=1)
    app["spec"]["database"]["pooler"] = {"enabled": True}
    cluster = MemoryCluster(app, {})
    reconcile(cluster, "ns", "shop")
    degraded = next(c for c in cluster.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "DatabaseSecretMissing" and "shop-db" in degraded["message"]
    assert cluster.applied == []

    url = "postgresql+psycopg://shop:pw@db.example:5432/shop"
    cluster.secrets["shop-db"] = {"data": {"url": base64.b64encode(url.encode()).decode()}}
    reconcile(cluster, "ns", "shop")
    pooler = cluster.live[("Secret", "shop-pooler")]
    ini = base64.b64decode(pooler["data"]["pgbouncer.ini"]).decode()
    assert "shop = host='db.example' port=5432 dbname='shop' user='shop'" in ini
    assert ("Deployment", "shop-pooler") in cluster.applied

    cluster.secrets["shop-db"] = {"data": {"url": base64.b64encode(b"mysql://shop:pw@db/shop").decode()}}
    reconcile(cluster, "ns", "shop")
    degraded = next(c for c in cluster.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "Secret shop-db key url" in degraded["message"]


def test_queue_length_autoscaling_without_keda_is_degraded_with_nothing_applied():
    app = load_sample("full")
    app["metadata"].update(namespace="ns", uid=UID, generation=1)
    app["spec"]["workerPools"][1]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 4, "queueLength": 10}
    cluster = MemoryCluster(app, {})
    reconcile(cluster, "ns", "shop")
    degraded = next(c for c in cluster.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "KedaNotInstalled"
    assert "reports" in degraded["message"] and "keda.sh/v1alpha1" in degraded["message"]
    assert cluster.applied == []
    cluster.keda = True
    reconcile(cluster, "ns", "shop")
    assert ("ScaledObject", "shop-worker-reports") in cluster.applied
