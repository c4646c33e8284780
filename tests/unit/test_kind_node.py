"""The kind node image's pure pieces (tools/localcluster/kind.py): image names, kind and kubeadm config, the
manifests and containerd config taken from kind's module, and the cache key."""

from __future__ import annotations


import pytest
import yaml

from localcluster import build, kind

REFS = kind.component_refs(kubernetes="v1.35.4", etcd="v3.6.16", coredns="v1.14.7", kube_router="v2.1.0",
                           local_path="v0.0.30")


def test_images_are_named_after_the_binary_and_version_they_hold():
    assert REFS["kube-apiserver"] == "localhost/go-build/kube-apiserver:v1.35.4"
    assert REFS["etcd"] == "localhost/go-build/etcd:v3.6.16"
    assert REFS["coredns"] == "localhost/go-build/coredns:v1.14.7"
    assert not any("registry.k8s.io" in r or "docker.io" in r for r in REFS.values())


def test_kubeadm_is_pointed_at_the_images_built_here():
    patch = kind.kubeadm_image_patch(REFS)
    assert patch == {"kind": "ClusterConfiguration", "imageRepository": "localhost/go-build",
                     "etcd": {"local": {"imageRepository": "localhost/go-build", "imageTag": "v3.6.16"}},
                     "dns": {"imageRepository": "localhost/go-build", "imageTag": "v1.14.7"}}


def test_cluster_config_has_workers_the_image_patch_and_accepts_cgroup_v1():
    config = kind.cluster_config(REFS, workers=2)
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    patches = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert {"kind": "KubeletConfiguration", "failCgroupV1": False} in patches
    assert kind.kubeadm_image_patch(REFS) in patches


KIND_CONTAINERD = '''version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = false
'''


def test_containerd_config_uses_the_local_sandbox_and_restricts_oom_score_adj():
    config = kind.containerd_config(KIND_CONTAINERD, "localhost/x/pause:local")
    assert 'sandbox_image = "localhost/x/pause:local"' in config
    assert "restrict_oom_score_adj = true" in config
    with pytest.raises(ValueError):
        kind.containerd_config("version = 2\n", "localhost/x/pause:local")


def test_cri_base_spec_adds_kinds_hook_and_drops_rlimits():
    default = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE"}], "args": ["sh"]}}
    spec = kind.cri_base_spec(default)
    assert spec["hooks"]["createContainer"] == [{"path": "/kind/bin/mount-product-files.sh"}]
    assert "rlimits" not in spec["process"] and "rlimits" in default["process"]


CONST_STORAGE = '''package nodeimage

const storageProvisionerImage = "docker.io/kindest/local-path-provisioner:v1"
const storageHelperImage = "docker.io/kindest/local-path-helper:v1"

const defaultStorageManifest = `
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - image: ` + storageProvisionerImage + `
          command: [local-path-provisioner, --helper-image, ` + storageHelperImage + `]
`
'''


def test_storage_manifest_is_kinds_with_the_local_images():
    manifest = kind.storage_manifest(CONST_STORAGE, "localhost/p:1", "localhost/h:1")
    container = yaml.safe_load(manifest)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "localhost/p:1"
    assert container["command"][-1] == "localhost/h:1"


def test_the_real_kind_storage_manifest_parses(tmp_path):
    # kind's own module, as the node image build reads it (go mod download from the Go proxy; cached after).
    source = build.module_source("sigs.k8s.io/kind", build.KIND_VERSION) / "pkg/build/nodeimage/const_storage.go"
    docs = list(yaml.safe_load_all(kind.storage_manifest(source.read_text(), "localhost/p:1", "localhost/h:1")))
    assert {d["kind"] for d in docs} >= {"Deployment", "StorageClass", "ConfigMap"}
    assert "docker.io" not in yaml.safe_dump_all(docs)


def test_cni_manifest_runs_kube_router_from_the_local_image():
    docs = list(yaml.safe_load_all(kind.cni_manifest("localhost/go-build/kube-router:v2.1.0")))
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
    assert images == {"localhost/go-build/kube-router:v2.1.0"}
    assert all(c["imagePullPolicy"] == "IfNotPresent" for c in pod["containers"] + pod["initContainers"])


def test_content_key_changes_with_any_input_and_not_with_order():
    inputs = {"kubernetes": "v1.35.4", "image a": "a-123.tar", "file kind.py": "abc"}
    key = kind.content_key(inputs)
    assert key == kind.content_key(dict(reversed(list(inputs.items()))))
    for name in inputs:
        assert kind.content_key({**inputs, name: inputs[name] + "x"}) != key
    assert kind.content_key({**inputs, "extra": ""}) != key


