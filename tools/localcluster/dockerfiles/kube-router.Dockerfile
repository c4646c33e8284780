# kube-router built here from its pinned module (localcluster.build): the kind node image's CNI (bridge + routes
# between nodes) and NetworkPolicy engine (iptables + ipset, which this machine's kernel supports).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends iptables ipset iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY kube-router /usr/local/bin/kube-router
ENTRYPOINT ["/usr/local/bin/kube-router"]
