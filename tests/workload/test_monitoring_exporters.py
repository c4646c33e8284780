"""spec.monitoring on real servers: the rendered exporters run beside nginx, gunicorn, both Redis, a
Celery worker and Flower (loopback), traffic and tasks are sent, and every endpoint is scraped: the
numbers must move by exactly what was sent. Counts are read independently (gunicorn's access log, the
requests this test made, Redis itself)."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
import requests
import yaml

from testsupport.stack import REDIS_PASSWORD, WORKLOAD_APP, Stack
from testsupport.waiting import wait_until


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, labels): value}, parsed with the client library's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


class Collector:
    """An OTLP/HTTP trace receiver: keeps every ExportTraceServiceRequest POSTed to /v1/traces."""

    def __init__(self):
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        received = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    received.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[dict, str]]:
        """(resource attributes, span name) of everything received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                out += [(attributes, span.name) for scope in resource_spans.scope_spans for span in scope.spans]
        return out


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.server.shutdown()


@pytest.fixture(scope="module")
def stack(collector):
    document = yaml.safe_load(WORKLOAD_APP.read_text())
    # Every cache hit reaches the exporter here, so counts can be compared exactly; the sampled default is
    # tested on its own below.
    document["spec"]["monitoring"] = {"enabled": True, "otlpEndpoint": collector.url, "cacheHitSampling": 1}
    workdir = Path(tempfile.mkdtemp(prefix="flaskapp-monitoring-"))
    workdir.chmod(0o755)
    s = Stack(workdir, document=copy.deepcopy(document)).start()
    yield s
    s.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_gunicorn_and_nginx_metrics_count_every_request(stack):
    statsd = stack.metrics_url("statsd-exporter", "web")
    access = stack.metrics_url("access-log-exporter", "nginx")
    status = stack.metrics_url("nginx-exporter", "nginx")
    before_app, before_access, before_status = scrape(statsd), scrape(access), scrape(status)
    gunicorn_before = stack.gunicorn_requests("/uncached") + stack.gunicorn_requests("/missing")
    sent = {"/uncached": 150, "/missing": 50, "/static/app.css": 40}
    with requests.Session() as session:
        for path, n in sent.items():
            for i in range(n):  # a query of its own each: no micro-cache hit
                session.get(f"{stack.url}{path}" + (f"?i={i}" if "static" not in path else ""), timeout=10)
    reached_app = stack.gunicorn_requests("/uncached") + stack.gunicorn_requests("/missing") - gunicorn_before
    assert reached_app == 200

    def counted():
        """Both exporters hold what the assertions below allow (statsd and syslog are UDP: up to 1 % lost)."""
        app, acc = scrape(statsd), scrape(access)
        grown = total(app, "gunicorn_requests_total") - total(before_app, "gunicorn_requests_total")
        logged = total(acc, "nginx_http_response_count_total") - total(before_access, "nginx_http_response_count_total")
        not_found = total(app, "gunicorn_responses_total", status="404") - total(before_app, "gunicorn_responses_total",
                                                                                 status="404")
        return (min(grown, logged) >= 0.99 * reached_app and not_found >= 0.99 * 50) and (app, acc)
    app, acc = wait_until(counted, 20, 0.2, what="gunicorn's and nginx's exporters counting the requests")
    # statsd is UDP, the access log syslog over UDP: loopback loses nothing at this rate; allow 1 %.
    grown = total(app, "gunicorn_requests_total") - total(before_app, "gunicorn_requests_total")
    assert abs(grown - reached_app) <= 0.01 * reached_app, (grown, reached_app)
    for code, n in (("404", 50),):
        got = total(app, "gunicorn_responses_total", status=code) - total(before_app, "gunicorn_responses_total", status=code)
        assert abs(got - n) <= 0.01 * n, (code, got)
    latency = total(app, "gunicorn_request_duration_seconds_count") - total(before_app, "gunicorn_request_duration_seconds_count")
    assert abs(latency - reached_app) <= 0.01 * reached_app
    # /uncached sleeps 50 ms: those requests are above the 0.05 s bucket's bound, the 404s below it.
    slow = (total(app, "gunicorn_request_duration_seconds_count") - total(app, "gunicorn_request_duration_seconds_bucket", le="0.05")) \
        - (total(before_app, "gunicorn_request_duration_seconds_count") - total(before_app, "gunicorn_request_duration_seconds_bucket", le="0.05"))
    assert abs(slow - 150) <= 2, slow

    # The access-log exporter sees what reached the app; static files, answered by nginx alone, only count
    # in stub_status's total (below).
    seen = total(acc, "nginx_http_response_count_total") - total(before_access, "nginx_http_response_count_total")
    assert abs(seen - reached_app) <= 0.01 * reached_app, seen
    assert total(acc, "nginx_http_response_count_total", cache="-") == 0
    upstream = total(acc, "nginx_http_upstream_time_seconds_hist_count") - total(before_access, "nginx_http_upstream_time_seconds_hist_count")
    assert abs(upstream - 200) <= 2, upstream  # only what reached gunicorn has an upstream time

    stub = scrape(status)
    assert total(stub, "nginx_up") == 1
    assert total(stub, "nginx_http_requests_total") - total(before_status, "nginx_http_requests_total") >= sum(sent.values())


