"""TLS through cert-manager: the Ingress a FlaskApp's issuerRef renders, handed to cert-manager's own
ingress-shim code (tools/certmanagershim, built against cert-manager's module), makes the Certificate it must,
which cert-manager's published CRD accepts. cert-manager's controller itself is not run here: its binary's
module is not served by the Go proxy this machine can reach."""

from __future__ import annotations

import copy
import subprocess

import yaml

from testsupport.kube import ROOT, wait_until

from localcluster import build

MINIMAL = yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text())


def install_cert_manager_crds(kube) -> None:
    kube.kubectl("apply", "--server-side", "-f", str(build.cert_manager_crds()))
    kube.kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "--timeout=60s")
    wait_until(lambda: kube.kubectl("get", "certificates", "-A", check=False).returncode == 0, 30,
               what="Certificate API served")


def app_with(name: str, ingress: dict) -> dict:
    app = copy.deepcopy(MINIMAL)
    app["metadata"] = {"name": name}
    app["spec"]["ingress"] = ingress
    return app


def run_shim(kube, namespace: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(build.build_cert_manager_shim()), "-kubeconfig", str(kube.kubeconfig),
                           "-namespace", namespace], capture_output=True, text=True, timeout=120)


def test_cert_manager_makes_the_certificate_the_ingress_asks_for(kube, operator, namespace):
    install_cert_manager_crds(kube)
    kube.apply(app_with("tls", {"host": "shop.example.com", "hosts": ["www.shop.example.com"],
                                "paths": [{"path": "/", "pathType": "Prefix"}],
                                "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}), namespace)
    kube.apply(app_with("pca", {"host": "internal.example.com", "tlsSecretName": "internal-cert",
                                "issuerRef": {"name": "corp-ca", "kind": "AWSPCAClusterIssuer",
                                              "group": "awspca.cert-manager.io"}}), namespace)
    wait_until(lambda: len(kube.get("ingresses", namespace=namespace)["items"]) == 2, 60, what="both Ingresses")

    shim = run_shim(kube, namespace)
    assert shim.returncode == 0, shim.stdout + shim.stderr
    assert shim.stdout.count("Normal CreateCertificate") == 2, shim.stdout

    certificates = {c["metadata"]["name"]: c for c in kube.get("certificates", namespace=namespace)["items"]}
    assert set(certificates) == {"tls-tls", "internal-cert"}
    tls = certificates["tls-tls"]["spec"]
    assert tls["dnsNames"] == ["shop.example.com", "www.shop.example.com"]
    assert tls["secretName"] == "tls-tls"
    # (cert-manager leaves its own group implicit)
    assert {"group": "cert-manager.io", **tls["issuerRef"]} == {"name": "letsencrypt", "kind": "ClusterIssuer",
                                                               "group": "cert-manager.io"}
    pca = certificates["internal-cert"]["spec"]
    assert pca["dnsNames"] == ["internal.example.com"]
    assert pca["issuerRef"] == {"name": "corp-ca", "kind": "AWSPCAClusterIssuer", "group": "awspca.cert-manager.io"}
    # The certificate belongs to the Ingress (which belongs to the FlaskApp): deleting the app removes it.
    owner = certificates["tls-tls"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Ingress", "tls")
    assert kube.get("flaskapp", "tls", namespace)["status"]["url"] == "https://shop.example.com/"

    # Idempotent like the operator: a second pass creates nothing more.
    again = run_shim(kube, namespace)
    assert again.returncode == 0 and "CreateCertificate" not in again.stdout, again.stdout
