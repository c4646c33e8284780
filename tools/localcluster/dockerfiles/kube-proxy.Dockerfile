# kube-proxy built here from the pinned Kubernetes module (localcluster.build), for the kind node image.
# Its iptables mode runs iptables-restore and conntrack, so the image carries Debian's (nft backend, as this
# host's Docker uses; kind's entrypoint picks the backend with more rules, which is then the same one).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends iptables conntrack \
    && rm -rf /var/lib/apt/lists/*
COPY kube-proxy /usr/local/bin/kube-proxy
ENTRYPOINT ["/usr/local/bin/kube-proxy"]
