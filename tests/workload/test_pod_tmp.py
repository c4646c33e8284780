"""The harness moves the pod's /tmp, and only it: from a checkout (and its venv) under the host's /tmp, the
interpreter and the stack's own files keep their paths (issue 30: `make bench` and the Celery workload tests
died with `No such file or directory: .../celery-tmp/<checkout>/.venv/bin/python3`). No servers are started."""

from __future__ import annotations

from pathlib import Path

import yaml

from testsupport import stack as stack_module
from testsupport.stack import PORT_NAMES, REDIS_PASSWORD, WORKLOAD_APP, Stack, pod_tmp_paths
from flaskapp_operator.render import render


def test_only_the_pods_tmp_is_moved():
    scratch, own = Path("/tmp/work-1/beat-tmp"), Path("/tmp/work-1")
    command = ["/tmp/fa-check/.venv/bin/python3", "/tmp/work-1/celery/probe.py", "beat",
               "--schedule", "/tmp/celerybeat-schedule", "--pidfile", "/tmp/celerybeat.pid", "/tmp/work-10/x"]
    assert pod_tmp_paths(command[1:], scratch, own) == [
        "/tmp/work-1/celery/probe.py", "beat",  # the stack's own file, rendered in through its addresses
        "--schedule", "/tmp/work-1/beat-tmp/celerybeat-schedule", "--pidfile", "/tmp/work-1/beat-tmp/celerybeat.pid",
        "/tmp/work-1/beat-tmp/work-10/x"]  # /tmp/work-10 is not under /tmp/work-1: a prefix is not a parent
    assert pod_tmp_paths(["/usr/bin/celery", "--app", "app"], scratch, own) == ["/usr/bin/celery", "--app", "app"]


def test_beat_from_a_checkout_under_tmp_keeps_its_interpreter(tmp_path, monkeypatch):
    venv_bin = Path("/tmp/fa-check/.venv/bin")  # a checkout under /tmp: its interpreter lies there too
    monkeypatch.setattr(stack_module, "VENV_BIN", venv_bin)
    document = yaml.safe_load(WORKLOAD_APP.read_text())
    document["spec"]["beat"] = {"enabled": True}
    s = Stack(tmp_path, document=document)
    s.ports.update({name: 40000 + i for i, name in enumerate(PORT_NAMES)})
    s.rendered = render(s.document, redis_password=REDIS_PASSWORD, addresses=s.addresses(),
                        database_url=s.database_url)
    state = tmp_path / "beat-tmp"
    command = s.command_of("-beat", pod_tmp=state)
    assert command[0] == str(venv_bin / "python3")
    assert Path(command[1]).parent == tmp_path / "celery"  # the probe script, where the stack writes it
    assert command[command.index("--schedule") + 1] == f"{state}/celerybeat-schedule"
    assert command[command.index("--pidfile") + 1] == f"{state}/celerybeat.pid"
    assert not any(a.startswith("/tmp/") and not Path(a).is_relative_to(tmp_path) for a in command[1:])
