"""Every setting of a running operator, in one place: command-line flags and environment variables, with defaults.

The chart and the kustomize manifests set flags for what a user chooses per installation and environment
variables for tuning knobs; `flaskapp-operator run --help` lists the flags. Nothing else reads the environment.
"""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class Lease:
    """The coordination.k8s.io Lease that leader election holds."""
    namespace: str
    name: str


@dataclass(frozen=True)
class Settings:
    # Namespaces watched; empty: the whole cluster.                                     (-n/--namespace)
    namespaces: tuple[str, ...] = ()
    # Sharding: only FlaskApps matching this label selector; empty: all.                 (FLASKAPP_SELECTOR)
    selector: str = ""
    # Endpoint of the kubelet's liveness probe (kopf's).                                  (--liveness)
    liveness: Optional[str] = "http://0.0.0.0:8080/healthz"
    # host:port of /metrics and /readyz; None: not served.                               (--metrics-address)
    metrics_address: Optional[str] = "0.0.0.0:8081"
    # Leader election: only the holder of this Lease reconciles; None: a single replica.  (--leader-elect ...)
    lease: Optional[Lease] = None
    # This replica's name in the Lease, in user agents and kopf's identity.               (POD_NAME)
    identity: str = "flaskapp-operator"
    # Every FlaskApp is checked at least every two intervals (scheduler.py).             (FLASKAPP_RESYNC_SECONDS)
    resync_seconds: float = 60.0
    # One pass after a burst of child events.                                            (FLASKAPP_DEBOUNCE_SECONDS)
    debounce_seconds: float = 1.5
    # FlaskApps rolling a new release's templates at once (pacing.py); 0: all.           (FLASKAPP_MAX_ROLLING_UPGRADES)
    max_rolling_upgrades: int = 2
    # CRDs of optional APIs (monitoring, KEDA, Gateway API) installed later are picked up within this time.
    #                                                                                     (FLASKAPP_DISCOVERY_SECONDS)
    discovery_ttl_seconds: float = 300.0
    # Passes that may run at once (threads; each pass is mostly waiting for the API server).
    workers: int = 16
    # Where the agent's reports are read (prometheus.py); None: not read.                 (--prometheus-url)
    prometheus_url: Optional[str] = None
    # How often they are read.                                                           (FLASKAPP_PROMETHEUS_SECONDS)
    prometheus_seconds: float = 60.0

    @classmethod
    def from_command_line(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings of `flaskapp-operator run`: its parsed flags, then the environment."""
        lease = None
        if args.leader_elect:
            namespace = args.lease_namespace or environ.get("POD_NAMESPACE")
            if not namespace:
                raise SystemExit("--leader-elect needs --lease-namespace or the POD_NAMESPACE variable")
            lease = Lease(namespace, args.lease_name)
        defaults = cls()
        return cls(
            namespaces=tuple(args.namespace or ()),
            selector=environ.get("FLASKAPP_SELECTOR", defaults.selector),
            liveness=args.liveness or None,
            metrics_address=args.metrics_address or None,
            lease=lease,
            identity=replica_identity(environ),
            resync_seconds=float(environ.get("FLASKAPP_RESYNC_SECONDS", defaults.resync_seconds)),
            debounce_seconds=float(environ.get("FLASKAPP_DEBOUNCE_SECONDS", defaults.debounce_seconds)),
            max_rolling_upgrades=int(environ.get("FLASKAPP_MAX_ROLLING_UPGRADES", defaults.max_rolling_upgrades)),
            discovery_ttl_seconds=float(environ.get("FLASKAPP_DISCOVERY_SECONDS", defaults.discovery_ttl_seconds)),
            prometheus_url=getattr(args, "prometheus_url", None) or None,
            prometheus_seconds=float(environ.get("FLASKAPP_PROMETHEUS_SECONDS", defaults.prometheus_seconds)),
        )


def replica_identity(environ: Mapping[str, str]) -> str:
    """The pod's name and a token of this process: a restarted container (pid 1 again) is another candidate, not
    the old leader resuming its Lease (client-go adds a UUID for the same reason). Not kopf's default identity,
    which starts with getpass.getuser() and raises for a uid without a passwd entry (a pod's runAsUser, or
    OpenShift's arbitrary uid)."""
    return f"{environ.get('POD_NAME') or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
