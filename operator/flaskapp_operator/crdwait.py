"""Start serving FlaskApps only once the API server serves their CRD.

kopf resolves the resources it watches when it starts: an operator started right after its CRD (`make install &&
make run`, `kubectl apply -k`, a Helm install of `crds/` and the Deployment together) may find it not yet served
("Unresolved resources cannot be served") and then never serve FlaskApps while looking healthy. So the operator
(main.py) asks API discovery first and waits, with readiness false, until the resource is listed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from . import api

log = logging.getLogger(__name__)
GROUP_VERSION_PATH = f"/apis/{api.GROUP}/{api.VERSION}"


def served(discover: Callable[[str], dict]) -> bool:
    """Whether discovery lists the FlaskApp resource (`discover` GETs a path and returns the JSON body, raising
    on an HTTP error such as 404 while the group is not served yet)."""
    try:
        body = discover(GROUP_VERSION_PATH)
    except Exception as exc:  # 404 before the CRD is established; a transient error is retried the same way
        log.debug("discovery of %s: %s", GROUP_VERSION_PATH, exc)
        return False
    return any(r.get("name") == api.PLURAL for r in (body or {}).get("resources", []))


def wait_until_served(discover: Callable[[str], dict], sleep: Callable[[float], None] = time.sleep,
                      first_delay: float = 0.5, max_delay: float = 10.0) -> int:
    """Poll discovery with exponential backoff until the FlaskApp resource is served; returns the tries."""
    delay, tries = first_delay, 1
    while not served(discover):
        if tries == 1 or tries % 10 == 0:
            log.warning("waiting for the API server to serve %s (%s): is the CRD installed? "
                        "(make install, or the chart's crds/)", api.PLURAL, GROUP_VERSION_PATH)
        sleep(delay)
        delay, tries = min(max_delay, delay * 2), tries + 1
    return tries


def discovery(api_client) -> Callable[[str], dict]:
    """A `discover` function over the official client's ApiClient."""
    def discover(path: str) -> dict:
        return api_client.call_api(path, "GET", auth_settings=["BearerToken"], response_type="object",
                                   _return_http_data_only=True)
    return discover
