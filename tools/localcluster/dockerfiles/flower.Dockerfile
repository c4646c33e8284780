# Flower (Celery's monitor, with its Prometheus /metrics) on a Python from Debian's packages, standing in
# for mher/flower:2.0.1 where no registry is reachable. Same Flower version, Celery with Redis support.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN pip install --no-cache-dir flower==2.0.1 "celery[redis]==5.7.0"
USER 65534
ENTRYPOINT []
CMD ["celery", "flower"]
