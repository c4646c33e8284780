"""End to end, cluster-agnostic: install the chart, apply the example FlaskApp, and follow its life.
On kind (`make e2e`) it also checks the running stack through the Ingress."""

from __future__ import annotations

import copy
import subprocess

import pytest
import requests
import yaml

from kubetest import ROOT, new_namespace, wait_until

SHOP = yaml.safe_load((ROOT / "tests" / "e2e" / "shop.yaml").read_text())
CHART = ROOT / "charts" / "flaskapp-operator"
STATE: dict = {}


def helm(kube, *args):
    result = subprocess.run([kube.helm_bin, *args], capture_output=True, text=True, env=kube.env(), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def condition(kube, ns, ctype):
    app = kube.get("flaskapp", "shop", ns) or {}
    return next((c for c in app.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def dump_on_failure(kube, ns):
    for args in (["get", "flaskapp,deploy,pods,jobs", "-n", ns, "-o", "wide"], ["get", "events", "-n", ns],
                 ["logs", "-n", "flaskapp-system", "deploy/flaskapp-operator", "--tail=80"]):
        print(kube.kubectl(*args, check=False).stdout)


@pytest.mark.order(1)
def test_install_chart(kube, local_operator):
    helm(kube, "upgrade", "--install", "flaskapp-operator", str(CHART), "-n", "flaskapp-system", "--create-namespace",
         "--set", "image.pullPolicy=IfNotPresent", "--wait", "--timeout", "180s")
    kube.kubectl("wait", "--for=condition=Established", "crd/flaskapps.flaskapp.dev", "--timeout=60s")
    deploy = kube.get("deployment", "flaskapp-operator", "flaskapp-system")
    assert deploy["status"].get("availableReplicas") == 1


@pytest.mark.order(2)
def test_apply_sample_until_ready(kube, local_operator):
    ns = STATE["ns"] = new_namespace(kube, "e2e")
    kube.kubectl("create", "secret", "generic", "shop-db", "-n", ns,
                 "--from-literal=url=postgresql://shop:shop@postgres.e2e-db.svc:5432/shop")
    kube.apply(SHOP, ns)
    result = kube.kubectl("wait", "--for=condition=Ready", "flaskapp/shop", "-n", ns, "--timeout=300s", check=False)
    if result.returncode != 0:
        dump_on_failure(kube, ns)
    assert result.returncode == 0, result.stderr


@pytest.mark.order(3)
def test_children_and_status(kube):
    ns = STATE["ns"]
    app = kube.get("flaskapp", "shop", ns)
    status = app["status"]
    assert status["observedGeneration"] == app["metadata"]["generation"]
    assert status["url"] == "http://shop.local/" and status["workerPools"] == "1/1"
    assert status["tuning"]["budget"]["feasible"] is True
    names = {d["metadata"]["name"] for d in kube.get("deployments", namespace=ns)["items"]}
    assert names == {"shop-web", "shop-nginx", "shop-worker-default", "shop-beat", "shop-redis-cache",
                     "shop-redis-broker"}
    assert kube.get("ingress", "shop", ns)["spec"]["rules"][0]["host"] == "shop.local"


@pytest.mark.order(4)
def test_scale_through_the_scale_subresource(kube):
    ns = STATE["ns"]
    kube.kubectl("scale", "flaskapp/shop", "-n", ns, "--replicas=3")
    wait_until(lambda: kube.get("deployment", "shop-web", ns)["status"].get("readyReplicas") == 3, 240,
               what="3 web pods ready")
    wait_until(lambda: kube.get("flaskapp", "shop", ns)["status"]["webReplicas"] == 3, 60, what="status follows")


@pytest.mark.order(5)
def test_update_rolls_the_pods(kube):
    ns = STATE["ns"]
    before = kube.get("deployment", "shop-web", ns)["spec"]["template"]["metadata"]["annotations"]
    changed = copy.deepcopy(SHOP)
    changed["spec"]["web"]["replicas"] = 3
    changed["spec"]["web"]["gunicorn"] = {"timeoutSeconds": 45}
    kube.apply(changed, ns)
    wait_until(lambda: kube.get("deployment", "shop-web", ns)["spec"]["template"]["metadata"]["annotations"] != before,
               60, what="checksum changed")
    kube.kubectl("wait", "--for=condition=Ready", "flaskapp/shop", "-n", ns, "--timeout=300s")
    assert "--timeout=45" in kube.get("configmap", "shop-env", ns)["data"]["web.GUNICORN_CMD_ARGS"]


# -- only where containers run ----------------------------------------------------------------------------

def _get(base, path, **kw):
    headers = {"Host": "shop.local", **kw.pop("headers", {})}
    return requests.get(base + path, headers=headers, timeout=30, **kw)


@pytest.mark.order(6)
def test_static_file_from_nginx_with_cache_headers_and_gzip(http_base):
    r = wait_until(lambda: (x := _get(http_base, "/static/app.css", headers={"Accept-Encoding": "gzip"}))
                   .status_code == 200 and x, 120, what="static file through the ingress")
    assert "max-age=31536000" in r.headers["Cache-Control"] and "immutable" in r.headers["Cache-Control"]
    assert r.headers.get("Content-Encoding") == "gzip"


@pytest.mark.order(6)
def test_cached_endpoint_hits_redis(http_base):
    first = _get(http_base, "/expensive", cookies={"c": "1"}).json()
    second = _get(http_base, "/expensive", cookies={"c": "1"}).json()
    assert first["computed_at"] == second["computed_at"]


@pytest.mark.order(6)
def test_celery_task_round_trips(http_base):
    assert _get(http_base, "/task", cookies={"c": "1"}).json() == {"result": 5}


@pytest.mark.order(6)
def test_app_sees_the_tuned_env(kube, http_base):
    env = _get(http_base, "/env", cookies={"c": "1"}).json()
    app = kube.get("flaskapp", "shop", STATE["ns"])
    assert int(env["WEB_CONCURRENCY"]) == app["status"]["tuning"]["web"]["workers"]
    assert "pool_size" in env["SQLALCHEMY_ENGINE_OPTIONS"]


@pytest.mark.order(7)
def test_delete_garbage_collects_every_child(kube):
    ns = STATE["ns"]
    kube.kubectl("delete", "flaskapp", "shop", "-n", ns)
    wait_until(lambda: kube.get("deployments,services,configmaps,jobs,ingresses", namespace=ns,
                                selector="app.kubernetes.io/instance=shop")["items"] == [], 120,
               what="children garbage-collected")


@pytest.mark.order(8)
def test_uninstall_chart_keeps_the_crd(kube):
    helm(kube, "uninstall", "flaskapp-operator", "-n", "flaskapp-system", "--wait")
    assert kube.get("deployment", "flaskapp-operator", "flaskapp-system") is None
    assert kube.get("crd", "flaskapps.flaskapp.dev") is not None
    kube.kubectl("delete", "namespace", STATE["ns"], "--wait=false", check=False)
