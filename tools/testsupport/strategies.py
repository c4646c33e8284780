"""Random valid FlaskApp specs (hypothesis), shared by the property tests and the soak (`make soak`)."""

from __future__ import annotations

from hypothesis import strategies as st

cpu = st.sampled_from(["100m", "250m", "500m", "1", "1500m", "2", "4", "8"])
scaling = st.one_of(
    st.builds(lambda r: {"replicas": r}, st.integers(0, 30)),
    st.builds(lambda lo, extra: {"autoscaling": {"minReplicas": lo, "maxReplicas": lo + extra}},
              st.integers(1, 10), st.integers(0, 30)),
)
def _pool(i, conc, sc, c, queue_length):
    if queue_length and "autoscaling" in sc:  # KEDA on the queue's length instead of CPU
        sc = {"autoscaling": {**sc["autoscaling"], "queueLength": queue_length}}
    return {"name": f"pool{i}", "concurrency": conc, **sc, "resources": {"requests": {"cpu": c}}}


pool = st.builds(_pool, st.integers(0, 1000), st.one_of(st.just("auto"), st.integers(1, 16)), scaling, cpu,
                 st.one_of(st.none(), st.integers(1, 50)))


@st.composite
def specs(draw):
    pools = draw(st.lists(pool, max_size=4, unique_by=lambda p: p["name"]))
    web = {**draw(scaling), "resources": {"limits": {"cpu": draw(cpu)}},
           "gunicorn": {"workerClass": draw(st.sampled_from(["gthread", "sync", "gevent"]))}}
    db = {"secretName": "db", "maxConnections": draw(st.integers(10, 2000)),
          "reservedConnections": draw(st.integers(0, 9)),
          "budgetPolicy": draw(st.sampled_from(["capAutoscaling", "degrade"])),
          "minimumPoolSize": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        db["pool"] = {"size": draw(st.integers(1, 20)), "maxOverflow": draw(st.integers(0, 10))}
    tiers = ["web"] + [f"worker-{p['name']}" for p in pools]
    db["autoscalingPriority"] = draw(st.permutations(tiers).flatmap(lambda t: st.integers(0, len(t)).map(
        lambda n: t[:n])))
    spec = {"image": "app:1", "wsgi": "app:app", "celeryApp": "app.celery", "web": web, "workerPools": pools,
            "beat": {"enabled": draw(st.booleans())}, "database": db}
    if draw(st.booleans()):
        spec["migrations"] = {"command": ["flask", "db", "upgrade"]}
    return {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp", "metadata": {"name": "prop"}, "spec": spec}
