# flaskapp-operator — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LOCALCLUSTER := $(PY) -m localcluster
IMG ?= ghcr.io/flaskapp-operator/flaskapp-operator:0.1.0
EXAMPLE_IMG ?= ghcr.io/flaskapp-operator/example:0.1.0
KIND_CLUSTER ?= flaskapp-e2e
NAMESPACE ?= flaskapp-system
DEBIAN_PACKAGES := nginx-light redis-server valkey-server/bookworm-backports postgresql pgbouncer memcached wrk
# The local cluster's real node (containerd, runc, CNI, iptables, ipset) and its image builds (Debian's
# Docker engine, debootstrap). NODES=kwok runs fake nodes only and needs none of them.
NODE_PACKAGES := containerd runc containernetworking-plugins iptables conntrack ipset debootstrap docker.io
NODES ?= real
export NODES

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml tools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The operator with its test extras, and the development tools (the local cluster, the tests' support package)
	$(PY) -m pip install --quiet -e '.[test,workload,bench]' -e tools
	@# Bytecode for -OO too: the tests run the operator as its image does (PYTHONOPTIMIZE=2). Only a speed-up,
	@# so a file that does not compile (a package's test data, never imported) does not fail the venv.
	$(PY) -m compileall -q -o 0 -o 2 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  || echo "compileall: some files were not precompiled"
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with the operator and test dependencies.

.PHONY: debs
debs: ## Install the Debian packages the tests run (servers, and the real node's runtime unless NODES=kwok).
	hack/install-debian-packages.sh $(DEBIAN_PACKAGES) $(if $(filter real,$(NODES)),$(NODE_PACKAGES))

.PHONY: tools
tools: venv ## Build (once, cached by version) every tool of the suite: Kubernetes, etcd, kwok, helm, the node's add-ons, Prometheus...
	$(LOCALCLUSTER) build --for test

.PHONY: images
images: venv debs ## Build (cached by content) every image of the suite for the node: operator, example, nginx, redis...
	$(LOCALCLUSTER) images --for test

# Only what the demo runs (progress k/n on the terminal, raw output in build/logs/): not the tests' kwok,
# Prometheus, promtool, schemas and linters.
.PHONY: demo-tools
demo-tools: venv debs ## Build what `make demo` needs: the cluster's binaries and images, helm, the sample's exporters.
	$(LOCALCLUSTER) build --for demo
	$(LOCALCLUSTER) images --for demo

.PHONY: manifests
manifests: venv ## Regenerate the CRD (manifests/crd and the chart's crds/) from the Python model.
	$(PY) -m flaskapp_operator.cli crd > manifests/crd/flaskapp.dev_flaskapps.yaml
	mkdir -p charts/flaskapp-operator/crds
	cp manifests/crd/flaskapp.dev_flaskapps.yaml charts/flaskapp-operator/crds/

.PHONY: docs
docs: venv ## Regenerate docs/api.md from the Python model and the chart README from values.schema.json.
	$(PY) -m flaskapp_operator.cli api-docs > docs/api.md
	$(PY) hack/chart_readme.py > charts/flaskapp-operator/README.md

.PHONY: golden
golden: venv ## Regenerate the golden renders of the samples (review the diff!).
	UPDATE_GOLDEN=1 $(PYTEST) -q tests/unit/test_render.py -k golden

.PHONY: test
test: venv debs tools images ## Run the whole suite: unit, integration (local control plane), workload, e2e.
	$(PYTEST) -q tests

# make test runs the oldest Kubernetes minor the README declares supported (tools/localcluster's default);
# test-newest the newest: CI runs both.
KUBERNETES_NEWEST ?= v1.37.2

.PHONY: test-newest
test-newest: ## The newest supported Kubernetes (KUBERNETES_NEWEST): integration on the local control plane, then the e2e suite on kind.
	KUBERNETES_VERSION=$(KUBERNETES_NEWEST) $(MAKE) test-integration e2e

.PHONY: test-unit
test-unit: venv ## Unit tests only (no cluster, no servers).
	$(PYTEST) -q tests/unit

.PHONY: test-integration
test-integration: venv debs tools ## Integration tests against the local control plane.
	$(PYTEST) -q tests/integration

.PHONY: test-workload
test-workload: venv debs ## Run the rendered config with real nginx, redis, gunicorn, celery, postgresql.
	$(PYTEST) -q tests/workload

.PHONY: soak
soak: venv debs ## An hour of FlaskApp churn against the operator on kwok nodes (SOAK_SECONDS); not in make test.
	$(LOCALCLUSTER) build --for bench
	$(PY) -m bench.soak

.PHONY: bench
bench: venv debs ## Benchmarks: generated stack vs naive baseline (writes build/bench.json and a plot).
	$(LOCALCLUSTER) build --for bench
	$(PY) -m bench

.PHONY: lint
lint: venv ## Byte-compile everything, check the committed CRD and docs are current, kube-score the samples and chart.
	$(PY) -m compileall -q operator tests tools
	$(PYTEST) -q tests/unit/test_api.py -k committed_crd
	$(PYTEST) -q tests/unit/test_docs.py
	PY=$(PY) hack/kube-score.sh

.PHONY: kubernetes-schemas
kubernetes-schemas: venv ## Re-vendor the Kubernetes pod field schemas the API embeds (then `make manifests`).
	$(PY) hack/vendor_kubernetes_schemas.py

##@ Local cluster

.PHONY: cluster-up
cluster-up: tools images ## Start the control plane and a real node (NODES=kwok: fake nodes) with the images.
	$(LOCALCLUSTER) up

.PHONY: cluster-down
cluster-down: venv ## Stop exactly the processes cluster-up started and remove their state.
	$(LOCALCLUSTER) down

.PHONY: demo
demo: venv debs demo-tools ## Bring up a cluster, the operator and the full sample, and show what happened.
	hack/demo.sh up

.PHONY: demo-down
demo-down: venv ## Stop the demo's operator and cluster.
	hack/demo.sh down

##@ Deployment (current kube context)

.PHONY: install
install: venv ## Install the CRD into the current cluster.
	kubectl apply --server-side -f manifests/crd/

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every FlaskApp) from the current cluster.
	kubectl delete --ignore-not-found -f manifests/crd/

