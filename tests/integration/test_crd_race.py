"""An operator started before (or while) its CRD is installed serves FlaskApps once the CRD is served, however late:
readiness false until then, and a FlaskApp created afterwards is reconciled. On a control plane of its own (the
session's has the CRD from the start), the CRD deleted and installed again for every try."""

from __future__ import annotations

import pytest
import yaml

from testsupport.kube import ROOT, OperatorProcess, new_namespace, start_kube, wait_until

CRD = "flaskapps.flaskapp.dev"


@pytest.fixture(scope="module")
def bare_kube(tmp_path_factory):
    kube = start_kube(tmp_path_factory.mktemp("bare"))
    yield kube
    if kube.local:
        kube.local.stop()


# When the CRD arrives: at once (racing the operator's start), once the operator answers /readyz with "not ready"
# (it runs and waits), and once it has logged that it waits for the CRD (its discovery polls back off).
MOMENTS = ["at-once", "operator-up", "operator-waiting"]


@pytest.mark.parametrize("moment", MOMENTS * 2)
def test_an_operator_started_before_its_crd_reconciles_every_flaskapp(bare_kube, tmp_path, moment):
    kube = bare_kube
    kube.kubectl("delete", "crd", CRD, "--ignore-not-found", "--wait=true", timeout=180)
    op = OperatorProcess(kube, tmp_path / "operator.log").start()
    namespace = None
    try:
        if moment != "at-once":
            wait_until(lambda: op.scrape("/readyz")[0] not in (0, 200) and op.scrape("/readyz")[0], 60,
                       what="the operator answering not ready while its CRD is missing")
        if moment == "operator-waiting":
            wait_until(lambda: "waiting for the API server to serve flaskapps" in op.log_tail(), 60,
                       what="the operator saying it waits for its CRD")
        kube.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crd"), timeout=180)
        wait_until(lambda: op.scrape("/readyz")[0] == 200, 120, what="the operator ready once its CRD is served")
        assert op.alive
        namespace = new_namespace(kube)
        app = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())
        kube.apply(app, namespace)
        name = app["metadata"]["name"]

        def reconciled():
            status = (kube.get("flaskapp", name, namespace) or {}).get("status") or {}
            return status.get("observedGeneration") == 1 and status.get("conditions")
        wait_until(reconciled, 120, what=f"FlaskApp {name} reconciled ({moment})")
        assert kube.get("deployment", f"{name}-web", namespace), "the web Deployment was created"
    finally:
        if namespace:
            kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        op.stop()