def test_micro_cache_outcomes_are_labelled(stack):
    access = stack.metrics_url("access-log-exporter", "nginx")
    before = scrape(access)
    with requests.Session() as session:
        outcomes = [session.get(stack.url + "/hello", timeout=5).headers.get("X-Cache-Status") for _ in range(30)]
        personal = [session.get(stack.url + "/hello", headers={"X-Api-Key": "k"}, timeout=5) for _ in range(10)]
    assert all(r.headers.get("X-Cache-Status") == "BYPASS" for r in personal)

    def labelled():
        after = scrape(access)
        counts = {c: total(after, "nginx_http_response_count_total", cache=c)
                  - total(before, "nginx_http_response_count_total", cache=c) for c in ("HIT", "MISS", "BYPASS", "EXPIRED", "UPDATING", "STALE")}
        return counts if sum(counts.values()) >= 40 else None
    counts = wait_until(labelled, 20, 0.2, what="the access-log exporter seeing the requests")
    for outcome in ("HIT", "MISS"):  # what the clients were told, outcome by outcome
        assert counts[outcome] == outcomes.count(outcome), (outcome, counts, outcomes)
    assert counts["BYPASS"] == 10


def test_cache_hits_are_sampled_one_in_n_and_the_rest_counted_exactly(stack):
    """The default: one in cacheHitSampling hits reaches the exporter, chosen at random; every MISS and
    BYPASS does. nginx is reloaded with the rendered config of sampling 8, then back."""
    import subprocess

    from flaskapp_operator.render import render

    document = copy.deepcopy(stack.document)
    document["spec"]["monitoring"]["cacheHitSampling"] = 8
    sampled = next(o for o in render(document, redis_password=REDIS_PASSWORD, addresses=stack.addresses()).objects
                   if o["metadata"]["name"].endswith("-nginx-conf"))["data"]["nginx.conf"]
    conf = stack.workdir / "nginx.conf"
    exact = conf.read_text()
    access = stack.metrics_url("access-log-exporter", "nginx")

    def reload(text: str) -> None:
        """nginx -s reload, returning once every worker of the old configuration has exited."""
        import psutil

        master = psutil.Process(stack.procs["nginx"].pid)
        old = {w.pid for w in master.children()}
        conf.write_text(text)
        subprocess.run(["nginx", "-c", str(conf), "-s", "reload"], check=True, capture_output=True)
        wait_until(lambda: old.isdisjoint(w.pid for w in master.children() if w.status() != psutil.STATUS_ZOMBIE),
                   20, 0.2, what="the old workers to exit")
    reload(sampled)
    try:
        before = scrape(access)
        with requests.Session() as session:
            outcomes = [session.get(stack.url + "/hello", timeout=5).headers.get("X-Cache-Status") for _ in range(1600)]
            for _ in range(20):
                session.get(stack.url + "/hello", headers={"X-Api-Key": "k"}, timeout=5)
        hits, misses = outcomes.count("HIT"), outcomes.count("MISS")

        def counted():
            after = scrape(access)
            got = {c: total(after, "nginx_http_response_count_total", cache=c)
                   - total(before, "nginx_http_response_count_total", cache=c) for c in ("HIT", "MISS", "BYPASS")}
            return got if got["BYPASS"] >= 20 and got["MISS"] >= misses else None
        got = wait_until(counted, 20, 0.2, what="the sampled access log counting the requests")
    finally:
        reload(exact)
    assert got and got["MISS"] == misses and got["BYPASS"] == 20, (got, misses)
    # A binomial sample of p = 1/8: within four standard deviations of hits / 8.
    expected, sd = hits / 8, (hits * (1 / 8) * (7 / 8)) ** 0.5
    assert hits > 1000 and abs(got["HIT"] - expected) <= 4 * sd, (got, hits)


