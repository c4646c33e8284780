"""KEDA's queue-length trigger against the broker the operator renders, Valkey being its default engine.

No KEDA runs here (its operator's build pulls every cloud provider's SDK), so the test runs what KEDA's Redis
scaler does against the broker, taken from KEDA itself: the script its scaler sends (EVAL of a Lua script that
counts a list, read from `pkg/scalers/redis_scaler.go` of the KEDA module the CRDs come from), after the PING
its client sends, with the trigger's rendered metadata (address, listName, databaseIndex) and the password its
TriggerAuthentication names. The broker is the real server with its rendered command and configuration (valkey-
server where installed), and the tasks are queued by Celery through the app's CELERY_BROKER_URL: what KEDA counts
must be the number of tasks waiting for the pool, per queue.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import urlparse

import pytest
import redis

from localcluster import build
from testsupport.stack import find, scratch_stack

QUEUES = ["celery", "reports"]
POOL = {"name": "default", "queues": QUEUES, "concurrency": 2,
        "autoscaling": {"minReplicas": 0, "maxReplicas": 3, "queueLength": 5}}


def kedas_list_length_script() -> str:
    """The Lua script of KEDA's Redis scaler, from its source at the pinned version."""
    source = build.keda_redis_scaler().read_text()
    found = re.search(r"luaScript\s*:=\s*`(.*?)`", source, re.S)
    assert found, "KEDA's Redis scaler still sends a Lua script (pkg/scalers/redis_scaler.go)"
    return found.group(1)


@pytest.fixture(scope="module")
def queued_stack():
    with scratch_stack("keda-", {"workerPools": [POOL]}, with_postgres=False, with_celery=False) as stack:
        yield stack


def trigger_client(stack, trigger: dict) -> redis.Redis:
    """A client as KEDA's scaler makes one from the trigger: address, database, the TriggerAuthentication's
    password read from the Secret it names."""
    meta = trigger["metadata"]
    auth = find(stack.rendered.objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "password"]
    secret = find(stack.rendered.objects, "Secret", ref["name"])
    password = base64.b64decode(secret["data"][ref["key"]]).decode()
    host, port = meta["address"].rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), db=int(meta.get("databaseIndex", "0")), password=password)


def test_kedas_redis_scaler_counts_the_tasks_celery_queued_for_the_pool_on_valkey(queued_stack):
    from celery import Celery

    stack = queued_stack
    scaled = find(stack.rendered.objects, "ScaledObject", "-worker-default")
    triggers = {t["metadata"]["listName"]: t for t in scaled["spec"]["triggers"]}
    assert sorted(triggers) == sorted(QUEUES), "one trigger per queue the pool consumes"

    env = stack.env_of("-worker-default")
    broker_url = urlparse(env["CELERY_BROKER_URL"])
    producer = Celery("keda-test", broker=env["CELERY_BROKER_URL"])
    counts = {"celery": 7, "reports": 12}
    for queue, count in counts.items():
        for i in range(count):
            producer.send_task("shop.add", (i, i), queue=queue)

    script = kedas_list_length_script()
    for queue, trigger in triggers.items():
        client = trigger_client(stack, trigger)
        assert client.ping()  # KEDA's client pings when it is made
        server = client.info("server")
        if stack.server_path is None and "valkey_version" not in server:
            pytest.fail(f"the broker is not Valkey, the default engine: {server.get('redis_version')}")
        # The database the trigger counts is the one Celery writes to.
        assert int(trigger["metadata"].get("databaseIndex", "0")) == int((broker_url.path or "/0").strip("/") or 0)
        assert client.eval(script, 1, trigger["metadata"]["listName"]) == counts[queue], queue

    # What KEDA then asks of its HPA: ceil(waiting / listLength) pods per queue, the largest wins.
    length = int(next(iter(triggers.values()))["metadata"]["listLength"])
    assert max(-(-c // length) for c in counts.values()) == 3 <= scaled["spec"]["maxReplicaCount"]
