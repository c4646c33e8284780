# PgBouncer from Debian's package, for the local cluster's real node (spec.database.pooler). The operator runs
# it as uid 70 with its config from a Secret; it writes nothing to the filesystem.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends pgbouncer \
 && rm -rf /var/lib/apt/lists/*
USER 70
EXPOSE 6432
CMD ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
