# PostgreSQL from Debian's package, for the local cluster's e2e database. Takes POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB like the official image; extra arguments go to postgres.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
COPY postgresql-entrypoint.sh /usr/local/bin/postgresql-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data/pgdata PGHOST=/tmp
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgresql-entrypoint"]
