"""Start the operator (kopf) in this process: `flaskapp-operator run`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Sequence

import kopf


def run_operator(namespaces: Sequence[str], liveness: str | None, metrics_address: str | None = None) -> int:
    from . import handlers  # registers the handlers
    from .metrics import APP_STATES, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per child event
    handlers.reconciler.namespaces = tuple(namespaces)
    APP_STATES.pending = lambda: handlers.reconciler.pending
    if metrics_address:
        serve(metrics_address, ready=lambda: handlers.reconciler.started)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=list(namespaces),
        standalone=True,  # one replica (Recreate), no peering objects (kopf-in-production #3)
        liveness_endpoint=liveness,
        # kopf's default identity starts with getpass.getuser(), which raises for a uid without a passwd
        # entry: the case of a pod's runAsUser (or OpenShift's arbitrary uid) in any image.
        identity=f"{socket.gethostname()}/{os.getpid()}",
    ))
    return 0
