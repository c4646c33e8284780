# valkey-server from Debian's bookworm-backports package (BSD-3-Clause), for the local cluster's real node: the
# managed cache and broker's default engine (the operator runs it as 999).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports valkey-server \
 && rm -rf /var/lib/apt/lists/*
USER 999
WORKDIR /data
EXPOSE 6379
CMD ["valkey-server", "--protected-mode", "no"]
