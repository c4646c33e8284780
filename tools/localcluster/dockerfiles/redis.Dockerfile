# redis-server from Debian's package, for the local cluster's real node (the operator runs it as 999).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER 999
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
