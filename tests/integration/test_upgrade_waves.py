"""An operator release that renders pods differently rolls FlaskApps in waves, on a real API server.

The apps' web Deployments are first made to look as an earlier release left them (another pod-template
annotation value, another applied hash, the same inputs hash), with the operator stopped; a fresh operator
with two upgrade slots then finds five apps to upgrade and one that opted out.
"""

from __future__ import annotations

import copy
import json

import yaml

from testsupport.kube import ROOT, SHARD_LABEL, OperatorProcess, wait_until

SLOTS = 2
CHECKSUM = "flaskapp.dev/config-checksum"
APPLIED_HASH = "flaskapp.dev/applied-hash"


def app(name: str, **annotations) -> dict:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text()))
    doc["metadata"] = {"name": name, "labels": {SHARD_LABEL: "waves"}, "annotations": annotations}
    return doc


def as_an_earlier_release_left_it(kube, namespace: str, name: str) -> None:
    patch = {"metadata": {"annotations": {APPLIED_HASH: "0123456789abcdef"}},
             "spec": {"template": {"metadata": {"annotations": {CHECKSUM: "rendered-by-an-earlier-release"}}}}}
    kube.kubectl("patch", "deployment", f"{name}-web", "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def template_checksum(kube, namespace: str, name: str) -> str:
    return kube.get("deployment", f"{name}-web", namespace)["spec"]["template"]["metadata"]["annotations"][CHECKSUM]


def reasons(kube, namespace: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for event in kube.get("events", namespace=namespace)["items"]:
        out.setdefault(event["involvedObject"]["name"], set()).add(event["reason"])
    return out


def test_a_new_release_rolls_apps_in_waves_and_spares_the_app_that_opted_out(kube, operator_kubeconfig, namespace,
                                                                            tmp_path):
    selector = {"FLASKAPP_SELECTOR": f"{SHARD_LABEL}=waves", "FLASKAPP_MAX_ROLLING_UPGRADES": str(SLOTS)}
    names = [f"wave-{i}" for i in range(5)]
    first = OperatorProcess(kube, tmp_path / "first.log", kubeconfig=operator_kubeconfig, env=selector).start()
    try:
        for name in names:
            kube.apply(app(name), namespace)
        kube.apply(app("pinned", **{"flaskapp.dev/auto-upgrade": "false"}), namespace)
        for name in names + ["pinned"]:
            kube.kubectl("wait", "--for=condition=Ready", f"flaskapp/{name}", "-n", namespace, "--timeout=120s")
        current = {n: template_checksum(kube, namespace, n) for n in names}  # each app's own config
    finally:
        first.stop()
    for name in names + ["pinned"]:
        as_an_earlier_release_left_it(kube, namespace, name)

    upgraded = OperatorProcess(kube, tmp_path / "upgraded.log", kubeconfig=operator_kubeconfig, env=selector).start()
    try:
        wait_until(lambda: all(template_checksum(kube, namespace, n) == current[n] for n in names), 180, interval=1,
                   what="every app on the new release's templates")
        wait_until(lambda: all("Upgraded" in reasons(kube, namespace).get(n, set()) for n in names), 120,
                   what="every app Upgraded")
        seen = reasons(kube, namespace)
        queued = [n for n in names if "UpgradeQueued" in seen.get(n, set())]
        # Two slots for five apps: at least three waited for a slot.
        assert len(queued) >= len(names) - SLOTS, seen
        assert all("UpgradeStarted" in seen[n] for n in names)
        # The app that opted out keeps the earlier release's pods, says so, and stays Ready.
        pinned = kube.get("flaskapp", "pinned", namespace)["status"]
        assert template_checksum(kube, namespace, "pinned") == "rendered-by-an-earlier-release"
        assert pinned["upgrade"].startswith("held") and "UpgradeHeld" in seen["pinned"]
        assert next(c for c in pinned["conditions"] if c["type"] == "Ready")["status"] == "True"
        metrics = upgraded.scrape()[1]
        assert "flaskapp_operator_upgrades_completed_total 5.0" in metrics, metrics
        # A spec change is the user's: the pinned app rolls now.
        kube.kubectl("patch", "flaskapp", "pinned", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"web":{"replicas":3}}}')
        wait_until(lambda: template_checksum(kube, namespace, "pinned") != "rendered-by-an-earlier-release", 60,
                   what="the pinned app rolls on its spec change")
    except AssertionError:
        print("---- upgraded operator ----\n" + upgraded.log_tail(80))
        for name in names + ["pinned"]:
            print(name, (kube.get("flaskapp", name, namespace) or {}).get("status", {}).get("upgrade"),
                  template_checksum(kube, namespace, name)[:16])
        print(reasons(kube, namespace))
        raise
    finally:
        upgraded.stop()
