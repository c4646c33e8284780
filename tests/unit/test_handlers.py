"""The kopf registration the composition root makes: what kopf will run, read back from its registry."""

from __future__ import annotations

import kopf
from kopf._core.intents.causes import Activity  # (not exported by kopf)

from flaskapp_operator import api
from flaskapp_operator.cache import WatchCache
from flaskapp_operator.handlers import register
from flaskapp_operator.settings import Settings


def test_the_registry_holds_a_login_startup_cleanup_and_only_flaskapp_handlers():
    registry = kopf.OperatorRegistry()
    register(registry, Settings(), WatchCache(), scheduler=object(), child_watches=object())
    activities = {h.activity for h in registry._activities.get_all_handlers()}
    # An explicit registry has no login of its own: without one kopf can reach no API server.
    assert {Activity.AUTHENTICATION, Activity.STARTUP, Activity.CLEANUP} <= activities
    watched = [h.selector for h in [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]]
    assert len(watched) == 2 and all(s.group == api.GROUP and s.any_name == api.PLURAL for s in watched)
    # No change handlers: kopf would keep progress and a diff base in annotations, writes the operator never sends.
    assert not registry._changing.get_all_handlers()
