"""What each target builds (`localcluster build|images --for SET`) and how a build reports its progress."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from localcluster import build, images, progress


def test_the_demo_builds_none_of_the_tests_own_tools():
    demo = set(build.tool_set("demo", real_node=True))
    assert demo >= set(build.tool_set("cluster", real_node=True))
    assert demo >= {"kubernetes", "etcd", "helm", "traefik", "coredns", "kube-router", "local-path-provisioner",
                    "pause", "statsd_exporter", "redis_exporter"}
    assert not demo & {"kwok", "prometheus", "kube-score", "certmanagershim", "kubernetes-openapi", "keda-crds"}


def test_without_a_real_node_the_demo_and_the_cluster_run_kwok():
    assert build.tool_set("demo", real_node=False) == build.tool_set("cluster", real_node=False) == \
        ("kubernetes", "etcd", "kwok")


@pytest.mark.parametrize("real_node", [True, False])
def test_the_test_set_is_every_tool_the_machine_can_use(real_node):
    everything = set(build.catalogue())
    test = build.tool_set("test", real_node)
    assert len(test) == len(set(test))
    assert set(test) == (everything if real_node else everything - set(build.NODE_TOOLS))
    for name in ("demo", "bench", "cluster"):
        assert set(build.tool_set(name, real_node)) <= set(test), name


def test_an_unknown_set_is_refused():
    with pytest.raises(ValueError, match="demo"):
        build.tool_set("everything", real_node=True)


def test_the_demo_images_are_those_its_pods_run():
    demo = images.image_set("demo")
    assert set(demo) <= set(images.image_set("test"))
    assert set(images.MONITORING_IMAGES.values()) <= set(demo)  # the sample is monitored
    assert {images.OPERATOR_REF, images.EXAMPLE_REF, images.POSTGRES_REF, images.PGBOUNCER_REF, images.NGINX_REF,
            images.VALKEY_REF, images.PAUSE_REF} <= set(demo)
    assert not set(demo) & {images.GO_BINARY_REFS["prometheus"], images.FLASKR_REF, images.REDIS_REF}
    assert images.image_set("bench") == ()


def test_an_image_is_built_after_the_images_it_builds_from():
    builds = images.with_bases((images.OPERATOR_REF, images.NGINX_REF), images.image_builds(()))
    assert [b.ref for b in builds] == [images.PYTHON_REF, images.OPERATOR_REF, images.NGINX_REF]


@pytest.mark.parametrize("seconds, shown", [(0.42, "0.4s"), (12.4, "12s"), (72, "1m12s"), (3725, "1h02m05s")])
def test_durations_read_at_a_glance(seconds, shown):
    assert progress.format_duration(seconds) == shown


def test_step_labels_count_k_of_n():
    assert progress.step_label(3, 13, "traefik", "v3.6.12") == "[ 3/13] traefik v3.6.12"
    assert progress.step_label(1, 2, "localhost/x:local", "") == "[1/2] localhost/x:local"


def test_a_run_prints_one_line_per_step_and_keeps_the_raw_output_in_its_log(tmp_path: Path):
    log = tmp_path / "tools.log"
    out = io.StringIO()

    def noisy() -> str:
        progress.write_raw("go: downloading example.com/a v1.0.0")
        return "built"

    results = progress.run_steps("tools for demo", [progress.Step("a", "v1", True, lambda: "found"),
                                                    progress.Step("b", "v2", False, noisy)], log, out)
    assert results == ["found", "built"]
    lines = out.getvalue().splitlines()
    assert lines[0] == f"tools for demo: 2 steps, 1 cached; raw output in {log}"
    assert lines[1] == "[1/2] a v1 cached"
    assert lines[2] == "[2/2] b v2 building ..."
    assert lines[3].startswith("[2/2] b v2 done in ")
    assert lines[4].startswith("tools for demo: ready in ")
    assert "go: downloading" not in out.getvalue()
    assert "go: downloading example.com/a v1.0.0" in log.read_text()
    assert progress.raw_log() is None  # after the run, raw output goes back to stderr


def test_a_failed_step_shows_the_tail_of_its_log(tmp_path: Path):
    log = tmp_path / "tools.log"
    out = io.StringIO()

    def failing() -> None:
        for i in range(100):
            progress.write_raw(f"line {i}")
        raise RuntimeError("go build failed with exit code 1")

    with pytest.raises(progress.StepFailed) as failed:
        progress.run_steps("tools for test", [progress.Step("kubernetes", "v1.35.4", False, failing),
                                              progress.Step("never", "v0", False, lambda: None)], log, out)
    assert failed.value.step.name == "kubernetes"
    shown = out.getvalue()
    assert "[1/2] kubernetes v1.35.4 FAILED after " in shown
    assert "line 99" in shown and "go build failed with exit code 1" in shown
    assert "line 50\n" not in shown  # only the tail
    assert "never" not in shown


@pytest.mark.parametrize("line, phase", [
    ("[localcluster] $ go build -trimpath -ldflags -s -w -o /tmp/out/ k8s.io/kubernetes/cmd/kubelet", "go build"),
    ("[localcluster] $ go mod tidy", "go mod tidy"),
    ("[localcluster] $ docker build --network=host -t localhost/x:local", "docker build"),
    ("  go: downloading github.com/pkg/errors v0.9.1  (30s)", None),
])
def test_the_running_command_is_read_from_the_log(line, phase):
    assert progress.command_phase(line) == phase


def test_off_a_terminal_a_long_step_says_it_is_still_running(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)
    out = io.StringIO()

    def slow() -> None:
        progress.write_raw("[localcluster] $ go build -o out .")
        time.sleep(0.7)

    progress.run_steps("tools for demo", [progress.Step("kubernetes", "v1.35.4", False, slow)], tmp_path / "log", out)
    assert "[1/1] kubernetes v1.35.4 building ... still running after 0." in out.getvalue()
    assert "s (go build)\n" in out.getvalue()