def test_node_image_inputs_name_versions_archives_and_this_code(tmp_path):
    archive = tmp_path / "pause-local-0123.tar"
    inputs = kind.node_image_inputs({"localhost/x/pause:local": archive})
    assert inputs["image localhost/x/pause:local"] == "pause-local-0123.tar"
    assert {"kubernetes", "kind", "crictl", "cni-plugins", "debian", "file kind.py", "file default-cni.yaml"} <= set(inputs)



def test_the_kind_engine_never_touches_host_iptables_and_drops_capabilities_the_host_lacks():
    from localcluster import images
    from localcluster.kindcluster import RUNC_WRAPPER, engine_flags

    flags = engine_flags()
    assert set(images.PRIVATE_FLAGS) <= set(flags) and "--iptables=false" in flags
    assert f"--add-runtime=kind-runc={RUNC_WRAPPER}" in flags and "--default-runtime=kind-runc" in flags


def test_runc_wrapper_drops_only_the_capabilities_the_host_cannot_grant(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util
    import json

    from localcluster.kindcluster import RUNC_WRAPPER

    loader = importlib.machinery.SourceFileLoader("runc_wrapper", str(RUNC_WRAPPER))
    wrapper = importlib.util.module_from_spec(importlib.util.spec_from_loader("runc_wrapper", loader))
    loader.exec_module(wrapper)
    monkeypatch.setattr(wrapper, "missing_capabilities", lambda: {"CAP_SYS_RESOURCE"})
    caps = {"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE"]}
    (tmp_path / "config.json").write_text(json.dumps({"process": {"capabilities": caps}}))
    (tmp_path / "process.json").write_text(json.dumps({"capabilities": caps}))
    wrapper.strip(str(tmp_path / "config.json"), in_process=False)
    wrapper.strip(str(tmp_path / "process.json"), in_process=True)
    expected = {"bounding": ["CAP_CHOWN"], "effective": []}
    assert json.loads((tmp_path / "config.json").read_text())["process"]["capabilities"] == expected
    assert json.loads((tmp_path / "process.json").read_text())["capabilities"] == expected
    assert wrapper.option(["create", "--bundle", "/b", "id"], "--bundle", "-b") == "/b"
    assert wrapper.option(["exec", "--process=/p", "id"], "--process", "-p") == "/p"


def test_image_archives_written_here_report_their_image_id(tmp_path, monkeypatch):
    import hashlib
    import json
    import tarfile

    from localcluster import images

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = tmp_path / "tool"
    binary.write_bytes(b"#!/bin/sh\n")
    oci = images.single_binary_image("localhost/t/tool:1", binary, "/usr/local/bin/tool", user="0")
    with tarfile.open(oci) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/" + index["manifests"][0]["digest"].replace(":", "/")))
        config = json.load(tar.extractfile("blobs/" + manifest["config"]["digest"].replace(":", "/")))
    assert images.archive_image_id(oci) == manifest["config"]["digest"]
    assert config["config"] == {"Entrypoint": ["/usr/local/bin/tool"], "User": "0"}

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(binary, arcname="bin/tool")
    archive = images.rootfs_image("localhost/t/node:1", rootfs, tmp_path / "node.tar", {"StopSignal": "SIGRTMIN+3"})
    with tarfile.open(archive) as tar:
        entry = json.load(tar.extractfile("manifest.json"))[0]
        raw_config = tar.extractfile(entry["Config"]).read()
    assert entry["RepoTags"] == ["localhost/t/node:1"]
    assert images.archive_image_id(archive) == "sha256:" + hashlib.sha256(raw_config).hexdigest()
    assert json.loads(raw_config)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(rootfs.read_bytes()).hexdigest()]


def test_the_kind_cluster_runs_the_local_clusters_traefik_as_a_pod_on_hostports():
    from localcluster import node
    from localcluster.kindcluster import ingress_manifest

    ref = kind.component_refs()["traefik"]
    assert ref == f"localhost/go-build/traefik:{build.TRAEFIK_VERSION}"
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(ingress_manifest(ref))}
    # The same role, binding and IngressClass as the local node's Traefik.
    for same in yaml.safe_load_all(node.TRAEFIK_RBAC + "---\n" + node.INGRESS_CLASS_OBJECT):
        assert docs[(same["kind"], same["metadata"]["name"])] == same
    pod = docs[("Deployment", "traefik")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == ref and container["imagePullPolicy"] == "IfNotPresent"
    assert {(p["containerPort"], p.get("hostPort")) for p in container["ports"]} >= {(80, 80), (443, 443)}
    # The same providers and entry-point ports; only where it listens and what address it publishes differ.
    local = node.traefik_args(node.NODE_IP, "127.0.0.1:1")
    assert [a.split("=")[0] for a in container["args"]] == [a.split("=")[0] for a in local]
    assert "--providers.kubernetesgateway.statusaddress.ip=$(HOST_IP)" in container["args"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
