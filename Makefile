# Cogwork developer entry points. `make demo` and `make test` are the two set-up commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := .build
KUBE_VERSION := v1.36.3
GO_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 \
  -X k8s.io/component-base/version.gitTreeState=clean
export GOTOOLCHAIN := local
export CGO_ENABLED := 0
export PYTHONPATH := $(CURDIR)/tests/cluster

.PHONY: all venv cluster-binary celcheck helm kueue cluster demo test test-unit test-cluster lint crds clean

all: venv cluster-binary celcheck

# Python environment: torch from PyPI is large; pip's cache (~/.cache/pip) makes reinstalls fast.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@
venv: $(VENV)/.installed

# One Go binary with etcd, kube-apiserver, controller-manager, scheduler and kubectl.
# GOMODCACHE and GOCACHE live in the user's home and are reused between builds.
$(BUILD)/kubecluster: tests/cluster/go.mod tests/cluster/go.sum tests/cluster/main.go
	mkdir -p $(BUILD)
	cd tests/cluster && go build -trimpath -ldflags "$(GO_LDFLAGS)" -o $(CURDIR)/$(BUILD)/kubecluster .
cluster-binary: $(BUILD)/kubecluster

# Kubernetes' own CRD validation (structural schema + CEL compile/cost + rule outcomes), used by
# tests/unit/api so every CEL case is decided by the apiserver's code without a cluster.
$(BUILD)/celcheck: tests/unit/api/celcheck/go.mod tests/unit/api/celcheck/go.sum tests/unit/api/celcheck/main.go
	mkdir -p $(BUILD)
	cd tests/unit/api/celcheck && go build -trimpath -o $(CURDIR)/$(BUILD)/celcheck .
celcheck: $(BUILD)/celcheck
export COGWORK_CELCHECK := $(CURDIR)/$(BUILD)/celcheck

# A real helm for `helm lint` and `helm install` against the test apiserver (tests/cluster).
HELM_VERSION := v3.22.0
# What helm's own Makefile sets: its version, and the Kubernetes version `helm template` and
# `helm lint` assume offline (else v1.20, older than our chart's kubeVersion).
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  $(foreach pkg,pkg/lint/rules pkg/chartutil,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 \
  -X helm.sh/helm/v3/$(pkg).k8sVersionMinor=36)
$(BUILD)/helm:
	mkdir -p $(BUILD)
	GOBIN=$(CURDIR)/$(BUILD) go install -trimpath -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
helm: $(BUILD)/helm

# A real Kueue controller manager (tests/cluster/harness/kueue.py runs it against the test
# apiserver), and the manifests its module ships (CRDs, webhook configurations), copied from the
# module cache (`go mod download` prints where): never committed, like the binaries.
KUEUE_VERSION := v0.17.0
$(BUILD)/kueue:
	mkdir -p $(BUILD)
	GOBIN=$(CURDIR)/$(BUILD) go install \
	  -ldflags "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$(KUEUE_VERSION)" \
	  sigs.k8s.io/kueue/cmd/kueue@$(KUEUE_VERSION)
$(BUILD)/kueue-config/webhooks.yaml:
	rm -rf $(BUILD)/kueue-config && mkdir -p $(BUILD)/kueue-config/crd
	src=$$(go mod download -json sigs.k8s.io/kueue@$(KUEUE_VERSION) | $(PYTHON) -c \
	  'import json, sys; print(json.load(sys.stdin)["Dir"])')/config/components && \
	  cp $$src/crd/bases/*.yaml $(BUILD)/kueue-config/crd/ && \
	  cp $$src/webhook/manifests.yaml $@.tmp
	chmod -R u+w $(BUILD)/kueue-config
	mv $@.tmp $@
kueue: $(BUILD)/kueue $(BUILD)/kueue-config/webhooks.yaml

# A local control plane + node agent for a person; prints the KUBECONFIG export line.
cluster: venv cluster-binary $(if $(KUEUE),kueue)
	$(PY) -m harness up $(if $(KUEUE),--kueue)

demo: venv cluster-binary helm $(if $(KUEUE),kueue)
	$(PY) -m harness.demo $(if $(KUEUE),--kueue)

crds: venv
	$(PY) -m cogwork.api.crdgen --write crds/
	cp crds/*.yaml charts/cogwork/crds/

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: venv celcheck
	$(PY) -m pytest tests/unit -q

test-cluster: venv cluster-binary helm kueue
	$(PY) -m pytest tests/cluster tests/e2e -q -x

test: lint venv cluster-binary celcheck helm kueue
	$(PY) -m pytest tests -q -rs --durations=15

clean:
	rm -rf $(BUILD) $(VENV)
