"""The one way tests and benchmarks wait: poll a condition until it holds, never a fixed sleep."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float = 90, interval: float = 0.5, what: str = "",
               on_timeout: Callable[[], None] | None = None) -> Any:
    """Polls `predicate` until it returns something true, and returns that; an exception it raises counts as not
    yet. On timeout runs `on_timeout` (diagnostics), then fails with what was waited for and the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - kept for the failure message
            last = exc
        time.sleep(interval)
    if on_timeout is not None:
        on_timeout()
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last saw: {last!r}")