.PHONY: run
run: venv ## Run the operator locally against the current kube context.
	$(VENV)/bin/flaskapp-operator run

.PHONY: deploy
deploy: ## Deploy the operator into the current cluster with kustomize (manifests/).
	kubectl apply --server-side -k manifests/

.PHONY: undeploy
undeploy: ## Remove the operator deployed by `make deploy` (the CRD, and so every FlaskApp, stays; `make uninstall` removes it).
	kubectl delete --ignore-not-found -k manifests/manager
	kubectl delete --ignore-not-found -k manifests/rbac

.PHONY: docker-build
docker-build: ## Build the operator and example app images (needs a Docker engine).
	docker build -t $(IMG) -f operator/Dockerfile .
	docker build -t $(EXAMPLE_IMG) examples/flask-shop

.PHONY: helm-lint
helm-lint: tools ## helm lint the chart.
	PATH="$$($(LOCALCLUSTER) bin):$$PATH" helm lint charts/flaskapp-operator

.PHONY: kind-image
kind-image: venv ## Build (offline, cached by content) the kind node image: Kubernetes, its images and a CNI preloaded.
	nice -n 10 $(LOCALCLUSTER) kind-image

.PHONY: kind-up
kind-up: kind-image ## Create a kind cluster (1 control plane, 1 worker; Traefik for Ingress and Gateway API) from the node image.
	$(LOCALCLUSTER) kind-up --name $(KIND_CLUSTER)

.PHONY: kind-down
kind-down: ## Delete the kind cluster, stop its Docker engine, remove the links it made.
	$(LOCALCLUSTER) kind-down --name $(KIND_CLUSTER)

.PHONY: e2e
e2e: venv debs tools images kind-up ## The e2e suite on the kind cluster of kind-up (images loaded into its nodes, the operator installed with the chart); its last test crashes the cluster, brings it up again and takes it down.
	E2E_KUBECONFIG=$(CURDIR)/build/kind/kubeconfig KIND_CLUSTER=$(KIND_CLUSTER) $(PYTEST) -q -rs tests/e2e

.PHONY: e2e-down
e2e-down: kind-down ## Delete the kind cluster of `make e2e` (after a failed run; a passing one ends with it down).
