"""The edge in front of the app, on real nginx and gunicorn: forwarded headers believed only from trusted
proxies, a micro-cache that never hands one client's answer to another, and bounded staleness.

tests/workload/app.yaml trusts 127.0.0.1/32: a request from 127.0.0.1 plays the ingress controller, one
from 127.0.0.2 (also loopback on Linux) an untrusted client.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid

import pytest

TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"
INGRESS_HEADERS = {"Host": "shop.example.com", "X-Forwarded-For": "198.51.100.9, 203.0.113.7",
                   "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example.com",
                   "X-Forwarded-Port": "443"}
FORGED = {**INGRESS_HEADERS, "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl", "X-Real-IP": "203.0.113.66"}


def request(port: int, path: str, headers: dict, source: str = TRUSTED, method: str = "GET",
            body: str | None = None) -> tuple[int, dict, bytes]:
    """One HTTP request from a chosen loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def whereami(port: int, headers: dict, source: str) -> dict:
    # A cookie keeps the micro-cache out of it: this is about what the app is told.
    status, _, body = request(port, "/whereami", {**headers, "Cookie": "nocache=1"}, source)
    assert status == 200, body
    return json.loads(body)


# -- forwarded headers ----------------------------------------------------------------------------------

def test_behind_a_trusted_ingress_the_app_sees_https_its_host_and_the_client(stack):
    seen = whereami(stack.ports["nginx"], INGRESS_HEADERS, TRUSTED)
    assert seen["scheme"] == "https"
    assert seen["url"] == "https://shop.example.com/whereami"
    assert seen["external_url"] == "https://shop.example.com/whereami"  # url_for(_external=True)
    # The rightmost address the trusted proxy did not add itself: the client (nginx realip, recursive).
    assert seen["remote_addr"] == "203.0.113.7"


def test_forwarded_headers_from_an_untrusted_client_are_ignored(stack):
    seen = whereami(stack.ports["nginx"], FORGED, UNTRUSTED)
    assert seen["scheme"] == "http"
    assert seen["url"] == "http://shop.example.com/whereami"  # its own Host header, nothing forwarded
    assert seen["remote_addr"] == UNTRUSTED


def test_gunicorn_believes_forwarded_headers_only_from_nginx_networks(stack):
    direct = whereami(stack.ports["gunicorn"], FORGED, UNTRUSTED)
    assert (direct["scheme"], direct["remote_addr"]) == ("http", UNTRUSTED)
    # From nginx's network the same headers are believed: that is how nginx's answers reach the app.
    believed = whereami(stack.ports["gunicorn"], {"Host": "shop.example.com", "X-Forwarded-For": "203.0.113.7",
                                                  "X-Forwarded-Proto": "https"}, TRUSTED)
    assert (believed["scheme"], believed["remote_addr"]) == ("https", "203.0.113.7")


# -- micro-cache: no leak under concurrency -------------------------------------------------------------

IDENTITIES = {
    # name: (request headers, the fields of /whoami that must come back)
    "anonymous a.test": ({"Host": "a.test"}, {"host": "a.test", "api_key": None, "user": None}),
    "anonymous b.test": ({"Host": "b.test"}, {"host": "b.test", "api_key": None, "user": None}),
    "https a.test": ({"Host": "a.test", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "secure.a.test"},
                     {"host": "secure.a.test", "user": None}),
    "api key k1": ({"Host": "a.test", "X-Api-Key": "k1"}, {"api_key": "k1"}),
    "api key k2": ({"Host": "a.test", "X-Api-Key": "k2"}, {"api_key": "k2"}),
    "configured header": ({"Host": "a.test", "X-Shop-Token": "t1"}, {"token": "t1", "api_key": None}),
    "logged-in alice": ({"Host": "a.test", "Cookie": "user=alice"}, {"user": "alice"}),
    "bearer bob": ({"Host": "a.test", "Authorization": "Bearer bob"}, {"authorization": "Bearer bob"}),
}


def test_micro_cache_never_serves_one_clients_answer_to_another_under_concurrency(stack):
    port, seconds = stack.ports["nginx"], 3.0
    leaks: list[str] = []
    answers = {name: 0 for name in IDENTITIES}
    hits = {name: 0 for name in IDENTITIES}
    start = threading.Barrier(len(IDENTITIES) * 2)

    def client(name: str) -> None:
        headers, expected = IDENTITIES[name]
        start.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, response_headers, body = request(port, "/whoami", headers)
            got = json.loads(body)
            answers[name] += 1
            hits[name] += response_headers.get("x-cache-status") == "HIT"
            if status != 200 or any(got.get(k) != v for k, v in expected.items()):
                leaks.append(f"{name} got {got}")

    threads = [threading.Thread(target=client, args=(name,)) for name in IDENTITIES for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"\nmicro-cache concurrency: {sum(answers.values())} answers, leaks={len(leaks)}, hits={hits}")
    assert not leaks, leaks[:5]
    # The cache was in play: anonymous clients were answered from it, personal ones never.
    assert hits["anonymous a.test"] > 0 and hits["anonymous b.test"] > 0 and hits["https a.test"] > 0
    assert all(hits[name] == 0 for name in ("api key k1", "api key k2", "configured header",
                                            "logged-in alice", "bearer bob"))


