"""PersistentVolumes for kwok fake nodes, which have no disks: a claim of the `kwok-volumes` StorageClass
gets a PersistentVolume bound to it at once (nothing is ever written to it: no container runs), and the
volume is deleted with its claim. A real node runs local-path-provisioner instead.

    python -m localcluster.kwokvolumes KUBECONFIG
"""

from __future__ import annotations

import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

STORAGE_CLASS = "kwok-volumes"
PROVISIONER = "localcluster.flaskapp.dev/kwok-volumes"

STORAGE_CLASS_OBJECT = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": PROVISIONER, "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete",
}


def volume_for(claim: client.V1PersistentVolumeClaim) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{claim.metadata.uid}",
                     "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {"capacity": {"storage": claim.spec.resources.requests["storage"]},
                 "accessModes": claim.spec.access_modes, "storageClassName": STORAGE_CLASS,
                 "persistentVolumeReclaimPolicy": "Delete",
                 "hostPath": {"path": f"/kwok-volumes/{claim.metadata.uid}"},
                 "claimRef": {"namespace": claim.metadata.namespace, "name": claim.metadata.name,
                              "uid": claim.metadata.uid}},
    }


def ignore(status: int, call, *args) -> None:
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != status:
            raise


def handle(core: client.CoreV1Api, kind: str, claim: client.V1PersistentVolumeClaim) -> None:
    if claim.spec.storage_class_name != STORAGE_CLASS:
        return
    if kind == "DELETED":
        ignore(404, core.delete_persistent_volume, f"pvc-{claim.metadata.uid}")
    elif not claim.spec.volume_name and claim.metadata.deletion_timestamp is None:
        ignore(409, core.create_persistent_volume, volume_for(claim))


def main(kubeconfig: str) -> None:
    config.load_kube_config(kubeconfig)
    core = client.CoreV1Api()
    while True:  # a watch ends now and then (timeouts, API server restarts): list and watch again
        try:
            for event in watch.Watch().stream(core.list_persistent_volume_claim_for_all_namespaces,
                                              timeout_seconds=300):
                handle(core, event["type"], event["object"])
        except Exception as exc:  # noqa: BLE001 - keep serving; the next list repairs what was missed
            print(f"kwokvolumes: {exc}", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