def test_the_access_log_is_json_on_stdout(stack):
    requests.get(stack.url + "/hello?from=json-log-test", timeout=5)

    def line():
        for raw in stack.log("nginx").read_text(errors="replace").splitlines():
            if "json-log-test" in raw:
                return json.loads(raw)
    entry = wait_until(line, 5, 0.2, what="the request's line in nginx's log")
    assert entry and entry["request"].startswith("GET /hello?from=json-log-test") and entry["status"] == "200"
    assert {"request_time", "upstream_response_time", "cache", "remote_addr"} <= set(entry)


def test_queue_backlog_and_celery_task_metrics(stack):
    broker = stack.metrics_url("redis-exporter", "redis-broker")
    flower = stack.metrics_url("flower", "flower")
    wait_until(lambda: total(scrape(flower), "flower_worker_online") >= 1, 60, 0.2, what="Flower seeing the worker")
    # No worker: the queue fills and the exporter shows it, as Redis itself counts it.
    stack.stop_process("celery")
    ids = requests.post(stack.url + "/tasks?n=25", timeout=10).json()["ids"]
    queued = redis.Redis(port=stack.ports["redis-broker"], password=REDIS_PASSWORD).llen("celery")
    assert queued == 25
    wait_until(lambda: total(scrape(broker), "redis_key_size", key="celery") == queued, 20, 0.2,
               what="the broker's exporter counting the queued tasks")
    before = scrape(flower)
    stack.start_celery()
    wait_until(lambda: all(requests.get(f"{stack.url}/tasks/{i}", timeout=5).json()["state"] == "SUCCESS"
                           for i in ids), 60, 0.2, what="every task to succeed")
    wait_until(lambda: total(scrape(broker), "redis_key_size", key="celery") == 0, 20, 0.2, what="an empty queue")

    def succeeded():
        after = scrape(flower)
        return total(after, "flower_events_total", type="task-succeeded") - \
            total(before, "flower_events_total", type="task-succeeded") >= 25 and after
    after = wait_until(succeeded, 30, 0.2, what="Flower counting the tasks")
    assert total(after, "flower_events_total", type="task-succeeded") - total(before, "flower_events_total", type="task-succeeded") == 25
    assert total(after, "flower_task_runtime_seconds_count") - total(before, "flower_task_runtime_seconds_count") == 25


def test_cache_evictions_and_memory_are_reported(stack):
    cache_metrics = stack.metrics_url("redis-exporter", "redis-cache")
    cache = redis.Redis(port=stack.ports["redis-cache"], password=REDIS_PASSWORD)
    maxmemory = int(cache.config_get("maxmemory")["maxmemory"])
    samples = scrape(cache_metrics)
    assert total(samples, "redis_up") == 1
    assert total(samples, "redis_memory_max_bytes") == maxmemory == stack.rendered.tuning.redis_cache_maxmemory
    evicted_before = int(cache.info("stats")["evicted_keys"])
    value = b"x" * 10_000
    pipe = cache.pipeline(transaction=False)
    for i in range(2 * maxmemory // len(value)):  # twice what fits
        pipe.set(f"fill:{i}", value)
    pipe.execute()
    evicted = int(cache.info("stats")["evicted_keys"])
    assert evicted > evicted_before
    samples = scrape(cache_metrics)
    # Redis may evict a few more keys for the commands that follow (the exporter's own): between readings.
    assert evicted <= total(samples, "redis_evicted_keys_total") <= int(cache.info("stats")["evicted_keys"])
    assert total(samples, "redis_memory_used_bytes") <= maxmemory * 1.1
    assert total(samples, "redis_connected_clients") >= 1


def test_web_requests_are_traced_by_endpoint_with_no_app_change(stack, collector):
    """The example app has OpenTelemetry installed and no tracing code; the rendered gunicorn config starts
    the auto-instrumentation in each worker, the OTEL_* variables name the service and the pod."""
    for i in range(5):
        requests.get(f"{stack.url}/uncached?trace={i}", timeout=5)
        requests.get(f"{stack.url}/hello", headers={"X-Api-Key": "k"}, timeout=5)

    def traced():
        names = [name for _, name in collector.spans()]
        return names.count("GET /uncached") >= 5 and names.count("GET /hello") >= 5
    wait_until(traced, 30, 0.2, what="the request's span", on_timeout=lambda: print(collector.spans()[-5:]))
    attributes = next(a for a, name in collector.spans() if name == "GET /uncached")
    assert attributes["service.name"] == "shop-web"
    assert attributes["flaskapp.tier"] == "web" and attributes["flaskapp.name"] == "shop"
    assert attributes["k8s.namespace.name"] == "workload" and attributes["k8s.pod.name"] == "local-process"
