"""Two operator replicas on one Lease: one writes, the other stands by and takes over when the leader freezes or dies.

The pair reconciles only FlaskApps labelled for its shard (FLASKAPP_SELECTOR), and the session's operator only
the others (testsupport.kube.SESSION_SHARD_SELECTOR): two releases side by side without overlap, as the chart's watchLabelSelector runs them.
Who wrote what comes from the API server's audit log: each replica's user agent names it.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import signal
import time

import yaml

from testsupport.kube import ROOT, SHARD_LABEL, OperatorProcess, wait_until

LEASE_NAMESPACE = "flaskapp-system"
WRITES = ("create", "update", "patch", "delete", "deletecollection")
REPORT = ROOT / "build" / "leader-election.json"
# A standby takes over after 8 s without renewal (polling every second); then it reconciles: 15 s in all.
FAILOVER_TARGET_SECONDS = 15


def replica(kube, kubeconfig, log_dir, name: str, lease: str) -> OperatorProcess:
    return OperatorProcess(kube, log_dir / f"{name}.log", kubeconfig=kubeconfig, resync_seconds=5,
                           args=("--leader-elect", "--lease-namespace", LEASE_NAMESPACE, "--lease-name", lease),
                           env={"POD_NAME": name, "FLASKAPP_SELECTOR": f"{SHARD_LABEL}=ha"})


def holder(kube, lease: str) -> str:
    return ((kube.get("lease", lease, LEASE_NAMESPACE) or {}).get("spec") or {}).get("holderIdentity") or ""


def writes_from(kube, name: str, since: datetime.datetime | None = None) -> list[str]:
    """Write requests the API server received from replica `name` (after `since`)."""
    out = []
    for event in kube.audit_events():
        if (event.get("stage") == "ResponseComplete" and event["verb"] in WRITES
                and event.get("userAgent", "").startswith(f"flaskapp-operator/{name}/")):
            received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since is None or received >= since:
                ref = event.get("objectRef", {})
                out.append(f"{received.isoformat()} {event['verb']} {ref.get('resource')} {ref.get('name', '')}")
    return out


def web_replicas(kube, namespace: str) -> int:
    return ((kube.get("deployment", "ha-web", namespace) or {}).get("spec") or {}).get("replicas", 0)


def set_web_replicas(kube, namespace: str, n: int) -> None:
    kube.kubectl("patch", "flaskapp", "ha", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"web": {"replicas": n}}}))


def hand_over(kube, lease: str, namespace: str, leader: OperatorProcess, sig: int, successor: str, replicas: int,
              case: str) -> dict[str, float]:
    """Signal the leader, change the spec at once; seconds until `successor` holds the Lease and has applied it."""
    os.killpg(leader.proc.pid, sig)
    started = time.monotonic()
    set_web_replicas(kube, namespace, replicas)
    wait_until(lambda: holder(kube, lease).startswith(f"{successor}/"), 30, interval=0.2, what=f"{successor} leads")
    took = round(time.monotonic() - started, 1)
    wait_until(lambda: web_replicas(kube, namespace) == replicas, 30, interval=0.2,
               what=f"{successor} applies the change")
    return {f"{case}_takeover_seconds": took, f"{case}_change_applied_seconds": round(time.monotonic() - started, 1)}


def test_one_replica_writes_and_a_standby_takes_over_from_a_frozen_or_killed_leader(kube, operator_kubeconfig,
                                                                                       namespace, tmp_path):
    lease = f"ha-{namespace}"
    a = replica(kube, operator_kubeconfig, tmp_path, "replica-a", lease).start()
    b = replica(kube, operator_kubeconfig, tmp_path, "replica-b", lease)
    c = replica(kube, operator_kubeconfig, tmp_path, "replica-c", lease)
    figures = {}
    try:
        wait_until(lambda: holder(kube, lease).startswith("replica-a/"), 60, what="replica-a leads")
        b.start()
        wait_until(lambda: b.scrape("/readyz")[0] == 200, 60, what="replica-b up (standing by)")
        app = copy.deepcopy(yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text()))
        app["metadata"] = {"name": "ha", "labels": {SHARD_LABEL: "ha"}}
        kube.apply(app, namespace)
        kube.kubectl("wait", "--for=condition=Ready", "flaskapp/ha", "-n", namespace, "--timeout=120s")
        assert writes_from(kube, "replica-a") and writes_from(kube, "replica-b") == []
        assert "flaskapp_operator_leader 0.0" in b.scrape()[1] and "flaskapp_operator_leader 1.0" in a.scrape()[1]

        # 1. The leader freezes (a long pause, a partitioned node): the standby takes over, and the old leader,
        #    when it wakes, writes nothing: its writes are fenced once its renew deadline has passed, and it exits.
        frozen_at = datetime.datetime.now(datetime.timezone.utc)
        figures.update(hand_over(kube, lease, namespace, a, signal.SIGSTOP, "replica-b", 3, "frozen_leader"))
        os.killpg(a.proc.pid, signal.SIGCONT)
        wait_until(lambda: a.proc.poll() is not None, 30, what="the woken old leader exits")
        assert a.proc.returncode == 75, a.log_tail()
        assert writes_from(kube, "replica-a", since=frozen_at) == []

        # 2. The leader is killed (SIGKILL: no release of the Lease): a fresh standby takes over.
        c.start()
        wait_until(lambda: c.scrape("/readyz")[0] == 200, 60, what="replica-c up (standing by)")
        killed_at = datetime.datetime.now(datetime.timezone.utc)
        figures.update(hand_over(kube, lease, namespace, b, signal.SIGKILL, "replica-c", 4, "killed_leader"))
        assert writes_from(kube, "replica-b", since=killed_at) == []
        assert figures["killed_leader_change_applied_seconds"] <= FAILOVER_TARGET_SECONDS, figures
        assert figures["frozen_leader_change_applied_seconds"] <= FAILOVER_TARGET_SECONDS, figures

        # 3. A clean stop (SIGTERM: a rolling update) hands the Lease over at once.
        a2 = replica(kube, operator_kubeconfig, tmp_path, "replica-d", lease).start()
        wait_until(lambda: a2.scrape("/readyz")[0] == 200, 60, what="replica-d up (standing by)")
        started = time.monotonic()
        c.stop()
        wait_until(lambda: holder(kube, lease).startswith("replica-d/"), 30, interval=0.2, what="replica-d leads")
        figures["released_lease_takeover_seconds"] = round(time.monotonic() - started, 1)
        a2.stop()
    finally:
        for op in (a, b, c):
            if op.proc is not None and op.proc.poll() is None:
                os.killpg(op.proc.pid, signal.SIGCONT)
                op.stop()
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(figures, indent=1))
        print("leader election:", figures)


def test_the_session_operator_left_the_other_shard_alone(kube, operator, namespace):
    """The session's operator (FLASKAPP_SELECTOR: FlaskApps without a shard label) never wrote to one of the ha
    shard."""
    app = copy.deepcopy(yaml.safe_load((ROOT / "manifests" / "samples" / "minimal.yaml").read_text()))
    app["metadata"] = {"name": "other-shard", "labels": {SHARD_LABEL: "ha"}}
    before = operator.passes()
    kube.apply(app, namespace)
    wait_until(lambda: operator.passes() - before >= 3 * operator.watched_apps(), 60, interval=1,
               what="three resyncs of every app")
    assert writes_in(kube, namespace) == [] and not (kube.get("flaskapp", "other-shard", namespace) or {}).get("status")


def writes_in(kube, namespace: str) -> list[str]:
    return [f"{e['verb']} {e['objectRef'].get('resource')}" for e in kube.audit_events()
            if e.get("stage") == "ResponseComplete" and e["verb"] in WRITES
            and e.get("userAgent", "").startswith("flaskapp-operator/")
            and (e.get("objectRef") or {}).get("namespace") == namespace]
