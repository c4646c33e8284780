"""Start the operator (kopf) in this process: `flaskapp-operator run`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from typing import Optional, Sequence

import kopf
from kubernetes import client


def run_operator(namespaces: Sequence[str], liveness: str | None, metrics_address: str | None = None,
                 lease: Optional[tuple[str, str]] = None) -> int:
    """lease: (namespace, name) of the Lease for leader election; None runs a single active replica."""
    from .memory import limit_arenas

    limit_arenas()  # before any thread allocates
    from . import handlers  # registers the handlers
    from .leader import LeaderElection
    from .metrics import APP_STATES, serve
    from .crdwait import discovery, wait_until_served
    from .reconciler import load_kube_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per child event
    # kopf's default identity starts with getpass.getuser(), which raises for a uid without a passwd entry: the
    # case of a pod's runAsUser (or OpenShift's arbitrary uid) in any image.
    # The pod's name and a token of this process: a restarted container (pid 1 again) is another candidate, not
    # the old leader resuming its Lease (client-go adds a UUID for the same reason).
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    reconciler = handlers.reconciler
    reconciler.namespaces, reconciler.identity = tuple(namespaces), identity
    election = None
    if lease:
        election = LeaderElection(client.CoordinationV1Api(load_kube_config(identity)), *lease, identity)
        reconciler.election = election
    crd_served = threading.Event()
    APP_STATES.pending = lambda: reconciler.pending
    APP_STATES.leading = lambda: reconciler.started and (election is None or election.leading())
    APP_STATES.cache_sizes = handlers.cache.sizes
    APP_STATES.upgrades = reconciler.pacer.counts if reconciler.pacer is not None else dict
    if metrics_address:
        # A standby is ready too: it watches and keeps its cache warm, and a rolling update must go on.
        serve(metrics_address, ready=lambda: crd_served.is_set() and (reconciler.started or election is not None))
    # Not ready, and kopf not started, until the API server serves the FlaskApp resource (crdwait.py).
    wait_until_served(discovery(load_kube_config(identity)))
    crd_served.set()
    try:
        asyncio.run(kopf.operator(
            clusterwide=not namespaces, namespaces=list(namespaces),
            standalone=True,  # no kopf peering: leader election decides which replica writes
            liveness_endpoint=liveness, identity=identity,
        ))
    finally:
        if election is not None:
            election.release()  # SIGTERM (a rolling update): the standby takes over at its next try
    return 0
