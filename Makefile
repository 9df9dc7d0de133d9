# SPDX-License-Identifier: MIT OR Apache-2.0
# Kind recipes named as the upstream's justfile (run-local, kind-down,
# multi-reset-cluster; they need docker, kind and kubectl), and the recipes
# that run on this machine without them (sim-up, sim-down, demo, test,
# validate; the simulator needs root).

NAME       ?= mesh
IMAGE      ?= ghcr.io/meshcni/meshcni
# The manifests' tag: `kind load` puts exactly this image on the nodes, and a
# non-latest tag means imagePullPolicy IfNotPresent, so nothing is pulled.
TAG        ?= 0.1.0
KIND       ?= kind
KUBECTL    ?= kubectl
DOCKER     ?= docker
KIND_CONFIG ?= deploy/kind/single.yaml
MULTI      := east west
MESHCNI    := .venv/bin/meshcni
PYTEST     := .venv/bin/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help container kind-up kind-down load-image install restart run-local \
        multi-reset-cluster multi-down sim-up sim-down demo test validate

help:
	@echo "kind:  run-local (container kind-up load-image install restart), kind-down,"
	@echo "       multi-reset-cluster (east + west meshed), multi-down"
	@echo "here:  sim-up, sim-down, demo, test, validate (root for the simulator)"
	@echo "vars:  NAME=$(NAME) IMAGE=$(IMAGE) TAG=$(TAG)"

# ---- kind ---------------------------------------------------------------

container:
	$(DOCKER) build --tag $(IMAGE):$(TAG) .

# Idempotent, as the upstream's `-kind create`, without hiding real failures.
kind-up:
	$(KIND) get clusters 2>/dev/null | grep -qx '$(NAME)' || \
	  $(KIND) create cluster --name=$(NAME) --config=$(KIND_CONFIG)

kind-down:
	$(KIND) delete cluster --name=$(NAME)

load-image:
	$(KIND) load docker-image $(IMAGE):$(TAG) --name=$(NAME)

# install_cluster(name): CRDs, RBAC, agent, controller into kind-<name>.
# kube-proxy is off (kind configs), so nothing serves kubernetes.default's
# ClusterIP until the agent runs: the agent (hostNetwork) is pointed straight
# at the control-plane node's address, as the upstream's agent.clusterURL.
define install_cluster
$(KUBECTL) --context kind-$(1) apply -k deploy
$(KUBECTL) --context kind-$(1) wait --for condition=established --timeout=60s \
  crd/clusters.mesh-cni.dev crd/meshendpoints.mesh-cni.dev \
  crd/identities.mesh-cni.dev crd/cidridentities.mesh-cni.dev
$(KUBECTL) --context kind-$(1) -n kube-system set env daemonset/meshcni-agent \
  KUBERNETES_SERVICE_HOST=$$($(DOCKER) inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $(1)-control-plane) \
  KUBERNETES_SERVICE_PORT=6443
endef

# restart_cluster(name): pick up a freshly loaded image under the same tag.
define restart_cluster
$(KUBECTL) --context kind-$(1) -n kube-system rollout restart daemonset/meshcni-agent
$(KUBECTL) --context kind-$(1) -n meshcni-system rollout restart deployment/meshcni-controller
endef

install:
	$(call install_cluster,$(NAME))

restart:
	$(call restart_cluster,$(NAME))

run-local: container kind-up load-image install restart

# mesh_secret(local,remote): the remote's kubeconfig with its internal address
# (https://<remote>-control-plane:6443, on the shared docker network) as the
# Secret the Cluster CR names, in the local controller's namespace; then the CR.
define mesh_secret
$(KIND) get kubeconfig --internal --name=$(2) | \
  $(KUBECTL) --context kind-$(1) -n meshcni-system create secret generic mesh-remote-$(2)-kubeconfig \
  --from-file=config=/dev/stdin --dry-run=client -o yaml | \
  $(KUBECTL) --context kind-$(1) apply -f -
$(KUBECTL) --context kind-$(1) apply -f deploy/kind/mesh/cluster-$(2).yaml
endef

# Two fresh clusters (east, west) on one docker network, each with meshcni,
# the other's kubeconfig Secret and a Cluster CR for it.
multi-reset-cluster: container
	for c in $(MULTI); do $(KIND) delete cluster --name=$$c; done
	for c in $(MULTI); do \
	  $(KIND) create cluster --name=$$c --config=deploy/kind/$$c.yaml && \
	  $(KIND) load docker-image $(IMAGE):$(TAG) --name=$$c || exit 1; \
	done
	$(call install_cluster,east)
	$(call install_cluster,west)
	$(call mesh_secret,east,west)
	$(call mesh_secret,west,east)

multi-down:
	for c in $(MULTI); do $(KIND) delete cluster --name=$$c; done

# ---- this machine ---------------------------------------------------------

# The venv with both extensions built; setup-machine.sh is idempotent.
$(MESHCNI):
	bash scripts/setup-machine.sh

sim-up: $(MESHCNI)
	$(MESHCNI) sim up --name=$(NAME)

sim-down: $(MESHCNI)
	$(MESHCNI) sim down --name=$(NAME)

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# The manifests alone: schemas, RBAC resources, args, kustomizations (no root).
validate: $(MESHCNI)
	$(PYTEST) -q tests/pure/test_deploy_manifests.py
