"""An in-memory cluster with the reads and writes a reconcile pass makes (kube.Cluster's), for passes without an
API server: what was applied, pruned and reported is kept for the test to read."""

from __future__ import annotations

import copy

from flaskapp_operator.kinds import key_of
from flaskapp_operator.ownership import owned_by


class MemoryCluster:
    """The reads and writes reconcile() makes, on a dict of live objects."""

    def __init__(self, app: dict, live: dict, secrets: dict | None = None):
        self.app, self.live, self.secrets = app, live, secrets or {}
        self.keda = False
        self.gateway = False
        self.monitoring = False
        self.report = None  # what agent_report() answers: an agentreports.AgentReport, or None (not read)
        self.events: list = []
        self.applied: list = []
        self.pruned: list = []
        self.status: dict = {}
        self.discovery_ttl_seconds = 300.0

    def get_flaskapp(self, namespace, name):
        return self.app

    def list_children(self, namespace, name):
        return dict(self.live)

    def monitoring_api(self):
        return self.monitoring

    def agent_report(self, namespace, name):
        return self.report

    def keda_api(self):
        return self.keda

    def gateway_api(self):
        return self.gateway

    def apply(self, desired, live, owner_uid):
        for obj in desired:
            live[key_of(obj)] = self.live[key_of(obj)] = copy.deepcopy(obj)
        self.applied += [key_of(o) for o in desired]
        return [key_of(o) for o in desired]

    def prune(self, keep, live, owner_uid):
        gone = [k for k, o in live.items() if k not in keep and owned_by(o, owner_uid)]
        for k in gone:
            del live[k], self.live[k]
        self.pruned += gone
        return gone

    def list_pods(self, namespace, name):
        return []

    def get_secret(self, namespace, name):
        return self.secrets.get(name)

    def pod_events(self, namespace, names):
        return {}

    def patch_status(self, namespace, name, status):
        self.status.update(status)

    def post_event(self, body, kind, reason, message):
        self.events.append((kind, reason, message))
