"""The operator's API clients: in-cluster config or the current kube context, requests counted, writes fenced."""

from __future__ import annotations

from typing import Callable, Optional

from kubernetes import client, config

from . import metrics


def api_client(identity: str = "flaskapp-operator", write_guard: Optional[Callable[[], bool]] = None,
               pool_size: int = 32) -> client.ApiClient:
    """An API client whose requests are counted (flaskapp_operator_api_requests_total), whose writes are refused
    once write_guard() is false (leader election lost), and whose user agent names this replica (the audit log
    tells replicas apart)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pool_size
    connected = metrics.CountingApiClient(configuration, write_guard=write_guard)
    connected.user_agent = f"flaskapp-operator/{identity}"
    return connected