def test_clients_see_the_apps_cache_control_never_the_micro_caches(stack):
    """The micro-cache learns its lifetimes from a Cache-Control the cache-policy hop adds; clients (and
    any CDN in front) must still get exactly what the app sent, from the app and from the cache."""
    port = stack.ports["nginx"]
    for _ in range(2):
        _, headers, _ = request(port, "/cacheable", {"Host": "cc.test"})
        assert headers.get("cache-control") == "public, max-age=30", headers
    statuses = []
    for _ in range(2):
        _, headers, _ = request(port, "/uncached", {"Host": "cc.test"})
        assert "cache-control" not in headers and "x-origin-cache-control" not in headers, headers
        statuses.append(headers.get("x-cache-status"))
    assert "HIT" in statuses


def test_error_answers_without_cache_control_are_not_stored(stack):
    port = stack.ports["nginx"]
    for _ in range(2):
        status, headers, _ = request(port, "/no-such-page", {"Host": "cc.test"})
        assert status == 404 and headers.get("x-cache-status") != "HIT"


# -- micro-cache: bounded staleness ---------------------------------------------------------------------

def _publish(port: int, key: str, text: str) -> None:
    # The editor is logged in: the write bypasses the cache, as a real edit would.
    status, _, _ = request(port, f"/notice/{key}", {"Host": "a.test", "Cookie": "user=editor"}, method="PUT",
                           body=text)
    assert status == 200


def _read(port: int, key: str) -> tuple[str, str]:
    _, headers, body = request(port, f"/notice/{key}", {"Host": "a.test"})
    return json.loads(body)["text"], headers.get("x-cache-status", "")


# nginx keeps cache times in whole seconds (ngx_time()): an entry stored at 10.9 with max-age=1 is fresh
# until 12.0, so every bound carries up to one more second.
NGINX_CLOCK_SECONDS = 1


def _bound(stack) -> float:
    nginx = stack.rendered.spec.nginx
    return nginx.micro_cache_seconds + nginx.micro_cache_grace_seconds + NGINX_CLOCK_SECONDS


def test_an_edit_reaches_busy_anonymous_readers_within_ttl_plus_grace(stack):
    port, key = stack.ports["nginx"], f"busy-{uuid.uuid4().hex[:8]}"
    _publish(port, key, "old")
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text, _ = _read(port, key)
            seen.append((time.monotonic(), text))

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)  # readers have filled the cache with "old"
        changed = time.monotonic()
        _publish(port, key, "new")
        time.sleep(_bound(stack) + 2)  # the window being measured, and some after it
    finally:
        stop.set()
        for t in threads:
            t.join()
    last_old = max((at for at, text in seen if text == "old" and at > changed), default=changed)
    visible_after = last_old - changed
    print(f"\nbusy readers: the edit was visible to every reader {visible_after:.2f}s after it "
          f"(bound {_bound(stack)}s); {len(seen)} reads")
    assert visible_after <= _bound(stack) + 0.3
    assert seen[-1][1] == "new"


@pytest.mark.parametrize("idle", [0.5, 1.5, 2.5, 3.5, 4.5])
def test_an_idle_entry_is_never_served_older_than_ttl_plus_grace(stack, idle):
    """The case the issue found live: a page cached, edited, then nobody reads it for a while. The first
    reader after that gets the old copy only within TTL + grace of its caching; later, the new one."""
    port, key = stack.ports["nginx"], f"idle-{uuid.uuid4().hex[:8]}"
    _publish(port, key, "old")
    cached_at = time.monotonic()
    assert _read(port, key) == ("old", "MISS")
    _publish(port, key, "new")
    while time.monotonic() < cached_at + idle:
        time.sleep(0.02)
    text, status = _read(port, key)
    age = time.monotonic() - cached_at
    print(f"\nidle {idle}s: {text!r} ({status}) at age {age:.2f}s, bound {_bound(stack)}s")
    if text == "old":
        assert age <= _bound(stack) + 0.3, f"an entry {age:.2f}s old was served ({status})"
    if idle > _bound(stack) + 0.3:
        assert text == "new"
    if idle < stack.rendered.spec.nginx.micro_cache_seconds:
        assert (text, status) == ("old", "HIT")  # fresh entries are served: the cache works



def test_stale_on_error_is_bounded_by_its_setting(stack):
    """While gunicorn is down, the old copy is served up to microCacheStaleIfErrorSeconds past its
    freshness, then the error shows (the issue saw anonymous visitors get old pages for as long as they
    stayed on disk). Runs gunicorn again afterwards for the other tests."""
    nginx = stack.rendered.spec.nginx
    bound = nginx.micro_cache_seconds + nginx.micro_cache_stale_if_error_seconds + NGINX_CLOCK_SECONDS
    port, key = stack.ports["nginx"], f"err-{uuid.uuid4().hex[:8]}"
    _publish(port, key, "old")
    cached_at = time.monotonic()
    assert _read(port, key) == ("old", "MISS")
    stack.stop_process("gunicorn")
    observed = []
    try:
        while time.monotonic() < cached_at + bound + 1.5:
            status, headers, body = request(port, f"/notice/{key}", {"Host": "a.test"})
            observed.append((time.monotonic() - cached_at, status, headers.get("x-cache-status")))
            time.sleep(0.1)
    finally:
        stack.start_gunicorn()
    stale = [age for age, status, cache in observed if status == 200 and cache in ("STALE", "UPDATING")]
    print(f"\nstale-if-error: old copy served until {max(stale, default=0):.2f}s, bound {bound}s; "
          f"then {observed[-1][1]}")
    assert stale, f"the old copy was never served while gunicorn was down: {observed[:5]}"
    assert max(stale) <= bound + 0.3
    assert observed[-1][1] == 502
