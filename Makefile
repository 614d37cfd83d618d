# Edgewise: two commands on a fresh machine — `make demo` and `make test`.
# Every target installs what it needs and reuses caches (pip's, Go's, ~/.cache/edgewise).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export GOTOOLCHAIN := local
# Debian packages the test suite starts for real: Prometheus (analysis), an OCI registry (artifacts);
# what builds, runs and imports the images without Docker: buildah, mmdebstrap (the Debian bases),
# runc, containerd (its `ctr`), zstd (the bundle); the real node's CNI plugins and iptables
# (busybox for its smoke-test image); redis and git for Argo CD's GitOps test (tests/cluster/test_gitops.py); zsh (the plugin's completion script).
APT_PACKAGES ?= prometheus docker-registry buildah mmdebstrap runc containerd zstd containernetworking-plugins \
  iptables busybox-static redis-server git zsh

.PHONY: help demo test prerequisites test-unit bench lint tools argocd jaeger venv apt images bundle cluster-up cluster-down clean

help:
	@echo "make demo         bring up the local cluster with a simulated fleet and show it"
	@echo "make test         the whole test suite (unit + real control plane)"
	@echo "make bench        benchmarks (BENCH=serve|optimize|rollout for one); see docs/benchmarks.md"
	@echo "make images       build the images (amd64 + arm64, no Docker), cached in ~/.cache/edgewise/images"
	@echo "make bundle       dist/edgewise-<version>-<arch>.tar.zst: the K3s air-gap bundle (docs/install.md)"
	@echo "make cluster-up / cluster-down   the local cluster alone"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

tools:
	@bash hack/build-tools.sh >/dev/null

# Argo CD's CLI and controllers, only for the GitOps tests (a long cold build: the demo does not wait for it).
argocd:
	@bash hack/build-argocd.sh >/dev/null

# Jaeger's all-in-one binary, the real trace backend of tests/cluster/test_traces.py (about 5 minutes cold).
jaeger:
	@bash hack/build-jaeger.sh >/dev/null

apt:
	@if [ -n "$(APT_PACKAGES)" ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi

# Cold: a few minutes per machine; warm: a hash of the inputs (runtime-images/README.md).
images: venv apt
	$(PY) -m edgewise.devcluster.images build >/dev/null

bundle: images tools
	$(PY) -m edgewise.devcluster.bundle

demo: venv tools apt
	$(VENV)/bin/edgewise dev demo

test: prerequisites
	$(VENV)/bin/pytest -q --durations=25

# What the suite needs, built side by side: the Go builds are CPU-bound, the images wait mostly on
# downloads and file copies, so on a cold machine they overlap (each build script locks its own cache entry).
prerequisites:
	@$(MAKE) --no-print-directory -j4 venv tools argocd jaeger apt images

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

bench: venv tools apt
	$(PY) bench/run.py $(BENCH)

lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/lint-imports
	$(PY) hack/argocd_cm.py --check

cluster-up: venv tools
	$(VENV)/bin/edgewise dev cluster up

cluster-down: venv
	$(VENV)/bin/edgewise dev cluster down

clean: cluster-down
	rm -rf .cache $(VENV)
