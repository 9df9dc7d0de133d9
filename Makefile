# SPDX-License-Identifier: MIT OR Apache-2.0
# Kind recipes named as the upstream's justfile (run-local, kind-down,
# multi-reset-cluster; they need docker, kind, kubectl and helm), and the recipes
# that run on this machine without them (sim-up, sim-down, demo, test,
# validate; the simulator needs root).

NAME       ?= mesh
IMAGE      ?= ghcr.io/meshcni/meshcni
# The manifests' tag: `kind load` puts exactly this image on the nodes, and a
# non-latest tag means imagePullPolicy IfNotPresent, so nothing is pulled.
TAG        ?= 0.1.0
KIND       ?= kind
KUBECTL    ?= kubectl
HELM       ?= helm
DOCKER     ?= docker
NAMESPACE  ?= meshcni-system
KIND_CONFIG ?= deploy/kind/single.yaml
MULTI      := east west
MESHCNI    := .venv/bin/meshcni
PYTEST     := .venv/bin/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help container kind-up kind-down load-image install restart uninstall run-local \
        multi-reset-cluster multi-down sim-up sim-down demo test validate manifests

help:
	@echo "kind:  run-local (container kind-up load-image install restart), uninstall, kind-down,"
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

# install_cluster(name[,extra --set]): the chart (CRDs, RBAC, agent, controller)
# into kind-<name>, with the kind preset. kube-proxy is off (kind configs), so
# nothing serves kubernetes.default's ClusterIP until the agent runs: the
# agents (hostNetwork) and the controller are pointed straight at the
# control-plane node's address with k8sServiceHost/k8sServicePort (upstream
# users know it as agent.clusterURL, which the chart accepts too).
define install_cluster
$(HELM) --kube-context kind-$(1) upgrade --install meshcni charts/meshcni \
  --namespace $(NAMESPACE) --create-namespace \
  --set cni.preset=kind --set image.repository=$(IMAGE) --set image.tag=$(TAG) \
  --set k8sServiceHost=$$($(DOCKER) inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $(1)-control-plane) \
  --set k8sServicePort=6443 $(2)
$(KUBECTL) --context kind-$(1) -n $(NAMESPACE) rollout status daemonset/meshcni-agent --timeout=180s
endef

# restart_cluster(name): pick up a freshly loaded image under the same tag.
define restart_cluster
$(KUBECTL) --context kind-$(1) -n $(NAMESPACE) rollout restart daemonset/meshcni-agent
$(KUBECTL) --context kind-$(1) -n $(NAMESPACE) rollout restart deployment/meshcni-controller
endef

# uninstall_cluster(name): every node cleaned by the agents' pods (uninstall
# mode), then the release; the CRDs stay (Helm never deletes them).
define uninstall_cluster
$(HELM) --kube-context kind-$(1) -n $(NAMESPACE) upgrade meshcni charts/meshcni --reuse-values --set uninstall=true
$(KUBECTL) --context kind-$(1) -n $(NAMESPACE) rollout status daemonset/meshcni-agent --timeout=180s
$(HELM) --kube-context kind-$(1) -n $(NAMESPACE) uninstall meshcni
endef

install:
	$(call install_cluster,$(NAME))

restart:
	$(call restart_cluster,$(NAME))

uninstall:
	$(call uninstall_cluster,$(NAME))

run-local: container kind-up load-image install restart

# mesh_secret(local,remote): the remote's kubeconfig with its internal address
# (https://<remote>-control-plane:6443, on the shared docker network) as the
# Secret the Cluster CR names, in the local controller's namespace; then the CR.
define mesh_secret
$(KIND) get kubeconfig --internal --name=$(2) | \
  $(KUBECTL) --context kind-$(1) -n $(NAMESPACE) create secret generic mesh-remote-$(2)-kubeconfig \
  --from-file=config=/dev/stdin --dry-run=client -o yaml | \
  $(KUBECTL) --context kind-$(1) apply -f -
$(KUBECTL) --context kind-$(1) apply -f deploy/kind/mesh/cluster-$(2).yaml
endef

# mesh_values(name,service cidr): the chart's multi-cluster settings of one kind cluster.
mesh_values = --set clusterMesh.enabled=true --set clusterMesh.clusterName=$(1) \
  --set clusterMesh.serviceCIDRs={$(2)}

# Two fresh clusters (east, west) on one docker network, each with meshcni,
# the other's kubeconfig Secret and a Cluster CR for it.
multi-reset-cluster: container
	for c in $(MULTI); do $(KIND) delete cluster --name=$$c; done
	for c in $(MULTI); do \
	  $(KIND) create cluster --name=$$c --config=deploy/kind/$$c.yaml && \
	  $(KIND) load docker-image $(IMAGE):$(TAG) --name=$$c || exit 1; \
	done
	$(call install_cluster,east,$(call mesh_values,east,10.97.0.0/16))
	$(call install_cluster,west,$(call mesh_values,west,10.98.0.0/16))
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

# The chart and the manifests alone: Helm render + lint, schemas, RBAC, args (no root).
validate: $(MESHCNI)
	$(PYTEST) -q tests/pure/test_deploy_manifests.py tests/pure/test_chart.py

# deploy/ from charts/meshcni (the chart is the source; test_chart.py checks they agree).
manifests: $(MESHCNI)
	.venv/bin/python scripts/render-manifests.py
