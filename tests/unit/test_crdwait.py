"""The operator waits for its CRD to be served before kopf starts (no sleeping: an injected clock)."""

from __future__ import annotations

from flaskapp_operator.crdwait import GROUP_VERSION_PATH, served, wait_until_served


class NotFound(Exception):
    pass


def test_waits_with_backoff_until_discovery_lists_flaskapps():
    answers = [NotFound("404"), NotFound("404"), {"resources": []}, {"resources": [{"name": "flaskapps"}]}]
    asked, slept = [], []

    def discover(path):
        asked.append(path)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until_served(discover, sleep=slept.append) == 4
    assert asked == [GROUP_VERSION_PATH] * 4
    assert slept == [0.5, 1.0, 2.0]  # exponential backoff, capped at 10 s


def test_served_only_when_the_plural_is_listed():
    assert not served(lambda path: {"resources": [{"name": "flaskapps/status"}]})
    assert served(lambda path: {"resources": [{"name": "flaskapps/status"}, {"name": "flaskapps"}]})
    assert not served(lambda path: (_ for _ in ()).throw(OSError("connection refused")))
