"""Settings every suite shares. The shared helpers are the installed package `testsupport` (tools/)."""

from __future__ import annotations

import signal

# A terminated run (CI timeout, `kill`) tears down like Ctrl-C: fixtures stop the servers they started.
signal.signal(signal.SIGTERM, signal.default_int_handler)

# No time limit per generated example: these machines are shared, and a render that takes 300 ms under load is
# not a failure (speed is measured by `make bench`, never by a unit test).
from hypothesis import settings  # noqa: E402

settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")
