# Edgewise: two commands on a fresh machine — `make demo` and `make test`.
# Every target installs what it needs and reuses caches (pip's, Go's, ~/.cache/edgewise).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export GOTOOLCHAIN := local
# Debian packages the test suite starts for real: Prometheus (analysis), an OCI registry (artifacts),
# and the real node's containerd, runc, CNI plugins and iptables (busybox for its smoke-test image).
APT_PACKAGES ?= prometheus docker-registry containerd runc containernetworking-plugins iptables busybox-static

.PHONY: help demo test test-unit bench lint tools venv apt cluster-up cluster-down clean

help:
	@echo "make demo         bring up the local cluster with a simulated fleet and show it"
	@echo "make test         the whole test suite (unit + real control plane)"
	@echo "make bench        benchmarks (BENCH=serve|optimize|rollout for one); see docs/benchmarks.md"
	@echo "make cluster-up / cluster-down   the local cluster alone"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

tools:
	@bash hack/build-tools.sh >/dev/null

apt:
	@if [ -n "$(APT_PACKAGES)" ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi

demo: venv tools apt
	$(VENV)/bin/edgewise dev demo

test: venv tools apt
	$(VENV)/bin/pytest -q

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

bench: venv tools apt
	$(PY) bench/run.py $(BENCH)

lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/lint-imports

cluster-up: venv tools
	$(VENV)/bin/edgewise dev cluster up

cluster-down: venv
	$(VENV)/bin/edgewise dev cluster down

clean: cluster-down
	rm -rf .cache $(VENV)
